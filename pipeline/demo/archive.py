"""Generate the embedded demo archive: COGs + STAC Items for three real collections.

``generate_archive(out_dir)`` writes, deterministically from a seed:

* ``sentinel-2-l2a`` (Planetary Computer layout: B01-B12, B8A at 10/20/60 m, uint16,
  ``SCL``; processing baseline 03.01 before 2022-01-25 and 04.00 after, whose DNs
  carry the +1000 BOA add-offset),
* ``landsat-c2-l2`` (Landsat 8 and 9 Collection 2 Level-2: SR bands with
  ``raster:bands`` scale 2.75e-5 / offset -0.2, ``qa_pixel``),
* ``modis-09A1-061`` (MOD09A1 8-day 500 m composites on the sinusoidal grid,
  ``sur_refl_b01..b07`` int16, ``sur_refl_state_500m``),

over one small area near Lake Garda (UTM 32N) from 2021-10-01 to 2022-09-30, with
moving clouds and shadows, all-cloudy and missing dates, winter snow and a lake.
The truth behind every QA band is kept in ``truth/<item id>.npz`` so tests can score
the masks.

Layout of ``out_dir``::

    data/<collection>/<item id>/<asset>.tif   Cloud-Optimized GeoTIFFs
    stac/<collection>/collection.json         STAC Collection
    stac/<collection>/items.json              FeatureCollection of the Items
    truth/<item id>.npz                       truth (uint8 classes) + cloud thickness
    labels.csv                                labelled points (lon, lat, date, vegetation cover %)
    manifest.json                             seed, site, counts
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyproj
import rasterio
from rasterio.transform import from_origin

from pipeline.demo.landscape import CLASSES, TRUTH_NODATA, Landscape, Sky, observe
from pipeline.demo.qa_encoding import encode_landsat_qa_pixel, encode_modis_state_500m, encode_s2_scl
from pipeline.sensors import BandSpec, load_profile

ARCHIVE_VERSION = "5"
UTM_EPSG = 32632
MODIS_SINUSOIDAL = "+proj=sinu +lon_0=0 +x_0=0 +y_0=0 +R=6371007.181 +units=m +no_defs"
MODIS_TILE_SIZE = 1111950.5197665233  # metres
MODIS_PIXEL = MODIS_TILE_SIZE / 2400
MODIS_ORIGIN = (-20015109.355798, 10007554.677899)  # upper-left of tile h00v00


@dataclass(frozen=True)
class DemoSite:
    """Where and when the demo archive is; grids are aligned like the real products'."""

    start: dt.date = dt.date(2021, 10, 1)
    end: dt.date = dt.date(2022, 9, 30)
    # Sentinel-2 scene (60 m aligned), metres in EPSG:32632.
    s2_bounds: tuple[float, float, float, float] = (618780.0, 5040840.0, 621180.0, 5043240.0)
    # Landsat scene: 30 m pixels with corners on 15 mod 30, as the WRS-2 L2 grids.
    landsat_bounds: tuple[float, float, float, float] = (618615.0, 5040735.0, 621315.0, 5043435.0)
    # The default area of interest: 2 km x 2 km inside both scenes.
    aoi_utm: tuple[float, float, float, float] = (619000.0, 5041000.0, 621000.0, 5043000.0)
    modis_pixels: int = 24
    baseline_change: dt.date = dt.date(2022, 1, 25)

    def aoi_lonlat(self) -> tuple[float, float, float, float]:
        """The default AOI as (min_lon, min_lat, max_lon, max_lat), inside the UTM square."""
        to_ll = pyproj.Transformer.from_crs(UTM_EPSG, 4326, always_xy=True)
        x0, y0, x1, y1 = self.aoi_utm
        lons, lats = to_ll.transform([x0, x1, x0, x1], [y0, y0, y1, y1])
        # shrink to the inscribed lon/lat box so the AOI stays inside the scenes
        return (
            round(max(lons[0], lons[2]), 5),
            round(max(lats[0], lats[1]), 5),
            round(min(lons[1], lons[3]), 5),
            round(min(lats[2], lats[3]), 5),
        )

    def landscape_bounds(self) -> tuple[float, float, float, float]:
        cx, cy = (self.s2_bounds[0] + self.s2_bounds[2]) / 2, (self.s2_bounds[1] + self.s2_bounds[3]) / 2
        return (cx - 7000, cy - 7000, cx + 7000, cy + 7000)


