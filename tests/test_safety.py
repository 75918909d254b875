"""Nothing lost, nothing leaked: output paths eocube must not touch, credentials that must not
appear anywhere, and user errors that are one line before any search.

Each case runs the real CLI (``python -m pipeline``) in a subprocess, as a user would, with the
demo archive served by a real STAC API on loopback.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import dask
import pytest
import yaml

from faults import FaultPlan, RangeServer
from pipeline.store.paths import OutputPathError
from test_cube_support import archive_copy

AOI = [10.530, 45.515, 10.543, 45.524]
SECRET = "PLANTEDsecret0123456789abcdef"


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``eocube <args>`` in a fresh process; stdout and stderr captured."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        env={**base, "COLUMNS": "200", **(env or {})},
        timeout=timeout,
    )


def request_file(path: Path, **fields) -> Path:
    base = {
        "catalog": "demo",
        "bbox": AOI,
        "start": "2022-03-01",
        "end": "2022-03-31",
        "sensors": ["sentinel-2", "landsat"],
        "resolution": 20,
        "chunks": {"time": 1, "y": 64, "x": 64},
    }
    path.write_text(yaml.safe_dump({**base, **fields}))
    return path


def one_error_line(run: subprocess.CompletedProcess) -> str:
    """The single ``error:`` line of a failed run (and nothing that looks like a traceback)."""
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout
    return lines[0]


#: an archive path that breaks any search: a run that reaches its search fails differently
NO_SEARCH = {"EOCUBE_DEMO_ARCHIVE": "/dev/null/no-archive"}


# ----------------------------------------------------------------------------- outputs


def test_a_folder_of_the_users_at_the_output_path_is_refused_and_left_alone(tmp_path: Path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "thesis.txt").write_text("four years of work")
    line = one_error_line(cli("run", str(request_file(tmp_path / "r.yaml", output=str(folder))), env=NO_SEARCH))
    assert str(folder) in line and "not an eocube store" in line
    assert (folder / "thesis.txt").read_text() == "four years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml", "thesis"]  # no hidden copies either


@pytest.mark.parametrize("command", ["run", "backfill"])
def test_a_file_at_the_output_path_is_refused_and_left_alone(tmp_path: Path, command: str):
    target = tmp_path / "notes.zarr"
    target.write_text("not a store")
    line = one_error_line(cli(command, str(request_file(tmp_path / "r.yaml", output=str(target))), env=NO_SEARCH))
    assert str(target) in line and "is a file" in line
    assert target.read_text() == "not a store" and sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.zarr",
        "r.yaml",
    ]


def test_an_unwritable_output_is_one_line_naming_the_users_path_before_the_search(tmp_path: Path):
    if os.geteuid() == 0:  # root writes anywhere that is mounted writable; sysfs refuses even root
        target = Path("/sys/eocube-test/cube.zarr")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        target = locked / "cube.zarr"
    line = one_error_line(cli("run", str(request_file(tmp_path / "r.yaml", output=str(target))), env=NO_SEARCH))
    assert f"cannot write {target}" in line and ".partial-" not in line


def test_an_eocube_store_is_replaced_only_when_asked(demo_archive: Path, tmp_path: Path):
    import numpy as np
    import xarray as xr

    from pipeline.store.paths import OutputPathError
    from pipeline.store.zarr_store import write_store

    def cube(value: float) -> xr.Dataset:
        ds = xr.Dataset(
            {"red": (("time", "y", "x"), np.full((1, 4, 4), value, np.float32))},
            coords={"time": [np.datetime64("2022-01-01", "ns")], "y": np.arange(4.0), "x": np.arange(4.0)},
        )
        return ds.assign_coords(spatial_ref=xr.DataArray(0, attrs={"crs_wkt": 'LOCAL_CS["x"]'}))

    chunks = {"time": 1, "y": 4, "x": 4}
    path = write_store(cube(1.0), tmp_path / "c.zarr", chunks)
    with pytest.raises(OutputPathError, match="existing eocube store; pass --overwrite"):
        write_store(cube(2.0), path, chunks)
    assert float(xr.open_zarr(path)["red"].max()) == 1.0
    write_store(cube(2.0), path, chunks, overwrite=True)
    assert float(xr.open_zarr(path)["red"].max()) == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.zarr"]  # the old one is gone, nothing half-written


def test_a_full_disk_mid_write_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch):
    import numpy as np
    import xarray as xr

    from pipeline.store import zarr_store
    from pipeline.store.paths import OutputPathError

    def no_space(ds, store, *args, **kwargs):
        (Path(store) / "red").mkdir(parents=True)
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(store) / "red" / "c" / "0"))

    monkeypatch.setattr(zarr_store, "write_in_time_slabs", no_space)
    ds = xr.Dataset(
        {"red": (("time", "y", "x"), np.ones((1, 4, 4), np.float32))},
        coords={"time": [np.datetime64("2022-01-01", "ns")], "y": np.arange(4.0), "x": np.arange(4.0)},
    )
    ds = ds.assign_coords(spatial_ref=xr.DataArray(0, attrs={"crs_wkt": 'LOCAL_CS["x"]'}))
    with pytest.raises(OutputPathError) as err:
        zarr_store.write_store(ds, tmp_path / "full.zarr", {"time": 1, "y": 4, "x": 4})
    assert (
        str(err.value) == f"cannot write {tmp_path / 'full.zarr'}: No space left on device; nothing was left at "
        f"{tmp_path / 'full.zarr'}"
    )
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- user errors first


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"bands": ["red", "nope"]}, "unknown band(s) ['nope']"),
        ({"crs": "EPSG:99999"}, "crs 'EPSG:99999'"),
        ({"crs": "not a crs"}, "crs 'not a crs'"),
        ({"sensors": ["sentinel-2", "modis"], "catalog": "earth-search"}, "has no collection for sensor 'modis'"),
        ({"catalog": "nowhere"}, "unknown catalog 'nowhere'"),
        ({"bbox": [170, -10, -170, 10]}, "crosses the antimeridian"),
        ({"mask": {"drop": ["clouds"]}}, "unknown QA flag(s) ['clouds']"),
        ({"composite": {"freq": "1ME"}}, "not start-anchored"),
        ({"resampling": {"qa": "bilinear"}}, "must be resampled with nearest or mode"),
        ({"resampling": {"reflectnce": "nearest"}}, "resampling names ['reflectnce']"),
        ({"crs": "EPSG:4326"}, "is geographic (degrees)"),
        ({"crs": "EPSG:4978"}, "is not a projected CRS"),
        ({"bands": []}, "bands is empty"),
        ({"chunks": {"t": 1}}, "chunks has unknown dimension(s) ['t']"),
        ({"chunks": {"time": 0, "y": 64, "x": 64}}, "chunks must be >= 1"),
        ({"composite": {"freq": "0D"}}, "must step forward in time"),
        ({"composite": {"freq": "1H"}}, "is not usable"),
        ({"resolution": float("inf")}, "resolution: Input should be a finite number"),
        ({"resolution": 1e9}, "smaller than 2 x 2 pixels"),
        ({"compress": {"qp": 1000}}, "qp 1000 must be in"),
        ({"compress": {"target_psnr": 1e9}}, "compress.target_psnr: Input should be less than or equal to 83"),
        ({"output": "s3://bucket/c.zarr?sig=SECRETSECRET"}, "is a URL"),
    ],
)
def test_request_errors_are_one_line_before_the_search(tmp_path: Path, fields: dict, expected: str):
    line = one_error_line(
        cli(
            "run",
            str(request_file(tmp_path / "r.yaml", **{"output": str(tmp_path / "c.zarr"), **fields})),
            env=NO_SEARCH,
            timeout=120,
        )
    )
    assert expected in line and "SECRETSECRET" not in line
    assert not (tmp_path / "c.zarr").exists() and not Path("s3:").exists()


def test_a_malformed_request_file_is_one_line(tmp_path: Path):
    bad = tmp_path / "r.yaml"
    bad.write_text("catalog: demo\nbbox: [1, 2\n")
    assert "is not valid YAML/JSON" in one_error_line(cli("run", str(bad), env=NO_SEARCH, timeout=120))
    bad.write_text("- just\n- a list\n")
    assert "must hold a mapping" in one_error_line(cli("backfill", str(bad), env=NO_SEARCH, timeout=120))
    bad.write_text("catalog: demo\ncatalog: earth-search\n")  # which one? neither, silently
    assert "key 'catalog' is given twice" in one_error_line(cli("run", str(bad), env=NO_SEARCH, timeout=120))
    request_file(bad, output=str(tmp_path / "c.zarr"), start="2022-02-30")  # the field is named
    assert "start:" in one_error_line(cli("run", str(bad), env=NO_SEARCH, timeout=120))
    assert "is a folder" in one_error_line(cli("run", str(tmp_path), env=NO_SEARCH, timeout=120))


def test_files_beside_the_store_that_eocube_did_not_write_are_refused(tmp_path: Path):
    """The STAC item and the quicklook eocube writes beside a store: a file of the user's there stays theirs."""
    for name in ("cube.item.json", "cube.quicklook.png"):
        mine = tmp_path / name
        mine.write_text('{"mine": 1}')
        line = one_error_line(
            cli(
                "run",
                str(request_file(tmp_path / "r.yaml", output=str(tmp_path / "cube.zarr"))),
                env=NO_SEARCH,
                timeout=120,
            )
        )
        assert f"{mine} exists and was not written by eocube" in line and mine.read_text() == '{"mine": 1}'
        mine.unlink()


