"""The typed data model every stage speaks.

A :class:`CubeRequest` says *what* to build (area, grid, dates, sensors, output);
stages turn it into a :class:`SearchResult` (STAC items per sensor) and then into a
cube (an ``xarray.Dataset``, see :mod:`pipeline.cube`). Everything here is plain
data: pydantic models that validate on construction and serialise to JSON for
provenance.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Sensor names a request may ask for, mapped to the profile id of the product used.
SENSOR_PRODUCTS: dict[str, str] = {
    "sentinel-2": "sentinel-2-l2a",
    "landsat": "landsat-c2-l2",
    "modis": "modis-09A1-061",
    "hls-l30": "hls2-l30",
    "hls-s30": "hls2-s30",
}

Resampling = Literal["nearest", "bilinear", "cubic", "average", "mode", "min", "max", "med"]


class RequestError(ValueError):
    """A request that cannot be served; the message names the problem in one line."""


class MaskPolicyRequest(BaseModel):
    """Which QA flags remove a pixel; see :class:`pipeline.sensors.MaskPolicy` for defaults."""

    model_config = ConfigDict(extra="forbid")

    drop: list[str] | None = None
    min_cloud_confidence: str | None = None
    dilation_m: float = Field(0.0, ge=0.0, description="buffer around cloud and shadow, metres")


class CompositeRequest(BaseModel):
    """Temporal compositing of the cube into regular bins (see :func:`pipeline.cube.composite`)."""

    model_config = ConfigDict(extra="forbid")

    freq: str = Field("1MS", description="start-anchored pandas frequency: '10D', '1MS', 'QS-DEC', ...")
    method: Literal["median", "mean", "best", "count", "geomedian"] = "median"


class CubeRequest(BaseModel):
    """An area of interest, a grid, a date range and the sensors to stack.

    ``bbox`` is ``(min_lon, min_lat, max_lon, max_lat)`` in degrees (EPSG:4326);
    ``geometry`` (GeoJSON, EPSG:4326) may be given instead. ``crs`` and
    ``resolution`` (metres for projected CRSs) define the output grid; ``crs=None``
    picks the UTM zone of the area's centre.
    """

    model_config = ConfigDict(extra="forbid")

    catalog: str = Field("demo", description="catalog name (catalogs/<name>.yaml) or path to a catalog YAML")
    bbox: tuple[float, float, float, float] | None = None
    geometry: dict[str, Any] | None = None
    start: dt.date
    end: dt.date
    sensors: list[str] = Field(default_factory=lambda: ["sentinel-2", "landsat", "modis"])
    crs: str | None = None
    resolution: float = Field(10.0, gt=0, description="output pixel size in CRS units (metres)")
    bands: list[str] | None = Field(None, description="common band names; None = those all requested sensors share")
    max_cloud_cover: float | None = Field(None, ge=0, le=100, description="item-level eo:cloud_cover pre-filter, %")
    mask: MaskPolicyRequest = Field(default_factory=MaskPolicyRequest)
    resampling: dict[str, Resampling] = Field(
        default_factory=lambda: {"reflectance": "bilinear", "qa": "nearest"},
        description="resampling per variable kind ('reflectance', 'qa') or per band name",
    )
    chunks: dict[str, int] = Field(default_factory=lambda: {"time": 1, "y": 512, "x": 512})
    output: Path = Path("out/cube.zarr")
    engine: Literal["odc-stac", "stackstac"] = Field("odc-stac", description="reader of the COGs")
    composite: CompositeRequest | None = Field(None, description="temporal composite instead of every date")
    storage: Literal["float32", "scaled-int"] = Field(
        "float32", description="reflectance bands as float32 with NaN, or as the sensors' integer DN on one "
        "grid with CF scale_factor/add_offset/_FillValue (half the bytes; see pipeline.cube.packing)")
    max_failed_fraction: float = Field(
        0.25, ge=0.0, le=1.0, description="share of the items found that may fail to read (their pixels masked "
        "and recorded) before the run fails, naming them")
    overwrite: bool = Field(False, description="replace an existing eocube store at `output` (never anything else)")

    @field_validator("bbox")
    @classmethod
    def _check_bbox(cls, bbox: tuple[float, float, float, float] | None):
        if bbox is None:
            return bbox
        x0, y0, x1, y1 = bbox
        if not (-180 <= x0 <= 180 and -180 <= x1 <= 180 and -90 <= y0 <= 90 and -90 <= y1 <= 90):
            raise ValueError(f"bbox {bbox} is outside lon [-180, 180] / lat [-90, 90]")
        if x0 >= x1 or y0 >= y1:
            raise ValueError(f"bbox {bbox} is inverted or empty: expected (min_lon, min_lat, max_lon, max_lat)")
        return bbox

    @field_validator("sensors")
    @classmethod
    def _check_sensors(cls, sensors: list[str]):
        if not sensors:
            raise ValueError("no sensors requested")
        unknown = [s for s in sensors if s not in SENSOR_PRODUCTS]
        if unknown:
            raise ValueError(f"unknown sensor(s) {unknown}; known: {sorted(SENSOR_PRODUCTS)}")
        return list(dict.fromkeys(sensors))

    @model_validator(mode="after")
    def _check_area_and_dates(self):
        if (self.bbox is None) == (self.geometry is None):
            raise ValueError("give exactly one of bbox or geometry")
        if self.end < self.start:
            raise ValueError(f"end date {self.end} is before start date {self.start}")
        if self.storage == "scaled-int" and self.composite is not None:
            raise ValueError("storage='scaled-int' keeps the sensors' DN per date; composites are float32 statistics: "
                             "drop one of storage or composite")
        return self

    @property
    def datetime_range(self) -> str:
        """The STAC ``datetime`` search interval (inclusive, whole days, UTC)."""
        return f"{self.start.isoformat()}T00:00:00Z/{self.end.isoformat()}T23:59:59Z"

    def area_bbox(self) -> tuple[float, float, float, float]:
        """The request's bounding box in degrees, from ``bbox`` or the geometry's bounds."""
        if self.bbox is not None:
            return self.bbox
        import shapely.geometry

        return tuple(shapely.geometry.shape(self.geometry).bounds)  # type: ignore[return-value]