DEMO_SITE = DemoSite()


@dataclass
class Acquisition:
    """One scene to write: an item id, its time and its sky."""

    collection: str
    item_id: str
    time: dt.datetime
    cloud_cover: float
    properties: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- grids


def pixel_centres(bounds: tuple[float, float, float, float], res: float) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates (x, y) of pixel centres, each ``(rows, cols)``, north-up."""
    x0, y0, x1, y1 = bounds
    cols = int(round((x1 - x0) / res))
    rows = int(round((y1 - y0) / res))
    xs = x0 + (np.arange(cols) + 0.5) * res
    ys = y1 - (np.arange(rows) + 0.5) * res
    return np.meshgrid(xs, ys)


def _modis_window(site: DemoSite) -> tuple[tuple[float, float, float, float], int, int]:
    """Sinusoidal bounds of a ``modis_pixels`` square on the global MODIS grid, and (h, v)."""
    to_sin = pyproj.Transformer.from_crs(UTM_EPSG, MODIS_SINUSOIDAL, always_xy=True)
    cx, cy = to_sin.transform((site.aoi_utm[0] + site.aoi_utm[2]) / 2, (site.aoi_utm[1] + site.aoi_utm[3]) / 2)
    col = int((cx - MODIS_ORIGIN[0]) // MODIS_PIXEL) - site.modis_pixels // 2
    row = int((MODIS_ORIGIN[1] - cy) // MODIS_PIXEL) - site.modis_pixels // 2
    x0 = MODIS_ORIGIN[0] + col * MODIS_PIXEL
    y1 = MODIS_ORIGIN[1] - row * MODIS_PIXEL
    n = site.modis_pixels
    return (x0, y1 - n * MODIS_PIXEL, x0 + n * MODIS_PIXEL, y1), col // 2400, row // 2400


# --------------------------------------------------------------------------- schedules


def _cloud_cover_draw(rng: np.random.Generator) -> float:
    """Scene cloud cover: often clear, sometimes partly cloudy, about 8 % all-cloudy."""
    u = rng.random()
    if u < 0.08:
        return 1.0
    if u < 0.35:
        return 0.0
    return float(rng.uniform(0.05, 0.6))


def _dates(start: dt.date, end: dt.date, first: dt.date, step_days: int) -> Iterator[dt.date]:
    d = first
    while d <= end:
        if d >= start:
            yield d
        d += dt.timedelta(days=step_days)


def sentinel2_schedule(site: DemoSite, rng: np.random.Generator) -> list[Acquisition]:
    out = []
    for i, d in enumerate(_dates(site.start, site.end, dt.date(2021, 10, 2), 5)):
        if rng.random() < 0.06:  # missing acquisition (not in the catalog)
            continue
        sat = "A" if i % 2 == 0 else "B"
        t = dt.datetime.combine(d, dt.time(10, 10, 31), tzinfo=dt.UTC)
        baseline = "04.00" if d >= site.baseline_change else "03.01"
        gen = t + dt.timedelta(hours=3)
        item_id = f"S2{sat}_MSIL2A_{t:%Y%m%dT%H%M%S}_R022_T32TPR_{gen:%Y%m%dT%H%M%S}"
        props = {
            "platform": f"Sentinel-2{sat}",
            "constellation": "Sentinel 2",
            "instruments": ["msi"],
            "s2:mgrs_tile": "32TPR",
            "s2:processing_baseline": baseline,
            "s2:product_type": "S2MSI2A",
            "s2:generation_time": gen.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
            "sat:relative_orbit": 22,
            "sat:orbit_state": "descending",
            "s2:mean_solar_zenith": 45.0,
            "s2:mean_solar_azimuth": 160.0,
        }
        out.append(Acquisition("sentinel-2-l2a", item_id, t, _cloud_cover_draw(rng), props))
    return out


def landsat_schedule(site: DemoSite, rng: np.random.Generator) -> list[Acquisition]:
    out = []
    for platform, prefix, first in (
        ("landsat-8", "LC08", dt.date(2021, 10, 5)),
        ("landsat-9", "LC09", dt.date(2022, 1, 13)),
    ):
        for d in _dates(site.start, site.end, first, 16):
            if rng.random() < 0.06:
                continue
            t = dt.datetime.combine(d, dt.time(9, 58, 12), tzinfo=dt.UTC)
            processed = d + dt.timedelta(days=11)
            item_id = f"{prefix}_L2SP_193028_{d:%Y%m%d}_02_T1"
            props = {
                "platform": platform,
                "instruments": ["oli", "tirs"],
                "landsat:wrs_path": "193",
                "landsat:wrs_row": "028",
                "landsat:wrs_type": "2",
                "landsat:collection_category": "T1",
                "landsat:collection_number": "02",
                "landsat:correction": "L2SP",
                "gsd": 30,
                "landsat:scene_id": f"{prefix[:2]}{prefix[3]}1930282{d:%j}LGN00".replace("L8", "C8"),
                "view:off_nadir": 0,
                "view:sun_elevation": 40.0,
                "view:sun_azimuth": 150.0,
                "created": f"{processed:%Y-%m-%d}T00:00:00Z",
            }
            out.append(Acquisition("landsat-c2-l2", item_id, t, _cloud_cover_draw(rng), props))
    return sorted(out, key=lambda a: a.time)


def modis_schedule(site: DemoSite, rng: np.random.Generator, h: int, v: int) -> list[Acquisition]:
    out = []
    for year in (site.start.year, site.end.year):
        for doy in range(1, 366, 8):
            d0 = dt.date(year, 1, 1) + dt.timedelta(days=doy - 1)
            d1 = min(d0 + dt.timedelta(days=7), dt.date(year, 12, 31))
            if d0 < site.start or d0 > site.end:
                continue
            produced = d1 + dt.timedelta(days=9)
            item_id = f"MOD09A1.A{year}{doy:03d}.h{h:02d}v{v:02d}.061.{produced:%Y%j}031512"
            t = dt.datetime.combine(d0, dt.time(0), tzinfo=dt.UTC)
            props = {
                "start_datetime": f"{d0:%Y-%m-%d}T00:00:00Z",
                "end_datetime": f"{d1:%Y-%m-%d}T23:59:59Z",
                "platform": "terra",
                "instruments": ["modis"],
                "modis:horizontal-tile": h,
                "modis:vertical-tile": v,
                "modis:tile-id": f"51{h:03d}{v:03d}",
                "created": f"{produced:%Y-%m-%d}T03:15:12Z",
            }
            # 8-day composites pick the clearest day: clouds are rarer and smaller.
            cover = 0.0 if rng.random() < 0.6 else float(rng.uniform(0.05, 0.4))
            out.append(Acquisition("modis-09A1-061", item_id, t, cover, props))
    return out


# --------------------------------------------------------------------------- writers


def _write_cog(path: Path, array: np.ndarray, crs, transform, nodata) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blocksize = 128
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=array.shape[1],
        height=array.shape[0],
        count=1,
        dtype=array.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        compress="deflate",
        predictor=2,
        blocksize=blocksize,
        overview_resampling="nearest",
    ) as dst:
        dst.write(array, 1)


def _nodata_wedge(x: np.ndarray, y: np.ndarray, bounds, rng: np.random.Generator, share: float) -> np.ndarray:
    """Mask of a swath-edge wedge (True = outside the swath) for ``share`` of scenes, else empty."""
    if rng.random() >= share:
        return np.zeros(x.shape, dtype=bool)
    x0, y0, x1, y1 = bounds
    frac = rng.uniform(0.15, 0.35)
    return (x - x0) + (y1 - y) * 0.4 > (x1 - x0) * (1.4 - frac)


def _asset_common(spec: BandSpec, href: Path, shape: tuple[int, int], transform) -> dict:
    return {
        "href": href.resolve().as_uri(),
        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
        "roles": ["data"],
        "gsd": spec.resolution_m,
        "proj:shape": list(shape),
        "proj:transform": list(transform)[:6],
    }


def _band_asset(spec: BandSpec, name: str, href: Path, shape, transform, raster_bands: bool) -> dict:
    asset = _asset_common(spec, href, shape, transform)
    asset["roles"] = ["data", "reflectance"]
    asset["eo:bands"] = [
        {"name": name, "common_name": spec.common_name, "center_wavelength": spec.center_wavelength_um}
    ]
    if raster_bands:
        rb = {
            "data_type": spec.dtype,
            "spatial_resolution": spec.resolution_m,
            "scale": spec.scale,
            "offset": spec.offset,
        }
        if spec.nodata is not None:
            rb["nodata"] = spec.nodata
        asset["raster:bands"] = [rb]
    return asset


def _feature(
    acq: Acquisition, geometry_ll: dict, bbox_ll: list[float], assets: dict, proj: dict, stac_extensions: list[str]
) -> dict:
    props = {
        "datetime": None if "start_datetime" in acq.properties else acq.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "eo:cloud_cover": round(acq.cloud_cover * 100, 2),
        **proj,
        **acq.properties,
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": stac_extensions,
        "id": acq.item_id,
        "collection": acq.collection,
        "geometry": geometry_ll,
        "bbox": bbox_ll,
        "properties": props,
        "assets": assets,
        "links": [],
    }


def _footprint(bounds, crs) -> tuple[dict, list[float]]:
    to_ll = pyproj.Transformer.from_crs(crs, 4326, always_xy=True)
    x0, y0, x1, y1 = bounds
    xs = [x0, x1, x1, x0, x0]
    ys = [y0, y0, y1, y1, y0]
    lons, lats = to_ll.transform(xs, ys)
    ring = [[round(a, 6), round(b, 6)] for a, b in zip(lons, lats, strict=True)]
    return {"type": "Polygon", "coordinates": [ring]}, [min(lons), min(lats), max(lons), max(lats)]


_EXT = {
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "proj": "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
}


class _Writer:
    """Writes one collection's scenes; shared by the three products."""

    def __init__(self, out: Path, site: DemoSite, landscape: Landscape, rng: np.random.Generator):
        self.out, self.site, self.landscape, self.rng = out, site, landscape, rng

    def _observe_grid(
        self, x: np.ndarray, y: np.ndarray, wavelengths_um: list[float], acq: Acquisition, sky: Sky
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the sensor sees on a grid of pixel centres: reflectance, truth classes, cloud thickness."""
        surface, snow = self.landscape.surface_reflectance(x, y, wavelengths_um, acq.time.date())
        thick, shadow = sky.thickness(x, y), sky.shadow(x, y)
        water = self.landscape.class_index(x, y) == CLASSES.index("water")
        seen, truth = observe(surface, snow, water, thick, shadow, sky.cirrus, wavelengths_um)
        return seen, truth, thick

    def _href(self, acq: Acquisition, asset: str) -> Path:
        return self.out / "data" / acq.collection / acq.item_id / f"{asset}.tif"

    def _sky(self, acq: Acquisition) -> Sky:
        return Sky.generate(self.rng, self.site.landscape_bounds(), acq.cloud_cover)

    def _save_truth(self, acq: Acquisition, truth: np.ndarray, thickness: np.ndarray, transform, crs: str) -> None:
        path = self.out / "truth" / f"{acq.item_id}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            truth=truth,
            thickness=thickness.astype(np.float32),
            transform=np.array(list(transform)[:6]),
            crs=np.array(crs),
        )

    # ---- Sentinel-2
    def sentinel2(self, acq: Acquisition) -> dict:
        profile = load_profile("sentinel-2-l2a")
        sky, bounds = self._sky(acq), self.site.s2_bounds
        add_offset = 1000 if acq.properties["s2:processing_baseline"] >= "04.00" else 0
        crs = f"EPSG:{UTM_EPSG}"
        assets: dict = {}
        by_res: dict[float, list[BandSpec]] = {}
        for spec in profile.bands:
            by_res.setdefault(spec.resolution_m, []).append(spec)
        wedge_seed = int(self.rng.integers(2**31))
        for res, specs in sorted(by_res.items()):
            x, y = pixel_centres(bounds, res)
            seen, truth, thick = self._observe_grid(x, y, [s.center_wavelength_um for s in specs], acq, sky)
            nodata = _nodata_wedge(x, y, bounds, np.random.default_rng(wedge_seed), 0.12)
            transform = from_origin(bounds[0], bounds[3], res, res)
            noise = self.rng.normal(0, 0.002, seen.shape)
            for spec, band in zip(specs, seen + noise, strict=True):
                dn = np.clip(np.round(band / spec.scale) + add_offset, 1, 65535).astype(np.uint16)
                dn[nodata] = 0
                href = self._href(acq, spec.asset)
                _write_cog(href, dn, crs, transform, 0)
                asset = _band_asset(spec, spec.asset, href, dn.shape, transform, raster_bands=False)
                asset["title"] = f"Band {spec.asset[1:]} - {spec.common_name} - {int(res)}m"
                assets[spec.asset] = asset
            qa = profile.qa[0]
            if res == qa.resolution_m:
                truth[nodata] = TRUTH_NODATA
                ndvi = _ndvi(self.landscape, x, y, acq.time.date())
                scl = encode_s2_scl(truth, thick, ndvi > 0.4)
                href = self._href(acq, qa.asset)
                _write_cog(href, scl, crs, transform, 0)
                assets[qa.asset] = {
                    **_asset_common(spec, href, scl.shape, transform),
                    "title": "Scene classfication map (SCL)",
                }
                self._save_truth(acq, truth, thick, transform, crs)
        geom, bbox = _footprint(bounds, crs)
        proj = {"proj:epsg": UTM_EPSG}
        return _feature(acq, geom, bbox, assets, proj, [_EXT["eo"], _EXT["proj"]])

    # ---- Landsat
    def landsat(self, acq: Acquisition) -> dict:
        profile = load_profile("landsat-c2-l2")
        sky, bounds, res = self._sky(acq), self.site.landsat_bounds, 30.0
        crs = f"EPSG:{UTM_EPSG}"
        x, y = pixel_centres(bounds, res)
        seen, truth, thick = self._observe_grid(x, y, [s.center_wavelength_um for s in profile.bands], acq, sky)
        fill = _nodata_wedge(x, y, bounds, self.rng, 0.1)
        truth[fill] = TRUTH_NODATA
        transform = from_origin(bounds[0], bounds[3], res, res)
        assets: dict = {}
        seen = seen + self.rng.normal(0, 0.002, seen.shape)
        for spec, band in zip(profile.bands, seen, strict=True):
            dn = np.clip(np.round((band - spec.offset) / spec.scale), 1, 65535).astype(np.uint16)
            dn[fill] = 0
            href = self._href(acq, spec.asset)
            _write_cog(href, dn, crs, transform, 0)
            asset = _band_asset(spec, spec.asset, href, dn.shape, transform, raster_bands=True)
            asset["title"] = f"{spec.common_name} band"
            assets[spec.asset] = asset
        qa = profile.qa[0]
        qa_pixel = encode_landsat_qa_pixel(truth, thick)
        href = self._href(acq, qa.asset)
        _write_cog(href, qa_pixel, crs, transform, 1)
        assets[qa.asset] = {
            **_asset_common(profile.bands[0], href, qa_pixel.shape, transform),
            "title": "Pixel Quality Assessment Band",
            "roles": ["cloud", "cloud-shadow", "snow-ice", "water-mask"],
            "raster:bands": [{"unit": "bit index", "nodata": 1, "data_type": "uint16", "spatial_resolution": 30}],
        }
        self._save_truth(acq, truth, thick, transform, crs)
        geom, bbox = _footprint(bounds, crs)
        proj = {"proj:epsg": UTM_EPSG, "proj:shape": list(qa_pixel.shape), "proj:transform": list(transform)[:6]}
        return _feature(acq, geom, bbox, assets, proj, [_EXT["eo"], _EXT["proj"], _EXT["raster"]])

    # ---- MODIS
    def modis(self, acq: Acquisition, bounds: tuple[float, float, float, float]) -> dict:
        profile = load_profile("modis-09A1-061")
        sky = self._sky(acq)
        n, sub = self.site.modis_pixels, 10
        xs, ys = pixel_centres(bounds, MODIS_PIXEL / sub)  # sub-pixel samples
        to_utm = pyproj.Transformer.from_crs(MODIS_SINUSOIDAL, UTM_EPSG, always_xy=True)
        ux, uy = to_utm.transform(xs, ys)
        wls = [s.center_wavelength_um for s in profile.bands]
        surface, snow = self.landscape.surface_reflectance(ux, uy, wls, acq.time.date())
        thick, shadow = sky.thickness(ux, uy), sky.shadow(ux, uy)
        water = self.landscape.class_index(ux, uy) == CLASSES.index("water")
        seen, _ = observe(surface, snow, water, thick, shadow, 0.0, wls)

        def block_mean(a: np.ndarray) -> np.ndarray:
            return a.reshape(*a.shape[:-2], n, sub, n, sub).mean(axis=(-3, -1))

        seen_px = block_mean(seen)
        thick_px = block_mean(thick)
        _, truth = observe(
            block_mean(surface),
            block_mean(snow.astype(float)) > 0.5,
            block_mean(water.astype(float)) > 0.5,
            thick_px,
            block_mean(shadow),
            0.0,
            wls,
        )
        transform = from_origin(bounds[0], bounds[3], MODIS_PIXEL, MODIS_PIXEL)
        assets: dict = {}
        seen_px = seen_px + self.rng.normal(0, 0.002, seen_px.shape)
        for spec, band in zip(profile.bands, seen_px, strict=True):
            dn = np.clip(np.round(band / spec.scale), -100, 16000).astype(np.int16)
            href = self._href(acq, spec.asset)
            _write_cog(href, dn, MODIS_SINUSOIDAL, transform, spec.nodata)
            asset = _band_asset(spec, spec.asset, href, dn.shape, transform, raster_bands=True)
            del asset["raster:bands"][0]["offset"]  # PC MODIS items carry scale only
            asset["raster:bands"][0].pop("nodata", None)
            assets[spec.asset] = asset
        qa = profile.qa[0]
        state = encode_modis_state_500m(truth, thick_px)
        href = self._href(acq, qa.asset)
        _write_cog(href, state, MODIS_SINUSOIDAL, transform, None)
        assets[qa.asset] = {
            **_asset_common(profile.bands[0], href, state.shape, transform),
            "title": "Surface reflectance 500m state flags",
            "raster:bands": [{"data_type": "uint16", "spatial_resolution": 500}],
        }
        self._save_truth(acq, truth, thick_px, transform, MODIS_SINUSOIDAL)
        geom, bbox = _footprint(bounds, MODIS_SINUSOIDAL)
        wkt = pyproj.CRS.from_proj4(MODIS_SINUSOIDAL).to_wkt()
        proj = {"proj:epsg": None, "proj:wkt2": wkt, "proj:shape": [n, n], "proj:transform": list(transform)[:6]}
        return _feature(acq, geom, bbox, assets, proj, [_EXT["eo"], _EXT["proj"], _EXT["raster"]])


def _ndvi(landscape: Landscape, x: np.ndarray, y: np.ndarray, date: dt.date) -> np.ndarray:
    surface, _ = landscape.surface_reflectance(x, y, [0.665, 0.842], date)
    red, nir = surface
    return (nir - red) / (nir + red + 1e-9)


def _collection(collection_id: str, description: str, features: list[dict]) -> dict:
    bboxes = np.array([f["bbox"] for f in features])
    times = sorted(f["properties"]["datetime"] or f["properties"]["start_datetime"] for f in features)
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": collection_id,
        "description": description,
        "license": "proprietary",
        "links": [],
        "stac_extensions": [],
        "extent": {
            "spatial": {"bbox": [[*bboxes[:, :2].min(0).tolist(), *bboxes[:, 2:].max(0).tolist()]]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "title": f"{collection_id} (eocube demo archive)",
    }


def write_labels(out: Path, site: DemoSite, landscape: Landscape, rng: np.random.Generator, n: int = 400) -> Path:
    """Labelled points for the uncertainty stage: green-vegetation cover (%) at a point and date.

    ``labels.csv`` has ``lon, lat, date, target`` (target = the landscape's true
    vegetation fraction x 100 on that date), points uniformly inside the AOI.
    """
    from pipeline.demo.landscape import vegetation_fraction

    x0, y0, x1, y1 = site.aoi_utm
    xs, ys = rng.uniform(x0 + 50, x1 - 50, n), rng.uniform(y0 + 50, y1 - 50, n)
    days = rng.integers(45, (site.end - site.start).days + 1, n)  # leave room for a window of prior scenes
    classes = landscape.class_index(xs, ys)
    to_ll = pyproj.Transformer.from_crs(UTM_EPSG, 4326, always_xy=True)
    lons, lats = to_ll.transform(xs, ys)
    rows = ["lon,lat,date,target"]
    for lon, lat, d, c in zip(lons, lats, days, classes, strict=True):
        date = site.start + dt.timedelta(days=int(d))
        name = CLASSES[c]
        frac = 0.0 if name == "water" else vegetation_fraction(name, date)
        rows.append(f"{lon:.6f},{lat:.6f},{date.isoformat()},{100 * frac:.2f}")
    path = out / "labels.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


#: the ``generator`` of the demo archive's manifest: how it knows its own folders
GENERATOR = "eocube-demo"


def generate_archive(
    out_dir: Path | str,
    seed: int = 20211001,
    site: DemoSite = DEMO_SITE,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Write the demo archive to ``out_dir`` (idempotent: a complete archive is kept).

    ``progress(collection, done, total)`` is called after each item.
    """
    out = Path(out_dir)
    manifest_path = out / "manifest.json"
    manifest = _demo_manifest(out)
    if manifest is not None and manifest.get("seed") == seed and manifest.get("version") == ARCHIVE_VERSION:
        return out
    if manifest is None and out.is_dir() and any(out.iterdir()):
        raise FileExistsError(
            f"archive folder {out} holds files the demo generator did not write; refusing to write into it"
        )
    out.mkdir(parents=True, exist_ok=True)
    # claimed before the first file: an interrupted generation is still recognised as the generator's own
    manifest_path.write_text(json.dumps({"generator": GENERATOR, "version": "incomplete", "seed": seed}))
    rng = np.random.default_rng(seed)
    landscape = Landscape.generate(rng, site.landscape_bounds(), site.aoi_utm)
    writer = _Writer(out, site, landscape, rng)
    modis_bounds, h, v = _modis_window(site)
    plans = {
        "sentinel-2-l2a": (sentinel2_schedule(site, rng), writer.sentinel2, "Sentinel-2 Level-2A (demo)"),
        "landsat-c2-l2": (landsat_schedule(site, rng), writer.landsat, "Landsat Collection 2 Level-2 (demo)"),
        "modis-09A1-061": (
            modis_schedule(site, rng, h, v),
            lambda a: writer.modis(a, modis_bounds),
            "MODIS Surface Reflectance 8-Day (500m) (demo)",
        ),
    }
    counts = {}
    for collection_id, (acquisitions, write, description) in plans.items():
        features = []
        for i, acq in enumerate(acquisitions):
            features.append(write(acq))
            if progress:
                progress(collection_id, i + 1, len(acquisitions))
        stac_dir = out / "stac" / collection_id
        stac_dir.mkdir(parents=True, exist_ok=True)
        (stac_dir / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
        (stac_dir / "collection.json").write_text(
            json.dumps(_collection(collection_id, description, features), indent=1)
        )
        counts[collection_id] = len(features)
    write_labels(out, site, landscape, rng)
    manifest = {
        "generator": GENERATOR,
        "version": ARCHIVE_VERSION,
        "seed": seed,
        "items": counts,
        "aoi_bbox": list(site.aoi_lonlat()),
        "start": site.start.isoformat(),
        "end": site.end.isoformat(),
        "utm_epsg": UTM_EPSG,
    }
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return out


def default_demo_archive() -> Path:
    """Where the demo archive lives: ``$EOCUBE_DEMO_ARCHIVE`` or ``~/.cache/eocube/demo-archive``."""
    env = os.environ.get("EOCUBE_DEMO_ARCHIVE")
    return Path(env) if env else Path.home() / ".cache" / "eocube" / "demo-archive"


def ensure_demo_archive(path: Path | None = None, progress: Callable[[str, int, int], None] | None = None) -> Path:
    """The local archive at ``path`` (default :func:`default_demo_archive`), generating the demo archive there
    when the folder is absent, empty or holds an earlier demo archive.

    A folder laid out as a local STAC archive (``stac/<collection>/items.json``) that eocube did not
    generate is served as it is, and any other non-empty folder is refused: the generator never writes
    into what it did not write."""
    out = path or default_demo_archive()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"archive {out} is a file, not a folder")
    written_by_demo = _demo_manifest(out) is not None
    if not written_by_demo and out.is_dir() and any(out.iterdir()):
        if any(out.glob("stac/*/items.json")):
            return out
        raise FileExistsError(
            f"archive folder {out} is neither a local STAC archive (stac/<collection>/items.json) "
            "nor an eocube demo archive; refusing to generate the demo into it"
        )
    return generate_archive(out, progress=progress)


def _demo_manifest(folder: Path) -> dict | None:
    """The demo generator's manifest in ``folder`` (``None`` when absent or not the generator's)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    legacy = {"version", "seed", "items", "aoi_bbox", "utm_epsg"} <= manifest.keys()  # before it named itself
    return manifest if manifest.get("generator") == GENERATOR or legacy else None
