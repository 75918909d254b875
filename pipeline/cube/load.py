"""Load one sensor's items onto the request grid as a lazy, cloud-masked reflectance cube.

``load_sensor`` reads the profile's assets with odc-stac or stackstac (see
:mod:`pipeline.cube.readers`: Dask, one step per solar day, native dtype and nodata per
band, COG overviews for coarser grids), decodes the product's QA band into an invalid
mask for the request's policy, converts DN to surface reflectance with each item's own
scale/offset (so the Sentinel-2 baseline-04.00 BOA offset is handled per item) and
returns ``float32`` reflectance with NaN where masked, or, given packed grids
(:mod:`pipeline.cube.packing`), the DN on those grids with the fill value where masked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial

import numpy as np
import pystac
import xarray as xr
from odc.geo.geobox import GeoBox

from pipeline.catalog.search import SensorItems
from pipeline.catalog.signing import Signer
from pipeline.cube.fusion import fuse_private_inputs
from pipeline.cube.packing import PackedGrid, pack_dn
from pipeline.cube.readers import AssetInfo, Engine, item_time, read_assets
from pipeline.cube.reads import ReadLog
from pipeline.sensors import MaskPolicy, SensorProfile, invalid_mask, item_band_specs, load_profile, profile_for_item
from pipeline.sensors.qa import qa_rules

#: Default resampling per variable kind; a request may override per kind or per band.
DEFAULT_RESAMPLING = {"reflectance": "bilinear", "qa": "nearest"}


def resampling_for(profile: SensorProfile, bands: Sequence[str], overrides: Mapping[str, str]) -> dict[str, str]:
    """Resampling method per asset: reflectance bilinear, QA nearest, unless overridden."""
    kinds = {**DEFAULT_RESAMPLING, **overrides}
    out = {profile.band(b).asset: overrides.get(b, kinds["reflectance"]) for b in bands}
    qa = profile.qa[0]
    out[qa.asset] = overrides.get(qa.asset, kinds["qa"])
    if out[qa.asset] not in ("nearest", "mode"):
        raise ValueError(f"QA asset {qa.asset!r} must be resampled with nearest or mode, not {out[qa.asset]!r}")
    return out


def qa_fill(profile: SensorProfile) -> int:
    """The raw value of a fill pixel in the profile's cloud-mask QA asset (its rule's ``fill_value``)."""
    return qa_rules()[profile.qa[0].rule].fill_value


def asset_table(profile: SensorProfile, bands: Sequence[str]) -> dict[str, AssetInfo]:
    """dtype and nodata of every asset read for ``bands`` (plus the cloud-mask QA asset), from the profile.

    The QA asset's nodata is its product's fill code: where no item covers a pixel, or an
    item's QA could not be read, the pixel reads as fill and is masked.
    """
    table = {profile.band(b).asset: AssetInfo(profile.band(b).dtype, profile.band(b).nodata) for b in bands}
    qa = profile.qa[0]
    table[qa.asset] = AssetInfo(qa.dtype, qa_fill(profile))
    return table


def items_profile(found: SensorItems, bands: Sequence[str]) -> SensorProfile:
    """The profile, with the asset keys these items use (Earth Search names them "blue", "scl", ...).

    Items of one search may belong to different products (a Landsat search returns TM/ETM+ and OLI
    scenes); they are read together when the requested bands and the cloud mask have the same asset
    keys in each item's profile (catalogs keying assets by common name), and the profile taken is
    the first that has every requested band. Otherwise (scene files numbered by band, ``SR_B1`` =
    coastal on OLI and blue on ETM+) a ``ValueError`` says which products to request apart.
    """
    if not found.items:
        return load_profile(found.profile)
    profiles = {p.id: p for p in map(profile_for_item, found.items)}
    if len(profiles) == 1:
        return next(iter(profiles.values()))
    keys = [{p.band(b).asset for p in profiles.values() if b in p.common_names} for b in bands]
    if any(len(k) > 1 for k in keys) or len({p.qa[0].asset for p in profiles.values()}) > 1:
        raise ValueError(
            f"the {found.collection!r} items mix products {sorted(profiles)} whose assets for bands "
            f"{list(bands)} are keyed differently; request them apart (e.g. by item id or platform)"
        )
    complete = [p for p in profiles.values() if set(bands) <= set(p.common_names)]
    return complete[0] if complete else next(iter(profiles.values()))


def items_per_time(times: np.ndarray, items: Sequence[pystac.Item]) -> list[list[pystac.Item]]:
    """The items behind each output time step: those within 12 h (the same solar day)."""
    item_times = np.array([item_time(i) for i in items])
    half_day = np.timedelta64(12, "h")
    return [[it for it, t in zip(items, item_times, strict=True) if abs(t - ts) <= half_day] for ts in times]


def scaling_arrays(
    times: np.ndarray, items: Sequence[pystac.Item], profile: SensorProfile, bands: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per band, ``(scale, offset)`` arrays along time from each time step's first item."""
    groups = items_per_time(times, items)
    out = {b: (np.ones(len(times), np.float32), np.zeros(len(times), np.float32)) for b in bands}
    for t, group in enumerate(groups):
        if not group:
            raise RuntimeError(f"no item matches output time {times[t]}")
        specs = {s.common_name: s for s in item_band_specs(group[0], profile)}
        for b in bands:
            out[b][0][t], out[b][1][t] = specs[b].scale, specs[b].offset
    return out


