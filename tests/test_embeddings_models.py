"""Presto, Galileo and Prithvi re-implementations against the authors' reference outputs (shared/models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline.embeddings import Galileo, GalileoNormalizer, Presto, PrithviViT, presto_normalise
from pipeline.embeddings.galileo import resize_pinv
from pipeline.embeddings.prithvi import config_from_json, pos_embed_3d

pytestmark = pytest.mark.shared


@pytest.fixture(autouse=True)
def _one_thread():
    """The references were made with 1 thread (Galileo's pinv depends on it); no autograd."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.no_grad():
        yield
    torch.set_num_threads(threads)


def _close(out: torch.Tensor, ref: np.ndarray, rel: float | None = None, atol: float | None = None) -> None:
    tol = rel * np.abs(ref).max() if rel is not None else atol
    diff = np.abs(out.detach().double().numpy() - ref).max()
    assert diff <= tol, f"max |diff| {diff:.3g} > {tol:.3g}"


# ------------------------------------------------------------------------------------------ Presto
@pytest.fixture(scope="module")
def presto(shared_dir):
    state = torch.load(shared_dir / "models/presto/default_model.pt", map_location="cpu", weights_only=True)
    return Presto.from_state_dict(state)


@pytest.mark.parametrize("case", ["synthetic", "synthetic_varmask", "fuel_moisture_real"])
def test_presto_matches_reference(presto, shared_dir, case):
    d = np.load(shared_dir / f"models/presto/{case}.npz")
    args = [torch.from_numpy(d[f"in_{k}"]) for k in ("x", "dynamic_world", "latlons", "mask", "month")]
    tokens, padded, order = presto.tokens(*args)
    _close(presto(*args), d["out_pkg_pooled"], rel=1e-5)
    _close(presto.norm(tokens), d["out_pkg_tokens"], atol=1e-4)
    np.testing.assert_array_equal(padded.numpy().astype(np.float32), d["out_pkg_token_mask"])
    np.testing.assert_array_equal(order.numpy(), d["out_pkg_orig_indices"])


@pytest.mark.parametrize("case", ["synthetic", "synthetic_varmask", "fuel_moisture_real"])
def test_presto_float64_reference(presto, shared_dir, case):
    ref = np.load(shared_dir / "models/presto/fp64_reference.npz")
    d = np.load(shared_dir / f"models/presto/{case}.npz")
    x, dw, ll, mask, month = (
        torch.from_numpy(d[f"in_{k}"]) for k in ("x", "dynamic_world", "latlons", "mask", "month")
    )
    m64 = Presto.from_state_dict({f"encoder.{k}": v for k, v in presto.state_dict().items()}).double()
    _close(m64(x.double(), dw, ll.double(), mask.double(), month), ref[f"{case}__pkg_pooled"], atol=1e-9)


def test_presto_normalise_matches_authors(shared_dir):
    d = np.load(shared_dir / "models/presto/normalize_fuel_moisture_all.npz")
    np.testing.assert_array_equal(presto_normalise(d["raw"]), d["normalized"])


def test_presto_strict_loading_rejects_incomplete_checkpoint(shared_dir):
    state = torch.load(shared_dir / "models/presto/default_model.pt", map_location="cpu", weights_only=True)
    del state["encoder.norm.weight"]
    with pytest.raises(RuntimeError, match="norm.weight"):
        Presto.from_state_dict(state)


def test_presto_rejects_wrong_band_count(presto):
    with pytest.raises(ValueError, match="17"):
        presto(torch.zeros(2, 3, 16), torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 2))


# ----------------------------------------------------------------------------------------- Galileo
G_CASES = [
    "synthetic_4x4x12_p2",
    "synthetic_8x8x4_p4",
    "synthetic_8x8x3_p8_nomask",
    "fuel_moisture_pixel_1x1x3_p1",
    "fuel_moisture_4x4x3_p2",
]
G_INPUTS = ("s_t_x", "sp_x", "t_x", "st_x", "s_t_m", "sp_m", "t_m", "st_m", "months")


@pytest.fixture(scope="module")
def galileo(shared_dir):
    folder = shared_dir / "models/galileo-nano"
    state = torch.load(folder / "encoder.pt", map_location="cpu", weights_only=True)
    return Galileo.from_state_dict(state, json.loads((folder / "config.json").read_text()))


@pytest.mark.parametrize("case", G_CASES)
def test_galileo_matches_reference(galileo, shared_dir, case):
    d = np.load(shared_dir / f"models/galileo-nano/{case}.npz")
    out = galileo(
        *(torch.from_numpy(d[f"in_{k}"]) for k in G_INPUTS), int(d["in_patch_size"]), float(d["in_input_resolution_m"])
    )
    _close(out.pooled(), d["out_pooled"], rel=1e-5)
    _close(out.pooled_per_patch(), d["out_pooled_per_patch"], rel=1e-5)
    for part in ("s_t", "sp", "t", "st"):
        _close(getattr(out, part), d[f"out_{part}_tokens"], atol=1e-4)
        np.testing.assert_array_equal(getattr(out, f"{part}_m").numpy(), d[f"out_{part}_token_mask"])


