"""A synthetic but physically plausible landscape for the demo archive.

Pure functions of world coordinates (metres in the demo's UTM zone), so every sensor
samples the same land surface on its own grid: land-cover patches (Voronoi cells),
class spectra interpolated at any band's centre wavelength, seasonal phenology, and
per-acquisition clouds, shadows and snow.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import map_coordinates
from scipy.spatial import cKDTree

#: Land-cover classes of the demo landscape.
CLASSES = ("forest", "cropland", "grassland", "water", "urban", "bare")

# Reflectance spectra (unitless, 0-1) at these wavelengths (micrometres).
_WAVELENGTHS = np.array([0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.865, 0.945, 1.24, 1.61, 2.19])
_VEGETATION = np.array([0.03, 0.04, 0.08, 0.04, 0.12, 0.30, 0.38, 0.42, 0.43, 0.40, 0.36, 0.22, 0.11])
_SOIL = np.array([0.08, 0.10, 0.14, 0.18, 0.21, 0.24, 0.26, 0.28, 0.29, 0.29, 0.32, 0.34, 0.30])
_WATER = np.array([0.06, 0.06, 0.05, 0.03, 0.02, 0.015, 0.012, 0.01, 0.01, 0.005, 0.004, 0.005, 0.003])
_URBAN = np.array([0.10, 0.11, 0.13, 0.15, 0.16, 0.17, 0.18, 0.19, 0.19, 0.19, 0.21, 0.23, 0.21])
_SNOW = np.array([0.92, 0.92, 0.90, 0.88, 0.86, 0.84, 0.82, 0.80, 0.78, 0.70, 0.40, 0.10, 0.06])
_CLOUD = np.array([0.55, 0.55, 0.54, 0.53, 0.53, 0.53, 0.53, 0.52, 0.52, 0.48, 0.45, 0.40, 0.30])

# Vegetation fraction per class: (base, seasonal amplitude, day of year of the peak).
_PHENOLOGY = {
    "forest": (0.75, 0.12, 190),
    "cropland": (0.45, 0.40, 170),
    "grassland": (0.45, 0.22, 140),
    "water": (0.0, 0.0, 0),
    "urban": (0.10, 0.03, 180),
    "bare": (0.05, 0.03, 180),
}


def spectrum_at(spectrum: np.ndarray, wavelength_um: float) -> float:
    """Linear interpolation of a tabulated spectrum at one wavelength (micrometres)."""
    return float(np.interp(wavelength_um, _WAVELENGTHS, spectrum))


def vegetation_fraction(class_name: str, date: dt.date) -> float:
    """Green-vegetation cover fraction (0-1) of a class on a date: a seasonal cosine."""
    base, amp, peak = _PHENOLOGY[class_name]
    doy = date.timetuple().tm_yday
    return float(np.clip(base + amp * np.cos(2 * np.pi * (doy - peak) / 365.25), 0, 1))


def is_winter(date: dt.date) -> bool:
    """Snow season of the demo (December to February) for the ``bare`` (mountain) class."""
    return date.month in (12, 1, 2)


@dataclass(frozen=True)
class Landscape:
    """Land cover over a square region, defined by Voronoi seeds in world metres."""

    seeds_xy: np.ndarray  # (n, 2) metres
    seed_class: np.ndarray  # (n,) index into CLASSES
    texture_phase: np.ndarray  # (4,) radians, for a smooth within-class texture

    @classmethod
    def generate(
        cls,
        rng: np.random.Generator,
        bounds: tuple[float, float, float, float],
        core: tuple[float, float, float, float],
        n_seeds: int = 400,
    ) -> Landscape:
        """Random patches over ``bounds``; one seed of every class lies inside ``core`` (the AOI)."""
        x0, y0, x1, y1 = bounds
        seeds = np.column_stack([rng.uniform(x0, x1, n_seeds), rng.uniform(y0, y1, n_seeds)])
        seeds[: len(CLASSES)] = np.column_stack(
            [rng.uniform(core[0], core[2], len(CLASSES)), rng.uniform(core[1], core[3], len(CLASSES))]
        )
        weights = np.array([0.25, 0.3, 0.2, 0.07, 0.08, 0.1])
        classes = rng.choice(len(CLASSES), size=n_seeds, p=weights)
        classes[: len(CLASSES)] = np.arange(len(CLASSES))  # every class occurs
        return cls(seeds, classes, rng.uniform(0, 2 * np.pi, 4))

    def class_index(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Land-cover class index at world coordinates (any shape)."""
        _, nearest = cKDTree(self.seeds_xy).query(np.column_stack([x.ravel(), y.ravel()]))
        return self.seed_class[nearest].reshape(x.shape)

    def texture(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Multiplicative brightness texture (about 0.93-1.07), smooth in space."""
        p = self.texture_phase
        return 1 + 0.035 * (np.sin(x / 170 + p[0]) * np.cos(y / 230 + p[1]) + np.sin((x + y) / 90 + p[2]))

    def surface_reflectance(
        self, x: np.ndarray, y: np.ndarray, wavelengths_um: list[float], date: dt.date
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cloud-free surface reflectance ``(band, *x.shape)`` and the snow mask ``x.shape``."""
        cls_idx = self.class_index(x, y)
        tex = self.texture(x, y)
        out = np.empty((len(wavelengths_um), *x.shape), dtype=np.float64)
        snow = np.zeros(x.shape, dtype=bool)
        for k, name in enumerate(CLASSES):
            sel = cls_idx == k
            if not sel.any():
                continue
            if name == "water":
                spec = _WATER
            elif name == "urban":
                spec = _URBAN
            else:
                v = vegetation_fraction(name, date)
                spec = v * _VEGETATION + (1 - v) * _SOIL
            if name == "bare" and is_winter(date):
                spec = _SNOW
                snow |= sel
            for b, wl in enumerate(wavelengths_um):
                out[b][sel] = spectrum_at(spec, wl)
        out *= tex if not snow.any() else np.where(snow, 1.0, tex)
        return out, snow


@dataclass(frozen=True)
class Sky:
    """Clouds of one acquisition: optical thickness as a smooth field in world metres."""

    thickness_grid: np.ndarray  # coarse (ny, nx) field in [0, 1]
    origin: tuple[float, float]  # world (x, y) of grid cell [0, 0] centre
    spacing: float  # metres between grid nodes
    shadow_shift: tuple[float, float]  # metres: shadow = cloud displaced by this vector
    cirrus: float  # extra thin-cirrus thickness over the scene (0 = none)

    @classmethod
    def generate(
        cls, rng: np.random.Generator, bounds: tuple[float, float, float, float], cover: float, spacing: float = 250.0
    ) -> Sky:
        """Clouds covering about ``cover`` (0-1) of ``bounds``; 1.0 is an all-cloudy scene."""
        x0, y0, x1, y1 = bounds
        nx, ny = int((x1 - x0) / spacing) + 3, int((y1 - y0) / spacing) + 3
        noise = rng.normal(size=(ny, nx))
        from scipy.ndimage import gaussian_filter

        field = gaussian_filter(noise, 1.5)
        if cover <= 0:
            thick = np.zeros_like(field)
        elif cover >= 1:
            thick = np.ones_like(field)
        else:
            thr = np.quantile(field, 1 - cover)
            width = 0.35 * field.std()
            thick = np.clip((field - thr) / width + 0.5, 0, 1)
        cirrus = float(rng.uniform(0.08, 0.15)) if rng.random() < 0.1 else 0.0
        shift = (float(rng.uniform(150, 400)), float(rng.uniform(-400, -150)))
        return cls(thick, (x0 - spacing, y1 + spacing), spacing, shift, cirrus)

    def thickness(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Cloud optical thickness proxy in [0, 1] at world coordinates."""
        col = (x - self.origin[0]) / self.spacing
        row = (self.origin[1] - y) / self.spacing
        return np.clip(map_coordinates(self.thickness_grid, [row, col], order=1, mode="nearest"), 0, 1)

    def shadow(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Shadow strength in [0, 1]: the cloud field seen from the displaced position."""
        return self.thickness(x - self.shadow_shift[0], y - self.shadow_shift[1])


#: Optical thickness above which a pixel counts as cloud in the truth (and in every QA band).
CLOUD_THICKNESS = 0.2
#: Optical thickness above which a cloud is opaque (high-probability / high-confidence cloud).
OPAQUE_THICKNESS = 0.5

#: Truth classes the generator records per QA pixel (uint8).
TRUTH_CLEAR, TRUTH_CLOUD, TRUTH_SHADOW, TRUTH_SNOW, TRUTH_WATER, TRUTH_NODATA, TRUTH_CIRRUS = range(7)
TRUTH_NAMES = {0: "clear", 1: "cloud", 2: "cloud_shadow", 3: "snow", 4: "water", 5: "nodata", 6: "cirrus"}


def observe(
    surface: np.ndarray,
    snow: np.ndarray,
    water: np.ndarray,
    thick: np.ndarray,
    shadow: np.ndarray,
    cirrus: float,
    wavelengths_um: list[float],
) -> tuple[np.ndarray, np.ndarray]:
    """Top-of-canopy reflectance as the sensor sees it, and the truth class per pixel.

    ``surface`` is ``(band, y, x)``; masks are ``(y, x)``. Pixels with cloud optical
    thickness above :data:`CLOUD_THICKNESS` are cloud; shadows darken the surface by up to 65 %.
    """
    cloud_spec = np.array([spectrum_at(_CLOUD, wl) for wl in wavelengths_um])[:, None, None]
    shade = 1 - 0.65 * np.clip(shadow * 2 - 0.3, 0, 1)
    seen = surface * np.where(thick > 0.02, 1.0, shade)
    seen = (1 - thick) * seen + thick * cloud_spec
    if cirrus:
        seen = (1 - cirrus) * seen + cirrus * cloud_spec
    truth = np.full(thick.shape, TRUTH_CLEAR, dtype=np.uint8)
    truth[water] = TRUTH_WATER
    truth[snow] = TRUTH_SNOW
    if cirrus:
        truth[:] = np.where(truth == TRUTH_CLEAR, TRUTH_CIRRUS, truth)
    truth[(shadow > 0.35) & (thick <= 0.02)] = TRUTH_SHADOW
    truth[thick > CLOUD_THICKNESS] = TRUTH_CLOUD
    return seen, truth