def test_a_full_disk_during_a_run_is_one_line_naming_the_users_path_and_leaves_nothing(
    demo_archive: Path, tmp_path: Path, monkeypatch
):
    from pipeline.chain.run import run_request
    from pipeline.model import CubeRequest
    from pipeline.store import engines

    def no_space(self, part, region):  # the chunks' writes, wherever they run, find the disk full
        chunk = str(self.path / "cube" / "red" / "c" / "0")

        def write():
            raise OSError(errno.ENOSPC, "No space left on device", chunk)

        return dask.delayed(write)()

    monkeypatch.setattr(engines.ZarrEngine, "slice_writes", no_space)
    out = tmp_path / "out" / "cube.zarr"
    request = CubeRequest.model_validate(yaml.safe_load(request_file(tmp_path / "r.yaml", output=str(out)).read_text()))
    with pytest.raises(OutputPathError) as err:
        run_request(request, archive=demo_archive)
    assert str(err.value) == f"cannot write {out}: No space left on device; nothing was left at {out}"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".cube.zarr.eocube"]  # the writer's lock only


@pytest.mark.slow
def test_ctrl_c_mid_run_is_one_line_and_leaves_nothing_under_the_output_name(demo_archive: Path, tmp_path: Path):
    import signal
    import time

    out = tmp_path / "cube.zarr"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            str(request_file(tmp_path / "r.yaml", output=str(out), resolution=10, compress={"target_psnr": 40})),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**base, "EOCUBE_DEMO_ARCHIVE": str(demo_archive)},
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not (tmp_path / ".cube.zarr.partial").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's ctrl-c: to the process group, Dask's workers included
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("interrupted") and "Traceback" not in stderr, stderr[-3000:]
    assert not out.exists()


