"""CubeRequest validation of the area (bbox, GeoJSON geometry) and the output CRS: refusals in one line."""

from __future__ import annotations

import datetime as dt
import json
import warnings
from pathlib import Path

import pytest
import shapely.geometry
from pydantic import ValidationError
from typer.testing import CliRunner

from pipeline.model import CubeRequest, RequestWarning

DATES = {"start": dt.date(2022, 3, 1), "end": dt.date(2022, 3, 31)}
BOX = [[10.0, 45.0], [11.0, 45.0], [11.0, 46.0], [10.0, 46.0], [10.0, 45.0]]
BOW_TIE = [[10.0, 45.0], [11.0, 46.0], [11.0, 45.0], [10.0, 46.0], [10.0, 45.0]]


def _polygon(ring) -> dict:
    return {"type": "Polygon", "coordinates": [ring]}


def _error(**fields) -> str:
    """The one error message of an invalid request (asserting there is exactly one, on one line)."""
    with pytest.raises(ValidationError) as info:
        CubeRequest(**DATES, **fields)
    errors = info.value.errors()
    assert len(errors) == 1, errors
    message = errors[0]["msg"]
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- bbox


def test_bbox_across_the_antimeridian_is_unsupported_and_says_how_to_split():
    message = _error(bbox=(170, -10, -170, 10))
    assert "crosses the antimeridian" in message and "not supported" in message
    assert "(170.0, -10.0, 180.0, 10.0)" in message and "(-180.0, -10.0, -170.0, 10.0)" in message
    assert "inverted or empty" not in message


@pytest.mark.parametrize(
    "bbox",
    [(10, 46, 11, 45), (10, 45, 10, 46), (10, 45, 11, 45), (11, 46, 10, 45)],
    ids=["lat-inverted", "zero-width", "zero-height", "both-inverted"],
)
def test_inverted_or_empty_bbox(bbox):
    assert "inverted or empty" in _error(bbox=bbox)


def test_good_bbox_is_kept():
    assert CubeRequest(**DATES, bbox=(10, 45, 11, 46)).bbox == (10, 45, 11, 46)


# ------------------------------------------------------------------------- geometry


def test_polygon_is_kept_as_given():
    request = CubeRequest(**DATES, geometry=_polygon(BOX))
    assert request.geometry == _polygon(BOX)
    assert request.area_bbox() == (10.0, 45.0, 11.0, 46.0)


def test_feature_and_feature_collection_stand_for_their_polygons():
    feature = {"type": "Feature", "properties": {"name": "aoi"}, "geometry": _polygon(BOX)}
    assert CubeRequest(**DATES, geometry=feature).geometry == _polygon(BOX)
    east = [[x + 2, y] for x, y in BOX]
    collection = {
        "type": "FeatureCollection",
        "features": [
            feature,
            {"type": "Feature", "properties": {}, "geometry": {"type": "MultiPolygon", "coordinates": [[east]]}},
        ],
    }
    geometry = CubeRequest(**DATES, geometry=collection).geometry
    assert geometry == {"type": "MultiPolygon", "coordinates": [[BOX], [east]]}
    assert shapely.geometry.shape(geometry).area == pytest.approx(2.0)


def test_self_intersecting_polygon_is_repaired_with_a_warning():
    with pytest.warns(RequestWarning, match=r"Self-intersection\[10.5 45.5\].*make_valid.*MultiPolygon"):
        request = CubeRequest(**DATES, geometry=_polygon(BOW_TIE))
    repaired = shapely.geometry.shape(request.geometry)
    assert request.geometry["type"] == "MultiPolygon" and repaired.is_valid
    assert repaired.area == pytest.approx(0.5)
    json.dumps(request.model_dump(mode="json"))  # provenance still serialises