@pytest.mark.parametrize("p", range(1, 8))
def test_galileo_flexipatch_kernels(galileo, shared_dir, p):
    d = np.load(shared_dir / "models/galileo-nano/flexipatch_resized_kernels.npz")
    np.testing.assert_allclose(resize_pinv(8, p).numpy(), d[f"pinv_8_to_{p}"], atol=1e-6)
    for group in ("S1", "S2_RGB", "NDVI"):
        _close(galileo.space_time_embed[group].kernel(p), d[f"space_time_embed.{group}.p{p}"], atol=1e-5)
    _close(galileo.space_embed["DW"].kernel(p), d[f"space_embed.DW.p{p}"], atol=1e-5)


def test_galileo_normalizer_matches_authors(shared_dir):
    folder = shared_dir / "models/galileo-nano"
    norm = GalileoNormalizer.from_json(folder / "normalization.json")
    ref = json.loads((folder / "meta.json").read_text())["normalizer_shift_div"]
    for n, vals in ref.items():
        np.testing.assert_allclose(norm.shift[int(n)], vals["shift"], rtol=1e-12)
        np.testing.assert_allclose(norm.div[int(n)], vals["div"], rtol=1e-12)
    with pytest.raises(ValueError, match="no Galileo normalisation for 5 bands"):
        norm(np.zeros((2, 5)))


def test_galileo_rejects_non_square(galileo):
    args = [
        torch.zeros(1, 4, 8, 2, 13),
        torch.zeros(1, 4, 8, 16),
        torch.zeros(1, 2, 6),
        torch.zeros(1, 18),
        torch.zeros(1, 4, 8, 2, 7),
        torch.zeros(1, 4, 8, 3),
        torch.zeros(1, 2, 3),
        torch.zeros(1, 4),
        torch.zeros(1, 2, dtype=torch.long),
    ]
    with pytest.raises(ValueError, match="H == W"):
        galileo(*args, 4)


# ----------------------------------------------------------------------------------------- Prithvi
@pytest.fixture(scope="module")
def prithvi_ref(shared_dir):
    folder = shared_dir / "models/prithvi-eo-2.0-tiny-tl-refvec"
    state = load_file(str(folder / "prithvi_tiny_tl_mae.safetensors"))
    config = config_from_json(json.loads((folder / "config.json").read_text()))
    return PrithviViT.from_state_dict(state, config), state, np.load(folder / "prithvi_tiny_tl_io.npz")


def test_prithvi_pos_embed_regenerated_equals_checkpoint(prithvi_ref):
    model, state, _ = prithvi_ref
    assert torch.equal(model.pos_embed, state["encoder.pos_embed"])
    assert torch.equal(pos_embed_3d(64, (2, 4, 4)), state["encoder.pos_embed"])


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_prithvi_matches_reference(prithvi_ref, dtype, tol):
    model, _, d = prithvi_ref
    suffix = "f32" if dtype == torch.float32 else "f64"
    m = model.to(dtype)
    x, x48 = torch.from_numpy(d["x"]).to(dtype), torch.from_numpy(d["x48"]).to(dtype)
    tc, lc = torch.from_numpy(d["temporal_coords"]), torch.from_numpy(d["location_coords"])
    feats = m.forward_features(x, tc, lc)
    _close(feats[-1], d[f"tokens_tl_{suffix}"], atol=tol)
    _close(feats[0], d[f"block0_tl_{suffix}"], atol=tol * 10)
    _close(m(x), d[f"tokens_nocoords_{suffix}"], atol=tol)
    _close(m(x48), d[f"tokens48_nocoords_{suffix}"], atol=tol)  # bicubic pos-embed interpolation
    _close(m.patch_embed(x), d[f"patch_embed_out_{suffix}"], atol=tol)
    model.float()


def test_prithvi_frame_count_change_recomputes_pos_embed(prithvi_ref):
    model, _, d = prithvi_ref
    x = torch.from_numpy(d["x"])
    one = model(x[:, :, :1])  # 1 frame instead of the configured 2: exact table for t = 1
    assert one.shape == (2, 1 + 16, 64)
    table = model.interpolated_pos_embed((1, 4, 4))
    assert torch.equal(table, pos_embed_3d(64, (1, 4, 4)))


def test_prithvi_rejects_mismatched_checkpoint(prithvi_ref):
    from pipeline.embeddings import PRITHVI_CONFIGS

    _, state, _ = prithvi_ref
    with pytest.raises(ValueError, match="does not match config"):
        PrithviViT.from_state_dict(state, PRITHVI_CONFIGS["prithvi-eo-2.0-300m-tl"])
