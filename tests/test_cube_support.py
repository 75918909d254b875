"""Helpers shared by the cube tests (no tests here): small requests over the demo archive."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pystac

from pipeline.catalog.config import load_catalog
from pipeline.catalog.search import SensorItems
from pipeline.model import CubeRequest

#: A 1 km x 1 km corner of the demo AOI, in degrees.
SMALL_BBOX = (10.530, 45.515, 10.543, 45.524)


def small_request(**fields) -> CubeRequest:
    """A small request over the demo archive: 1 km^2, March 2022, 20 m, Sentinel-2 + Landsat."""
    base = dict(
        catalog="demo",
        bbox=SMALL_BBOX,
        start=dt.date(2022, 3, 1),
        end=dt.date(2022, 3, 31),
        sensors=["sentinel-2", "landsat"],
        resolution=20.0,
    )
    return CubeRequest(**{**base, **fields})


def demo_found(archive: Path, request: CubeRequest) -> dict[str, SensorItems]:
    """The archive's items per requested sensor whose time falls in the request's dates (inclusive)."""
    out = {}
    catalog = load_catalog("demo")
    for sensor in request.sensors:
        collection = catalog.collection_for(sensor).collection
        features = json.loads((archive / "stac" / collection / "items.json").read_text())["features"]
        items = []
        for f in features:
            p = f["properties"]
            day = dt.date.fromisoformat((p.get("datetime") or p["start_datetime"])[:10])
            if request.start <= day <= request.end:
                items.append(pystac.Item.from_dict(f))
        out[sensor] = SensorItems(sensor, collection, catalog.profile_for(sensor), items)
    return out


def with_hrefs(found: dict[str, SensorItems], patch) -> dict[str, SensorItems]:
    """A copy of ``found`` whose asset hrefs are rewritten by ``patch(href)``."""
    out = {}
    for sensor, s in found.items():
        items = []
        for item in s.items:
            clone = item.clone()
            for asset in clone.assets.values():
                asset.href = patch(asset.href)
            items.append(clone)
        out[sensor] = SensorItems(s.sensor, s.collection, s.profile, items)
    return out


def archive_copy(src: Path, dst: Path, edit=None, catalog: dict | None = None) -> Path:
    """A copy of the demo archive at ``dst`` that shares its COGs (``data/`` is a link) and whose STAC
    items pass through ``edit(collection_id, feature) -> feature | None`` (None drops it).

    With ``catalog`` (fields over the demo catalog's), ``dst/catalog.yaml`` describes it, e.g. to
    sign its hrefs; the returned path is the archive folder (pass it as ``archive`` / ``EOCUBE_DEMO_ARCHIVE``).
    """
    import shutil

    import yaml

    dst.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.json", "labels.csv"):
        shutil.copy(src / name, dst / name)
    for name in ("data", "truth"):
        (dst / name).symlink_to(src / name, target_is_directory=True)
    for folder in sorted((src / "stac").iterdir()):
        out = dst / "stac" / folder.name
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / "collection.json", out / "collection.json")
        doc = json.loads((folder / "items.json").read_text())
        if edit is not None:
            doc["features"] = [f for f in (edit(folder.name, f) for f in doc["features"]) if f is not None]
        (out / "items.json").write_text(json.dumps(doc))
    if catalog is not None:
        from pipeline.catalog.config import load_catalog

        base = load_catalog("demo").model_dump(mode="json")
        (dst / "catalog.yaml").write_text(yaml.safe_dump({**base, **catalog}))
    return dst