@pytest.mark.parametrize(
    ("geometry", "expected"),
    [
        ({"type": "Point", "coordinates": [10.5, 45.5]}, "geometry type 'Point' is not supported"),
        ({"type": "LineString", "coordinates": [[10, 45], [11, 46]]}, "geometry type 'LineString' is not supported"),
        ({"coordinates": [BOX]}, "geometry type None is not supported"),
        (
            {
                "type": "FeatureCollection",
                "features": [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}],
            },
            "FeatureCollection has ['Point'] features",
        ),
        (_polygon([[10, 45], [11, 46]]), "not a valid GeoJSON Polygon"),
        (_polygon([[10, 45], [11, "x"], [11, 46], [10, 45]]), "not a valid GeoJSON Polygon"),
        ({"type": "Polygon"}, "not a valid GeoJSON Polygon"),
        ({"type": "Polygon", "coordinates": []}, "Polygon is empty"),
        ({"type": "FeatureCollection", "features": []}, "MultiPolygon is empty"),
        (_polygon([[10, 45], [11, 45], [11, float("nan")], [10, 45]]), "non-finite"),
        (_polygon([[10, 45], [200, 45], [200, 46], [10, 45]]), "outside lon [-180, 180] / lat [-90, 90]"),
        (_polygon([[10, 45], [11, 45], [11, 95], [10, 45]]), "outside lon [-180, 180] / lat [-90, 90]"),
        (_polygon([[170, -10], [-170, -10], [-170, 10], [170, 10], [170, -10]]), "crosses the antimeridian"),
        (_polygon([[10, 45], [11, 45], [12, 45], [10, 45]]), "make_valid finds no area"),
    ],
    ids=[
        "point",
        "line",
        "no-type",
        "fc-of-points",
        "short-ring",
        "string-coordinate",
        "no-coordinates",
        "empty",
        "empty-fc",
        "nan",
        "lon-range",
        "lat-range",
        "antimeridian",
        "zero-area",
    ],
)
def test_bad_geometry_is_refused_in_one_line(geometry, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RequestWarning)  # refused, not repaired
        message = _error(geometry=geometry)
    assert expected in message


def test_geometry_across_the_antimeridian_says_how_to_split():
    message = _error(geometry=_polygon([[170, -10], [-170, -10], [-170, 10], [170, 10], [170, -10]]))
    assert "from lon 170.0 to -170.0" in message and "not supported" in message and "split it at lon 180" in message


# ------------------------------------------------------------------------------ crs


@pytest.mark.parametrize(
    ("crs", "reason"), [("EPSG:99999", "crs not found"), ("not-a-crs", "unknown name"), ("", "unrecognized format")]
)
def test_unparseable_crs_is_refused_naming_it(crs, reason):
    message = _error(bbox=(10, 45, 11, 46), crs=crs)
    assert f"crs {crs!r} is not a CRS" in message and reason in message


@pytest.mark.parametrize("crs", ["EPSG:32632", "epsg:4326", "+proj=utm +zone=32 +datum=WGS84"])
def test_parseable_crs_is_kept(crs):
    assert CubeRequest(**DATES, bbox=(10, 45, 11, 46), crs=crs).crs == crs


# ------------------------------------------------------------------------------ CLI


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--bbox", "170,-10,-170,10"], "crosses the antimeridian"),
        (["--bbox", "10,45,11,46", "--crs", "EPSG:99999"], "crs 'epsg:99999' is not a crs"),
        (["--bbox", "10,46,11,45"], "inverted or empty"),
    ],
    ids=["antimeridian", "crs", "inverted"],
)
def test_cli_prints_one_error_line_and_exits_2(args, expected, tmp_path: Path):
    from pipeline.cli import app

    result = CliRunner().invoke(
        app, ["run", "--start", "2022-03-01", "--end", "2022-03-31", "--out", str(tmp_path / "cube.zarr"), *args]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: invalid request:"), result.output
    assert expected in lines[0].lower()
    assert not (tmp_path / "cube.zarr").exists()


def test_cli_refuses_a_request_file_geometry_across_the_antimeridian(tmp_path: Path):
    from pipeline.cli import app

    request = {
        **{k: v.isoformat() for k, v in DATES.items()},
        "geometry": _polygon([[179, 0], [-179, 0], [-179, 1], [179, 1], [179, 0]]),
    }
    (tmp_path / "request.json").write_text(json.dumps(request))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "request.json")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "geometry: geometry crosses the antimeridian" in lines[0], result.output
