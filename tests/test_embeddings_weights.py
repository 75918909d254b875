"""Weights lookup (explicit path, eocube cache, Hugging Face cache), errors, sha256 and the cached loader."""

from __future__ import annotations

import hashlib
import os

import pytest

from pipeline.embeddings import WeightsNotFoundError, load_encoder, resolve_weights, sha256_of
from pipeline.embeddings.registry import SOURCES, canonical_name
from pipeline.embeddings.weights import WeightsSource

SRC = WeightsSource("model.pt", hf_repo="org/repo", hf_path="sub/model.pt")


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    monkeypatch.setenv("EOCUBE_WEIGHTS_DIR", str(tmp_path / "eocube"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path


def test_explicit_file_and_folder(clean_env):
    f = clean_env / "w" / "model.pt"
    f.parent.mkdir()
    f.write_bytes(b"x")
    assert resolve_weights("m", SRC, f) == f
    assert resolve_weights("m", SRC, f.parent) == f
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve_weights("m", SRC, clean_env / "nope.pt")


def test_eocube_cache_then_hf_cache(clean_env):
    hf = clean_env / "hf" / "hub" / "models--org--repo" / "snapshots" / "abc123" / "sub" / "model.pt"
    hf.parent.mkdir(parents=True)
    hf.write_bytes(b"hf")
    assert resolve_weights("m", SRC) == hf
    local = clean_env / "eocube" / "m" / "model.pt"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"local")
    assert resolve_weights("m", SRC) == local  # the eocube cache wins


def test_missing_weights_error_names_file_and_places(clean_env):
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_weights("m", SRC)
    msg = str(err.value)
    assert "'model.pt'" in msg
    assert str(clean_env / "eocube" / "m" / "model.pt") in msg
    assert "models--org--repo" in msg
    assert "https://huggingface.co/org/repo/resolve/main/sub/model.pt" in msg
    assert not (clean_env / "eocube" / "m").exists()  # no download without allow_download


def test_sha256_matches_published_sums(shared_dir):
    folder = shared_dir / "models/prithvi-eo-2.0-tiny-tl-refvec"
    sums = dict(line.split()[::-1] for line in (folder / "SHA256SUMS").read_text().splitlines() if line.strip())
    for name, digest in sums.items():
        assert sha256_of(folder / name) == digest


def test_load_encoder_records_sha_and_is_cached(shared_dir, clean_env):
    path = shared_dir / "models/presto/default_model.pt"
    model, info = load_encoder("presto", path, "cpu")
    assert info.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.weights_sha256.startswith("559c9d76")  # the README's published prefix
    assert info.kind == "pixel" and info.embed_dim == 128
    again, _ = load_encoder("presto", path, "cpu")
    assert again is model
    assert not model.training


def test_load_encoder_prithvi_uses_config_beside_weights(shared_dir):
    folder = shared_dir / "models/prithvi-eo-2.0-tiny-tl-refvec"
    model, info = load_encoder("prithvi-eo-2.0-tiny-tl", folder / "prithvi_tiny_tl_mae.safetensors", "cpu")
    assert info.embed_dim == 64 and info.config["patch_size"] == (1, 8, 8)


def test_unknown_model_lists_known():
    with pytest.raises(ValueError, match="presto"):
        canonical_name("resnet")
    assert canonical_name("Galileo") == "galileo-nano"
    assert all(s.hf_repo or s.url for s in SOURCES.values())
    assert os.path.basename(SOURCES["prithvi-eo-2.0-300m-tl"].download_url()) == "Prithvi_EO_V2_300M_TL.pt"
