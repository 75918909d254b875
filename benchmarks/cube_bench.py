"""Cube assembly at scale: build a masked, harmonised cube from local COGs and stream it to Zarr.

Generates (once, cached) a Sentinel-2 L2A-like archive in ``benchmarks/_work/cube/``:
``--dates`` items of ``--bands`` uint16 reflectance COGs plus an SCL QA COG, each
``--size`` x ``--size`` px at 10 m (512-px tiles, deflate, overviews), with moving
clouds. Then, on one Dask LocalCluster, times four ways to write the same cube:

* ``eocube``: :func:`pipeline.cube.build_cube` (probe, SCL cloud masking, scale/offset to
  float32 reflectance, ``valid``) streamed by :func:`pipeline.store.zarr_store.write_store`;
* ``eocube-scaled-int``: the same request with ``storage="scaled-int"``: the same masking and
  harmonisation, kept as uint16 DN on one CF scale_factor/add_offset grid (decodes to the same
  reflectance; see :mod:`pipeline.cube.packing`);
* ``odc-plain``: ``odc.stac.load(...).to_zarr(...)`` of the raw DN (no masking, no scaling);
* ``stackstac-plain``: ``stackstac.stack(...).to_zarr(...)`` of the raw DN.

For each it reports wall time, peak RSS of the whole process tree (this process and the
Dask workers, sampled every 0.1 s with psutil), and the task-graph size; then the
ratio of each to odc-plain.

    python -m benchmarks cube --quick                       # 512 px x 8 dates x 6 bands
    python -m benchmarks cube --size 2048 --dates 24 --repeat 3   # medians of 3 interleaved rounds
    python -m benchmarks cube --size 4096 --dates 100       # the issue's full size
    python -m benchmarks cube --size 4096 --dates 100 --variants eocube-scaled-int --repeat 2
    python -m benchmarks cube --size 2048 --dates 24 --no-stackstac --task-stream   # where the time goes
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import psutil
import pystac
import rasterio
from rasterio.transform import from_origin

WORK = Path(__file__).resolve().parent / "_work" / "cube"
ASSETS = {"blue": "B02", "green": "B03", "red": "B04", "nir08": "B8A", "swir16": "B11", "swir22": "B12"}
ORIGIN = (600000.0, 5100000.0)  # metres, EPSG:32632
RES = 10.0


# ----------------------------------------------------------------------------- data


def _cog(path: Path, array: np.ndarray, nodata) -> None:
    transform = from_origin(*ORIGIN, RES, RES)
    with (
        rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"),
        rasterio.open(
            path,
            "w",
            driver="COG",
            width=array.shape[1],
            height=array.shape[0],
            count=1,
            dtype=array.dtype,
            crs="EPSG:32632",
            transform=transform,
            nodata=nodata,
            compress="deflate",
            predictor=2,
            blocksize=512,
            overview_resampling="average",
            num_threads="all_cpus",
        ) as dst,
    ):
        dst.write(array, 1)


def _scene(size: int, t: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Smooth land reflectance (DN) and an SCL band with a few moving cloud discs."""
    coarse = rng.integers(300, 3500, size=(size // 64 + 1, size // 64 + 1)).astype(np.uint16)
    land = np.kron(coarse, np.ones((64, 64), np.uint16))[:size, :size]
    yy, xx = np.ogrid[:size, :size]
    scl = np.full((size, size), 4, np.uint8)  # vegetation
    for k in range(3):
        cy, cx = (size * (0.2 + 0.3 * k) + 40 * t) % size, (size * (0.7 - 0.2 * k) + 25 * t) % size
        r = size * (0.05 + 0.04 * ((t + k) % 3))
        scl[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 9  # cloud high probability
    return land, scl


def generate(size: int, dates: int, bands: int, out: Path) -> list[pystac.Item]:
    """The benchmark archive (reused when already complete); returns its STAC items."""
    manifest = out / "items.json"
    if manifest.exists():
        return [pystac.Item.from_dict(d) for d in json.loads(manifest.read_text())]
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    items = []
    start = dt.datetime(2022, 3, 1, 10, 20)
    for t in range(dates):
        when = start + dt.timedelta(days=5 * t)
        item_id = f"S2X_MSIL2A_{when:%Y%m%dT%H%M%S}_bench"
        folder = out / item_id
        folder.mkdir()
        land, scl = _scene(size, t, rng)
        assets = {}
        for i, (common, key) in enumerate(list(ASSETS.items())[:bands]):
            _cog(folder / f"{key}.tif", land + np.uint16(150 * i), nodata=0)
            assets[key] = {
                "href": (folder / f"{key}.tif").as_uri(),
                "type": "image/tiff; application=geotiff",
                "roles": ["data"],
                "eo:bands": [{"name": key, "common_name": common}],
                "raster:bands": [{"data_type": "uint16", "nodata": 0, "scale": 0.0001, "offset": 0.0}],
            }
        _cog(folder / "SCL.tif", scl, nodata=0)
        assets["SCL"] = {
            "href": (folder / "SCL.tif").as_uri(),
            "type": "image/tiff; application=geotiff",
            "roles": ["data"],
        }
        x0, y1 = ORIGIN
        bbox_utm = (x0, y1 - size * RES, x0 + size * RES, y1)
        items.append(_item(item_id, when, assets, bbox_utm, size, float((scl == 9).mean() * 100)))
        print(f"  generated {t + 1}/{dates}", end="\r", flush=True)
    manifest.write_text(json.dumps([i.to_dict() for i in items]))
    print()
    return items


def _item(item_id: str, when: dt.datetime, assets: dict, bbox_utm, size: int, cloud: float) -> pystac.Item:
    from pyproj import Transformer

    to_ll = Transformer.from_crs(32632, 4326, always_xy=True)
    lon0, lat0 = to_ll.transform(bbox_utm[0], bbox_utm[1])
    lon1, lat1 = to_ll.transform(bbox_utm[2], bbox_utm[3])
    geometry = {
        "type": "Polygon",
        "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]],
    }
    props = {
        "datetime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eo:cloud_cover": round(cloud, 2),
        "proj:epsg": 32632,
        "s2:processing_baseline": "03.01",
        "platform": "sentinel-2x",
    }
    transform = [RES, 0.0, bbox_utm[0], 0.0, -RES, bbox_utm[3]]
    for a in assets.values():
        a.update({"proj:shape": [size, size], "proj:transform": transform})
    return pystac.Item.from_dict(
        {
            "type": "Feature",
            "stac_version": "1.0.0",
            "id": item_id,
            "collection": "sentinel-2-l2a",
            "geometry": geometry,
            "bbox": [lon0, lat0, lon1, lat1],
            "properties": props,
            "assets": assets,
            "links": [],
            "stac_extensions": [
                "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            ],
        }
    )


# ----------------------------------------------------------------------------- measuring


class PeakRSS:
    """Peak resident memory (bytes) of this process and all its descendants, sampled in a thread."""

    def __init__(self, interval_s: float = 0.1):
        self.interval_s, self.peak = interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


@dataclass
class Run:
    name: str
    seconds: float
    peak_rss_gb: float
    graph_tasks: int
    output_gb: float


def _du(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9


def task_profile(records: list[dict]) -> str:
    """Worker compute seconds per task-name prefix and total transfer seconds, from a Dask task stream."""
    compute: dict[str, float] = {}
    transfer = 0.0
    for r in records:
        key = r["key"][0] if isinstance(r["key"], tuple) else r["key"]
        prefix = str(key).rsplit("-", 1)[0][:40]
        for s in r["startstops"]:
            if s["action"] == "compute":
                compute[prefix] = compute.get(prefix, 0.0) + s["stop"] - s["start"]
            elif s["action"] == "transfer":
                transfer += s["stop"] - s["start"]
    top = sorted(compute.items(), key=lambda kv: -kv[1])[:8]
    return f"    compute {sum(compute.values()):.1f} s, transfers {transfer:.1f} s; " + ", ".join(
        f"{k} {v:.1f} s" for k, v in top
    )


def measure(name: str, build, write, out: Path, profile: bool = False) -> Run:
    """Time ``write(build())`` (graph built inside the timing) with peak RSS of the process tree."""
    from distributed import get_task_stream

    shutil.rmtree(out, ignore_errors=True)
    with PeakRSS() as rss, get_task_stream() if profile else contextlib.nullcontext() as stream:
        t0 = time.perf_counter()
        obj = build()
        tasks = len(obj.__dask_graph__())
        write(obj, out)
        seconds = time.perf_counter() - t0
    run = Run(name, round(seconds, 2), round(rss.peak / 1e9, 3), tasks, round(_du(out), 3))
    print(
        f"  {name:<18} {run.seconds:8.1f} s   peak RSS {run.peak_rss_gb:6.2f} GB   "
        f"graph {run.graph_tasks:7d} tasks   output {run.output_gb:6.2f} GB",
        flush=True,
    )
    if profile:
        print(task_profile(stream.data), flush=True)
    return run


# ----------------------------------------------------------------------------- the three ways


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096, help="pixels per side")
    ap.add_argument("--dates", type=int, default=100)
    ap.add_argument("--bands", type=int, default=6, choices=range(1, 7))
    ap.add_argument(
        "--chunk", type=int, default=1024, help="y/x chunk (Dask and Zarr), a multiple of the 512-px COG tile"
    )
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    ap.add_argument("--threads", type=int, default=1, help="threads per worker process")
    ap.add_argument("--memory-limit", default="1GB", help="per worker")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of all variants back to back (order rotated each round); ratios of the median times",
    )
    ap.add_argument("--quick", action="store_true", help="512 px x 8 dates (a smoke run)")
    ap.add_argument("--no-stackstac", action="store_true")
    ap.add_argument(
        "--task-stream",
        action="store_true",
        help="also print worker compute seconds per task kind and transfer seconds (Dask task stream)",
    )
    ap.add_argument(
        "--variants",
        help="comma-separated subset of the variants to run (odc-plain always runs: "
        "the ratios are to it), e.g. eocube-scaled-int",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.dates = 512, 8

    import odc.stac
    import stackstac
    from odc.geo.geobox import GeoBox

    from pipeline.catalog.search import SensorItems
    from pipeline.cube import build_cube, dask_client
    from pipeline.model import CubeRequest
    from pipeline.store.zarr_store import write_store

    work = WORK / f"s{args.size}-d{args.dates}-b{args.bands}"
    print(f"archive {work} ({args.dates} dates x {args.bands}+1 COGs of {args.size}^2 px)", flush=True)
    t0 = time.perf_counter()
    items = generate(args.size, args.dates, args.bands, work / "cogs")
    print(f"  ready in {time.perf_counter() - t0:.0f} s", flush=True)
    bands = list(ASSETS)[: args.bands]
    assets = [ASSETS[b] for b in bands] + ["SCL"]
    geobox = GeoBox((args.size, args.size), from_origin(*ORIGIN, RES, RES), "EPSG:32632")
    chunks = {"time": 1, "y": args.chunk, "x": args.chunk}
    lon0, lat0, lon1, lat1 = geobox.geographic_extent.boundingbox
    request = CubeRequest(
        bbox=(lon0, lat0, lon1, lat1),
        start=dt.date(2022, 1, 1),
        end=dt.date(2024, 1, 1),
        sensors=["sentinel-2"],
        bands=bands,
        resolution=RES,
        crs="EPSG:32632",
        chunks=chunks,
    )
    packed = request.model_copy(update={"storage": "scaled-int"})
    found = {"sentinel-2": SensorItems("sentinel-2", "sentinel-2-l2a", "sentinel-2-l2a", items)}
    out = WORK / "out"
    variants = {
        "odc-plain": (
            lambda: odc.stac.load(items, bands=assets, geobox=geobox, chunks=chunks, groupby="solar_day"),
            lambda ds, p: ds.to_zarr(p, zarr_format=3, mode="w", consolidated=False),
        ),
        "eocube": (lambda: build_cube(request, found, geobox, bands), lambda ds, p: write_store(ds, p, chunks)),
        "eocube-scaled-int": (
            lambda: build_cube(packed, found, geobox, bands),
            lambda ds, p: write_store(ds, p, chunks),
        ),
    }
    if not args.no_stackstac:
        variants["stackstac-plain"] = (
            lambda: (
                stackstac.stack(
                    items,
                    assets=assets,
                    epsg=32632,
                    resolution=RES,
                    bounds=tuple(geobox.boundingbox),
                    snap_bounds=False,
                    chunksize=(1, 1, args.chunk, args.chunk),
                    dtype=np.dtype("uint16"),
                    fill_value=np.uint16(0),
                    rescale=False,
                    xy_coords="center",
                    properties=False,
                    band_coords=False,
                )
                .to_dataset("band")
                .drop_attrs()
            ),
            lambda ds, p: ds.to_zarr(p, zarr_format=3, mode="w", consolidated=False),
        )
    if args.variants:
        keep = {"odc-plain", *args.variants.split(",")}
        unknown = keep - set(variants)
        if unknown:
            raise SystemExit(f"unknown variant(s) {sorted(unknown)}; choose from {sorted(variants)}")
        variants = {n: v for n, v in variants.items() if n in keep}
    names = list(variants)
    runs: dict[str, list[Run]] = {n: [] for n in names}
    with dask_client(n_workers=args.workers, threads_per_worker=args.threads, memory_limit=args.memory_limit) as client:
        client.run(
            lambda: [__import__(m) for m in ("pipeline.cube", "odc.stac", "stackstac", "rasterio")]
        )  # warm imports
        for r in range(args.repeat):
            order = names[r % len(names) :] + names[: r % len(names)]  # no variant always runs first
            for name in order:
                build, write = variants[name]
                runs[name].append(measure(name, build, write, out / f"{name}.zarr", args.task_stream))
    median = {n: float(np.median([r.seconds for r in rs])) for n, rs in runs.items()}
    ratios = {n: round(median[n] / median["odc-plain"], 3) for n in names[1:]}
    per_round = {
        n: [round(a.seconds / b.seconds, 3) for a, b in zip(runs[n], runs["odc-plain"], strict=True)] for n in names[1:]
    }
    print(f"  median time / odc-plain over {args.repeat} round(s): {ratios}   per round: {per_round}")
    print(
        "  peak RSS (max over rounds): "
        + ", ".join(f"{n} {max(r.peak_rss_gb for r in rs):.2f} GB" for n, rs in runs.items())
    )
    result = {
        "args": vars(args),
        "cpus": psutil.cpu_count(),
        "runs": {n: [asdict(r) for r in rs] for n, rs in runs.items()},
        "median_seconds": median,
        "ratio_to_odc_plain": ratios,
        "ratio_per_round": per_round,
    }
    (WORK / f"result-s{args.size}-d{args.dates}-b{args.bands}.json").write_text(json.dumps(result, indent=2))
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