# ----------------------------------------------------------------------------- secrets


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


@pytest.mark.slow
def test_a_planted_token_appears_nowhere(demo_archive: Path, tmp_path: Path):
    """Items whose hrefs carry a SAS token (one unreachable, one truncated after its overviews): the
    token must not reach stdout, stderr (ours, Prefect's, the Dask workers'), the stores, their STAC
    items, the journal or Prefect's database, on `run` and `backfill`, with and without --debug."""
    signed = f"sv=2021-06-08&se=2031-01-01T00%3A00%3A00Z&sr=c&sp=rl&sig={SECRET}"
    served = tmp_path / "served"
    faults = FaultPlan(broken={"/B04.tif"})  # answered 500 forever: left out by the probe
    victims: dict[str, str] = {}
    with RangeServer(served, faults) as server:

        def plant(collection: str, feature: dict) -> dict:
            day = str(feature["properties"].get("datetime"))[:10]
            if collection == "sentinel-2-l2a" and day in ("2022-03-11", "2022-03-21"):
                asset = "B04" if day == "2022-03-11" else "SCL"
                src = Path(feature["assets"][asset]["href"].removeprefix("file://"))
                served.mkdir(exist_ok=True)
                keep = 1.0 if asset == "B04" else 0.6  # SCL truncated after its overviews: fails while read
                (served / src.name).write_bytes(src.read_bytes()[: int(src.stat().st_size * keep)])
                feature["assets"][asset]["href"] = f"{server.url}/{src.name}?{signed}"
                victims[feature["id"]] = asset
            return feature

        archive = archive_copy(demo_archive, tmp_path / "archive", plant)
        assert sorted(victims.values()) == ["B04", "SCL"]
        env = {
            "EOCUBE_DEMO_ARCHIVE": str(archive),
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "EOCUBE_LOCAL_WORKERS": "2",
            "GDAL_HTTP_MAX_RETRY": "2",
            "GDAL_HTTP_RETRY_DELAY": "0.1",
        }
        runs = [
            cli("run", str(request_file(tmp_path / "run.yaml", output=str(tmp_path / "out" / "run.zarr"))), env=env),
            cli(
                "--debug",
                "backfill",
                str(request_file(tmp_path / "bf.yaml", output=str(tmp_path / "out" / "bf.zarr"))),
                "--tile-px",
                "64",
                env=env,
            ),
            cli("status", str(tmp_path / "out" / "bf.zarr"), env=env),
        ]
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
        assert SECRET not in run.stdout and SECRET not in run.stderr
    assert "sig=***" in runs[1].stderr  # the failures were logged, redacted
    written = _files(tmp_path / "out") + _files(tmp_path / "prefect-home")
    assert any(p.name.endswith(".item.json") for p in written) and any(p.name == "runs.jsonl" for p in written)
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    for store in ("run.zarr", "bf.zarr"):
        attrs = json.loads((tmp_path / "out" / store / "zarr.json").read_text())["attributes"]
        assert set(json.loads(attrs["eocube:failed_items"])) == set(victims), store


