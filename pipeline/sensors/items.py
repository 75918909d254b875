"""Per-item band values: what one STAC item says about its assets' DNs and grid.

Catalogs disagree on where scaling lives: Planetary Computer Sentinel-2 items carry no
``raster:bands``; Earth Search items carry scale and offset; Landsat and MODIS items carry
scale but (MODIS) not nodata. :func:`item_band_specs` merges the item's ``raster:bands`` over
the profile and applies the Sentinel-2 processing-baseline rule:

* From processing baseline 04.00 (25 January 2022) L2A DNs carry ``BOA_ADD_OFFSET = -1000``:
  ``reflectance = (DN - 1000) / 10000`` (ESA Sentinel-2 L2A Product Specification,
  "Provision of negative radiometric values"; baseline 04.00 announcement).
* ``raster:bands`` offset present: it is the catalog's statement and is used as is
  (Earth Search ``sentinel-2-c1-l2a``: ``-0.1``).
* ``earthsearch:boa_offset_applied: true``: Earth Search already shifted the DNs, so the
  offset is 0 even where the item's ``raster:bands`` still says ``-0.1`` (Earth Search
  ``sentinel-2-l2a``; Element84/earth-search issues #66 and #71).
* Otherwise, baseline >= 04.00: ``offset = -1000 * scale``. The baseline is the item's
  ``s2:processing_baseline``, else its ``processing:version`` (Copernicus Data Space items).

Raster values are read from STAC 1.0 ``raster:bands`` or, in STAC 1.1 form, from
``data_type`` / ``nodata`` / ``raster:scale`` / ``raster:offset`` on the asset or its first
``bands`` entry (see :func:`asset_raster_values`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from pipeline.sensors.profiles import BandSpec, SensorProfile, as_item_dict

#: BOA_ADD_OFFSET of Sentinel-2 L2A from processing baseline 04.00, in DN.
S2_BOA_ADD_OFFSET_DN = -1000
#: First processing baseline whose DNs carry the BOA add-offset.
S2_OFFSET_BASELINE = 4.0


def s2_boa_offset_in_dn(properties: dict[str, Any]) -> bool:
    """Whether an S2 L2A item's DNs still carry the baseline-04.00 BOA add-offset."""
    if properties.get("earthsearch:boa_offset_applied") is True:
        return False
    baseline = properties.get("s2:processing_baseline", properties.get("processing:version"))
    if baseline is None:
        return False
    try:
        return float(baseline) >= S2_OFFSET_BASELINE
    except ValueError as err:
        raise ValueError(f"unreadable Sentinel-2 processing baseline {baseline!r}") from err


#: STAC 1.1 field -> the name used here (and in STAC 1.0 ``raster:bands``).
_STAC11_RASTER_FIELDS = {
    "data_type": "data_type",
    "nodata": "nodata",
    "raster:scale": "scale",
    "raster:offset": "offset",
}


def asset_raster_values(asset: dict[str, Any]) -> dict[str, Any]:
    """``data_type``, ``nodata``, ``scale`` and ``offset`` an asset states, in either STAC version.

    STAC 1.0: the first entry of ``raster:bands``. STAC 1.1: fields on the asset, overridden by
    those of its first ``bands`` entry.
    """
    legacy = (asset.get("raster:bands") or [{}])[0]
    if legacy:
        return {k: legacy[k] for k in _STAC11_RASTER_FIELDS.values() if k in legacy}
    band = (asset.get("bands") or [{}])[0]
    return {name: src[key] for src in (asset, band) for key, name in _STAC11_RASTER_FIELDS.items() if key in src}


def item_band_specs(item: Any, profile: SensorProfile) -> list[BandSpec]:
    """Effective band specs of one item (``pystac.Item`` or dict): the profile bands it has.

    ``asset`` is the item's key for the band (the matching asset-key scheme of the profile
    is picked if the item does not use the profile's keys); ``dtype``, ``nodata``, ``scale``
    and ``offset`` come from the asset's ``raster:bands`` where present, the profile
    otherwise; Sentinel-2 offsets follow the processing-baseline rule of this module.
    """
    d = as_item_dict(item)
    props, assets = d.get("properties", {}), d.get("assets", {})
    profile = profile.matching_asset_keys(set(assets))
    is_s2 = profile.sensor == "sentinel-2"
    harmonised_by_catalog = is_s2 and props.get("earthsearch:boa_offset_applied") is True
    offset_in_dn = is_s2 and s2_boa_offset_in_dn(props)
    out = []
    for spec in profile.bands:
        asset = assets.get(spec.asset)
        if asset is None:
            continue
        rb = asset_raster_values(asset)
        update: dict[str, Any] = {}
        if "data_type" in rb:
            update["dtype"] = rb["data_type"]
        if "nodata" in rb:
            update["nodata"] = rb["nodata"]
        if "scale" in rb:
            update["scale"] = float(rb["scale"])
        scale = update.get("scale", spec.scale)
        if harmonised_by_catalog:
            update["offset"] = 0.0
        elif "offset" in rb:
            update["offset"] = float(rb["offset"])
        elif offset_in_dn:
            update["offset"] = S2_BOA_ADD_OFFSET_DN * scale
        out.append(spec.model_copy(update=update))
    return out


class AssetGrid(BaseModel):
    """An asset's grid as its item states it: CRS (``EPSG:n`` or WKT2), affine, shape (rows, cols)."""

    model_config = ConfigDict(frozen=True)

    crs: str | None
    transform: tuple[float, ...] | None
    shape: tuple[int, int] | None


def asset_grid(item: Any, asset: str) -> AssetGrid:
    """The ``proj`` extension values of an asset, falling back to the item's properties."""
    d = as_item_dict(item)
    if asset not in d.get("assets", {}):
        raise KeyError(f"item {d.get('id')!r} has no asset {asset!r}; assets: {sorted(d.get('assets', {}))}")
    a, p = d["assets"][asset], d.get("properties", {})

    def get(key: str) -> Any:
        return a[key] if a.get(key) is not None else p.get(key)

    epsg, code, wkt = get("proj:epsg"), get("proj:code"), get("proj:wkt2")
    crs = f"EPSG:{int(epsg)}" if epsg is not None else code if code is not None else wkt
    transform, shape = get("proj:transform"), get("proj:shape")
    return AssetGrid(
        crs=crs,
        transform=tuple(float(v) for v in transform) if transform else None,
        shape=(int(shape[0]), int(shape[1])) if shape else None,
    )
