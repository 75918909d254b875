"""A STAC Collection and Item for each store, written beside it.

The Item covers the store's footprint and time span; it uses the datacube extension
(``cube:dimensions`` x/y/time with extents, steps and the reference system,
``cube:variables`` with units) and the projection extension, its ``data`` asset
points at the store (``application/vnd+zarr``, or the Icechunk repository), and one
``derived_from`` link per source item records provenance: per item whose pixels are in
the store (:func:`~pipeline.store.engines.store_sources`), not per item found. Files:
``<stem>.item.json`` and ``<stem>.collection.json`` next to ``<stem>.zarr``.
:func:`validate_stac` checks both against the STAC core schemas bundled with pystac
(offline) and the datacube fields through pystac's extension classes.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pystac
import xarray as xr
from pyproj import CRS, Transformer
from pystac.extensions.datacube import DatacubeExtension, DimensionType, VariableType
from pystac.extensions.projection import ProjectionExtension

from pipeline.catalog.config import load_catalog
from pipeline.redaction import redact
from pipeline.store.engines import Engine, store_sources
from pipeline.store.paths import check_beside

MEDIA_TYPES = {"zarr": "application/vnd+zarr", "icechunk": "application/vnd.icechunk"}


def _footprint(ds: xr.Dataset) -> tuple[list[float], dict]:
    """Lon/lat bbox and polygon of the grid's outer pixel edges (densified, 8 points per side)."""
    crs = CRS.from_wkt(ds["spatial_ref"].attrs["crs_wkt"])
    rx, ry = float(ds.x[1] - ds.x[0]), float(ds.y[1] - ds.y[0])
    x0, x1 = float(ds.x[0]) - rx / 2, float(ds.x[-1]) + rx / 2
    y0, y1 = float(ds.y[0]) - ry / 2, float(ds.y[-1]) + ry / 2
    t = np.linspace(0, 1, 9)
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full(9, x1), x1 - (x1 - x0) * t, np.full(9, x0)])
    ys = np.concatenate([np.full(9, y0), y0 + (y1 - y0) * t, np.full(9, y1), y1 - (y1 - y0) * t])
    lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(xs, ys)
    ring = [[round(a, 7), round(b, 7)] for a, b in zip(lon, lat, strict=True)]
    ring.append(ring[0])
    return [min(lon), min(lat), max(lon), max(lat)], {"type": "Polygon", "coordinates": [ring]}


def source_links(catalog_name: str, sources: dict[str, list[str]]) -> list[pystac.Link]:
    """One ``derived_from`` link per source item: ``<catalog API>/collections/<c>/items/<id>``.

    Local-archive catalogs (served only while a job runs) use ``stac://<catalog name>`` as base.
    """
    catalog = load_catalog(catalog_name)
    base = (catalog.url if catalog.kind == "stac-api" and catalog.url else f"stac://{catalog.name}").rstrip("/")
    links = []
    for sensor, ids in sources.items():
        collection = catalog.collection_for(sensor).collection
        links += [
            pystac.Link(
                "derived_from", f"{base}/collections/{collection}/items/{i}", media_type="application/geo+json", title=i
            )
            for i in ids
        ]
    return links