def test_the_demo_generator_never_writes_into_a_folder_it_did_not_write(tmp_path: Path):
    from pipeline.demo.archive import ensure_demo_archive

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.txt").write_text("years of work")
    with pytest.raises(FileExistsError, match="refusing to generate the demo into it") as err:
        ensure_demo_archive(theirs)
    assert "\n" not in str(err.value) and sorted(p.name for p in theirs.iterdir()) == ["thesis.txt"]
    from pipeline.demo.archive import generate_archive

    (theirs / "manifest.json").write_text('{"version": 1, "seed": 20211001}')  # theirs, though it looks alike
    with pytest.raises(FileExistsError, match="did not write"):
        generate_archive(theirs)
    assert sorted(p.name for p in theirs.iterdir()) == ["manifest.json", "thesis.txt"]
    archive = tmp_path / "their-archive"  # a user's own local STAC archive: served as it is
    (archive / "stac" / "sentinel-2-l2a").mkdir(parents=True)
    (archive / "stac" / "sentinel-2-l2a" / "items.json").write_text('{"type": "FeatureCollection", "features": []}')
    assert ensure_demo_archive(archive) == archive
    assert sorted(str(p.relative_to(archive)) for p in archive.rglob("*")) == [
        "stac",
        "stac/sentinel-2-l2a",
        "stac/sentinel-2-l2a/items.json",
    ]
    file = tmp_path / "a-file"
    file.write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        ensure_demo_archive(file)


