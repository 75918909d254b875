"""Read raw asset pixels (DN) of STAC items onto a GeoBox: odc-stac (default) or stackstac.

Both engines return the same thing: an ``xarray.Dataset`` with one variable per asset
key, dims ``(time, y, x)``, the asset's own dtype with its nodata value where nothing
was observed (no float64 promotion; ``attrs["nodata"]`` where the asset has one), one time step per solar day (items of the same
solar day fused, first valid pixel wins), Dask chunks as requested, and the GeoBox's
``y``/``x`` pixel-centre coordinates. Resampling is chosen per asset. Both read COG
overviews when the target grid is coarser than the asset (odc-stac picks the overview
level itself; stackstac through GDAL's warper).

Hrefs are signed just before each read, and a read that fails leaves that asset's pixels of
that chunk at the fill value and is reported to ``log``, not raised (:mod:`pipeline.cube.reads`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import pystac
import xarray as xr
from odc.geo.geobox import GeoBox

from pipeline.catalog.search import solar_day
from pipeline.catalog.signing import Signer
from pipeline.cube.gdal_env import stackstac_env
from pipeline.cube.reads import ReadLog, SignedReadDriver, as_signer, stackstac_reader

Engine = Literal["odc-stac", "stackstac"]
ENGINES: tuple[str, ...] = ("odc-stac", "stackstac")


class AssetInfo(NamedTuple):
    """dtype and nodata of one asset; ``nodata`` is ``None`` for QA bands without one."""

    dtype: str
    nodata: float | int | None


def item_time(item: pystac.Item) -> np.datetime64:
    """Acquisition time of an item (``datetime``, else ``start_datetime``) as ``datetime64[ns]``."""
    p = item.properties
    return np.datetime64(str(p.get("datetime") or p.get("start_datetime")).replace("Z", "")[:26], "ns")


def read_assets(
    items: Sequence[pystac.Item],
    collection: str,
    assets: dict[str, AssetInfo],
    geobox: GeoBox,
    *,
    chunks: dict[str, int],
    resampling: dict[str, str],
    engine: Engine = "odc-stac",
    sign: Signer | Callable[[str], str] | None = None,
    log: ReadLog | None = None,
) -> xr.Dataset:
    """Lazy raw DN of ``assets`` of ``items`` on ``geobox``, one step per solar day (see module doc).

    ``sign`` signs each href just before it is read; failed reads are reported to ``log``.
    """
    signer = as_signer(sign)
    log = log if log is not None else ReadLog()
    log.add_items(items, assets)
    if engine == "odc-stac":
        return _read_odc(items, collection, assets, geobox, chunks, resampling, SignedReadDriver(signer, log.topic))
    if engine == "stackstac":
        return _read_stackstac(items, assets, geobox, chunks, resampling, stackstac_reader(signer, log.topic))
    raise ValueError(f"unknown engine {engine!r}; choose one of {list(ENGINES)}")


def _read_odc(items, collection, assets, geobox, chunks, resampling, driver: SignedReadDriver) -> xr.Dataset:
    import odc.stac

    cfg = {collection: {"assets": {a: {"data_type": i.dtype, "nodata": i.nodata} for a, i in assets.items()}}}
    return odc.stac.load(
        items,
        bands=list(assets),
        geobox=geobox,
        groupby="solar_day",
        chunks=chunks,
        resampling=resampling,
        stac_cfg=cfg,
        driver=driver,
    )


def _stackstac_epsg(geobox: GeoBox) -> int:
    crs = geobox.crs
    if crs is None:
        raise ValueError("the stackstac engine needs an output CRS; the grid has none")
    epsg = crs.epsg
    if epsg is None:
        raise ValueError(f"the stackstac engine needs an EPSG-coded output CRS, not {crs.to_wkt()[:60]}...")
    return int(epsg)


def _read_stackstac(items, assets, geobox, chunks, resampling, reader: type) -> xr.Dataset:
    import stackstac
    from rasterio.enums import Resampling

    order = sorted(range(len(items)), key=lambda i: (item_time(items[i]), items[i].id))
    items = [items[i] for i in order]
    dicts = [i.to_dict(transform_hrefs=False) for i in items]
    times = np.array([item_time(i) for i in items])
    days = np.array([np.datetime64(solar_day(i), "D") for i in items])
    bounds = tuple(geobox.boundingbox)
    env = stackstac_env()
    out = {}
    for asset, info in assets.items():
        fill = info.nodata if info.nodata is not None else 0
        arr = (
            stackstac.stack(
                dicts,
                assets=[asset],
                epsg=_stackstac_epsg(geobox),
                resolution=abs(geobox.resolution.x),
                bounds=bounds,
                snap_bounds=False,
                resampling=Resampling[resampling[asset]],
                chunksize=(chunks.get("time", 1), 1, chunks.get("y", 512), chunks.get("x", 512)),
                dtype=np.dtype(info.dtype),
                fill_value=np.dtype(info.dtype).type(fill),
                rescale=False,
                sortby_date=False,
                xy_coords="center",
                properties=False,
                band_coords=False,
                gdal_env=env,
                errors_as_nodata=(),
                reader=reader,
            )
            .isel(band=0, drop=True)
            .reset_coords(drop=True)
        )
        arr = arr.assign_coords(time=times, y=geobox.coords["y"].values, x=geobox.coords["x"].values)
        arr.attrs = {"nodata": info.nodata} if info.nodata is not None else {}  # as odc-stac labels it
        out[asset] = _fuse_solar_days(arr, days, fill)
    return xr.Dataset(out).odc.assign_crs(geobox.crs)


def _fuse_solar_days(arr: xr.DataArray, days: np.ndarray, fill) -> xr.DataArray:
    """One step per solar day: the first non-fill value of the day's items (time of the first)."""
    import stackstac

    _, first = np.unique(days, return_index=True)
    if len(first) == arr.sizes["time"]:
        return arr
    steps = [
        stackstac.mosaic(arr.isel(time=np.flatnonzero(days == days[i])), dim="time", reverse=True, nodata=fill)
        for i in first
    ]
    return xr.concat(steps, dim="time").assign_coords(time=arr.time.values[first])
