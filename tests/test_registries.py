"""One registry per concept: a model is its module plus one registry line, a codec its spec plus one entry.

Toy specs registered here (a tiny torch encoder, ffv1/libx265 entries with other options) work through
the engine and the codec without any change to them; every registered spec is complete.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path

import av
import dask
import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import torch
import xarray as xr
from torch import nn

from pipeline.compression import video
from pipeline.compression.codec import DEFAULT_CODECS, CodecParams, decode_array, encode_array
from pipeline.compression.header import read_header
from pipeline.compression.video import FFV1, LIBX265, VIDEO_CODECS, CorruptStreamError, video_codec
from pipeline.compression.zarr_codec import VideoCodec
from pipeline.embeddings import registry
from pipeline.embeddings.chips import ChipBatch
from pipeline.embeddings.engine import embed_cube
from pipeline.embeddings.spec import BuiltEncoder, EncoderInfo, EncoderSpec, fixed_chip
from pipeline.embeddings.weights import WeightsSource

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- encoders
TOY_BANDS = ("blue", "green", "red")


class ToyEncoder(nn.Module):
    """A linear map of the bands' mean over a cell and the time steps: ``[N, 3] -> [N, 4]``."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(len(TOY_BANDS), 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ToyAdapter:
    """Mean of each band over a ``unit`` x ``unit`` cell and all steps (NaN ignored), then the encoder."""

    pooling = "toy: mean over cell and time, then linear"

    def __init__(self, kind: str, unit: int) -> None:
        self.kind, self.unit = kind, unit

    def embed(self, model: nn.Module, batch: ChipBatch, device: torch.device) -> np.ndarray:
        b, t, h, w = batch.shape
        p = self.unit
        x = np.stack([batch.bands[k] for k in TOY_BANDS], -1).reshape(b, t, h // p, p, w // p, p, -1)
        with _quiet():
            mean = np.nanmean(x, axis=(1, 3, 5))  # [b, h/p, w/p, 3]
        seen = np.isfinite(mean).all(-1)
        with torch.inference_mode():
            emb = model(torch.from_numpy(np.nan_to_num(mean).astype(np.float32))).numpy()
        emb[~seen] = np.nan
        return emb


@contextmanager
def _quiet():
    """Silence numpy's "mean of empty slice" for cells never observed (they are set to NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _toy_build(state, weights_path: Path) -> BuiltEncoder:
    model = ToyEncoder()
    model.load_state_dict(dict(state), strict=True)
    return BuiltEncoder(model, 4, {"bands": list(TOY_BANDS)})


def toy_spec(kind: str) -> EncoderSpec:
    """A complete spec for the toy: pixel (cell 1) or patch (cell 2, default chip 4 cells)."""
    unit = 1 if kind == "pixel" else 2
    return EncoderSpec(
        name=f"toy-{kind}",
        kind=kind,
        aliases=(f"toy-{kind}-alias",),
        source=WeightsSource("toy.pt", url="https://example.invalid/toy.pt"),
        build=_toy_build,
        adapter=lambda info, patch_size: ToyAdapter(kind, unit),
        default_chip=fixed_chip(4) if kind == "pixel" else (lambda info, u: 4 * u),
        tokens_per_step=1,
        extra_tokens=0,
        normalisation="none: reflectance as is",
    )


def small_cube(h: int = 8, w: int = 10, seed: int = 0) -> xr.Dataset:
    """Reflectance bands (NaN = masked), ``valid``, a UTM CRS; the top-left 2x2 pixels never observed."""
    rng = np.random.default_rng(seed)
    times = pd.to_datetime(["2021-03-05", "2021-04-10", "2021-06-20"]).values.astype("datetime64[ns]")
    valid = rng.uniform(size=(len(times), h, w)) > 0.2
    valid[:, :2, :2] = False
    data = {
        b: (("time", "y", "x"), np.where(valid, rng.uniform(0.01, 0.45, valid.shape), np.nan).astype("float32"))
        for b in TOY_BANDS
    }
    ds = xr.Dataset(
        data, coords={"time": times, "y": 4_500_000 - 10.0 * np.arange(h) - 5, "x": 500_000 + 10.0 * np.arange(w) + 5}
    )
    ds["valid"] = (("time", "y", "x"), valid.astype("uint8"))
    return ds.rio.write_crs("EPSG:32633")


@pytest.fixture
def own_registry(monkeypatch):
    """A copy of the encoder registry for the test (the toys leave no trace)."""
    monkeypatch.setattr(registry, "ENCODERS", dict(registry.ENCODERS))
    yield registry.ENCODERS
    registry._load_cached.cache_clear()


@pytest.mark.parametrize("kind", ["pixel", "patch"])
def test_a_registered_toy_encoder_runs_through_embed_cube(own_registry, tmp_path, kind):
    spec = registry.register_encoder(toy_spec(kind))
    torch.manual_seed(0)
    reference = ToyEncoder().eval()
    torch.save(reference.state_dict(), tmp_path / "toy.pt")
    ds = small_cube()
    with dask.config.set(scheduler="synchronous"):
        emb = embed_cube(ds, f"toy-{kind}-alias", tmp_path, device="cpu").compute()
    unit = 1 if kind == "pixel" else 2
    assert emb.attrs["model"] == spec.name and emb.attrs["embedding_kind"] == kind
    assert emb.attrs["cell_size_pixels"] == unit and emb.attrs["chip_size_pixels"] == 4 * unit  # the spec's default
    assert emb.dims == (("y", "x", "dim") if kind == "pixel" else ("patch_y", "patch_x", "dim"))
    assert emb.shape == (8 // unit, 10 // unit, 4)
    # the same numbers by hand: band means per cell over time, then the linear map
    x = np.stack([ds[b].values for b in TOY_BANDS], -1).reshape(3, 8 // unit, unit, 10 // unit, unit, 3)
    with _quiet():
        mean = np.nanmean(x, axis=(0, 2, 4))
    with torch.no_grad():
        expected = reference(torch.from_numpy(np.nan_to_num(mean).astype(np.float32))).numpy()
    expected[~np.isfinite(mean).all(-1)] = np.nan
    assert np.isnan(emb.values[0, 0]).all()  # the never-observed corner
    np.testing.assert_allclose(emb.values, expected, rtol=1e-6, atol=1e-6)


def test_every_registered_encoder_spec_is_complete():
    names = [n for spec in registry.ENCODERS.values() for n in (spec.name, *spec.aliases)]
    assert len(names) == len(set(names)), "names and aliases must be unique"
    for key, spec in registry.ENCODERS.items():
        assert isinstance(spec, EncoderSpec) and key == spec.name == spec.name.lower()
        assert spec.kind in ("pixel", "patch")
        assert spec.source.filename and (spec.source.hf_repo or spec.source.url)
        assert all(callable(f) for f in (spec.build, spec.adapter, spec.default_chip))
        assert spec.tokens_per_step >= 1 and spec.extra_tokens >= 0 and spec.normalisation
        for alias in (spec.name, spec.name.upper(), *spec.aliases):
            assert registry.canonical_name(alias) == spec.name and registry.spec_for(alias) is spec
    # the views the CLI and flows list are the registry's
    assert registry.MODELS == tuple(registry.ENCODERS)
    assert registry.SOURCES == {n: s.source for n, s in registry.ENCODERS.items()}
    assert registry.ALIASES == {"galileo": "galileo-nano", "prithvi": "prithvi-eo-2.0-300m-tl"}
    assert "normalization.json" in registry.SOURCES["galileo-nano"].companions


def test_default_chip_sizes_come_from_the_specs():
    info = lambda name, config=None: EncoderInfo(name, "patch", "w.pt", "", 8, config or {})  # noqa: E731
    assert registry.spec_for("presto").default_chip(info("presto"), 1) == 64
    assert registry.spec_for("galileo").default_chip(info("galileo-nano"), 2) == 8  # 4 patches
    prithvi = registry.spec_for("prithvi-eo-2.0-tiny-tl")
    assert prithvi.default_chip(info(prithvi.name, {"img_size": 224}), 16) == 224


def test_register_encoder_refuses_taken_or_upper_case_names(own_registry):
    with pytest.raises(ValueError, match="already registered"):
        registry.register_encoder(replace(toy_spec("pixel"), name="presto"))
    with pytest.raises(ValueError, match="already registered"):
        registry.register_encoder(replace(toy_spec("pixel"), aliases=("galileo",)))
    with pytest.raises(ValueError, match="lower case"):
        registry.register_encoder(replace(toy_spec("pixel"), name="Toy"))
    with pytest.raises(ValueError, match="unknown model 'toy-pixel'"):
        registry.canonical_name("toy-pixel")


def test_model_modules_import_neither_registry_nor_engine():
    code = (
        "import sys, pipeline.embeddings.presto, pipeline.embeddings.galileo, pipeline.embeddings.prithvi; "
        "bad = {'pipeline.embeddings.registry', 'pipeline.embeddings.engine'} & set(sys.modules); "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr or done.stdout


# --------------------------------------------------------------------------------------------- codecs
def test_every_registered_video_codec_is_complete():
    for key, codec in VIDEO_CODECS.items():
        assert key == codec.name and video_codec(key) is codec
        av.Codec(codec.encoder, "w"), av.Codec(codec.decoder, "r")  # FFmpeg has both
        assert codec.pix_fmts and all(av.VideoFormat(fmt).name == fmt for fmt in codec.pix_fmts.values())
        need = [(1, 8), (1, 16), (3, 16)] if codec.lossless else [(1, 12), (3, 12)]  # what codec.py asks for
        assert all(codec.pix_fmt(*k) for k in need)
        mode = "lossless" if codec.lossless else "lossy"
        options = codec.options(CodecParams(mode=mode, codec=key), 8)
        assert options and all(isinstance(k, str) for k in options)
        assert codec.frame_size(5, 7) >= (5, 7) and codec.min_height >= 1 and codec.align >= 1
    for mode, name in DEFAULT_CODECS.items():
        assert video_codec(name).lossless == (mode == "lossless")
    with pytest.raises(ValueError, match="unknown video codec 'vp9'; known: libx265, ffv1"):
        video_codec("vp9")


def test_codec_params_name_a_registered_codec_of_their_mode():
    assert "codec" not in CodecParams().to_json()  # default: headers and store metadata as before
    assert CodecParams().video_codec() is LIBX265 and CodecParams(mode="lossless").video_codec() is FFV1
    with pytest.raises(ValueError, match="is lossless; it cannot code mode 'lossy'"):
        CodecParams(codec="ffv1")
    with pytest.raises(ValueError, match="unknown video codec"):
        CodecParams(mode="lossless", codec="nope")
    params = CodecParams(mode="lossless", codec="ffv1")
    assert CodecParams.from_json(params.to_json()) == params
    zarr_codec = VideoCodec.from_dict({"name": "eocube.video", "configuration": {"mode": "lossless", "codec": "ffv1"}})
    assert zarr_codec.params == params and zarr_codec.to_dict()["configuration"]["codec"] == "ffv1"


def _large_context_ffv1(params: CodecParams, frames: int) -> dict:
    return {**video.ffv1_options(params.threads), "context": "1"}


def _ultrafast_x265(params: CodecParams, frames: int) -> dict:
    return LIBX265.options(replace(params, preset="ultrafast"), frames)


@pytest.mark.parametrize(
    "toy, mode",
    [
        (replace(FFV1, name="ffv1-large-context", options=_large_context_ffv1), "lossless"),
        (replace(LIBX265, name="x265-ultrafast", options=_ultrafast_x265), "lossy"),
    ],
)
def test_a_registered_toy_codec_round_trips_and_is_named_in_the_header(monkeypatch, toy, mode):
    monkeypatch.setitem(VIDEO_CODECS, toy.name, toy)
    rng = np.random.default_rng(3)
    x = rng.integers(100, 3000, (2, 5, 12, 20)).astype(np.uint16)
    x[:, 1, :3, :4] = 0  # missing pixels (nodata) travel in the ffv1 mask
    value_range = (0.0, 4095.0)
    params = CodecParams(mode=mode, codec=toy.name, nodata=0, value_range=value_range, qp=0, klt=False)
    data = encode_array(x, params)
    header, _ = read_header(data)
    streams = [s for s in header["streams"] if "spec" in s]
    assert streams and all(s["spec"]["codec"] == toy.name for s in streams)
    assert header["mask"]["spec"]["codec"] == "ffv1"  # the mask stream is always plain ffv1
    if toy.lossless:
        assert streams[0]["spec"]["options"]["context"] == "1" and "packets" in streams[0]
    else:
        assert streams[0]["spec"]["options"]["preset"] == "ultrafast" and "bytes" in streams[0]
    back = decode_array(data)
    assert back.dtype == x.dtype and ((back == 0) == (x == 0)).all()
    if toy.lossless:
        np.testing.assert_array_equal(back, x)
    else:  # the same encoder with the same options as the built-in entry: the same values back
        same = decode_array(encode_array(x, replace(params, codec=None, preset="ultrafast")))
        np.testing.assert_array_equal(back, same)
        assert np.abs(back.astype(float) - x)[x > 0].mean() < video.x265_step_codes(0)  # noise at QP 0's step
    monkeypatch.delitem(VIDEO_CODECS, toy.name)  # a reader without the entry cannot decode the stream
    with pytest.raises(CorruptStreamError, match=f"unknown video codec '{toy.name}'"):
        decode_array(data)


def test_codec_params_fields_are_the_zarr_configuration_keys():
    """``codec`` is configurable in a store like every other ``CodecParams`` field."""
    with pytest.raises(ValueError, match="unknown eocube.video configuration keys"):
        VideoCodec.from_dict({"name": "eocube.video", "configuration": {"codecs": "ffv1"}})
    assert "codec" in {f.name for f in fields(CodecParams)}
