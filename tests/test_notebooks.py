"""The notebooks run top to bottom against demo stores (nbclient, a real kernel), and are kept without outputs."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def run_notebook(path: Path, env: dict[str, str], cwd: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_stored_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_backfill_walkthrough_then_explore_the_store(demo_archive: Path, tmp_path: Path):
    env = {"EOCUBE_DEMO_ARCHIVE": str(demo_archive), "EOCUBE_WORKDIR": str(tmp_path), "DASK_SCHEDULER_ADDRESS": "",
           "PREFECT_LOGGING_LEVEL": "WARNING"}
    run_notebook(REPO / "notebooks/backfill_walkthrough.ipynb", env, tmp_path)
    store = tmp_path / "walkthrough.zarr"
    assert (tmp_path / "walkthrough.item.json").exists()
    nb = run_notebook(REPO / "notebooks/explore_store.ipynb", {**env, "EOCUBE_STORE": str(store)}, tmp_path)
    html = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "text/html" in o.get("data", {})]
    assert any("<img" in o["data"]["text/html"] or "animation" in o["data"]["text/html"].lower() for o in html)
    texts = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "committed slices, 100% of the cube" in texts
    assert "2022-06" in texts  # the store repr lists its June time steps
    nb = run_notebook(REPO / "notebooks/compress_cube.ipynb", {**env, "EOCUBE_STORE": str(store)}, tmp_path)
    texts = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "bits per pixel per band" in texts and "NDVI |difference|" in texts
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the comparison quicklook and the rate-distortion plot
    assert (tmp_path / "notebook-video.zarr" / "zarr.json").exists()