def cloud_cover(groups: Sequence[Sequence[pystac.Item]]) -> np.ndarray:
    """Mean item ``eo:cloud_cover`` (%) of each time step's items; NaN where no item states it."""
    out = np.full(len(groups), np.nan, np.float32)
    for t, group in enumerate(groups):
        covers = [
            float(i.properties["eo:cloud_cover"]) for i in group if i.properties.get("eo:cloud_cover") is not None
        ]
        if covers:
            out[t] = np.mean(covers)
    return out


def _with_nodata(invalid: np.ndarray, *dn: np.ndarray, nodata: Sequence[float | int | None]) -> np.ndarray:
    """``invalid`` or'ed with every band's nodata pixels (a pixel missing in one band is dropped in all)."""
    out = invalid.copy()
    for values, fill in zip(dn, nodata, strict=True):
        if fill is not None:
            out |= values == fill
    return out


def to_reflectance(
    dn: np.ndarray,
    invalid: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    block_info: dict | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``float32`` reflectance ``dn * scale + offset`` with NaN where ``invalid`` (one pass, one buffer).

    ``dn``, ``invalid``: ``(time, y, x)`` blocks; ``scale``, ``offset``: per time step of the whole
    cube, cut to the block's steps with Dask's ``block_info`` (all steps when called directly).
    ``out``: a float32 buffer of ``dn``'s shape to write into.
    """
    t0, t1 = block_info[0]["array-location"][0] if block_info else (0, dn.shape[0])
    out = np.multiply(dn, np.asarray(scale[t0:t1], np.float32)[:, None, None], out=out, dtype=np.float32)
    out += np.asarray(offset[t0:t1], np.float32)[:, None, None]
    out[invalid] = np.nan
    return out


def masked_planes(
    qa_invalid: np.ndarray,
    *dn: np.ndarray,
    nodata: Sequence[float | int | None],
    convert: Sequence[Callable[..., np.ndarray]],
    out_dtype: np.dtype,
    block_info: dict | None = None,
) -> np.ndarray:
    """One chunk of every band, masked and converted, plus the valid mask: ``(band + 1, time, y, x)``.

    ``qa_invalid``: the QA decode of the chunk; ``dn``: each band's raw chunk; a pixel that is
    invalid in the QA or nodata in any band is masked in all. ``convert[i]`` turns band ``i``
    into its output (:func:`to_reflectance` or :func:`~pipeline.cube.packing.pack_dn` with
    their per-band arguments bound) in place; the last plane is the valid mask (0/1 in ``out_dtype``).
    One task per chunk does all of it, so a chunk's reads meet once and nothing else moves
    between workers.
    """
    invalid = _with_nodata(qa_invalid, *dn, nodata=nodata)
    out = np.empty((len(dn) + 1, *invalid.shape), out_dtype)
    for plane, f, values in zip(out[:-1], convert, dn, strict=True):  # out[-1]: the valid mask
        f(values, invalid, block_info=block_info, out=plane)
    np.logical_not(invalid, out=out[-1], casting="unsafe")
    return out


def blockwise(func, *arrays: xr.DataArray, dtype, planes: int | None = None, **kwargs) -> xr.DataArray:
    """``func`` over aligned ``(time, y, x)`` arrays, one Dask task per chunk (eager for numpy input).

    The first array gives dims and coordinates; ``kwargs`` go to every call. With ``planes``
    ``func`` returns ``(planes, time, y, x)`` blocks, on a leading ``plane`` dimension.
    """
    first = arrays[0]
    if first.chunks is None:
        data = func(*(a.values for a in arrays), **kwargs)
    else:
        import dask.array as da

        layout = {} if planes is None else {"new_axis": 0, "chunks": ((planes,), *first.data.chunks)}
        data = da.map_blocks(func, *(a.data for a in arrays), dtype=dtype, **layout, **kwargs)
    dims = first.dims if planes is None else ("plane", *first.dims)
    return xr.DataArray(data, dims=dims, coords=first.coords)


def load_sensor(
    found: SensorItems,
    geobox: GeoBox,
    bands: Sequence[str],
    *,
    policy: MaskPolicy | None = None,
    chunks: dict[str, int] | None = None,
    resampling: Mapping[str, str] | None = None,
    sign: Signer | Callable[[str], str] | None = None,
    log: ReadLog | None = None,
    engine: Engine = "odc-stac",
    packing: dict[str, PackedGrid] | None = None,
) -> xr.Dataset:
    """A lazy cube ``(time, y, x)`` of one sensor: float32 reflectance, NaN where invalid.

    With ``packing`` (per band) the bands are integers on those grids instead, the grid's
    fill value where invalid; the caller attaches the CF attributes (:meth:`PackedGrid.attrs`).

    Variables: one per common band name in ``bands`` and ``valid`` (bool). Coordinates:
    ``time`` (one step per solar day), ``sensor`` and ``cloud_cover`` (item
    ``eo:cloud_cover``, %, along time), ``y``/``x`` of ``geobox``. ``engine`` picks the
    reader (``"odc-stac"`` or ``"stackstac"``); ``chunks`` are the Dask chunks of the read. ``sign`` signs
    each href just before it is read; a failed read masks its pixels and is reported to ``log``.
    """
    profile = items_profile(found, bands)
    resampling = resampling_for(profile, bands, resampling or {})
    qa = profile.qa[0]
    chunks = chunks or {"time": 1, "y": 512, "x": 512}
    raw = read_assets(
        found.items,
        found.collection,
        asset_table(profile, bands),
        geobox,
        chunks=chunks,
        resampling=resampling,
        engine=engine,
        sign=sign,
        log=log,
    )
    invalid = invalid_mask(
        found.collection, qa.asset, raw[qa.asset], policy=policy, resolution_m=float(abs(geobox.resolution.x))
    )
    invalid = invalid | (raw[qa.asset] == qa_fill(profile))  # fill is never data, whatever the policy drops
    specs = [profile.band(b) for b in bands]
    scaling = scaling_arrays(raw.time.values, found.items, profile, bands)
    if packing is None:
        dtype = np.dtype(np.float32)
        convert = [partial(to_reflectance, scale=scaling[b][0], offset=scaling[b][1]) for b in bands]
    else:
        dtype = np.result_type(*(np.dtype(packing[b].dtype) for b in bands))
        convert = [partial(pack_dn, shift=packing[b].shift(scaling[b][1]), fill=packing[b].fill) for b in bands]
    stacked = blockwise(
        masked_planes,
        invalid,
        *(raw[s.asset] for s in specs),
        dtype=dtype,
        planes=len(bands) + 1,
        nodata=[s.nodata for s in specs],
        convert=convert,
        out_dtype=dtype,
    )
    if stacked.chunks is not None:  # a chunk's reads, QA decode and masking in one task (see fusion.py)
        stacked = stacked.copy(data=fuse_private_inputs(stacked.data))
    ds = xr.Dataset(
        {b: stacked[i].astype(packing[b].dtype, copy=False) if packing else stacked[i] for i, b in enumerate(bands)}
    )
    ds["valid"] = stacked[-1].astype(bool)
    ds = ds.assign_coords(
        sensor=("time", np.full(ds.sizes["time"], profile.sensor, dtype=object)),
        cloud_cover=("time", cloud_cover(items_per_time(raw.time.values, found.items))),
    )
    ds.attrs["source_items"] = [i.id for i in found.items]
    return ds
