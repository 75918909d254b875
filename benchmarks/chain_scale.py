"""The whole chain at scale: a generated ≥ 100 km² Sentinel-2 + Landsat archive through every stage on a
LocalCluster of worker processes (per-stage throughput, chain ÷ stages one by one, peak RSS per worker,
cost per km² per year).

**Archive** (generated once, cached in ``benchmarks/_work/chain-scale/archive-<key>/``, keyed by its
parameters): a square AOI of ``--km`` km a side on the UTM 32N grid at 10 m (centred on the zone's central
meridian), one Sentinel-2 L2A and one Landsat 8/9 C2 L2 acquisition a month for ``--months`` months, 4 bands
(blue, green, red, nir08) plus the QA band, written as the demo archive writes them (same collections, asset
keys, DN scaling, ``SCL`` / ``qa_pixel`` encodings, STAC item shape; tiled 512-px deflate COGs with
overviews), served by the project's loopback STAC API (``kind: local-archive``). Texture: land cover from
fractal value noise (water, forest, urban, bare, grassland, and cropland cut into rotated, warped parcels of
four crop types, each with its own phenology), a per-class spectrum mixed from vegetation and soil
endmembers by the day's vegetation fraction, a multiplicative fine texture, sensor noise, and moving
fractal clouds with their shadows (written into ``SCL`` / ``qa_pixel`` by the demo's encoders). Scenes are
computed and written 512 rows at a time (memory bounded whatever the AOI), in ``--gen-workers`` processes.

**Runs**, each on one LocalCluster of ``--workers`` worker processes × 1 thread (the chain's own default),
peak RSS of every worker process (with its children) sampled every 0.2 s with psutil, CPU core-seconds of
the whole process tree:

1. *artefact* (cached): a composite-only chain over a 1 km² corner, labelled points sampled there (green
   vegetation cover %, the generator's truth), an MC-ConcTD artefact trained once on the composite
   (small on purpose: hidden 16, 10 MC passes, windows of 6 months; say so when quoting the figures).
2. *embedding subset*: Presto on CPU over the whole AOI would take hours on 2 cores, so every stage (cube,
   composite, embeddings, uncertainty, video) runs on a ``--embed-px`` square sub-AOI: the chain, then the
   same stages one by one (their own commands' functions) on the same data. Embeddings/s is measured there;
   the whole AOI's embedding cost is projected from it (CPU) and from Presto's FLOPs (GPU, below).
3. *full AOI*: the chain with every other stage (cube, composite, uncertainty, video) over the whole AOI,
   then the same stages one by one; ratio chain ÷ sum (target ≤ 1.05), per-stage Mpx/s.
   ``--repeat`` rounds in ABBA order (chain, stages, stages, chain ...): medians, and the ratio of each round.
4. *RSS*: the same chain at twice the AOI's area (``--compare double``, the default) or at half of it
   (``half``): peak RSS per worker at both sizes (target < 2 GB, flat when the AOI doubles).

**Cost model** per km² per year: CPU core-seconds measured per stage (scaled by 12 / months); GPU-seconds of
the encoder projected as Presto's FLOPs per chip (``torch.utils.flop_counter.FlopCounterMode`` on one
forward pass through the project's adapter) × chips per km² per year ÷ 417 TFLOP/s (a Prithvi-300M-size ViT at
T = 4 on 224² chips, bf16 and compiled, ran at 781 chips/s on an H100: 417 TFLOP/s effective), until a GPU
figure is measured on a lent device. Presto is a tiny model that will not reach that rate, so the GPU figure
is a lower bound.

    python -m benchmarks chain-scale --smoke            # tiny AOI, end to end in a few minutes
    python -m benchmarks chain-scale                    # 10 km x 10 km (1000 x 1000 px) x 12 months
    python -m benchmarks chain-scale --repeat 4         # the recorded run (ABBA rounds of chain and stages)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

WORK = Path(__file__).resolve().parent / "_work" / "chain-scale"
GENERATOR_VERSION = "2"
UTM_EPSG = 32632
RES = 10.0
CENTRE = (500000.0, 5000000.0)  # UTM 32N, on the zone's central meridian (lon 9 E, lat about 45.1 N)
BANDS = ("blue", "green", "red", "nir08")
WAVELENGTHS = {"sentinel-2-l2a": (0.490, 0.560, 0.665, 0.865), "landsat-c2-l2": (0.482, 0.561, 0.655, 0.865)}
S2_ASSETS = ("B02", "B03", "B04", "B8A")  # B8A (nir08) is a 20 m band
LANDSAT_ASSETS = ("blue", "green", "red", "nir08")
STRIP = 512  # rows of a scene computed and written at once (even: 20 m bands are 2 x 2 means)
TRAIN_PX = 100  # side of the corner the artefact is trained on (1 km²)
GPU_TFLOPS = 417.0  # effective bf16 rate of a compiled Prithvi-300M-size ViT on an H100 (781 chips/s)
N_STEPS, TARGET = 6, "vegetation_cover"
ARTEFACT_OPTIONS = {"hidden": 16, "mc_samples": 10, "epochs": 60, "patience": 10}

# ------------------------------------------------------------------------------------------ landscape

# land-cover types (ptype): fixed spectra or a phenology (base, amplitude, day of peak) of green cover
WATER, URBAN, BARE, FOREST, GRASS, CROP0 = range(6)
N_CROPS = 4
PHENOLOGY = {
    URBAN: (0.10, 0.03, 180),
    BARE: (0.05, 0.03, 180),
    FOREST: (0.72, 0.15, 195),
    GRASS: (0.45, 0.25, 140),
    CROP0: (0.35, 0.45, 125),
    CROP0 + 1: (0.30, 0.55, 215),
    CROP0 + 2: (0.30, 0.50, 190),
    CROP0 + 3: (0.25, 0.40, 165),
}
N_TYPES = CROP0 + N_CROPS
# endmember spectra at blue, green, red, nir (reflectance)
VEG = np.array([0.035, 0.08, 0.04, 0.44])
SOIL = np.array([0.10, 0.14, 0.19, 0.29])
WATER_SPEC = np.array([0.06, 0.05, 0.03, 0.01])
URBAN_SPEC = np.array([0.11, 0.13, 0.15, 0.19])


def green_cover(ptype: int, date: dt.date) -> float:
    """Green-vegetation cover fraction (0..1) of a land-cover type on a date (0 for water)."""
    if ptype == WATER:
        return 0.0
    base, amp, peak = PHENOLOGY[ptype]
    doy = date.timetuple().tm_yday
    return float(np.clip(base + amp * np.cos(2 * np.pi * (doy - peak) / 365.25), 0, 1))


def reflectance_table(date: dt.date) -> np.ndarray:
    """``[type, band]`` surface reflectance of every land-cover type on a date."""
    out = np.empty((N_TYPES, 4))
    for t in range(N_TYPES):
        if t == WATER:
            out[t] = WATER_SPEC
        elif t == URBAN:
            out[t] = 0.7 * URBAN_SPEC + 0.3 * (green_cover(t, date) * VEG + (1 - green_cover(t, date)) * SOIL)
        else:
            v = green_cover(t, date)
            out[t] = v * VEG + (1 - v) * SOIL
    return out


def _smooth(w: np.ndarray) -> np.ndarray:
    return w * w * (3 - 2 * w)


def lattice_interp(lat: np.ndarray, rows: np.ndarray, cols: np.ndarray, wrap: bool = False) -> np.ndarray:
    """Value noise: the lattice ``lat`` sampled on the regular grid ``rows x cols`` (lattice units), smoothstep
    weights; separable, so a strip costs a few passes over its pixels (no per-pixel gather over 2-D)."""
    ny, nx = lat.shape
    c0 = np.floor(cols).astype(np.int64)
    wc = _smooth(cols - c0).astype(np.float32)
    r0 = np.floor(rows).astype(np.int64)
    wr = _smooth(rows - r0).astype(np.float32)
    if wrap:
        c0, c1 = c0 % nx, (c0 + 1) % nx
        need = np.unique(np.concatenate([r0 % ny, (r0 + 1) % ny]))
    else:
        c0, c1 = np.clip(c0, 0, nx - 1), np.clip(c0 + 1, 0, nx - 1)
        need = np.unique(np.clip(np.concatenate([r0, r0 + 1]), 0, ny - 1))
    sub = lat[need].astype(np.float32)
    along = sub[:, c0] * (1 - wc) + sub[:, c1] * wc  # [len(need), ncols]
    where = {int(r): i for i, r in enumerate(need)}
    top = [(r % ny) if wrap else min(max(r, 0), ny - 1) for r in r0]
    bottom = [((r + 1) % ny) if wrap else min(max(r + 1, 0), ny - 1) for r in r0]
    a = along[[where[r] for r in top]]
    b = along[[where[r] for r in bottom]]
    return a * (1 - wr[:, None]) + b * wr[:, None]


@dataclasses.dataclass
class Fractal:
    """Fractal value noise in world metres: octaves of spacing ``spacings`` (m) and amplitude ∝ spacing^h."""

    lattices: list[np.ndarray]
    spacings: list[float]
    amplitudes: list[float]
    origin: tuple[float, float]  # world (x, y) of lattice node [0, 0] (top-left)
    wrap: bool = False

    @classmethod
    def make(
        cls,
        rng: np.random.Generator,
        extent: tuple[float, float, float, float],
        spacings: list[float],
        h: float = 0.8,
        wrap_period: float | None = None,
    ) -> Fractal:
        x0, y0, x1, y1 = extent
        lats = []
        for s in spacings:
            if wrap_period:
                n = int(round(wrap_period / s))
                lats.append(rng.standard_normal((n, n)).astype(np.float32))
            else:
                lats.append(rng.standard_normal((int((y1 - y0) / s) + 4, int((x1 - x0) / s) + 4)).astype(np.float32))
        amps = [(s / spacings[0]) ** h for s in spacings]
        return cls(lats, list(spacings), amps, (x0 - 2 * max(spacings), y1 + 2 * max(spacings)), bool(wrap_period))

    def __call__(self, xs: np.ndarray, ys: np.ndarray, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """The field on the grid of pixel centres ``xs`` (columns) x ``ys`` (rows), shifted by ``shift`` metres."""
        out = np.zeros((ys.size, xs.size), np.float32)
        for lat, s, a in zip(self.lattices, self.spacings, self.amplitudes, strict=True):
            cols = (xs - shift[0] - self.origin[0]) / s
            rows = (self.origin[1] - (ys - shift[1])) / s
            out += a * lattice_interp(lat, rows, cols, self.wrap)
        return out


def _hash(i: np.ndarray, j: np.ndarray, seed: int) -> np.ndarray:
    """A well-mixed uint64 per integer pair (splitmix64 of a combination)."""
    with np.errstate(over="ignore"):
        z = (i.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (
            j.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        )
        z = z ^ np.uint64(seed)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@dataclasses.dataclass
class Landscape:
    """Land cover and texture as functions of world coordinates, so every sensor grid samples one surface."""

    macro_a: Fractal  # water / forest
    macro_b: Fractal  # urban / bare / grassland / cropland
    warp: Fractal  # parcel boundary wobble
    fine: Fractal  # within-class brightness texture
    thresholds: dict[str, float]
    seed: int
    angle: float

    @classmethod
    def make(cls, seed: int, extent: tuple[float, float, float, float]) -> Landscape:
        rng = np.random.default_rng([seed, 1])
        macro = [6400.0, 3200.0, 1600.0, 800.0, 400.0, 200.0]
        a, b = Fractal.make(rng, extent, macro, 0.9), Fractal.make(rng, extent, macro, 0.9)
        warp = Fractal.make(rng, extent, [900.0, 300.0], 1.0)
        fine = Fractal.make(rng, extent, [160.0, 80.0, 40.0, 20.0], 0.5)
        # class shares from quantiles of the macro fields on a coarse grid over a wide area (stable shares)
        x0, y0, x1, y1 = extent
        xs, ys = np.linspace(x0, x1, 300), np.linspace(y1, y0, 300)
        qa, qb = a(xs, ys).ravel(), b(xs, ys).ravel()
        thresholds = {
            "water": float(np.quantile(qa, 0.05)),
            "forest": float(np.quantile(qa, 0.72)),
            "urban": float(np.quantile(qb, 0.93)),
            "bare": float(np.quantile(qb, 0.05)),
            "grass": float(np.quantile(qb, 0.70)),
        }
        return cls(a, b, warp, fine, thresholds, seed, float(rng.uniform(0.1, 0.5)))

    def fields(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ptype uint8, texture float32)`` on the grid of pixel centres ``xs`` x ``ys``."""
        th = self.thresholds
        a, b = self.macro_a(xs, ys), self.macro_b(xs, ys)
        X, Y = np.meshgrid(xs.astype(np.float64), ys.astype(np.float64))
        w = self.warp(xs, ys) * 25.0
        c, s = math.cos(self.angle), math.sin(self.angle)
        u = (X * c + Y * s + w) / 260.0
        v = (-X * s + Y * c - w) / 410.0
        iu, iv = np.floor(u), np.floor(v)
        h = _hash(iu.astype(np.int64), iv.astype(np.int64), self.seed)
        crop = (CROP0 + (h % np.uint64(N_CROPS))).astype(np.uint8)
        edge = ((u - iu) < 0.035) | ((v - iv) < 0.025)  # field margins and tracks
        ptype = np.where(b > th["grass"], GRASS, crop).astype(np.uint8)
        ptype[edge & (ptype >= CROP0)] = GRASS
        ptype[b < th["bare"]] = BARE
        ptype[b > th["urban"]] = URBAN
        ptype[a > th["forest"]] = FOREST
        ptype[a < th["water"]] = WATER
        tex = 1.0 + 0.06 * self.fine(xs, ys)
        parcel = 0.88 + 0.24 * ((h >> np.uint64(11)) % np.uint64(1024)).astype(np.float32) / 1024
        tex = np.where(ptype >= CROP0, tex * parcel, tex).astype(np.float32)
        tex[ptype == WATER] = 1.0 + 0.01 * (tex[ptype == WATER] - 1.0)
        return ptype, tex


