"""The typed data model every stage speaks.

A :class:`CubeRequest` says *what* to build (area, grid, dates, sensors, output);
stages turn it into a :class:`SearchResult` (STAC items per sensor) and then into a
cube (an ``xarray.Dataset``, see :mod:`pipeline.cube`). Everything here is plain
data: pydantic models that validate on construction and serialise to JSON for
provenance.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    import pystac

#: ``progress(stage, done, total)``: how long-running functions report what they have done
Progress = Callable[[str, int, int], None]

Resampling = Literal["nearest", "bilinear", "cubic", "average", "mode", "min", "max", "med"]


class RequestError(ValueError):
    """A request that cannot be served; the message names the problem in one line."""


class RequestWarning(UserWarning):
    """A request accepted after a repair (e.g. of a self-intersecting geometry); the message says which."""


_Section = TypeVar("_Section")
_Choice = TypeVar("_Choice", bound=str)


def required(section: _Section | None, name: str) -> _Section:
    """A section of a request (``request.embed``, ...) that the caller needs: itself, or a :class:`RequestError`
    naming it where the request has none (a product's maker runs only for the sections a request gives)."""
    if section is None:
        raise RequestError(f"the request has no {name} section, which this step needs")
    return section


def one_of(value: str, choices: tuple[_Choice, ...], name: str) -> _Choice:
    """``value`` (e.g. a command-line string) as one of ``choices`` (a ``Literal``'s values), or a ValueError
    ``"<name> must be 'a', 'b' or 'c', not 'x'"``."""
    for choice in choices:
        if value == choice:
            return choice
    listed = " or ".join(filter(None, [", ".join(repr(c) for c in choices[:-1]), repr(choices[-1])]))
    raise ValueError(f"{name} must be {listed}, not {value!r}")


def _geometry_crosses_antimeridian(shape: Any) -> tuple[float, float] | None:
    """An edge ``(lon_a, lon_b)`` of a polygonal shape whose longitudes jump more than 180 degrees, if any."""
    import shapely

    for ring in shapely.get_rings(shapely.get_parts(shape)):
        lons = shapely.get_coordinates(ring)[:, 0]
        jumps = abs(lons[1:] - lons[:-1]) > 180
        if jumps.any():
            i = int(jumps.argmax())
            return float(lons[i]), float(lons[i + 1])
    return None


_POLYGONAL = ("Polygon", "MultiPolygon")


def _unwrap_features(geometry: Any) -> dict[str, Any]:
    """The GeoJSON geometry a Feature stands for, or a FeatureCollection (the MultiPolygon of its polygons)."""
    geometry = geometry if isinstance(geometry, dict) else {}
    if geometry.get("type") == "Feature":
        return _unwrap_features(geometry.get("geometry"))
    if geometry.get("type") != "FeatureCollection":
        return geometry
    geoms = [_unwrap_features(f) for f in geometry.get("features") or []]
    other = {str(g.get("type")) for g in geoms} - set(_POLYGONAL)
    if other:
        raise ValueError(
            f"geometry FeatureCollection has {sorted(other)} features; only Polygon and MultiPolygon "
            "areas are supported"
        )
    parts = [
        p for g in geoms for p in ([g.get("coordinates")] if g["type"] == "Polygon" else g.get("coordinates") or [])
    ]
    return {"type": "MultiPolygon", "coordinates": parts}


def check_geometry(geometry: dict[str, Any]) -> dict[str, Any]:
    """A request's area as a GeoJSON Polygon or MultiPolygon in lon/lat degrees, or ValueError in one line.

    A Feature stands for its geometry and a FeatureCollection for the MultiPolygon of its
    features' polygons. Coordinates must lie in lon [-180, 180] / lat [-90, 90], and no edge
    may cross the antimeridian (a longitude jump of more than 180 degrees): such an area is
    split at 180 degrees into one request per side. An invalid (e.g. self-intersecting)
    area is repaired with ``shapely.make_valid`` and a :class:`RequestWarning`, unless the
    repair has no polygonal area.
    """
    import numpy as np
    import shapely
    import shapely.geometry
    from shapely.validation import explain_validity

    geometry = _unwrap_features(geometry)
    kind = geometry.get("type")
    if kind not in _POLYGONAL:
        raise ValueError(
            f"geometry type {kind!r} is not supported: give a GeoJSON Polygon or MultiPolygon "
            "(or a Feature/FeatureCollection of them) in lon/lat degrees"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NaN coordinates: refused below
            shape = shapely.geometry.shape(geometry)
    except (ValueError, TypeError, LookupError, shapely.errors.ShapelyError) as exc:  # malformed coordinates
        reason = " ".join(str(exc).split())
        raise ValueError(f"geometry is not a valid GeoJSON {kind}: {type(exc).__name__}: {reason}") from None
    if shape.is_empty:
        raise ValueError(f"geometry {kind} is empty")
    x0, y0, x1, y1 = shape.bounds
    if not np.isfinite(shapely.get_coordinates(shape)).all():
        raise ValueError(f"geometry {kind} has non-finite (NaN or infinite) coordinates")
    if not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
        raise ValueError(f"geometry bounds {(x0, y0, x1, y1)} are outside lon [-180, 180] / lat [-90, 90]")
    if (edge := _geometry_crosses_antimeridian(shape)) is not None:
        raise ValueError(
            f"geometry crosses the antimeridian (an edge from lon {edge[0]} to {edge[1]}), which is not "
            "supported: split it at lon 180 into one geometry per side and make one request for each"
        )
    if shape.is_valid:
        return geometry
    problem = explain_validity(shape)
    try:
        repaired = shapely.make_valid(shape)
    except shapely.errors.GEOSException as exc:
        raise ValueError(f"geometry is invalid ({problem}) and shapely.make_valid cannot repair it: {exc}") from None
    parts = [p for p in shapely.get_parts(repaired) if p.geom_type in _POLYGONAL and not p.is_empty]
    area = shapely.union_all(parts) if parts else None
    if area is None or area.is_empty or area.area == 0:
        raise ValueError(
            f"geometry is invalid ({problem}) and shapely.make_valid finds no area in it ({repaired.geom_type})"
        )
    warnings.warn(
        f"request geometry is invalid ({problem}); using its repair by shapely.make_valid, "
        f"a {area.geom_type} of area {area.area:.6g} square degrees",
        RequestWarning,
        stacklevel=2,
    )
    return json.loads(shapely.to_geojson(area))


class MaskPolicyRequest(BaseModel):
    """Which QA flags remove a pixel; see :class:`pipeline.sensors.MaskPolicy` for defaults."""

    model_config = ConfigDict(extra="forbid")

    drop: list[str] | None = None
    min_cloud_confidence: str | None = None
    dilation_m: float = Field(0.0, ge=0.0, description="buffer around cloud and shadow, metres")


class CompositeRequest(BaseModel):
    """The ``composite`` product: the cube's regular-bin temporal composites (see :func:`pipeline.cube.composite`)."""

    model_config = ConfigDict(extra="forbid")

    freq: str = Field("1MS", description="start-anchored pandas frequency: '10D', '1MS', 'QS-DEC', ...")
    method: Literal["median", "mean", "best", "count", "geomedian"] = "median"


class EmbedRequest(BaseModel):
    """The ``embeddings`` product: a foundation model's embeddings of the composite (or of the cube).

    ``temporal="pooled"`` gives one vector per pixel (or patch) for the whole series;
    ``"per-time-step"`` runs the encoder on each time step alone and keeps a ``time`` dim.
    ``head``: a regression-head artefact (``eocube embed train-head``) applied to the embeddings.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field("presto", description="encoder name (see `eocube embed models`)")
    weights: Path | None = Field(None, description="weights file or folder; default: $EOCUBE_WEIGHTS_DIR, the caches")
    input: Literal["composite", "cube"] = "composite"
    temporal: Literal["pooled", "per-time-step"] = "pooled"
    chip_size: int | None = Field(None, gt=0, description="pixels per chip side (default: the model's)")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: GPU workers where the cluster has them, else the CPU workers"
    )
    head: Path | None = Field(None, description="regression-head artefact to apply to the embeddings")


class UncertaintyRequest(BaseModel):
    """The ``uncertainty`` product: maps of a trained MC-TD / MC-ConcTD artefact's predictions and spread.

    The artefact (``eocube uncertainty train``) names its input product, variables and time
    window; they are checked against the request before any work starts.
    """

    model_config = ConfigDict(extra="forbid")

    model: Path = Field(..., description="artefact folder written by `eocube uncertainty train`")
    target: str | None = Field(None, description="name of the predicted quantity (default: the artefact's)")
    mc_samples: int | None = Field(None, ge=2, description="Monte-Carlo passes (default: the artefact's)")
    coverage: float | None = Field(None, gt=0, lt=1, description="interval coverage (default: the artefact's)")


class CompressRequest(BaseModel):
    """The ``video`` product: the cube's bands packed into 12-bit video streams (``lossless``: ffv1).

    At most one of ``target_psnr`` (dB, peak = the value range's width), ``target_bpppb`` and
    ``qp``; lossy with none of them aims at 45 dB. The QP is chosen once, on sample chunks,
    when the product is created, so every unit of a backfill is coded alike.
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["lossy", "lossless"] = "lossy"
    # 12-bit samples: the quantisation alone caps PSNR near 83 dB and the raw rate at 12 bits
    target_psnr: float | None = Field(None, gt=0, le=83, allow_inf_nan=False)
    target_bpppb: float | None = Field(None, gt=0, le=12, allow_inf_nan=False)
    qp: float | None = None
    bands: list[str] | None = Field(None, description="bands to code (default: every band of the cube)")

    @model_validator(mode="after")
    def _one_target(self) -> CompressRequest:
        given = [k for k in ("target_psnr", "target_bpppb", "qp") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of target_psnr, target_bpppb and qp, not {given}")
        if self.mode == "lossless" and given:
            raise ValueError(f"lossless mode takes no {given[0]}")
        if self.mode == "lossy" and not given:
            self.target_psnr = 45.0
        return self


def _default_resampling() -> dict[str, Resampling]:
    return {"reflectance": "bilinear", "qa": "nearest"}


class CubeRequest(BaseModel):
    """An area of interest, a grid, a date range and the sensors to stack.

    ``bbox`` is ``(min_lon, min_lat, max_lon, max_lat)`` in degrees (EPSG:4326);
    ``geometry`` (GeoJSON, EPSG:4326) may be given instead: a Polygon or MultiPolygon, or a
    Feature/FeatureCollection of them (see :func:`check_geometry`). ``crs`` and
    ``resolution`` (metres for projected CRSs) define the output grid; ``crs=None``
    picks the UTM zone of the area's centre.
    """

    model_config = ConfigDict(extra="forbid")

    catalog: str = Field("demo", description="catalog name (catalogs/<name>.yaml) or path to a catalog YAML")
    bbox: tuple[float, float, float, float] | None = None
    geometry: dict[str, Any] | None = None
    start: dt.date
    end: dt.date
    sensors: list[str] = Field(
        default_factory=lambda: ["sentinel-2", "landsat", "modis"],
        description="names of the catalog's collections (`eocube catalogs` lists them)",
    )
    crs: str | None = None
    resolution: float = Field(10.0, gt=0, allow_inf_nan=False, description="output pixel size in CRS units (metres)")
    bands: list[str] | None = Field(None, description="common band names; None = those all requested sensors share")
    max_cloud_cover: float | None = Field(None, ge=0, le=100, description="item-level eo:cloud_cover pre-filter, %")
    mask: MaskPolicyRequest = Field(default_factory=MaskPolicyRequest)
    resampling: dict[str, Resampling] = Field(
        default_factory=_default_resampling,
        description="resampling per variable kind ('reflectance', 'qa') or per band name",
    )
    chunks: dict[str, int] = Field(default_factory=lambda: {"time": 1, "y": 512, "x": 512})
    output: Path = Path("out/cube.zarr")
    engine: Literal["odc-stac", "stackstac"] = Field("odc-stac", description="reader of the COGs")
    composite: CompositeRequest | None = Field(None, description="the composite product (regular-bin composites)")
    embed: EmbedRequest | None = Field(None, description="the embeddings product")
    uncertainty: UncertaintyRequest | None = Field(None, description="the uncertainty product")
    compress: CompressRequest | None = Field(None, description="the video product (the cube as video)")
    format: Literal["zarr", "icechunk"] = Field("zarr", description="store format: Zarr v3 or an Icechunk repository")
    storage: Literal["float32", "scaled-int"] = Field(
        "float32",
        description="reflectance bands as float32 with NaN, or as the sensors' integer DN on one "
        "grid with CF scale_factor/add_offset/_FillValue (half the bytes; see pipeline.cube.packing)",
    )
    max_failed_fraction: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="share of the items found that may fail to read (their pixels masked "
        "and recorded) before the run fails, naming them",
    )
    overwrite: bool = Field(False, description="replace an existing eocube store at `output` (never anything else)")

    @field_validator("bbox")
    @classmethod
    def _check_bbox(cls, bbox: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
        """A non-empty lon/lat box with min < max, not crossing the antimeridian (say how to split it if it does)."""
        if bbox is None:
            return bbox
        x0, y0, x1, y1 = bbox
        if not (-180 <= x0 <= 180 and -180 <= x1 <= 180 and -90 <= y0 <= 90 and -90 <= y1 <= 90):
            raise ValueError(f"bbox {bbox} is outside lon [-180, 180] / lat [-90, 90]")
        if x0 == x1 or y0 >= y1:
            raise ValueError(f"bbox {bbox} is inverted or empty: expected (min_lon, min_lat, max_lon, max_lat)")
        if x0 > x1:
            sides = " and ".join(str(b) for b in ((x0, y0, 180.0, y1), (-180.0, y0, x1, y1)) if b[0] < b[2])
            raise ValueError(
                f"bbox {bbox} crosses the antimeridian (min_lon {x0} > max_lon {x1}), which is not "
                f"supported: split it at lon 180 into {sides} and make one request for each "
                f"(or, if the bbox is inverted by mistake, use {(x1, y0, x0, y1)})"
            )
        return bbox

    @field_validator("geometry")
    @classmethod
    def _check_geometry(cls, geometry: dict[str, Any] | None) -> dict[str, Any] | None:
        """A polygonal lon/lat area (see :func:`check_geometry`)."""
        return None if geometry is None else check_geometry(geometry)

    @field_validator("crs")
    @classmethod
    def _check_crs(cls, crs: str | None) -> str | None:
        """A CRS pyproj can parse (``EPSG:32632``, a PROJ string, WKT...), or None for the UTM zone of the area."""
        if crs is None:
            return crs
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            CRS.from_user_input(crs)
        except CRSError as exc:
            found = re.search(r"proj_create: ([^)]*)", str(exc))
            reason = found.group(1) if found else str(exc)
            raise ValueError(
                f"crs {crs!r} is not a CRS pyproj can parse ({' '.join(reason.split())}); "
                "give e.g. 'EPSG:32632', a PROJ string or WKT, or leave it out for UTM"
            ) from None
        return crs

    @field_validator("bands")
    @classmethod
    def _check_bands(cls, bands: list[str] | None) -> list[str] | None:
        """At least one band when given, each once (in the order given)."""
        if bands is not None and not bands:
            raise ValueError("bands is empty: leave it out for the bands every sensor shares, or name some")
        return None if bands is None else list(dict.fromkeys(bands))

    @field_validator("chunks")
    @classmethod
    def _check_chunks(cls, chunks: dict[str, int]) -> dict[str, int]:
        """Chunk sizes (cells, >= 1) along ``time``, ``y`` and ``x`` only."""
        unknown = sorted(set(chunks) - {"time", "y", "x"})
        if unknown:
            raise ValueError(f"chunks has unknown dimension(s) {unknown}: use time, y and x")
        small = {d: n for d, n in chunks.items() if n < 1}
        if small:
            raise ValueError(f"chunks must be >= 1, got {small}")
        return chunks

    @field_validator("sensors")
    @classmethod
    def _check_sensors(cls, sensors: list[str]):
        if not sensors:
            raise ValueError("no sensors requested")
        return list(dict.fromkeys(sensors))  # names are the catalog's own: checked against it before the search

    @model_validator(mode="after")
    def _check_area_and_dates(self):
        if (self.bbox is None) == (self.geometry is None):
            raise ValueError("give exactly one of bbox or geometry")
        if self.end < self.start:
            raise ValueError(f"end date {self.end} is before start date {self.start}")
        if self.embed is not None and self.embed.input == "composite" and self.composite is None:
            raise ValueError(
                "embed.input is 'composite' but the request has no composite section: add one "
                "(e.g. composite: {freq: 1MS}) or set embed.input: cube"
            )
        return self

    def products(self) -> list[str]:
        """The derived products the request names, in the order they are made (the cube is always made)."""
        sections = {
            "composite": self.composite,
            "embeddings": self.embed,
            "uncertainty": self.uncertainty,
            "video": self.compress,
        }
        return [name for name, section in sections.items() if section is not None]

    def cube_fields(self) -> dict[str, Any]:
        """The fields that define the cube (everything but the derived products, the output and how it is written)."""
        return self.model_dump(
            mode="json",
            exclude={
                "composite",
                "embed",
                "uncertainty",
                "compress",
                "output",
                "overwrite",
                "max_failed_fraction",
                "format",
            },
        )

    @property
    def datetime_range(self) -> str:
        """The STAC ``datetime`` search interval (inclusive, whole days, UTC)."""
        return f"{self.start.isoformat()}T00:00:00Z/{self.end.isoformat()}T23:59:59Z"

    def area_bbox(self) -> tuple[float, float, float, float]:
        """The request's bounding box in degrees, from ``bbox`` or the geometry's bounds."""
        if self.bbox is not None:
            return self.bbox
        import shapely.geometry

        x0, y0, x1, y1 = shapely.geometry.shape(self.geometry).bounds
        return x0, y0, x1, y1


# ------------------------------------------------------------------------------------------ results


@dataclass
class SensorItems:
    """The items of one sensor, with the collection and the profile (of its assets) they came from."""

    sensor: str
    collection: str
    profile: str
    items: list[pystac.Item]
    duplicates_dropped: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "sensor": self.sensor,
            "collection": self.collection,
            "profile": self.profile,
            "items": [i.id for i in self.items],
            "duplicates_dropped": list(self.duplicates_dropped),
        }


class SearchResult(dict[str, SensorItems]):
    """What a search found: :class:`SensorItems` per requested sensor name (a dict, in request order)."""

    def n_items(self) -> int:
        return sum(len(s.items) for s in self.values())

    def to_json(self) -> dict[str, Any]:
        return {sensor: s.to_json() for sensor, s in self.items()}


class CubeResult(BaseModel):
    """What the cube of a run holds (the CLI's summary; JSON for provenance)."""

    store: str
    items_per_sensor: dict[str, int]
    time_steps_per_sensor: dict[str, int]
    shape: dict[str, int]
    bands: list[str]
    masked_fraction: float = Field(description="share of (time, y, x) cells without a clear observation")
    quicklook: str | None = None
    duplicates_dropped: dict[str, int] = Field(default_factory=dict)
    failed_items: dict[str, dict[str, str]] = Field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ProductResult(BaseModel):
    """One derived product of a store: its group's variables and shape, its units made and not computed, and
    what made it (model and weights sha256, artefact, codec settings)."""

    name: str
    variables: list[str]
    shape: dict[str, int]
    units_computed: int = 0
    not_computed: dict[str, str] = Field(default_factory=dict, description="tile id -> why its cells hold no values")
    provenance: dict[str, Any] = Field(default_factory=dict)


class ChainResult(BaseModel):
    """What a request made: its store, its cube, each derived product, and how the run went."""

    store: str
    format: str
    cube: CubeResult
    products: list[ProductResult] = Field(default_factory=list)
    slices_written: int = 0
    units_written: int = 0
    stac_item: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
