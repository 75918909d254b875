"""The notebooks run top to bottom (nbclient, a real kernel) against demo stores, and are kept without outputs.

* ``backfill_walkthrough`` writes a small cube store slice by slice; ``explore_store`` and ``compress_cube`` then
  run on it (a store with the cube alone: the product sections say there is none).
* ``explore_store`` without ``EOCUBE_STORE`` makes a small demo chain store itself (the demo request on three
  months at 40 m) and shows every product. Presto's released weights come from ``../shared`` where it is
  present; elsewhere the store has no embeddings and the notebook prints why, rather than failing.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
#: the notebooks the tests below run (a new notebook needs a test here: test_every_notebook_is_run)
RUN = {"backfill_walkthrough", "compress_cube", "explore_store"}
#: seconds a notebook cell may take (the explore notebook's demo store: ~2 min on 2 idle cores)
CELL_TIMEOUT_S = 600


def shared_models() -> Path | None:
    """``../shared/models`` (or ``$EOCUBE_SHARED/models``) where it holds Presto's weights, else None."""
    root = Path(os.environ.get("EOCUBE_SHARED") or REPO.parent / "shared")
    models = root / "models"
    return models if (models / "presto" / "default_model.pt").is_file() else None


def run_notebook(path: Path, env: dict[str, str | None], cwd: Path) -> nbformat.NotebookNode:
    """Execute the notebook at ``path`` in a fresh kernel started with ``env`` (None: unset) in ``cwd``."""
    nb = nbformat.read(path, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    for k, v in env.items():  # the kernel (and its Dask workers) inherit the environment
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        NotebookClient(
            nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
        ).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def texts(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in outputs(nb) if o.get("name") != "stderr")


def images(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for o in outputs(nb) if "image/png" in o.get("data", {})]


def animations(nb: nbformat.NotebookNode) -> list[str]:
    html = [o["data"]["text/html"] for o in outputs(nb) if "text/html" in o.get("data", {})]
    return [h for h in html if "animation" in h.lower() and "data:image/png;base64" in h]


def base_env(demo_archive: Path, workdir: Path) -> dict[str, str | None]:
    return {
        "EOCUBE_DEMO_ARCHIVE": str(demo_archive),
        "EOCUBE_WORKDIR": str(workdir),
        "DASK_SCHEDULER_ADDRESS": "",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "EOCUBE_STORE": None,
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_stored_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_every_notebook_is_run():
    assert {p.stem for p in NOTEBOOKS} == RUN


def test_backfill_walkthrough_then_explore_and_compress_its_cube(demo_archive: Path, tmp_path: Path):
    env = base_env(demo_archive, tmp_path)
    run_notebook(REPO / "notebooks/backfill_walkthrough.ipynb", env, tmp_path)
    store = tmp_path / "walkthrough.zarr"
    assert (tmp_path / "walkthrough.item.json").exists()

    nb = run_notebook(REPO / "notebooks/explore_store.ipynb", {**env, "EOCUBE_STORE": str(store)}, tmp_path)
    assert len(animations(nb)) == 1
    out = texts(nb)
    assert "committed slices, 100% of the cube" in out
    assert "2022-06" in out  # the cube's repr lists its June time steps
    for missing in ("embeddings", "uncertainty", "video"):  # a cube-only store: each product section says so
        assert f"this store has no {missing} product" in out
    assert len(images(nb)) == 1  # the valid-fraction timeline (cube only)

    nb = run_notebook(REPO / "notebooks/compress_cube.ipynb", {**env, "EOCUBE_STORE": str(store)}, tmp_path)
    out = texts(nb)
    assert "bits per pixel per band" in out and "NDVI |difference|" in out
    assert len(images(nb)) >= 2  # the comparison quicklook and the rate-distortion plot
    assert (tmp_path / "notebook-video.zarr" / "zarr.json").exists()


def test_explore_store_makes_a_demo_chain_store_and_shows_every_product(demo_archive: Path, tmp_path: Path):
    models = shared_models()
    env = base_env(demo_archive, tmp_path)
    if models is not None:
        env["EOCUBE_WEIGHTS_DIR"] = str(models)
    else:  # no released weights here: the notebook must say so and show the rest
        print("Presto weights not found under ../shared/models ($EOCUBE_SHARED): the notebook runs without embeddings")
        env.update(EOCUBE_WEIGHTS_DIR=str(tmp_path / "no-weights"), HF_HUB_CACHE=str(tmp_path / "no-hf"))
    nb = run_notebook(REPO / "notebooks/explore_store.ipynb", env, tmp_path)

    store = tmp_path / "explore-demo" / "demo.zarr"
    assert all((store / g / "zarr.json").is_file() for g in ("cube", "composite", "uncertainty", "video"))
    out = texts(nb)
    assert "committed slices, 100% of the cube" in out
    assert len(animations(nb)) == 1
    assert "mean valid_fraction" in out  # the composite's per-bin table
    assert "vegetation_cover: mean" in out and "median interval width" in out
    assert "frame PSNR" in out and "valid mask identical after decoding" in out
    if models is not None:
        assert (store / "embeddings" / "zarr.json").is_file()
        assert "PCA on" in out and "100% of the cells computed" in out
        assert len(images(nb)) == 4  # timeline, PCA false colour, uncertainty maps, original | decoded
    else:
        assert "no embeddings product: " in out and "skipped: " in out and "default_model.pt" in out
        assert len(images(nb)) == 3