def store_item(
    ds: xr.Dataset, store_href: str, engine_kind: str, item_id: str, sources: dict[str, list[str]] | None = None
) -> pystac.Item:
    """The STAC Item describing an opened store ``ds`` (datacube + projection extensions).

    ``sources``: the item ids per sensor behind its pixels (``derived_from`` links); default
    the root attribute ``eocube:source_items``.
    """
    bbox, geometry = _footprint(ds)
    times = ds.time.values
    start, end = (
        dt.datetime.fromisoformat(str(np.datetime_as_string(t, "s"))).replace(tzinfo=dt.UTC)
        for t in (times.min(), times.max())
    )
    request = json.loads(ds.attrs.get("eocube:request", "{}"))
    item = pystac.Item(
        item_id,
        geometry,
        bbox,
        None,
        {
            "start_datetime": start.isoformat().replace("+00:00", "Z"),
            "end_datetime": end.isoformat().replace("+00:00", "Z"),
            "title": ds.attrs.get("title", "eocube data cube"),
            "eocube:version": ds.attrs.get("eocube:version"),
            "eocube:sensors": sorted({str(v) for v in ds["sensor"].values}) if "sensor" in ds.coords else [],
        },
    )
    crs = CRS.from_wkt(ds["spatial_ref"].attrs["crs_wkt"])
    epsg = crs.to_epsg()
    res_x, res_y = float(ds.x[1] - ds.x[0]), float(ds.y[1] - ds.y[0])
    cube = DatacubeExtension.ext(item, add_if_missing=True)
    ref = epsg if epsg else crs.to_wkt()
    cube.apply(
        dimensions={
            "x": DatacubeExtensionDim.spatial("x", ds.x, res_x, ref),
            "y": DatacubeExtensionDim.spatial("y", ds.y, res_y, ref),
            "time": DatacubeExtensionDim.temporal(start, end, len(times)),
        },
        variables={
            str(name): DatacubeExtensionDim.variable(var) for name, var in ds.data_vars.items() if name != "spatial_ref"
        },
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.code = f"EPSG:{epsg}" if epsg else None
    proj.wkt2 = None if epsg else crs.to_wkt()
    proj.shape = [ds.sizes["y"], ds.sizes["x"]]
    gt = [float(v) for v in str(ds["spatial_ref"].attrs.get("GeoTransform", "")).split()]
    if len(gt) == 6:
        proj.transform = [gt[1], gt[2], gt[0], gt[4], gt[5], gt[3]]
    item.add_asset(
        "data",
        pystac.Asset(
            store_href,
            title=f"data cube ({engine_kind})",
            media_type=MEDIA_TYPES[engine_kind],
            roles=["data"],
            extra_fields={"eocube:engine": engine_kind},
        ),
    )
    if request.get("catalog"):
        if sources is None:
            sources = json.loads(ds.attrs.get("eocube:source_items", "{}"))
        for link in source_links(request["catalog"], sources):
            item.add_link(link)
    return item


class DatacubeExtensionDim:
    """Builders of ``cube:dimensions`` / ``cube:variables`` entries from xarray objects."""

    @staticmethod
    def spatial(axis: str, coord: xr.DataArray, step: float, ref) -> pystac.extensions.datacube.Dimension:
        from pystac.extensions.datacube import Dimension

        half = abs(step) / 2
        lo, hi = float(coord.min()) - half, float(coord.max()) + half
        return Dimension.from_dict(
            {
                "type": DimensionType.SPATIAL.value,
                "axis": axis,
                "extent": [lo, hi],
                "step": step,
                "reference_system": ref,
            }
        )

    @staticmethod
    def temporal(start: dt.datetime, end: dt.datetime, n: int) -> pystac.extensions.datacube.Dimension:
        from pystac.extensions.datacube import Dimension

        iso = [t.isoformat().replace("+00:00", "Z") for t in (start, end)]
        return Dimension.from_dict(
            {
                "type": DimensionType.TEMPORAL.value,
                "extent": iso,
                "step": None,
                "description": f"{n} acquisition time steps, irregular",
            }
        )

    @staticmethod
    def variable(var: xr.DataArray) -> pystac.extensions.datacube.Variable:
        from pystac.extensions.datacube import Variable

        d = {
            "type": VariableType.DATA.value,
            "dimensions": list(var.dims),
            "description": var.attrs.get("long_name", var.name),
        }
        if var.attrs.get("units"):
            d["unit"] = var.attrs["units"]
        return Variable.from_dict(d)


def store_collection(item: pystac.Item, description: str) -> pystac.Collection:
    """A one-item Collection with the item's extents and the same datacube summary."""
    start = dt.datetime.fromisoformat(item.properties["start_datetime"].replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(item.properties["end_datetime"].replace("Z", "+00:00"))
    if item.bbox is None:
        raise ValueError(f"item {item.id} has no bbox")
    collection = pystac.Collection(
        f"{item.id}-collection",
        description,
        pystac.Extent(pystac.SpatialExtent([item.bbox]), pystac.TemporalExtent([[start, end]])),
        license="other",
        title=item.properties.get("title"),
    )
    DatacubeExtension.ext(collection, add_if_missing=True).apply(
        dimensions=DatacubeExtension.ext(item).dimensions, variables=DatacubeExtension.ext(item).variables
    )
    return collection


def stac_paths(store: Path | str) -> tuple[Path, Path]:
    """``(<stem>.item.json, <stem>.collection.json)`` beside the store."""
    store = Path(store)
    stem = store.name.removesuffix(".zarr").removesuffix(".icechunk")
    return store.with_name(f"{stem}.item.json"), store.with_name(f"{stem}.collection.json")


def write_stac(engine: Engine) -> Path:
    """Write the Item and Collection of the store behind ``engine``; returns the Item's path."""
    item_path, collection_path = stac_paths(engine.path)
    ds = engine.open()
    stem = item_path.name.removesuffix(".item.json")
    item = store_item(ds, f"./{engine.path.name}", engine.kind, stem, store_sources(engine))
    add_product_assets(item, engine)
    collection = store_collection(item, f"eocube store {engine.path.name}: {ds.attrs.get('title', '')}")
    item.collection_id = collection.id
    item_d = item.to_dict(include_self_link=False)
    coll_d = collection.to_dict(include_self_link=False)
    json_link = {"type": "application/json"}
    item_d["links"] = [lk for lk in item_d["links"] if lk["rel"] == "derived_from"] + [
        {"rel": rel, "href": f"./{collection_path.name}", **json_link} for rel in ("collection", "parent", "root")
    ]
    coll_d["eocube:version"] = item.properties.get("eocube:version")
    check_beside([item_path, collection_path])
    coll_d["links"] = [
        {"rel": "item", "href": f"./{item_path.name}", "type": "application/geo+json"},
        {"rel": "root", "href": f"./{collection_path.name}", **json_link},
    ]
    item_path.write_text(redact(json.dumps(item_d, indent=1)))
    collection_path.write_text(redact(json.dumps(coll_d, indent=1)))
    return item_path


#: the derived products a store may hold, as child groups beside its cube
PRODUCT_GROUPS = ("composite", "embeddings", "uncertainty", "video")
#: a product's attributes that say what made it, carried into its STAC asset
PROVENANCE_ATTRS = (
    "model",
    "weights_sha256",
    "eocube:section",
    "eocube:artefact",
    "eocube:units",
    "eocube:not_computed",
    "eocube:failed_items",
)


def add_product_assets(item: pystac.Item, engine: Engine) -> None:
    """One asset per derived product of the store (a child group), with its variables and provenance."""
    item.assets["data"].extra_fields["eocube:group"] = "cube"
    for name in PRODUCT_GROUPS:
        group = engine.open_group(name)
        if group is None:
            continue
        fields = {
            "eocube:group": name,
            "eocube:variables": sorted(str(v) for v in group.data_vars),
            **{k: group.attrs[k] for k in PROVENANCE_ATTRS if k in group.attrs},
        }
        item.add_asset(
            name,
            pystac.Asset(
                f"./{engine.path.name}/{name}",
                title=f"{name} ({engine.kind} group)",
                media_type=MEDIA_TYPES[engine.kind],
                roles=["data"],
                extra_fields=fields,
            ),
        )


def validate_stac(item_path: Path | str) -> list[str]:
    """Validate the Item and Collection beside a store; returns the schema URIs checked.

    Core schemas are checked with pystac's bundled copies (no network); the datacube
    fields are read back through :class:`DatacubeExtension` (types and required keys).
    Raises ``pystac.errors.STACValidationError`` or ``ValueError`` on problems.
    """
    from pystac.validation import RegisteredValidator
    from pystac.validation.stac_validator import JsonSchemaSTACValidator

    item_path = Path(item_path)
    collection_path = item_path.with_name(item_path.name.replace(".item.json", ".collection.json"))
    validator = RegisteredValidator.get_validator()
    if not isinstance(validator, JsonSchemaSTACValidator):
        validator = JsonSchemaSTACValidator()
    checked = []
    for path, kind in ((item_path, pystac.STACObjectType.ITEM), (collection_path, pystac.STACObjectType.COLLECTION)):
        d = json.loads(path.read_text())
        checked.append(validator.validate_core(d, kind, d["stac_version"], str(path)))
        obj = pystac.read_dict(d, href=str(path))
        if isinstance(obj, pystac.Item):  # a branch per type: ext() takes one of them, not their union
            item_ext = DatacubeExtension.ext(obj)
            dims, variables = item_ext.dimensions, item_ext.variables
        elif isinstance(obj, pystac.Collection):
            collection_ext = DatacubeExtension.ext(obj)
            dims, variables = collection_ext.dimensions, collection_ext.variables
        else:
            raise ValueError(f"{path}: not a STAC item or collection")
        if not dims or any(d.dim_type is None for d in dims.values()):
            raise ValueError(f"{path}: cube:dimensions missing or without types")
        for name, var in (variables or {}).items():
            if not var.dimensions or set(var.dimensions) - set(dims):
                raise ValueError(
                    f"{path}: cube:variables[{name}] has dimensions {var.dimensions} not in cube:dimensions"
                )
    return [c for c in checked if c]