@dataclasses.dataclass
class Sky:
    """One acquisition's clouds: a moving fractal field (advected by the wind since the first date)."""

    field: Fractal
    shift: tuple[float, float]
    threshold: float
    width: float
    shadow: tuple[float, float]
    cover: float

    def thickness(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cloud optical-thickness proxy in [0, 1] and the shadow strength, on a grid."""
        if self.cover <= 0:
            z = np.zeros((ys.size, xs.size), np.float32)
            return z, z
        if self.cover >= 1:
            return np.ones((ys.size, xs.size), np.float32), np.zeros((ys.size, xs.size), np.float32)

        def at(shift):
            f = self.field(xs, ys, shift)
            return np.clip((f - self.threshold) / self.width + 0.5, 0, 1)

        return at(self.shift), at((self.shift[0] + self.shadow[0], self.shift[1] + self.shadow[1]))


def cloud_cover_draw(rng: np.random.Generator) -> float:
    """Scene cloud cover: a third clear, about 8 % nearly overcast, the rest partly cloudy."""
    u = rng.random()
    if u < 0.08:
        return 0.97
    if u < 0.38:
        return 0.0
    return float(rng.uniform(0.05, 0.55))


# ------------------------------------------------------------------------------------------ archive


@dataclasses.dataclass(frozen=True)
class ArchiveSpec:
    side_px: int  # AOI side at 10 m
    months: int
    seed: int = 7

    @property
    def key(self) -> str:
        return f"s{self.side_px}-m{self.months}-r{self.seed}-v{GENERATOR_VERSION}"

    def aoi(self) -> tuple[float, float, float, float]:
        """The AOI in UTM metres: ``side_px`` 10 m pixels a side, centred on CENTRE, edges on 10 m multiples."""
        half = self.side_px // 2 * RES
        return (
            CENTRE[0] - half,
            CENTRE[1] - half,
            CENTRE[0] - half + self.side_px * RES,
            CENTRE[1] - half + self.side_px * RES,
        )

    def s2_bounds(self) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = self.aoi()
        m = 240.0
        return (
            math.floor((x0 - m) / 60) * 60,
            math.floor((y0 - m) / 60) * 60,
            math.ceil((x1 + m) / 60) * 60,
            math.ceil((y1 + m) / 60) * 60,
        )

    def landsat_bounds(self) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = self.aoi()
        m = 300.0
        return (
            math.floor((x0 - m) / 30) * 30 - 15,
            math.floor((y0 - m) / 30) * 30 - 15,
            math.ceil((x1 + m) / 30) * 30 + 15,
            math.ceil((y1 + m) / 30) * 30 + 15,
        )

    def extent(self) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = self.landsat_bounds()
        return x0 - 3000, y0 - 3000, x1 + 3000, y1 + 3000

    def dates(self) -> list[tuple[str, dt.datetime]]:
        """(collection, time) of every acquisition: Sentinel-2 early in each month, Landsat in its second half."""
        out = []
        for k in range(self.months):
            year, month = 2023 + k // 12, k % 12 + 1
            out.append(("sentinel-2-l2a", dt.datetime(year, month, 6 + k % 5, 10, 20, 21, tzinfo=dt.UTC)))
            out.append(("landsat-c2-l2", dt.datetime(year, month, 17 + k % 7, 10, 5, 12, tzinfo=dt.UTC)))
        return out


def pixel_axes(bounds: tuple[float, float, float, float], res: float) -> tuple[np.ndarray, np.ndarray]:
    x0, y0, x1, y1 = bounds
    nx, ny = int(round((x1 - x0) / res)), int(round((y1 - y0) / res))
    return x0 + (np.arange(nx) + 0.5) * res, y1 - (np.arange(ny) + 0.5) * res


def make_sky(spec: ArchiveSpec, index: int, when: dt.datetime) -> Sky:
    """The clouds of acquisition ``index``: one persistent cloud field moved by a steady wind (km/day)."""
    rng = np.random.default_rng([spec.seed, 2])
    field = Fractal.make(rng, spec.extent(), [5000.0, 2500.0, 1250.0, 625.0, 312.5, 156.25], 0.7, wrap_period=80000.0)
    days = (when - dt.datetime(2023, 1, 1, tzinfo=dt.UTC)).total_seconds() / 86400
    shift = (days * 7300.0, days * -4100.0)  # about 8 km a day
    r = np.random.default_rng([spec.seed, 3, index])
    cover = cloud_cover_draw(r)
    threshold, width = 0.0, 1.0
    if 0 < cover < 1:
        x0, y0, x1, y1 = spec.extent()
        sample = field(np.linspace(x0, x1, 200), np.linspace(y1, y0, 200), shift)
        threshold, width = float(np.quantile(sample, 1 - cover)), 0.25 * float(sample.std())
    shadow = (float(r.uniform(150, 400)), float(r.uniform(-400, -150)))
    return Sky(field, shift, threshold, width, shadow, cover)


def _item_id(collection: str, when: dt.datetime, index: int) -> str:
    """``index`` counts the acquisitions of both sensors (two a month): platforms alternate month by month."""
    if collection == "sentinel-2-l2a":
        gen = when + dt.timedelta(hours=4)
        return f"S2{'AB'[index // 2 % 2]}_MSIL2A_{when:%Y%m%dT%H%M%S}_R108_T32TMR_{gen:%Y%m%dT%H%M%S}"
    return f"{'LC08' if index // 2 % 2 else 'LC09'}_L2SP_194029_{when:%Y%m%d}_02_T1"


def _open_strip_writer(path: Path, width: int, height: int, dtype: str, transform, nodata):
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    return rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype=dtype,
        crs=f"EPSG:{UTM_EPSG}",
        transform=transform,
        nodata=nodata,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="NONE",
        BIGTIFF="IF_SAFER",
    )


def _to_cog(tmp: Path, dst: Path, resampling: str) -> None:
    """Copy a tiled GeoTIFF to a COG (deflate + predictor 2, 512-px tiles, overviews), streaming."""
    import rasterio
    import rasterio.shutil

    with rasterio.Env(GDAL_CACHEMAX=256, GDAL_NUM_THREADS=1):
        rasterio.shutil.copy(
            str(tmp),
            str(dst),
            driver="COG",
            compress="DEFLATE",
            predictor=2,
            blocksize=512,
            overview_resampling=resampling,
            num_threads=1,
            bigtiff="IF_SAFER",
        )
    tmp.unlink()


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.normal(0.0, 0.002, shape).astype(np.float32)


def write_sentinel2(out: Path, spec: ArchiveSpec, index: int, when: dt.datetime, fields_dir: Path) -> dict:
    """One Sentinel-2 L2A acquisition (B02, B03, B04 at 10 m, B8A and SCL at 20 m) and its STAC item."""
    from rasterio.transform import from_origin

    from pipeline.demo.landscape import observe
    from pipeline.demo.qa_encoding import encode_s2_scl

    item_id = _item_id("sentinel-2-l2a", when, index)
    bounds = spec.s2_bounds()
    xs10, ys10 = pixel_axes(bounds, 10.0)
    xs20, ys20 = pixel_axes(bounds, 20.0)
    ny, nx = ys10.size, xs10.size
    ptype_all = np.lib.format.open_memmap(fields_dir / "ptype.npy", mode="r")
    tex_all = np.lib.format.open_memmap(fields_dir / "tex.npy", mode="r")
    sky = make_sky(spec, index, when)
    table = reflectance_table(when.date())
    wls = list(WAVELENGTHS["sentinel-2-l2a"])
    folder = out / "data" / "sentinel-2-l2a" / item_id
    t10, t20 = from_origin(bounds[0], bounds[3], 10, 10), from_origin(bounds[0], bounds[3], 20, 20)
    writers = {a: _open_strip_writer(folder / f".{a}.tmp.tif", nx, ny, "uint16", t10, 0) for a in S2_ASSETS[:3]}
    writers["B8A"] = _open_strip_writer(folder / ".B8A.tmp.tif", nx // 2, ny // 2, "uint16", t20, 0)
    writers["SCL"] = _open_strip_writer(folder / ".SCL.tmp.tif", nx // 2, ny // 2, "uint8", t20, 0)
    from rasterio.windows import Window

    for s, r0 in enumerate(range(0, ny, STRIP)):
        r1 = min(ny, r0 + STRIP)
        rng = np.random.default_rng([spec.seed, 10, index, s])
        ptype, tex = np.asarray(ptype_all[r0:r1]), np.asarray(tex_all[r0:r1]).astype(np.float32)
        surface = table[ptype].transpose(2, 0, 1) * tex  # [band, rows, cols]
        thick20, shadow20 = sky.thickness(xs20, ys20[r0 // 2 : r1 // 2])
        thick, shadow = (np.repeat(np.repeat(a, 2, 0), 2, 1) for a in (thick20, shadow20))
        nosnow = np.zeros(ptype.shape, bool)
        seen, _ = observe(surface, nosnow, ptype == WATER, thick, shadow, 0.0, wls)
        for b, asset in enumerate(S2_ASSETS[:3]):
            dn = np.clip(np.round((seen[b] + _noise(rng, seen[b].shape)) / 1e-4) + 1000, 1, 65535).astype(np.uint16)
            writers[asset].write(dn, 1, window=Window(0, r0, nx, r1 - r0))
        nir20 = seen[3].reshape((r1 - r0) // 2, 2, nx // 2, 2).mean(axis=(1, 3))
        dn = np.clip(np.round((nir20 + _noise(rng, nir20.shape)) / 1e-4) + 1000, 1, 65535).astype(np.uint16)
        win20 = Window(0, r0 // 2, nx // 2, (r1 - r0) // 2)
        writers["B8A"].write(dn, 1, window=win20)
        surf20 = surface.reshape(4, (r1 - r0) // 2, 2, nx // 2, 2).mean(axis=(2, 4))
        ptype20 = ptype[::2, ::2]
        _, truth = observe(surf20, np.zeros(ptype20.shape, bool), ptype20 == WATER, thick20, shadow20, 0.0, wls)
        red, nir = surf20[2], surf20[3]
        scl = encode_s2_scl(truth, thick20, (nir - red) / (nir + red + 1e-9) > 0.4)
        writers["SCL"].write(scl, 1, window=win20)
    for w in writers.values():
        w.close()
    assets = {}
    for asset in (*S2_ASSETS, "SCL"):
        dst = folder / f"{asset}.tif"
        _to_cog(folder / f".{asset}.tmp.tif", dst, "nearest" if asset == "SCL" else "average")
        res = 10.0 if asset in S2_ASSETS[:3] else 20.0
        shape = [ny, nx] if res == 10 else [ny // 2, nx // 2]
        a = {
            "href": dst.resolve().as_uri(),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "gsd": res,
            "proj:shape": shape,
            "proj:transform": list(t10 if res == 10 else t20)[:6],
        }
        if asset == "SCL":
            a["title"] = "Scene classfication map (SCL)"
        else:
            common = BANDS[S2_ASSETS.index(asset)]
            a["roles"] = ["data", "reflectance"]
            a["title"] = f"Band {asset[1:]} - {common} - {int(res)}m"
            a["eo:bands"] = [
                {
                    "name": asset,
                    "common_name": common,
                    "center_wavelength": WAVELENGTHS["sentinel-2-l2a"][S2_ASSETS.index(asset)],
                }
            ]
        assets[asset] = a
    gen = when + dt.timedelta(hours=4)
    props = {
        "platform": f"Sentinel-2{'AB'[index // 2 % 2]}",
        "constellation": "Sentinel 2",
        "instruments": ["msi"],
        "s2:mgrs_tile": "32TMR",
        "s2:processing_baseline": "05.09",
        "s2:product_type": "S2MSI2A",
        "s2:generation_time": gen.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
        "sat:relative_orbit": 108,
        "sat:orbit_state": "descending",
        "s2:mean_solar_zenith": 45.0,
        "s2:mean_solar_azimuth": 160.0,
    }
    return _feature(
        "sentinel-2-l2a", item_id, when, sky.cover, bounds, assets, props, {"proj:epsg": UTM_EPSG}, ["eo", "proj"]
    )


def write_landsat(out: Path, spec: ArchiveSpec, index: int, when: dt.datetime, landscape: Landscape) -> dict:
    """One Landsat 8/9 C2 L2 acquisition (blue, green, red, nir08 and qa_pixel at 30 m) and its STAC item."""
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from pipeline.demo.landscape import observe
    from pipeline.demo.qa_encoding import encode_landsat_qa_pixel

    item_id = _item_id("landsat-c2-l2", when, index)
    bounds = spec.landsat_bounds()
    xs, ys = pixel_axes(bounds, 30.0)
    ny, nx = ys.size, xs.size
    sky = make_sky(spec, index, when)
    table = reflectance_table(when.date())
    wls = list(WAVELENGTHS["landsat-c2-l2"])
    folder = out / "data" / "landsat-c2-l2" / item_id
    transform = from_origin(bounds[0], bounds[3], 30, 30)
    writers = {a: _open_strip_writer(folder / f".{a}.tmp.tif", nx, ny, "uint16", transform, 0) for a in LANDSAT_ASSETS}
    writers["qa_pixel"] = _open_strip_writer(folder / ".qa_pixel.tmp.tif", nx, ny, "uint16", transform, 1)
    for s, r0 in enumerate(range(0, ny, STRIP)):
        r1 = min(ny, r0 + STRIP)
        rng = np.random.default_rng([spec.seed, 20, index, s])
        # a 30 m pixel integrates 3 x 3 points of the surface (at 10 m spacing)
        sub_x = (xs[:, None] + np.array([-10.0, 0.0, 10.0])[None]).ravel()
        sub_y = (ys[r0:r1, None] + np.array([10.0, 0.0, -10.0])[None]).ravel()
        ptype_f, tex_f = landscape.fields(sub_x, sub_y)
        surf_f = table[ptype_f].transpose(2, 0, 1) * tex_f
        surface = surf_f.reshape(4, r1 - r0, 3, nx, 3).mean(axis=(2, 4))
        water = (ptype_f == WATER).reshape(r1 - r0, 3, nx, 3).mean(axis=(1, 3)) > 0.5
        thick, shadow = sky.thickness(xs, ys[r0:r1])
        seen, truth = observe(surface, np.zeros(water.shape, bool), water, thick, shadow, 0.0, wls)
        for b, asset in enumerate(LANDSAT_ASSETS):
            dn = np.clip(np.round((seen[b] + _noise(rng, seen[b].shape) + 0.2) / 2.75e-5), 1, 65535).astype(np.uint16)
            writers[asset].write(dn, 1, window=Window(0, r0, nx, r1 - r0))
        writers["qa_pixel"].write(encode_landsat_qa_pixel(truth, thick), 1, window=Window(0, r0, nx, r1 - r0))
    for w in writers.values():
        w.close()
    assets = {}
    for k, asset in enumerate((*LANDSAT_ASSETS, "qa_pixel")):
        dst = folder / f"{asset}.tif"
        _to_cog(folder / f".{asset}.tmp.tif", dst, "nearest" if asset == "qa_pixel" else "average")
        a = {
            "href": dst.resolve().as_uri(),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "gsd": 30.0,
            "proj:shape": [ny, nx],
            "proj:transform": list(transform)[:6],
        }
        if asset == "qa_pixel":
            a.update(title="Pixel Quality Assessment Band", roles=["cloud", "cloud-shadow", "snow-ice", "water-mask"])
            a["raster:bands"] = [{"unit": "bit index", "nodata": 1, "data_type": "uint16", "spatial_resolution": 30}]
        else:
            a.update(title=f"{asset} band", roles=["data", "reflectance"])
            a["eo:bands"] = [
                {"name": asset, "common_name": asset, "center_wavelength": WAVELENGTHS["landsat-c2-l2"][k]}
            ]
            a["raster:bands"] = [
                {"data_type": "uint16", "spatial_resolution": 30, "scale": 2.75e-05, "offset": -0.2, "nodata": 0}
            ]
        assets[asset] = a
    platform = "landsat-8" if index // 2 % 2 else "landsat-9"
    d = when.date()
    props = {
        "platform": platform,
        "instruments": ["oli", "tirs"],
        "landsat:wrs_path": "194",
        "landsat:wrs_row": "029",
        "landsat:wrs_type": "2",
        "landsat:collection_category": "T1",
        "landsat:collection_number": "02",
        "landsat:correction": "L2SP",
        "gsd": 30,
        "view:off_nadir": 0,
        "view:sun_elevation": 40.0,
        "view:sun_azimuth": 150.0,
        "created": f"{d + dt.timedelta(days=11):%Y-%m-%d}T00:00:00Z",
    }
    proj = {"proj:epsg": UTM_EPSG, "proj:shape": [ny, nx], "proj:transform": list(transform)[:6]}
    return _feature("landsat-c2-l2", item_id, when, sky.cover, bounds, assets, props, proj, ["eo", "proj", "raster"])


_EXT = {
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "proj": "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
}


def _lonlat(xs, ys):
    import pyproj

    return pyproj.Transformer.from_crs(UTM_EPSG, 4326, always_xy=True).transform(xs, ys)


def _feature(
    collection: str,
    item_id: str,
    when: dt.datetime,
    cover: float,
    bounds,
    assets: dict,
    props: dict,
    proj: dict,
    extensions: list[str],
) -> dict:
    x0, y0, x1, y1 = bounds
    lons, lats = _lonlat([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0])
    ring = [[round(a, 6), round(b, 6)] for a, b in zip(lons, lats, strict=True)]
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [_EXT[e] for e in extensions],
        "id": item_id,
        "collection": collection,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [min(lons), min(lats), max(lons), max(lats)],
        "properties": {
            "datetime": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "eo:cloud_cover": round(cover * 100, 2),
            **proj,
            **props,
        },
        "assets": assets,
        "links": [],
    }


def _fields_strip(args: tuple) -> None:
    spec, fields_dir, r0, r1 = args
    landscape = Landscape.make(spec.seed, spec.extent())
    xs, ys = pixel_axes(spec.s2_bounds(), 10.0)
    ptype_all = np.lib.format.open_memmap(fields_dir / "ptype.npy", mode="r+")
    tex_all = np.lib.format.open_memmap(fields_dir / "tex.npy", mode="r+")
    ptype, tex = landscape.fields(xs, ys[r0:r1])
    ptype_all[r0:r1], tex_all[r0:r1] = ptype, tex.astype(np.float16)
    ptype_all.flush()
    tex_all.flush()


def _write_item(args: tuple) -> dict:
    spec, out, index, collection, when = args
    if collection == "sentinel-2-l2a":
        return write_sentinel2(out, spec, index, when, out / "fields")
    return write_landsat(out, spec, index, when, Landscape.make(spec.seed, spec.extent()))


def write_labels(out: Path, spec: ArchiveSpec, n: int = 500) -> Path:
    """Labelled points in the training corner (the AOI's top-left TRAIN_PX x TRAIN_PX pixels): green-vegetation
    cover (%) of the point's 10 m pixel on a date (the generator's truth)."""
    rng = np.random.default_rng([spec.seed, 4])
    x0, _, _, y1 = spec.aoi()
    side = TRAIN_PX * RES
    xs = x0 + (rng.integers(0, TRAIN_PX, n) + 0.5) * RES
    ys = y1 - (rng.integers(0, TRAIN_PX, n) + 0.5) * RES
    landscape = Landscape.make(spec.seed, spec.extent())
    ptype = np.array([landscape.fields(np.array([x]), np.array([y]))[0][0, 0] for x, y in zip(xs, ys, strict=True)])
    first = dt.date(2023, 1, 1)
    months = rng.integers(N_STEPS - 1, spec.months, n)
    lons, lats = _lonlat(xs, ys)
    rows = ["lon,lat,date,target"]
    for lon, lat, m, p in zip(lons, lats, months, ptype, strict=True):
        date = dt.date(first.year + int(m) // 12, int(m) % 12 + 1, 28)
        rows.append(f"{lon:.7f},{lat:.7f},{date.isoformat()},{100 * green_cover(int(p), date):.2f}")
    path = out / "labels.csv"
    path.write_text("\n".join(rows) + "\n")
    assert side > 0
    return path


def generate_archive(
    spec: ArchiveSpec, work: Path = WORK, workers: int = 2, log: Callable[[str], None] = print
) -> Path:
    """The archive of ``spec`` (kept when complete: ``chain-scale.json`` is written last); returns its folder."""
    out = work / f"archive-{spec.key}"
    done = out / "chain-scale.json"
    if done.is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    (out / "fields").mkdir(parents=True)
    t0 = time.perf_counter()
    xs, ys = pixel_axes(spec.s2_bounds(), 10.0)
    np.lib.format.open_memmap(out / "fields" / "ptype.npy", mode="w+", dtype=np.uint8, shape=(ys.size, xs.size)).flush()
    np.lib.format.open_memmap(out / "fields" / "tex.npy", mode="w+", dtype=np.float16, shape=(ys.size, xs.size)).flush()
    strips = [(spec, out / "fields", r, min(ys.size, r + STRIP)) for r in range(0, ys.size, STRIP)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_fields_strip, strips))
    log(f"  land-cover fields {ys.size} x {xs.size} px: {time.perf_counter() - t0:.0f} s")
    jobs = [(spec, out, i, c, w) for i, (c, w) in enumerate(spec.dates())]
    features: dict[str, list[dict]] = {"sentinel-2-l2a": [], "landsat-c2-l2": []}
    with ProcessPoolExecutor(workers) as pool:
        for k, feature in enumerate(pool.map(_write_item, jobs)):
            features[feature["collection"]].append(feature)
            log(f"  item {k + 1}/{len(jobs)} {feature['id']} ({time.perf_counter() - t0:.0f} s)")
    for collection, feats in features.items():
        folder = out / "stac" / collection
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
        bboxes = np.array([f["bbox"] for f in feats])
        times = sorted(f["properties"]["datetime"] for f in feats)
        (folder / "collection.json").write_text(
            json.dumps(
                {
                    "type": "Collection",
                    "stac_version": "1.0.0",
                    "id": collection,
                    "license": "proprietary",
                    "links": [],
                    "description": f"{collection} (eocube chain-scale benchmark archive)",
                    "stac_extensions": [],
                    "extent": {
                        "spatial": {"bbox": [[*bboxes[:, :2].min(0).tolist(), *bboxes[:, 2:].max(0).tolist()]]},
                        "temporal": {"interval": [[times[0], times[-1]]]},
                    },
                },
                indent=1,
            )
        )
    write_labels(out, spec)
    (out / "catalog.yaml").write_text(
        "name: chain-scale\ntitle: eocube chain-scale benchmark archive (generated)\nkind: local-archive\nurl: null\n"
        "signing: none\nsearch: {limit: 100}\ncollections:\n  sentinel-2: {collection: sentinel-2-l2a}\n"
        "  landsat: {collection: landsat-c2-l2}\n"
    )
    (out / "manifest.json").write_text(json.dumps({"chain_scale": dataclasses.asdict(spec)}))
    size = sum(f.stat().st_size for f in (out / "data").rglob("*.tif"))
    done.write_text(
        json.dumps(
            {
                **dataclasses.asdict(spec),
                "seconds": round(time.perf_counter() - t0, 1),
                "cog_bytes": size,
                "items": {c: len(f) for c, f in features.items()},
            }
        )
    )
    return out


# ------------------------------------------------------------------------------------------ requests


def sub_aoi_lonlat(spec: ArchiveSpec, side_px: int, corner: bool = True) -> tuple[float, float, float, float]:
    """A lon/lat bbox whose grid (10 m, UTM 32N) is ``side_px`` a side: the AOI's top-left corner, or its centre."""
    x0, y0, x1, y1 = spec.aoi()
    if corner:
        bx0, by1 = x0, y1
    else:
        bx0, by1 = CENTRE[0] - side_px // 2 * RES, CENTRE[1] + side_px // 2 * RES
    bx1, by0 = bx0 + side_px * RES, by1 - side_px * RES
    inset = 2.0  # metres: the inscribed lon/lat box, snapped outwards by the grid, gives back the square
    lons, lats = _lonlat(
        [bx0 + inset, bx1 - inset, bx1 - inset, bx0 + inset], [by0 + inset, by0 + inset, by1 - inset, by1 - inset]
    )
    return (
        round(max(lons[0], lons[3]), 7),
        round(max(lats[0], lats[1]), 7),
        round(min(lons[1], lons[2]), 7),
        round(min(lats[2], lats[3]), 7),
    )


def make_request(
    archive: Path,
    spec: ArchiveSpec,
    side_px: int,
    output: Path,
    tile_px: int,
    products: list[str],
    artefact: Path | None,
    corner: bool = True,
    storage: str = "float32",
):
    from pipeline.model import CubeRequest

    chunk = min(512, tile_px)
    fields: dict[str, Any] = {
        "catalog": str(archive / "catalog.yaml"),
        "bbox": list(sub_aoi_lonlat(spec, side_px, corner)),
        "start": "2023-01-01",
        "end": (
            dt.date(2023 + spec.months // 12, spec.months % 12 + 1, 1) - dt.timedelta(days=1)
            if spec.months % 12
            else dt.date(2022 + spec.months // 12, 12, 31)
        ).isoformat(),
        "sensors": ["sentinel-2", "landsat"],
        "crs": f"EPSG:{UTM_EPSG}",
        "resolution": RES,
        "bands": list(BANDS),
        "chunks": {"time": 1, "y": chunk, "x": chunk},
        "output": str(output),
        "overwrite": True,
        "storage": storage,
    }
    if "composite" in products:
        fields["composite"] = {"freq": "1MS", "method": "median"}
    if "embeddings" in products:
        from pipeline.chain.products import spatial_chunk

        # chips of the product's Zarr chunk, as the stage alone writes them: both sides run the same chips
        fields["embed"] = {
            "model": "presto",
            "input": "composite",
            "temporal": "pooled",
            "device": "cpu",
            "chip_size": spatial_chunk(tile_px),
        }
    if "uncertainty" in products:
        fields["uncertainty"] = {"model": str(artefact), "target": TARGET}
    if "video" in products:
        fields["compress"] = {"mode": "lossy", "target_psnr": 45}
    return CubeRequest.model_validate(fields)


# ------------------------------------------------------------------------------------------ measuring


class Monitor:
    """Peak RSS per Dask worker process (with its children) and of this process, sampled every ``interval`` s;
    CPU seconds of the whole process tree (this process, its children, the nannies, the workers)."""

    def __init__(self, interval: float = 0.2):
        import psutil

        self.psutil, self.interval = psutil, interval
        self.me = psutil.Process()
        self.workers: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.peak_main = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def set_workers(self, pids: dict[str, int]) -> None:
        self.workers = dict(pids)

    def _rss_tree(self, pid: int) -> int:
        try:
            p = self.psutil.Process(pid)
            total = p.memory_info().rss
            for c in p.children(recursive=True):
                with contextlib.suppress(self.psutil.Error):
                    total += c.memory_info().rss
            return total
        except self.psutil.Error:
            return 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            for name, pid in list(self.workers.items()):
                self.peak[name] = max(self.peak.get(name, 0), self._rss_tree(pid))
            with contextlib.suppress(self.psutil.Error):
                self.peak_main = max(self.peak_main, self.me.memory_info().rss)
            self._stop.wait(self.interval)

    def start(self) -> Monitor:
        self.peak, self.peak_main = {}, 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        if self._thread:
            self._thread.join()
        ranked = {f"worker-{i}": self.peak.get(a, 0) for i, a in enumerate(sorted(self.workers))}
        return {"peak_rss_per_worker_bytes": ranked, "peak_rss_main_bytes": self.peak_main}

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of this process (and its reaped children) and of every live descendant."""
        t = self.me.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for c in self.me.children(recursive=True):
            with contextlib.suppress(self.psutil.Error):
                ct = c.cpu_times()
                total += ct.user + ct.system
        return total


@contextlib.contextmanager
def cluster(n_workers: int) -> Iterator[tuple[str, dict[str, int]]]:
    """A LocalCluster as the chain starts one (worker processes x 1 thread, memory_limit auto); its address and
    the worker pids."""
    from distributed import Client, LocalCluster

    import pipeline.cube.cluster  # noqa: F401  (the worker environment eocube's own clusters start with)

    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, memory_limit="auto", dashboard_address=None
        ) as lc,
        Client(lc) as client,
    ):
        pids = client.run(os.getpid)
        yield lc.scheduler_address, pids


class StageTimes:
    """Wall and CPU seconds per named stage of one run."""

    def __init__(self, monitor: Monitor):
        self.monitor = monitor
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        t0, c0 = time.perf_counter(), self.monitor.cpu_seconds()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - t0
            self.cpu[name] = self.cpu.get(name, 0.0) + self.monitor.cpu_seconds() - c0


@contextlib.contextmanager
def timed_calls(targets: list[tuple[Any, str, str]], times: dict[str, float]):
    """Add each call's wall seconds of ``module.attr`` to ``times[name]`` for ``(module, attr, name)`` in
    ``targets``, with wrappers (nothing else changes); every name listed in ``times``, in this order."""

    def timed(name: str, fn: Callable) -> Callable:
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[name] = times.get(name, 0.0) + time.perf_counter() - t0

        return wrapper

    for _, _, name in targets:  # listed in this order, each "of which" under its whole
        times.setdefault(name, 0.0)
    saved = []
    for module, attr, name in targets:
        if hasattr(module, attr):
            saved.append((module, attr, getattr(module, attr)))
            setattr(module, attr, timed(name, getattr(module, attr)))
    try:
        yield
    finally:
        for module, attr, fn in saved:
            setattr(module, attr, fn)


#: the chain's part that is the video plan's rate control (the same work as the video stage's)
RATE_CONTROL = "  of which video rate control (before the first unit)"


def chain_instrumented(times: dict[str, float]):
    """Time the chain's parts in this process: the search, the cube slices (``write_slices``), and the derived
    products (``make_products``: every unit, tile by tile, each with its composite, embeddings, uncertainty
    and video; inside it, the video plan's rate control, once before the first unit)."""
    from pipeline.chain import backfill as backfill_mod
    from pipeline.chain import context as context_mod
    from pipeline.chain import slices as slices_mod

    return timed_calls(
        [
            (backfill_mod, "search", "search"),
            (slices_mod, "write_slices", "cube slices"),
            (slices_mod, "make_products", "products (units, tile by tile)"),
            (context_mod, "video_plan", RATE_CONTROL),
        ],
        times,
    )


def remove(*paths: Path) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()
        for leftover in p.parent.glob(f".{p.name}*"):
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()
        for side in (p.with_suffix(".quicklook.png"), p.with_suffix(".stac.json")):
            if side.exists():
                side.unlink()


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


# ------------------------------------------------------------------------------------------ the runs


def run_chain(request, archive: Path, tile_px: int, time_step: int, n_workers: int, monitor: Monitor) -> dict:
    """The chain (``backfill_request``) on a fresh LocalCluster: wall, CPU, parts, peak RSS per worker."""
    from pipeline.chain import backfill_request
    from pipeline.chain.slices import BackfillSpec

    parts: dict[str, float] = {}
    remove(Path(request.output))
    with cluster(n_workers) as (address, pids):
        monitor.set_workers(pids)
        monitor.start()
        c0, t0 = monitor.cpu_seconds(), time.perf_counter()
        with chain_instrumented(parts):
            report = backfill_request(
                request, BackfillSpec(tile_px=tile_px, time_step=time_step), archive=archive, dask_address=address
            )
        wall, cpu = time.perf_counter() - t0, monitor.cpu_seconds() - c0
        rss = monitor.stop()
    parts["other (preflight, prepare, finalise)"] = wall - sum(v for k, v in parts.items() if not k.startswith(" "))
    not_computed = report.not_computed
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "parts": parts,
        **rss,
        "units": len(report.units),
        "slices": len(report.written),
        "not_computed": not_computed,
        "store_bytes": dir_bytes(Path(request.output)),
    }


def run_stages(
    request, archive: Path, work: Path, tile_px: int, n_workers: int, monitor: Monitor, artefact: Path | None
) -> dict:
    """The same stages one by one, each with its own command's function, on a fresh LocalCluster, each stage
    reading the previous one's store: cube (search + ``assemble_and_write``), composite (``composite_store``),
    embeddings (``write_embeddings`` on the composite store), uncertainty (``predict_map`` of the artefact on
    the composite store), video (``compress_cube`` of the cube store with the chain's settings: rate control
    to 45 dB on sample chunks, auto value range, chunks as the chain's, no read-back or quicklook)."""
    from pipeline.chain.composite import composite_store
    from pipeline.chain.products import spatial_chunk
    from pipeline.chain.run import assemble_and_write
    from pipeline.chain.search import search

    cube_path, comp_path = work / "stages-cube.zarr", work / "stages-composite.zarr"
    unc_path, video_path = work / "stages-uncertainty.zarr", work / "stages-video.zarr"
    remove(cube_path, comp_path, unc_path, video_path)
    times = StageTimes(monitor)
    with cluster(n_workers) as (address, pids):
        from distributed import Client

        monitor.set_workers(pids)
        monitor.start()
        with Client(address):
            req = request.model_copy(update={"output": cube_path})
            with times.stage("cube"):
                found = search(req, archive)
                assemble_and_write(req, found)
            with times.stage("composite"):
                composite_store(cube_path, comp_path, request.composite.freq, request.composite.method, overwrite=True)
            if request.embed is not None:
                from pipeline.embeddings.engine import write_embeddings

                with times.stage("embeddings"):
                    write_embeddings(comp_path, request.embed.model, device="cpu", chip_size=request.embed.chip_size)
            if request.uncertainty is not None:
                from pipeline.uncertainty.artefact import load_artefact
                from pipeline.uncertainty.maps import predict_map

                with times.stage("uncertainty"):
                    predict_map(load_artefact(artefact).model, comp_path, unc_path, name=TARGET, overwrite=True)
            if request.compress is not None:
                from pipeline.compression import stage as stage_mod
                from pipeline.compression.codec import CodecParams
                from pipeline.compression.stage import compress_cube

                rate_control: dict[str, float] = {}
                with times.stage("video"), timed_calls([(stage_mod, "plan_video", "rc")], rate_control):
                    summary = compress_cube(
                        cube_path,
                        video_path,
                        CodecParams(mode="lossy"),
                        target_psnr=45.0,
                        space_chunk=spatial_chunk(tile_px),
                        measure=False,
                        quicklook=None,
                        auto_value_range=True,
                        overwrite=True,
                    )
        rss = monitor.stop()
    sizes = {
        "cube": dir_bytes(cube_path),
        "composite": dir_bytes(comp_path),
        "uncertainty": dir_bytes(unc_path),
        "video": dir_bytes(video_path),
    }
    out = {
        "seconds": times.wall,
        "cpu_seconds": times.cpu,
        "sum_seconds": sum(times.wall.values()),
        **rss,
        "store_bytes": sizes,
    }
    if request.compress is not None:
        out["video_qp"], out["video_bpppb"] = summary.qp, summary.bpppb
        out["video_rate_control_seconds"] = rate_control["rc"]
    return out


def train_artefact_cached(
    archive: Path,
    spec: ArchiveSpec,
    work: Path,
    tile_px: int,
    n_workers: int,
    monitor: Monitor,
    log: Callable[[str], None],
) -> Path:
    """The uncertainty artefact, trained once (cached beside the archive) on the composite of the 1 km² corner
    at the archive's labelled points."""
    from pipeline.uncertainty.stage import train_artefact

    path = work / f"artefact-{spec.key}"
    if (path / "card.json").is_file():
        return path
    store = work / "train.zarr"
    req = make_request(archive, spec, TRAIN_PX, store, min(tile_px, 512), ["composite"], None)
    t0 = time.perf_counter()
    run_chain(req, archive, min(tile_px, 512), 8, n_workers, monitor)
    train_artefact(
        store,
        archive / "labels.csv",
        path,
        product="composite",
        n_steps=N_STEPS,
        method="mc-conctd",
        seed=0,
        target="target",
        name=TARGET,
        units="%",
        overwrite=True,
        **ARTEFACT_OPTIONS,
    )
    remove(store)
    log(f"  artefact trained on {TRAIN_PX} x {TRAIN_PX} px: {time.perf_counter() - t0:.0f} s -> {path}")
    return path


def presto_flops_per_chip(chip: int, n_times: int) -> dict:
    """FLOPs of Presto over one ``chip x chip`` chip of ``n_times`` monthly composites of the 4 bands, through
    the project's embedding engine (:func:`~pipeline.embeddings.engine.embed_cube`, computed in this process
    under ``FlopCounterMode``); counted on a 16 x 16 chip and scaled by the pixel count (Presto is per pixel)."""
    import dask
    import odc.geo.xr  # noqa: F401
    import pandas as pd
    import torch
    import xarray as xr
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.embeddings.engine import embed_cube

    small = 16
    rng = np.random.default_rng(0)
    times = pd.date_range("2023-01-01", periods=n_times, freq="MS")
    ys, xs = CENTRE[1] - (np.arange(small) + 0.5) * RES, CENTRE[0] + (np.arange(small) + 0.5) * RES
    ds = xr.Dataset(
        {b: (("time", "y", "x"), (0.05 + 0.3 * rng.random((n_times, small, small))).astype(np.float32)) for b in BANDS},
        coords={"time": times, "y": ys, "x": xs},
    ).odc.assign_crs(f"EPSG:{UTM_EPSG}")
    emb = embed_cube(ds, "presto", device="cpu", chip_size=small)
    with FlopCounterMode(display=False) as counter, torch.inference_mode(), dask.config.set(scheduler="synchronous"):
        values = emb.values
    assert np.isfinite(values).all()
    flops = counter.get_total_flops() * (chip * chip) / (small * small)
    return {"flops_per_chip": float(flops), "chip": chip, "timesteps": n_times, "flops_per_pixel": flops / chip**2}


# ------------------------------------------------------------------------------------------ report


def combine_runs(runs: list[dict]) -> dict:
    """Rounds of one run kind -> medians of their times, the maximum of their peak RSS (per worker rank)."""

    def med(values):
        return float(np.median(values))

    out = dict(runs[-1])
    for key in ("seconds", "cpu_seconds", "parts"):
        if key in out and isinstance(out[key], dict):
            out[key] = {k: med([r[key][k] for r in runs if k in r[key]]) for k in out[key]}
        elif key in out:
            out[key] = med([r[key] for r in runs])
    if "sum_seconds" in out:
        out["sum_seconds"] = med([r["sum_seconds"] for r in runs])
    ranks = sorted({k for r in runs for k in r["peak_rss_per_worker_bytes"]})
    out["peak_rss_per_worker_bytes"] = {k: max(r["peak_rss_per_worker_bytes"].get(k, 0) for r in runs) for k in ranks}
    out["peak_rss_main_bytes"] = max(r["peak_rss_main_bytes"] for r in runs)
    out["rounds"] = len(runs)
    return out


def fmt_bytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def render(results: dict) -> str:
    rows = results["figures"]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'figure':<{width}}  {'value':<28}  target"]
    lines += [f"{name:<{width}}  {value:<28}  {target}" for name, value, target in rows]
    return "\n".join(lines)


def figures(res: dict, args) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    full, stages, sub, sub_stages = res.get("chain"), res.get("stages"), res.get("embed_chain"), res.get("embed_stages")
    px = res["aoi"]["pixels"]
    if full and stages:
        rounds = res.get("ratio_rounds") or [full["seconds"] / stages["sum_seconds"]]
        ratio = float(np.median(rounds))
        out.append(("full AOI: chain (cube, composite, uncertainty, video) s", f"{full['seconds']:.0f}", "—"))
        out.append(("full AOI: the same stages one by one, sum s", f"{stages['sum_seconds']:.0f}", "—"))
        out.append(
            (
                "full AOI: chain ÷ sum of stages" + (f" (median of {len(rounds)} rounds)" if len(rounds) > 1 else ""),
                f"{ratio:.3f}" + (f" ({', '.join(f'{r:.3f}' for r in rounds)})" if len(rounds) > 1 else ""),
                "≤ 1.05" + (": met" if ratio <= 1.05 else ": not met"),
            )
        )
        bare = res.get("ratio_rounds_without_rate_control") or []
        if bare:  # the rate control is the same work on both sides, and the noisiest part of each
            out.append(
                (
                    "full AOI: chain ÷ stages, the video plan's rate control taken out of both (median)",
                    f"{float(np.median(bare)):.3f} ({', '.join(f'{r:.3f}' for r in bare)})",
                    "—",
                )
            )
        for name, sec in stages["seconds"].items():
            out.append((f"stage alone: {name} Mpx/s (AOI pixels)", f"{px / sec / 1e6:.3f} ({sec:.0f} s)", "—"))
        out.append(("chain: AOI Mpx/s (all its stages)", f"{px / full['seconds'] / 1e6:.3f}", "—"))
        for name, sec in full["parts"].items():
            out.append((f"chain part: {name} s", f"{sec:.0f}", "—"))
    if sub and sub_stages:
        sub_px = res["embed_aoi"]["pixels"]
        ratio = sub["seconds"] / sub_stages["sum_seconds"]
        out.append(
            (f"embed subset ({res['embed_aoi']['side_px']}² px): chain, all 5 stages s", f"{sub['seconds']:.0f}", "—")
        )
        out.append(("embed subset: stages one by one, sum s", f"{sub_stages['sum_seconds']:.0f}", "—"))
        out.append(
            (
                "embed subset: chain ÷ sum of stages",
                f"{ratio:.3f}",
                "≤ 1.05" + (": met" if ratio <= 1.05 else ": not met"),
            )
        )
        emb_s = sub_stages["seconds"]["embeddings"]
        out.append(("Presto embeddings/s, stage alone (CPU)", f"{sub_px / emb_s:.0f}", "—"))
    for label, run in (("full AOI", full), ("compare AOI", res.get("compare_chain")), ("embed subset", sub)):
        if run:
            peak = max(run["peak_rss_per_worker_bytes"].values() or [0])
            out.append(
                (
                    f"{label} chain: peak RSS per worker (max)",
                    fmt_bytes(peak),
                    "< 2 GB" + (": met" if peak < 2e9 else ": not met"),
                )
            )
            out.append((f"{label} chain: peak RSS of the client process", fmt_bytes(run["peak_rss_main_bytes"]), "—"))
    if full and res.get("compare_chain"):
        a = max(full["peak_rss_per_worker_bytes"].values())
        b = max(res["compare_chain"]["peak_rss_per_worker_bytes"].values())
        big, small = (a, b) if res["compare_aoi"]["pixels"] < px else (b, a)
        out.append(("peak RSS per worker: larger AOI ÷ smaller (area × 2)", f"{big / small:.2f}", "flat (≈ 1)"))
    cost = res.get("cost")
    if cost:
        for name, v in cost["cpu_core_s_per_km2_year"].items():
            out.append((f"cost: CPU core-s / km² / year, {name}", f"{v:.1f}", "—"))
        out.append(
            (
                f"cost: Presto GFLOP per 64² chip ({res['months']} monthly steps)",
                f"{cost['presto_flops_per_chip'] / 1e9:.2f}",
                "—",
            )
        )
        out.append(
            (
                "cost: Presto GPU-s / km² / year (projected, 417 TFLOP/s)",
                f"{cost['presto_gpu_s_per_km2_year']:.2e}",
                "—",
            )
        )
        out.append(
            (
                "cost: Prithvi-300M T=4 GPU-s / km² / year (781 chips/s)",
                f"{cost['prithvi300m_gpu_s_per_km2_year']:.2e}",
                "—",
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument(
        "--km", type=float, default=10.0, help="AOI side in km (default 10: 1000 x 1000 px at 10 m, 100 km²)"
    )
    ap.add_argument("--months", type=int, default=12, help="months (one S2 and one Landsat acquisition each)")
    ap.add_argument("--workers", type=int, default=2, help="Dask worker processes (1 thread each)")
    ap.add_argument("--tile-px", type=int, default=512, help="tile (unit and slice) side in pixels")
    ap.add_argument(
        "--repeat", type=int, default=1, help="rounds of the full-AOI chain and stages (ABBA order; medians)"
    )
    ap.add_argument("--time-step", type=int, default=8, help="time steps per cube slice")
    ap.add_argument("--embed-px", type=int, default=160, help="side of the sub-AOI every stage runs on (embeddings)")
    ap.add_argument("--embed-tile", type=int, default=80, help="tile side on that sub-AOI (Presto chips: the same)")
    ap.add_argument(
        "--compare",
        choices=("half", "double", "none"),
        default="double",
        help="the AOI the chain also runs at, for peak RSS against area",
    )
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: embed, full, stages, compare")
    ap.add_argument("--storage", choices=("float32", "scaled-int"), default="float32", help="the cube's storage")
    ap.add_argument("--gen-workers", type=int, default=2, help="processes generating the archive")
    ap.add_argument("--work", type=Path, default=WORK, help="cache and scratch folder")
    ap.add_argument("--out", type=Path, default=None, help="JSON of the figures (default: <work>/results-<key>.json)")
    ap.add_argument("--keep", action="store_true", help="keep the stores written (default: removed after each run)")
    ap.add_argument(
        "--smoke", action="store_true", help="a tiny AOI (1.28 km), 6 months, 128-px tiles: end to end quickly"
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.km, args.months, args.tile_px, args.embed_px, args.embed_tile, args.time_step = 1.28, 6, 128, 32, 32, 4
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    os.environ.setdefault("EOCUBE_WEIGHTS_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "models"))
    side = int(round(args.km * 1000 / RES / 2)) * 2
    compare_side = {
        "half": int(round(side / math.sqrt(2) / 2)) * 2,
        "double": int(round(side * math.sqrt(2) / 2)) * 2,
        "none": None,
    }[args.compare]
    archive_side = max(side, compare_side or 0)
    spec = ArchiveSpec(archive_side, args.months)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731
    res: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "months": args.months,
        "archive": dataclasses.asdict(spec),
        "date": dt.date.today().isoformat(),
    }
    with contextlib.suppress(Exception):
        import subprocess

        root = Path(__file__).resolve().parents[1]
        res["git"] = {
            "head": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
            ).stdout.strip(),
            "pipeline_files_changed": len(
                subprocess.run(
                    ["git", "status", "--short", "pipeline"], cwd=root, capture_output=True, text=True
                ).stdout.splitlines()
            ),
            "pipeline_diff_sha256": __import__("hashlib")
            .sha256(subprocess.run(["git", "diff", "HEAD", "--", "pipeline"], cwd=root, capture_output=True).stdout)
            .hexdigest()[:16],
        }

        res["lscpu"] = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:14]
        res["loadavg_start"] = os.getloadavg()
    log(f"archive {spec.key}: AOI {archive_side} x {archive_side} px at 10 m, {args.months} months x (S2 + Landsat)")
    t0 = time.perf_counter()
    archive = generate_archive(spec, work, args.gen_workers, log)
    res["archive_info"] = json.loads((archive / "chain-scale.json").read_text())
    log(
        f"archive ready in {time.perf_counter() - t0:.0f} s: {archive} ({fmt_bytes(res['archive_info']['cog_bytes'])} of COGs)"
    )
    monitor = Monitor()
    artefact = train_artefact_cached(archive, spec, work, args.tile_px, args.workers, monitor, log)
    res["artefact"] = {"path": str(artefact), **ARTEFACT_OPTIONS, "n_steps": N_STEPS, "product": "composite"}
    res["aoi"] = {"side_px": side, "pixels": side * side, "km2": side * side * RES * RES / 1e6}
    all_products = ["composite", "embeddings", "uncertainty", "video"]
    no_embed = ["composite", "uncertainty", "video"]

    def save() -> None:
        path = args.out or work / f"results-{spec.key}-{side}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        res["figures"] = figures(res, args)
        path.write_text(json.dumps(res, indent=1, default=str))
        res["json"] = str(path)

    if "embed" not in skip:
        e = min(args.embed_px, side)
        res["embed_aoi"] = {"side_px": e, "pixels": e * e}
        tile = min(args.embed_tile, e)
        res["embed_aoi"]["tile_px"] = tile
        req = make_request(archive, spec, e, work / "embed-chain.zarr", tile, all_products, artefact)
        log(f"embedding subset {e} x {e} px: the chain with every stage ...")
        res["embed_chain"] = run_chain(req, archive, tile, args.time_step, args.workers, monitor)
        log(f"  {res['embed_chain']['seconds']:.0f} s; the same stages one by one ...")
        if not args.keep:
            remove(Path(req.output))
        res["embed_stages"] = run_stages(req, archive, work, tile, args.workers, monitor, artefact)
        log(f"  {res['embed_stages']['sum_seconds']:.0f} s")
        if not args.keep:
            remove(*(work / f"stages-{n}.zarr" for n in ("cube", "composite", "uncertainty", "video")))
        save()
    if "full" not in skip:
        req = make_request(
            archive, spec, side, work / "chain.zarr", args.tile_px, no_embed, artefact, storage=args.storage
        )
        chains, stages = [], []
        for r in range(args.repeat):  # rounds in ABBA order: a drift of the machine's load cancels out
            order = ("chain", "stages") if r % 2 == 0 else ("stages", "chain")
            for what in order:
                if what == "stages" and "stages" in skip:
                    continue
                log(
                    f"full AOI {side} x {side} px, round {r + 1}/{args.repeat}: "
                    + (
                        "the chain (cube, composite, uncertainty, video) ..."
                        if what == "chain"
                        else "the same stages one by one ..."
                    )
                )
                if what == "chain":
                    chains.append(run_chain(req, archive, args.tile_px, args.time_step, args.workers, monitor))
                    log(f"  {chains[-1]['seconds']:.0f} s")
                    if not args.keep:
                        remove(Path(req.output))
                else:
                    stages.append(run_stages(req, archive, work, args.tile_px, args.workers, monitor, artefact))
                    log(
                        f"  {stages[-1]['sum_seconds']:.0f} s: {json.dumps({k: round(v) for k, v in stages[-1]['seconds'].items()})}"
                    )
                    if not args.keep:
                        remove(*(work / f"stages-{n}.zarr" for n in ("cube", "composite", "uncertainty", "video")))
                res["chain_rounds"], res["stages_rounds"] = chains, stages
                res["chain"] = combine_runs(chains) if chains else None
                res["stages"] = combine_runs(stages) if stages else None
                res["ratio_rounds"] = [c["seconds"] / s_["sum_seconds"] for c, s_ in zip(chains, stages, strict=False)]
                res["ratio_rounds_without_rate_control"] = [
                    (c["seconds"] - c["parts"].get(RATE_CONTROL, 0.0))
                    / (s_["sum_seconds"] - s_.get("video_rate_control_seconds", 0.0))
                    for c, s_ in zip(chains, stages, strict=False)
                ]
                save()
    if compare_side and "compare" not in skip:
        res["compare_aoi"] = {"side_px": compare_side, "pixels": compare_side**2}
        req = make_request(
            archive, spec, compare_side, work / "compare.zarr", args.tile_px, no_embed, artefact, storage=args.storage
        )
        log(f"compare AOI {compare_side} x {compare_side} px: the chain ...")
        res["compare_chain"] = run_chain(req, archive, args.tile_px, args.time_step, args.workers, monitor)
        log(f"  {res['compare_chain']['seconds']:.0f} s")
        if not args.keep:
            remove(Path(req.output))
        save()
    # cost model per km² per year
    cost: dict[str, Any] = {"cpu_core_s_per_km2_year": {}}
    per_year = 12 / args.months
    if res.get("stages"):
        km2 = res["aoi"]["km2"]
        for name, c in res["stages"]["cpu_seconds"].items():
            cost["cpu_core_s_per_km2_year"][f"{name} (stage alone)"] = c / km2 * per_year
        cost["cpu_core_s_per_km2_year"]["chain (cube, composite, uncertainty, video)"] = (
            res["chain"]["cpu_seconds"] / km2 * per_year
        )
    if res.get("embed_stages"):
        e = res["embed_aoi"]
        km2 = e["pixels"] * RES * RES / 1e6
        cost["cpu_core_s_per_km2_year"]["Presto embeddings (stage alone, measured on the subset)"] = (
            res["embed_stages"]["cpu_seconds"]["embeddings"] / km2
        )  # pooled: one embedding per pixel per year
    try:
        fl = presto_flops_per_chip(64, args.months)
        chips_per_km2_year = 1e6 / (RES * RES) / 64**2  # one pooled embedding per pixel per year
        cost.update(
            presto_flops_per_chip=fl["flops_per_chip"],
            presto_flops_per_pixel=fl["flops_per_pixel"],
            chips_per_km2_year=chips_per_km2_year,
            presto_gpu_s_per_km2_year=fl["flops_per_chip"] * chips_per_km2_year / (GPU_TFLOPS * 1e12),
        )
    except Exception as exc:  # weights missing: say so, keep the rest
        cost["presto_flops_error"] = f"{type(exc).__name__}: {exc}"
    # a Prithvi-300M-size ViT at T = 4 on 224² chips: 781 chips/s on an H100; 3 windows of 4 months a year
    cost["prithvi300m_gpu_s_per_km2_year"] = 1e6 / (RES * RES) / 224**2 * 3 / 781
    res["cost"] = cost
    save()
    print()
    print(render(res))
    print(f"\nJSON: {res['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
