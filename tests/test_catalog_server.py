"""The local STAC API (rustac serve) on archives with corrupt STAC files: what rustac would
reject is left out with a warning naming file, item and reason; the rest is served."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import socket
import tempfile
import warnings
from pathlib import Path

import pytest
from pystac_client import Client

from pipeline.catalog.server import (
    MAX_ITEM_WARNINGS,
    StacInputWarning,
    StacServerError,
    archive_stac_files,
    check_stac_files,
    serve_archive,
)


def _item(i: int, collection: str = "c") -> dict:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": f"item-{i}",
        "collection": collection,
        "geometry": {"type": "Polygon", "coordinates": [[[10, 45], [11, 45], [11, 46], [10, 46], [10, 45]]]},
        "bbox": [10, 45, 11, 46],
        "properties": {"datetime": f"2022-01-{i + 1:02d}T10:00:00Z"},
        "assets": {"B02": {"href": f"file:///data/item-{i}/B02.tif", "roles": ["data"]}},
        "links": [],
    }


def _write_items(path: Path, features: list, text: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text is not None else json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _set(path: str, value):
    """A mutation setting ``a.b`` of a feature to ``value``."""

    def apply(feature: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            feature = feature[key]
        feature[last] = value

    return apply


# (mutation of one feature, what the warning names); each makes rustac serve refuse the whole file
REJECTED = {
    "id-number": (_set("id", 7), "'id' = 7"),
    "type-foo": (_set("type", "Foo"), "'type' = \"Foo\""),
    "bbox-strings": (_set("bbox", ["a", "b", "c", "d"]), '\'bbox\' = ["a", "b", "c", "d"]'),
    "bbox-3-numbers": (_set("bbox", [1, 2, 3]), "'bbox' = [1, 2, 3]"),
    "geometry-open-type": (_set("geometry.type", "Polygonx"), "'geometry' ="),
    "geometry-no-coordinates": (lambda f: f["geometry"].pop("coordinates"), "'geometry' ="),
    "datetime-not-a-date": (_set("properties.datetime", "not a date"), "'properties.datetime' = \"not a date\""),
    "datetime-date-only": (_set("properties.datetime", "2022-01-01"), "'properties.datetime'"),
    "datetime-number": (_set("properties.datetime", 20220101), "'properties.datetime' = 20220101"),
    "properties-null": (_set("properties", None), "'properties' = null"),
    "assets-list": (_set("assets", []), "'assets' = []"),
    "asset-without-href": (lambda f: f["assets"]["B02"].pop("href"), "'assets.B02'"),
    "links-object": (_set("links", {}), "'links' = {}"),
    "link-without-href": (_set("links", [{"rel": "self"}]), "'links'"),
    "stac-version-number": (_set("stac_version", 1), "'stac_version' = 1"),
    "collection-number": (_set("collection", 3), "'collection' = 3"),
    "nan": (_set("properties.eo:cloud_cover", float("nan")), "'properties.eo:cloud_cover' = NaN"),
    "not-an-object": (None, "not a JSON object"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_a_feature_rustac_rejects_is_left_out_with_a_warning(case: str, tmp_path: Path):
    mutate, named = REJECTED[case]
    features = [_item(i) for i in range(3)]
    if mutate is None:
        features[1] = "item-1"
    else:
        mutate(features[1])
    items = _write_items(tmp_path / "stac" / "c" / "items.json", features)
    with pytest.warns(StacInputWarning) as record:
        files = check_stac_files([items], tmp_path / "work")
    messages = [str(w.message) for w in record if issubclass(w.category, StacInputWarning)]
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"{items}: item #1") and named in messages[0] and "\n" not in messages[0]
    assert files == [tmp_path / "work" / "c" / "items.json"]
    assert [f["id"] for f in json.loads(files[0].read_text())["features"]] == ["item-0", "item-2"]


# what rustac accepts (though some of it is poor STAC): kept, without a warning
ACCEPTED = {
    "id-missing": lambda f: f.pop("id"),
    "type-missing": lambda f: f.pop("type"),
    "datetime-missing": lambda f: f["properties"].pop("datetime"),
    "datetime-null": _set("properties.datetime", None),
    "geometry-null": _set("geometry", None),
    "bbox-inverted": _set("bbox", [11, 46, 10, 45]),
    "links-missing": lambda f: f.pop("links"),
    "assets-missing": lambda f: f.pop("assets"),
    "unknown-collection": _set("collection", "nope"),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_a_feature_rustac_accepts_is_kept(case: str, tmp_path: Path):
    features = [_item(i) for i in range(2)]
    ACCEPTED[case](features[1])
    items = _write_items(tmp_path / "stac" / "c" / "items.json", features)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StacInputWarning)
        assert check_stac_files([items], tmp_path / "work") == [items], "an acceptable file is served as it is"


RAW = json.dumps({"type": "FeatureCollection", "features": [_item(0), _item(1)]})

# whole files that rustac cannot read
UNREADABLE = {
    "truncated": (RAW[: len(RAW) // 2].encode(), "EOF while parsing"),
    "trailing-garbage": ((RAW + "}x").encode(), "trailing characters"),
    "two-documents": ((RAW + RAW).encode(), "trailing characters"),
    "empty": (b"", "EOF while parsing a value"),
    "non-utf8": (RAW.replace("file:///data", "file:///d\xe4ta").encode("latin-1"), "invalid unicode code point"),
    "utf8-bom": (("\ufeff" + RAW).encode("utf-8"), "expected value at line 1 column 1"),
    "not-a-feature-collection": (
        json.dumps({"type": "Collection", "features": []}).encode(),
        "not a FeatureCollection",
    ),
    "features-not-a-list": (
        json.dumps({"type": "FeatureCollection", "features": {}}).encode(),
        "not a FeatureCollection",
    ),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_an_unreadable_items_file_is_left_out_with_a_warning(case: str, tmp_path: Path):
    data, reason = UNREADABLE[case]
    items = tmp_path / "stac" / "c" / "items.json"
    items.parent.mkdir(parents=True)
    items.write_bytes(data)
    with pytest.warns(StacInputWarning) as record:
        assert check_stac_files([items], tmp_path / "work") == []
    messages = [str(w.message) for w in record if issubclass(w.category, StacInputWarning)]
    assert len(messages) == 1 and messages[0].startswith(f"{items}: file left out") and reason in messages[0], messages


def test_repeated_keys_are_judged_as_rustac_judges_them(tmp_path: Path):
    """rustac rejects a repeated known field ('id') but not a repeated extra property: so does the check."""
    text = RAW.replace('"id": "item-1"', '"id": "x", "id": "item-1"', 1)
    text = text.replace('"datetime": "2022-01-01T10:00:00Z"', '"k": 1, "k": 2, "datetime": "2022-01-01T10:00:00Z"')
    items = _write_items(tmp_path / "stac" / "c" / "items.json", [], text)
    with pytest.warns(StacInputWarning, match=r"item #1 \(id 'item-1'\) left out: invalid 'id' repeated"):
        files = check_stac_files([items], tmp_path / "work")
    kept = files[0].read_text()
    assert json.loads(kept)["features"][0]["id"] == "item-0" and '"k": 1, "k": 2' in kept, "kept as rustac reads it"


def test_many_rejected_features_are_summarised(tmp_path: Path):
    features = [_item(i) for i in range(30)]
    for f in features[5:25]:
        f["bbox"] = ["x"]
    items = _write_items(tmp_path / "stac" / "c" / "items.json", features)
    with pytest.warns(StacInputWarning) as record:
        files = check_stac_files([items], tmp_path / "work")
    messages = [str(w.message) for w in record if issubclass(w.category, StacInputWarning)]
    assert len(messages) == MAX_ITEM_WARNINGS + 1
    assert messages[-1] == f"{items}: {20 - MAX_ITEM_WARNINGS} more of its 30 items left out, rejected by rustac"
    assert len(json.loads(files[0].read_text())["features"]) == 10


def test_an_unreadable_collection_is_left_out(tmp_path: Path):
    collection = tmp_path / "stac" / "c" / "collection.json"
    collection.parent.mkdir(parents=True)
    collection.write_text('{"type": "Collection", "id": "c"')
    with pytest.warns(StacInputWarning, match=r"collection.json: file left out, rustac cannot read it: EOF"):
        assert check_stac_files([collection], tmp_path / "work") == []


def test_the_demo_archive_is_served_as_it_is(demo_archive: Path, tmp_path: Path):
    paths = archive_stac_files(demo_archive)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StacInputWarning)
        assert check_stac_files(paths, tmp_path / "work") == paths


@pytest.fixture()
def corrupt_archive(demo_archive: Path, tmp_path: Path) -> Path:
    """A copy of the demo archive's STAC files: Sentinel-2 items corrupted in several ways, Landsat's truncated."""
    archive = tmp_path / "archive"
    shutil.copytree(demo_archive / "stac", archive / "stac")
    s2 = archive / "stac" / "sentinel-2-l2a" / "items.json"
    doc = json.loads(s2.read_text())
    features = doc["features"]
    features[1]["bbox"] = ["a", "b", "c", "d"]
    features[3]["properties"]["datetime"] = "yesterday"
    features[5]["assets"] = []
    features[7]["links"] = {}
    features[9]["id"] = 9
    features[11]["geometry"] = {"type": "Polygon", "coordinates": "x"}
    features[13] = copy.deepcopy(features[13]) | {"type": "Item"}
    s2.write_text(json.dumps(doc))
    landsat = archive / "stac" / "landsat-c2-l2" / "items.json"
    landsat.write_bytes(landsat.read_bytes()[:5000])
    return archive


def test_corrupt_archive_serves_the_rest_and_names_what_it_leaves_out(
    corrupt_archive: Path, demo_archive: Path, tmp_path: Path, monkeypatch, caplog
):
    def ids(collection: str) -> list[str]:
        doc = json.loads((demo_archive / "stac" / collection / "items.json").read_text())
        return [f["id"] for f in doc["features"]]

    good = ids("sentinel-2-l2a")
    bad_ids = {good[i]: i for i in (1, 3, 5, 7, 9, 11, 13)}
    before = _digests(corrupt_archive)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    caplog.set_level(logging.WARNING, logger="pipeline.catalog.server")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with serve_archive(corrupt_archive) as url:
            assert next(scratch.iterdir()).name.startswith("eocube-stac-"), "cleaned copies live in a temp dir"
            client = Client.open(url)
            assert {c.id for c in client.get_collections()} == {"sentinel-2-l2a", "landsat-c2-l2", "modis-09A1-061"}
            served = {
                c: [i.id for i in client.search(collections=[c], max_items=None).items()]
                for c in ("sentinel-2-l2a", "landsat-c2-l2", "modis-09A1-061")
            }
    assert sorted(served["sentinel-2-l2a"]) == sorted(set(good) - set(bad_ids)) and len(bad_ids) == 7
    assert served["landsat-c2-l2"] == [] and sorted(served["modis-09A1-061"]) == sorted(ids("modis-09A1-061"))
    assert list(scratch.iterdir()) == [], "the temporary folder is removed when the server stops"
    assert _digests(corrupt_archive) == before, "the archive is left untouched"

    messages = [str(w.message) for w in record if issubclass(w.category, StacInputWarning)]
    assert len(messages) == 8 and all("\n" not in m for m in messages)
    s2_file = corrupt_archive / "stac" / "sentinel-2-l2a" / "items.json"
    fields = [
        "'bbox'",
        "'properties.datetime' = \"yesterday\"",
        "'assets' = []",
        "'links' = {}",
        "'id' = 9",
        "'geometry'",
        "'type' = \"Item\"",
    ]
    for (item_id, i), field in zip(sorted(bad_ids.items(), key=lambda kv: kv[1]), fields, strict=True):
        named = f" (id {item_id!r})" if i != 9 else ""
        expected = f"{s2_file}: item #{i}{named} left out: invalid {field}"
        assert any(m.startswith(expected) for m in messages), (expected, messages)
    landsat_file = corrupt_archive / "stac" / "landsat-c2-l2" / "items.json"
    expected = f"{landsat_file}: file left out, it is not valid JSON: EOF while parsing"
    assert any(m.startswith(expected) for m in messages), messages
    logged = [r.getMessage() for r in caplog.records if r.name == "pipeline.catalog.server"]
    assert sorted(logged) == sorted(messages), "each warning is also a log line"


def test_rustac_failing_on_checked_files_names_them(demo_archive: Path):
    with socket.socket() as busy:  # rustac cannot bind a port that is taken
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StacServerError) as info, serve_archive(demo_archive, port=port, startup_timeout_s=20):
            pass
    message = str(info.value)
    assert "\n" not in message and "rustac serve exited with code" in message
    assert all(str(p) in message for p in archive_stac_files(demo_archive)), message