def test_files_beside_a_store_are_ours_only_when_eocube_wrote_them(tmp_path: Path):
    from pipeline.store.paths import is_ours_or_free

    def doc(name: str, body: dict) -> Path:
        (tmp_path / name).write_text(json.dumps(body))
        return tmp_path / name

    assert is_ours_or_free(tmp_path / "absent.item.json")
    assert is_ours_or_free(doc("a.item.json", {"type": "Feature", "properties": {"eocube:version": "0.4"}}))
    assert is_ours_or_free(doc("a.collection.json", {"type": "Collection", "eocube:version": "0.4"}))
    # a Collection of an earlier eocube, before it carried its version
    assert is_ours_or_free(
        doc("old.collection.json", {"type": "Collection", "description": "eocube store old.zarr: x"})
    )
    assert not is_ours_or_free(doc("theirs.collection.json", {"type": "Collection", "description": "my survey"}))
    assert not is_ours_or_free(doc("theirs.item.json", {"type": "Feature", "properties": {}}))
    assert not is_ours_or_free(doc("notes.item.json", {"description": "eocube store but not a Collection"}))


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("s3://bucket/x.zarr?sig=SECRETSECRET", "is a URL"),
        ("https://example.org/x.zarr", "is a URL"),
        ("we\nird.zarr", "control characters"),
        ("x" * 250 + ".zarr", "bytes long"),
        (".x.zarr.partial", "where eocube builds the store of"),
    ],
)
def test_outputs_eocube_cannot_name_its_siblings_after_are_refused(tmp_path: Path, output: str, message: str):
    from pipeline.store.paths import OutputPathError, check_output

    path = Path(output) if "://" in output else tmp_path / output
    with pytest.raises(OutputPathError, match=message) as err:
        check_output(output if "://" in output else path)
    assert "\n" not in str(err.value) and "SECRETSECRET" not in str(err.value)
    assert sorted(tmp_path.iterdir()) == []


def test_a_run_never_removes_user_files_under_the_names_it_builds_its_store_at(tmp_path: Path):
    from pipeline.chain.run import check_partial, discard_partial
    from pipeline.store.journal import journal_dir
    from pipeline.store.paths import OutputPathError, partial_path

    partial = partial_path(tmp_path / "out.zarr")
    partial.mkdir()
    (partial / "mynotes.txt").write_text("mine")
    with pytest.raises(OutputPathError, match="not written by eocube"):
        check_partial(partial)
    with pytest.raises(OutputPathError):
        discard_partial(partial)
    assert (partial / "mynotes.txt").read_text() == "mine"
    (partial / "mynotes.txt").unlink()
    check_partial(partial)  # an empty folder there: a run killed before it wrote anything
    journal = journal_dir(partial)
    (journal / "failures").mkdir(parents=True)
    (journal / "lock").write_text("")
    (journal / "runs.jsonl").write_text("{}\n")
    (journal / "failures" / "t0.json").write_text("{}")
    check_partial(partial)  # eocube's own journal
    (journal / "mine.txt").write_text("mine")
    with pytest.raises(OutputPathError, match="holds files eocube did not write"):
        discard_partial(partial)
    assert (journal / "mine.txt").read_text() == "mine"


def test_store_update_refuses_a_partial_store_and_what_is_not_a_store(tmp_path: Path):
    from pipeline.chain.slices import update_request
    from pipeline.store.zarr_store import StoreError

    for path, message in (
        (tmp_path / ".x.zarr.partial", "store in the making"),
        (tmp_path / "notes", "is not an eocube store"),
        (tmp_path / "absent.zarr", "does not exist"),
    ):
        if path.name == "notes":
            path.mkdir()
        with pytest.raises(StoreError, match=message) as err:
            update_request(path)
        assert "\n" not in str(err.value)
