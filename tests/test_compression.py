"""Codec core of pipeline.compression: round trips, KLT, quantisation, metrics, errors."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.compression import klt
from pipeline.compression.codec import CodecParams, decode_array, encode_array, klt_matrix, read_header
from pipeline.compression.metrics import psnr, spectral_angle, ssim, ssim_2d
from pipeline.compression.quantise import Quantiser, fill_missing
from pipeline.compression.ratecontrol import TRIALS_PER_SEARCH, choose_qp, measure, next_qp
from pipeline.compression.stage import corrected_qp
from pipeline.compression.video import (
    FLAT_SCALING_OPTION,
    QP_MAX,
    QP_MIN,
    CorruptStreamError,
    StreamSpec,
    check_qp,
    encode_stream,
    ffv1_options,
    flat_scaling_list,
    fractional_qp_zones,
    split_packets,
    x265_options,
    x265_quantiser,
)

DATA = Path(__file__).parent / "data"


def smooth_cube(bands: int, t: int = 12, h: int = 37, w: int = 41, seed: int = 0) -> np.ndarray:
    """Correlated, smoothly varying reflectance (band, time, y, x) in [0.02, 0.6], float32."""
    rng = np.random.default_rng(seed)
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    base = 0.25 + 0.1 * np.sin(xx / 7 + tt / 4) + 0.06 * np.cos(yy / 5 - tt / 6)
    cube = np.stack([base * (0.6 + 0.25 * k) + 0.02 * np.sin(k + yy / 9) for k in range(bands)])
    cube += rng.normal(0, 0.002, cube.shape)
    return np.clip(cube, 0.02, 0.6).astype(np.float32)


def with_nans(cube: np.ndarray) -> np.ndarray:
    out = cube.copy()
    out[:, 2, 5:15, 3:20] = np.nan  # a cloud on every band
    out[0, 4, 0:3, 0:3] = np.nan  # a single-band gap
    return out


@pytest.mark.parametrize("bands", [1, 2, 4, 5])
def test_lossless_uint16_with_nodata_is_exact(bands):
    dn = np.rint(smooth_cube(bands) * 10000).astype(np.uint16)
    dn[:, 3, 10:20, 10:20] = 0
    data = encode_array(dn, CodecParams(mode="lossless", nodata=0))
    back = decode_array(data)
    assert back.dtype == np.uint16 and back.shape == dn.shape
    np.testing.assert_array_equal(back, dn)
    assert len(data) < 0.8 * dn.nbytes  # noisy 12-bit signal: ~6 bits of noise per sample


def test_lossless_float_on_grid_with_nan_is_exact():
    refl = with_nans((np.rint(smooth_cube(3) * 10000) * 1e-4).astype(np.float32))
    back = decode_array(encode_array(refl, CodecParams(mode="lossless", step=1e-4)))
    np.testing.assert_array_equal(np.isnan(back), np.isnan(refl))
    np.testing.assert_array_equal(back[~np.isnan(back)], refl[~np.isnan(refl)])


def _dn(bands: int = 3) -> np.ndarray:
    return np.rint(smooth_cube(bands) * 10000).astype(np.uint16)


@pytest.mark.parametrize(
    "name, make, origin, step",
    [
        ("Sentinel-2 reflectance, float32 DN / 10000", lambda dn: dn.astype(np.float32) / np.float32(10000), 0.0, 1e-4),
        ("reflectance, float64 DN * 1e-4", lambda dn: dn * 1e-4, 0.0, 1e-4),
        ("digital numbers stored as float32", lambda dn: dn.astype(np.float32), 0.0, 1.0),
        (
            "Landsat C2 surface reflectance",
            lambda dn: dn.astype(np.float32) * np.float32(2.75e-5) - np.float32(0.2),
            -0.2,
            2.75e-5,
        ),
        (
            "Landsat C2 surface temperature",
            lambda dn: dn.astype(np.float32) * np.float32(0.00341802) + np.float32(149),
            149.0,
            0.00341802,
        ),
        ("a spacing of its own, 0.004", lambda dn: dn.astype(np.float32) * np.float32(0.004), 0.0, 0.004),
    ],
)
def test_lossless_finds_the_grid_of_float_bands(name, make, origin, step):
    """Given no step, each chunk is coded on the coarsest grid its values lie on, bit-exact, NaN included."""
    values = with_nans(make(_dn()))
    data = encode_array(values, CodecParams(mode="lossless"))
    back = decode_array(data)
    assert back.dtype == values.dtype
    np.testing.assert_array_equal(back, values)  # NaN where NaN
    grid = read_header(data)[0]["quantiser"]
    assert grid["step"] == pytest.approx(step, rel=1e-6)
    if origin is not None:
        assert grid["offset"][0] == pytest.approx(origin, abs=1e-9)


@pytest.mark.parametrize("shift, dtype", [(-3000, np.int16), (200_000, np.int32)])
def test_lossless_codes_integers_off_0_65535_from_their_minimum(shift, dtype):
    dn = _dn().astype(dtype) + dtype(shift)
    np.testing.assert_array_equal(decode_array(encode_array(dn, CodecParams(mode="lossless"))), dn)


def test_lossless_classes_and_masks_3d():
    rng = np.random.default_rng(1)
    classes = rng.integers(0, 12, (9, 20, 30)).astype(np.uint8)
    mask = rng.random((9, 20, 30)) > 0.5
    np.testing.assert_array_equal(decode_array(encode_array(classes, CodecParams(mode="lossless"))), classes)
    back = decode_array(encode_array(mask, CodecParams(mode="lossless")))
    assert back.dtype == bool
    np.testing.assert_array_equal(back, mask)


def test_lossless_refuses_values_off_grid():
    with pytest.raises(ValueError, match="not on the lossless grid"):
        encode_array(smooth_cube(2), CodecParams(mode="lossless", step=1e-4))
    with pytest.raises(ValueError, match="cannot code these float32 values exactly.*no grid"):
        encode_array(smooth_cube(2), CodecParams(mode="lossless"))


@pytest.mark.parametrize("bands", [1, 2, 4, 5])
@pytest.mark.parametrize("use_klt", [True, False])
def test_lossy_round_trip_keeps_missing_and_quality(bands, use_klt):
    cube = with_nans(smooth_cube(bands))
    back = decode_array(encode_array(cube, CodecParams(qp=8, klt=use_klt)))
    assert back.dtype == np.float32 and back.shape == cube.shape
    np.testing.assert_array_equal(np.isnan(back), np.isnan(cube))
    assert psnr(cube, back, peak=1.0) > 48


def test_lossy_uint16_nodata_restored_exactly():
    dn = np.rint(smooth_cube(4) * 10000).astype(np.uint16)
    dn[:, 1, :8, :8] = 0
    back = decode_array(encode_array(dn, CodecParams(qp=10, value_range=(0, 10000), nodata=0)))
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back == 0, dn == 0)
    assert psnr(dn.astype(float), back.astype(float), peak=10000) > 45


def test_lossy_decode_stays_in_the_fixed_range():
    """Coding noise around values at the range's ends is clipped back into it (the encoder clipped there too)."""
    t, h, w = 8, 32, 64
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    edges = ((xx // 5 + yy // 7) % 2).astype(np.float32)  # sharp 0/1 blocks: ringing overshoots both ends
    x = np.stack([np.broadcast_to(edges * (0.6 + 0.4 * k / 3), (t, h, w)) for k in range(4)]).copy()
    for klt_on in (True, False):
        back = decode_array(encode_array(x, CodecParams(qp=38, klt=klt_on, value_range=(0.0, 1.0))))
        assert back.min() >= 0.0 and back.max() <= 1.0
        assert back.min() == 0.0  # the overshoot below 0 was there and is clipped


def test_header_is_self_describing():
    cube = with_nans(smooth_cube(4))
    header, _ = read_header(encode_array(cube, CodecParams(qp=4, klt_scope="date")))  # fine enough to code every stream
    assert header["dtype"] == "float32" and header["shape"] == [4, 12, 37, 41]
    assert header["axes"] == ["band", "time", "y", "x"]
    assert [s["components"] for s in header["streams"]] == [[0, 1, 2], [3]]
    assert [s["spec"]["pix_fmt"] for s in header["streams"]] == ["gbrp12le", "gray12le"]
    assert header["mask"]["layout"] == "per-band" and header["mask"]["spec"]["codec"] == "ffv1"
    assert header["klt"]["angle_bits"] == 12 and np.shape(header["klt"]["angles"]) == (12, 6)  # a rotation a date
    assert all(isinstance(c, int) and 0 <= c < 4096 for c in np.ravel(header["klt"]["angles"]).tolist())
    assert all(float(str(np.float32(v))) == v for v in header["klt"]["mean"])  # shortest float32 decimals
    matrix = np.asarray(read_header(encode_array(cube, CodecParams(qp=4, klt_scope="chunk")))[0]["klt"]["matrix"])
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(4), atol=1e-6)  # stored to float32 precision
    assert all(float(str(np.float32(v))) == v for v in matrix.reshape(-1))
    assert all("bytes" in s and "packets" not in s for s in header["streams"])  # HEVC: length only
    states = header["mask"]["frames"]  # one state per band and date; only the partly missing ones are coded
    assert len(states) == 4 * 12 and states.count("2") == 5 and set(states) == {"0", "2"}
    assert len(header["mask"]["packets"]) == 1 and header["mask"]["spec"]["height"] == 5 * 37  # one tall image
    q = header["quantiser"]
    assert q["bits"] == 12 and len(q["offset"]) == 4 and q["step"] > 0
    assert "libavcodec" in header["library"] and "keyint=12" in header["streams"][0]["spec"]["options"]["x265-params"]


def test_format_1_bytes_with_listed_hevc_packet_sizes_still_decode():
    """Format 1 listed every HEVC packet's size; rewriting a header that way must decode the same."""
    cube = with_nans(smooth_cube(4))
    data = encode_array(cube, CodecParams(qp=4))
    header, pos = read_header(data)
    payload, old_streams, at = data[pos:], [], 0
    for record in header["streams"]:
        stream = payload[at + record["extradata"] : at + record["extradata"] + record["bytes"]]
        packets = split_packets("libx265", stream)
        assert b"".join(packets) == stream and len(packets) == 12
        old_streams.append({k: v for k, v in record.items() if k != "bytes"} | {"packets": [len(p) for p in packets]})
        at += record["extradata"] + record["bytes"]
    blob = zlib.compress(json.dumps(header | {"streams": old_streams}).encode())
    v1 = b"EOCV" + struct.pack("<BI", 1, len(blob)) + blob + payload
    np.testing.assert_array_equal(decode_array(v1), decode_array(data))
    with pytest.raises(CorruptStreamError, match="format version 9 not supported"):
        decode_array(b"EOCV" + struct.pack("<BI", 9, len(blob)) + blob + payload)


@pytest.mark.parametrize("version", [1, 2])
def test_format_1_and_2_bytes_still_decode(version: int):
    """Bytes written by the format 1 and 2 code itself (commits cd88a8b^ and 3c7dbe1^: zlib header, one JSON
    record per stream, HEVC packet sizes in format 1 and one stream length in format 2) decode as they did then."""
    data = (DATA / f"eocube-video-format{version}.bin").read_bytes()
    assert data[4] == version
    np.testing.assert_array_equal(decode_array(data), np.load(DATA / f"eocube-video-format{version}-decoded.npy"))


def test_format_3_bytes_still_decode():
    """Bytes written by format 3 (plain zlib header, one ffv1 mask frame per date) decode as they did then."""
    data = (DATA / "eocube-video-format3.bin").read_bytes()
    assert data[4] == 3
    np.testing.assert_array_equal(decode_array(data), np.load(DATA / "eocube-video-format3-decoded.npy"))


def test_format_4_bytes_still_decode():
    """Bytes written by format 4 (one KLT matrix per chunk) decode as they did then."""
    data = (DATA / "eocube-video-format4.bin").read_bytes()
    assert data[4] == 4 and "matrix" in read_header(data)[0]["klt"]
    np.testing.assert_array_equal(decode_array(data), np.load(DATA / "eocube-video-format4-decoded.npy"))


def test_header_is_compressed_from_the_format_dictionary():
    data = encode_array(with_nans(smooth_cube(4)), CodecParams(qp=20))
    header, pos = read_header(data)
    plain = zlib.compress(json.dumps(header, separators=(",", ":")).encode(), 9)
    assert data[4] == 5 and pos - 9 < 0.6 * len(plain)  # the repeated names and options cost almost nothing
    with pytest.raises(CorruptStreamError, match="corrupt eocube.video header"):
        decode_array(data[:9] + plain + data[pos:])  # a plain zlib header under format 5 does not parse


def test_mask_codes_only_partly_missing_frames_and_restores_every_state():
    """Per-band mask: a clear date, a date one band lacks entirely, partial gaps; frames across several images."""
    rng = np.random.default_rng(3)
    dn = rng.integers(1, 4000, size=(2, 9, 2048, 16), dtype=np.uint16)  # 2048 rows: 4 frames per ffv1 image
    dn[0, 1] = 0  # band 0 lacks date 1: "all missing", not coded
    dn[:, 2:9, :50, :3] = 0  # partial gaps on dates 2..8 of both bands
    dn[1, 5, 100:120] = 0
    data = encode_array(dn, CodecParams(mode="lossless", nodata=0))
    np.testing.assert_array_equal(decode_array(data), dn)
    mask = read_header(data)[0]["mask"]
    assert mask["layout"] == "per-band" and mask["frames"] == "012222222" + "002222222"
    assert len(mask["packets"]) == 4 and mask["spec"]["height"] == 4 * 2048  # 14 frames in 4 images of 4


def test_a_stream_too_weak_for_the_step_is_stored_as_its_mean():
    """Band 3 = band 0 plus tiny noise: its KLT component is that noise, far below the step at QP 30."""
    rng = np.random.default_rng(7)
    base = smooth_cube(3, t=16, h=40, w=48)
    cube = np.concatenate([base, base[:1] + rng.normal(0, 0.0005, base[:1].shape).astype(np.float32)])
    coarse, fine = CodecParams(qp=30), CodecParams(qp=-3)
    h_coarse, h_fine = read_header(encode_array(cube, coarse))[0], read_header(encode_array(cube, fine))[0]
    assert h_coarse["streams"][1].keys() == {"components", "constant"} and h_coarse["streams"][1]["components"] == [3]
    assert "spec" in h_fine["streams"][1]  # at a fine step the same component is worth a video
    back = decode_array(encode_array(cube, coarse))
    mean, matrix = np.asarray(h_coarse["klt"]["mean"]), klt_matrix(h_coarse["klt"], 4)
    comps, back_comps = (
        klt.forward(cube.astype(np.float64), mean, matrix),
        klt.forward(back.astype(np.float64), mean, matrix),
    )
    # the skipped component decodes as its chunk mean: its error is its own spread, nothing else
    np.testing.assert_allclose(back_comps[3], h_coarse["streams"][1]["constant"][0], atol=1e-5)
    assert np.sqrt(np.mean((back_comps[3] - comps[3]) ** 2)) == pytest.approx(comps[3].std(), rel=1e-3)
    assert psnr(cube, back, 1.0) > 35


def test_strongest_component_goes_to_the_luma_plane():
    """Plane 0 of a gbrp stream (coded as luma by libx265) carries the first component, bit-exact."""
    rng = np.random.default_rng(2)
    planes = rng.integers(0, 65536, (3, 3, 24, 20)).astype(np.uint16)  # (time, plane, y, x)
    spec = StreamSpec("ffv1", "gbrp16le", 24, 20, ffv1_options(1))
    packets, extradata = encode_stream(planes, spec)
    ctx = av.CodecContext.create("ffv1", "r")
    ctx.width, ctx.height, ctx.extradata = 20, 24, extradata
    frames = [f for p in [*packets, None] for f in ctx.decode(av.Packet(p) if p is not None else None)]
    assert len(frames) == 3
    for t, frame in enumerate(frames):
        assert frame.format.name == "gbrp16le"
        for i in range(3):
            raw = np.frombuffer(bytes(frame.planes[i]), dtype="<u2").reshape(24, -1)[:, :20]
            np.testing.assert_array_equal(raw, planes[t, i])


def test_klt_is_orthonormal_invertible_and_bounded():
    cube = smooth_cube(5).astype(np.float64)
    mean, matrix = klt.fit_klt(cube)
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(5), atol=1e-12)
    comps = klt.forward(cube, mean, matrix)
    variances = comps.reshape(5, -1).var(axis=1)
    assert np.all(np.diff(variances) <= 1e-12)
    np.testing.assert_allclose(klt.inverse(comps, mean, matrix), cube, atol=1e-12)
    lo, hi = klt.component_bounds(mean, matrix, 0.0, 1.0)
    corners = np.array(np.meshgrid(*[[0.0, 1.0]] * 5, indexing="ij")).reshape(5, -1)  # all 32 box corners
    projected = matrix @ (corners - mean[:, None])
    np.testing.assert_allclose(lo, projected.min(axis=1), atol=1e-12)
    np.testing.assert_allclose(hi, projected.max(axis=1), atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_givens_angle_codes_rebuild_an_exactly_orthonormal_rotation(n):
    rng = np.random.default_rng(n)
    rotation, _ = np.linalg.qr(rng.normal(size=(n, n)))
    rotation[-1] *= np.sign(np.linalg.det(rotation))  # det +1
    codes = klt.angle_codes(rotation)
    rebuilt = klt.rotation_from_codes(codes, n)
    assert codes.shape == (n * (n - 1) // 2,) and codes.dtype.kind == "i"
    np.testing.assert_allclose(rebuilt @ rebuilt.T, np.eye(n), atol=1e-14)
    # each angle is rounded by at most half of 2 pi / 4096; the entries move by about that much
    np.testing.assert_allclose(rebuilt, rotation, atol=n * n * np.pi / 4096)
    np.testing.assert_array_equal(klt.angle_codes(rebuilt), codes)  # the codes of a rebuilt rotation are its own


def test_a_klt_per_date_decorrelates_dates_whose_spectra_differ():
    """Each date mixes the same independent sources through its own rotation: the per-date KLT undoes
    every date's mixing (components uncorrelated within each date), the chunk KLT cannot."""
    rng = np.random.default_rng(11)
    t, n = 6, 4
    sources = rng.normal(size=(n, t, 30, 30)) * np.array([8.0, 4.0, 2.0, 1.0])[:, None, None, None]
    mixings = [np.linalg.qr(rng.normal(size=(n, n)))[0] for _ in range(t)]
    x = np.stack([m @ sources[:, k].reshape(n, -1) for k, m in enumerate(mixings)], axis=1).reshape(n, t, 30, 30)
    mean, chunk = klt.fit_klt(x)
    codes, per_date = klt.fit_frame_rotations(x, chunk)
    assert codes.shape == (t, 6) and per_date.shape == (t, n, n)

    def worst_correlation(matrix: np.ndarray) -> float:
        comps = klt.forward(x, mean, matrix)
        corr = [np.corrcoef(comps[:, k].reshape(n, -1)) - np.eye(n) for k in range(t)]
        return float(np.abs(corr).max())

    assert worst_correlation(per_date) < 0.05 < 0.3 < worst_correlation(chunk)
    np.testing.assert_allclose(klt.inverse(klt.forward(x, mean, per_date), mean, per_date), x, atol=1e-10)
    lo, hi = klt.component_bounds(mean, per_date, -40.0, 40.0)
    for k in range(t):  # the bounds hold every date's components over the whole box
        f_lo, f_hi = klt.component_bounds(mean, per_date[k], -40.0, 40.0)
        assert np.all(lo <= f_lo + 1e-12) and np.all(hi >= f_hi - 1e-12)


def test_predicted_bits_of_ramps_repeats_and_noise():
    """A plane codes for nothing (planar prediction is exact); a date equal to the one before costs nothing
    (temporal prediction); white noise of variance s2 leaves its planar residual with variance 4 s2, so
    each block of the first date costs about 0.5 log2(1 + 4 s2 / noise)."""
    yy, xx = np.mgrid[0:32, 0:40]
    plane = np.broadcast_to(3.0 * yy - 2.0 * xx + 7, (2, 5, 32, 40))
    assert klt.predicted_bits(plane, noise=1.0) == 0.0
    noise_frame = np.random.default_rng(0).normal(0, 2.0, (1, 1, 64, 64))
    repeated = np.repeat(noise_frame, 4, axis=1)
    first = klt.predicted_bits(noise_frame, noise=1.0)
    assert first == pytest.approx(0.5 * np.log2(1 + 4 * 4.0), rel=0.05)
    assert klt.predicted_bits(repeated, noise=1.0) == pytest.approx(first / 4)


def test_auto_scope_takes_a_rotation_per_date_only_where_the_spectra_change():
    """Dates mixing spatially structured sources through their own rotations: rotations per date are
    predicted to pay and are taken. Dates sharing one spectral structure (the smooth cube): one rotation."""
    rng = np.random.default_rng(4)
    t, n = 8, 4
    yy, xx = np.mgrid[0:48, 0:64]
    sources = np.stack([np.sin(xx / (3 + k) + yy / (5 + k) + f) * 0.1 / (k + 1) for k in range(n) for f in range(t)])
    sources = sources.reshape(n, t, 48, 64) + rng.normal(0, 0.001, (n, t, 48, 64))
    mixings = [np.linalg.qr(rng.normal(size=(n, n)))[0] for _ in range(t)]
    varying = 0.3 + np.stack([m @ sources[:, k].reshape(n, -1) for k, m in enumerate(mixings)], axis=1).reshape(
        n, t, 48, 64
    )
    static = smooth_cube(4, t=8, h=48, w=64)
    for cube, per_date in ((varying, True), (static, False)):
        header, _ = read_header(encode_array(cube.astype(np.float32), CodecParams(qp=12, preset="ultrafast")))
        assert ("angles" in header["klt"]) is per_date and ("matrix" in header["klt"]) is not per_date


@pytest.mark.parametrize("scope", ["date", "chunk"])
def test_both_klt_scopes_round_trip_within_their_quality(scope):
    cube = with_nans(smooth_cube(5))
    data = encode_array(cube, CodecParams(qp=4, klt_scope=scope))
    header, _ = read_header(data)
    assert ("angles" in header["klt"]) == (scope == "date") and ("matrix" in header["klt"]) == (scope == "chunk")
    back = decode_array(data)
    np.testing.assert_array_equal(np.isnan(back), np.isnan(cube))
    assert psnr(cube, back, 1.0) > 45


def test_missing_pixels_are_filled_along_rows_then_from_rows_then_by_the_temporal_mean():
    x = np.zeros((1, 2, 3, 4))
    x[0, 0] = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    missing = np.zeros(x.shape, bool)
    missing[0, 0, 0, 1:3] = True  # inside a row: the value to the left
    missing[0, 0, 1, :] = True  # a whole row: the filled row above
    missing[0, 0, 2, 0] = True  # at the row's start: the value to the right
    missing[0, 1] = True  # a whole frame: the pixel's temporal mean, else the band mean
    filled = fill_missing(x, missing, default=99.0)
    np.testing.assert_array_equal(filled[0, 0], [[1, 1, 1, 4], [1, 1, 1, 4], [10, 10, 11, 12]])
    band_mean = np.mean([1, 4, 10, 11, 12])
    np.testing.assert_allclose(filled[0, 1], [[1, band_mean, band_mean, 4], [band_mean] * 4, [band_mean, 10, 11, 12]])
    assert fill_missing(x, np.ones(x.shape, bool), default=99.0).max() == 99.0


def test_masked_regions_cost_little_in_lossless():
    """A cube half under a ragged mask codes in about half the bytes: the fill continues each row."""
    rng = np.random.default_rng(3)
    dn = rng.integers(1000, 1200, (2, 8, 64, 64)).astype(np.uint16)
    masked = dn.copy()
    edge = rng.integers(20, 44, (8, 64, 1))
    masked[:, np.arange(64)[None, None, :] >= edge] = 0
    full = len(encode_array(dn, CodecParams(mode="lossless", nodata=0)))
    half = len(encode_array(masked, CodecParams(mode="lossless", nodata=0)))
    np.testing.assert_array_equal(decode_array(encode_array(masked, CodecParams(mode="lossless", nodata=0))), masked)
    share_valid = float((masked[0] > 0).mean())
    assert half < (share_valid + 0.13) * full, (half, full, share_valid)  # a temporal-mean fill: 0.67


def test_quantiser_shared_step_and_clipping():
    q = Quantiser(offset=(0.0, -1.0), step=0.5, bits=4)
    codes, clipped = q.to_codes(np.array([[0.0, 1.0, 9.0], [-1.0, 0.0, -3.0]]))
    np.testing.assert_array_equal(codes, [[0, 2, 15], [0, 2, 0]])
    assert clipped == 2
    np.testing.assert_allclose(q.to_values(codes), [[0.0, 1.0, 7.5], [-1.0, 0.0, -1.0]])


def test_psnr_and_spectral_angle_closed_form():
    ref = np.full((2, 3, 4, 5), 0.5)
    assert psnr(ref, ref + 0.01, peak=1.0) == pytest.approx(40.0)
    assert psnr(ref * 10000, ref * 10000 + 100, peak=10000) == pytest.approx(40.0)
    a = np.zeros((2, 1, 1, 1))
    a[0] = 1
    b = np.ones((2, 1, 1, 1))
    assert spectral_angle(a, b) == pytest.approx(45.0)


def test_ssim_against_closed_forms():
    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2
    # constant images: SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    s = ssim_2d(np.full((32, 32), 0.2), np.full((32, 32), 0.3), 1.0)
    np.testing.assert_allclose(s, (2 * 0.2 * 0.3 + c1) / (0.2**2 + 0.3**2 + c1), rtol=1e-10)
    # checkerboards (a, b) vs (c, d): local means, variances and covariance are exact away from borders
    a, b, c, d = 0.2, 0.6, 0.1, 0.4
    board = (np.add.outer(np.arange(64), np.arange(64)) % 2).astype(bool)
    x, y = np.where(board, a, b), np.where(board, c, d)
    mx, my, vx, vy, cxy = (a + b) / 2, (c + d) / 2, ((a - b) / 2) ** 2, ((c - d) / 2) ** 2, (a - b) * (c - d) / 4
    expected = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    np.testing.assert_allclose(ssim_2d(x, y, 1.0)[10:-10, 10:-10], expected, rtol=1e-6)
    assert ssim(np.stack([x])[None], np.stack([x])[None], 1.0) == pytest.approx(1.0)


def test_rate_control_hits_psnr_and_rate_targets():
    block = with_nans(smooth_cube(4, t=8, h=32, w=64))
    params = CodecParams(preset="ultrafast")
    point = choose_qp([block], params, peak=1.0, target_psnr=45.0)
    assert point.psnr >= 45.0
    back = decode_array(encode_array(block, CodecParams(preset="ultrafast", qp=point.qp)))
    assert psnr(block, back, 1.0) >= 45.0
    # a little more QP would miss the target: the search is tight
    assert measure([block], CodecParams(preset="ultrafast", qp=min(QP_MAX, point.qp + 3)), 1.0).psnr < point.psnr
    rate = choose_qp([block], params, peak=1.0, target_bpppb=0.5)
    assert rate.bpppb <= 0.5
    with pytest.raises(ValueError, match="out of reach"):
        choose_qp([block], params, peak=1.0, target_psnr=200.0)


def test_next_qp_interpolates_inside_the_bracket_toward_the_answer():
    assert next_qp(21, 35, 1.2, -4.4) == 24  # the line crosses 0 at QP 24.0
    assert next_qp(30, 10, 0.5, -1.5) == 25  # a rate target (good above bad): crosses at 25.0
    assert next_qp(30, 10, 0.5, -1.3) == 25  # crosses at 24.44: rounded up, toward the good end
    assert next_qp(21, 35, 1.0, -2.0) == 25  # crosses at 25.67: rounded down, toward the good end
    assert next_qp(24, 35, 0.1, -4.0) == 25  # never an end again
    assert next_qp(-8, 50, None, None) == 21 and next_qp(21, 50, 1.0, None) == 35  # halfway until both are known
    assert next_qp(21, 35, float("inf"), -1.0) == 28  # a lossless end (infinite PSNR): halfway


def test_rate_control_search_lands_on_the_boundary_in_fewer_trials_than_a_bisection(monkeypatch):
    """The integer QP found is the last one meeting the target (the next one misses it, measured here); no
    search takes more trials than halving -8..49 does (6), and together they take fewer."""
    import pipeline.compression.ratecontrol as ratecontrol

    block = with_nans(smooth_cube(4, t=8, h=32, w=64, seed=11))
    params = CodecParams(preset="ultrafast")
    trials: list[float] = []
    monkeypatch.setattr(ratecontrol, "measure", lambda b, p, peak: trials.append(p.qp) or measure(b, p, peak))
    counts = []
    for target in (38.0, 42.0, 45.0, 48.0, 52.0):
        trials.clear()
        point = choose_qp([block], params, peak=1.0, target_psnr=target, fraction_trials=0)
        counts.append(len(trials))
        assert point.psnr >= target > measure([block], replace(params, qp=point.qp + 1), 1.0).psnr
    for rate in (0.1, 0.3):
        trials.clear()
        point = choose_qp([block], params, peak=1.0, target_bpppb=rate, fraction_trials=0)
        counts.append(len(trials))
        assert point.bpppb <= rate < measure([block], replace(params, qp=point.qp - 1), 1.0).bpppb
    bisection = TRIALS_PER_SEARCH - 1
    assert max(counts) <= bisection and sum(counts) < bisection * len(counts), counts


def test_psnr_target_above_the_klt_ceiling_is_met_without_the_klt():
    block = smooth_cube(6, t=8, h=32, w=64, seed=3)
    params = CodecParams(preset="ultrafast")
    ceiling = measure([block], CodecParams(preset="ultrafast", qp=QP_MIN), 1.0).psnr
    direct = measure([block], CodecParams(preset="ultrafast", qp=QP_MIN, klt=False), 1.0).psnr
    assert direct > ceiling + 1  # six bands: the KLT's shared step is the coarser one
    point = choose_qp([block], params, peak=1.0, target_psnr=(ceiling + direct) / 2)
    assert not point.klt and point.psnr >= (ceiling + direct) / 2
    assert choose_qp([block], params, peak=1.0, target_psnr=40).klt  # low rates: the KLT is kept
    with pytest.raises(ValueError, match="out of reach"):
        choose_qp([block], params, peak=1.0, target_psnr=direct + 5)


def test_high_rate_targets_take_the_cheaper_of_klt_and_direct(monkeypatch):
    """Below the KLT's ceiling but at a QP <= 0 the bands coded directly may need fewer bits: the
    cheaper point is returned (this block: six bands with independent noise)."""
    import pipeline.compression.ratecontrol as ratecontrol

    block = smooth_cube(6, t=8, h=32, w=64, seed=3)
    params = CodecParams(preset="ultrafast")
    # 4 dB under the ceiling: clear of x265 QP 0..1, where this block's direct PSNR is not monotone in QP and
    # the search's path (which depends on QP_MIN..QP_MAX) decides which side of the bump it lands on
    target = measure([block], CodecParams(preset="ultrafast", qp=QP_MIN), 1.0).psnr - 4
    chosen = choose_qp([block], params, peak=1.0, target_psnr=target)
    monkeypatch.setattr(ratecontrol, "DIRECT_CHECK_QP", QP_MIN - 1)  # never compare: the KLT's own point
    klt_only = choose_qp([block], params, peak=1.0, target_psnr=target)
    assert klt_only.klt and klt_only.qp <= 0 and chosen.psnr >= target
    assert chosen.bpppb <= klt_only.bpppb and chosen.klt == (chosen == klt_only)
    assert not chosen.klt  # measured: directly coded is cheaper here
    klt_at_rate = choose_qp([block], params, peak=1.0, target_bpppb=chosen.bpppb)  # still no comparison
    monkeypatch.setattr(ratecontrol, "DIRECT_CHECK_QP", 0)
    assert choose_qp([block], params, peak=1.0, target_bpppb=chosen.bpppb).psnr >= klt_at_rate.psnr


def test_negative_qp_refines_the_step_through_a_flat_scaling_list():
    """QP -5 is x265 QP 0 with every scaling-list entry at 9 (16 is the default list): a finer step (lower
    error, more bytes), and the list travels in the bitstream, so decoding needs no file."""
    assert QP_MIN == -8
    opts = x265_options(-4, "fast+rdo", 8, 1)
    assert "qp=0:" in opts["x265-params"] and opts[FLAT_SCALING_OPTION] == "10"  # 16 * 2**(-4/6) = 10.08
    assert x265_options(QP_MIN, "fast+rdo", 8, 1)[FLAT_SCALING_OPTION] == "6"
    assert FLAT_SCALING_OPTION not in x265_options(0, "ultrafast", 8, 1)
    assert flat_scaling_list(9).read_text().count(",9") > 1000
    cube = np.rint(smooth_cube(3, t=8, h=48, w=64, seed=3) * 10000).astype(np.uint16) * 3  # texture up to 0.6 refl
    errors, sizes = {}, {}
    for qp in (0, -5):
        data = encode_array(cube, CodecParams(qp=qp, value_range=(0, 20000), preset="ultrafast"))
        if qp < 0:
            assert read_header(data)[0]["streams"][0]["spec"]["options"][FLAT_SCALING_OPTION] == "9"
            flat_scaling_list(9).unlink()  # the decoder reads the list from the stream, not from the file
        back = decode_array(data).astype(np.float64)
        errors[qp], sizes[qp] = float(np.sqrt(np.mean((back - cube) ** 2))), len(data)
    assert errors[-5] < 0.8 * errors[0] and sizes[-5] > sizes[0]
    with pytest.raises(ValueError, match="qp -9 must be in -8..49"):
        CodecParams(qp=-9)


def test_bad_input_errors():
    with pytest.raises(TypeError, match="dtype complex64 not supported"):
        encode_array(np.zeros((2, 4, 8, 8), np.complex64))
    with pytest.raises(ValueError, match="shape"):
        encode_array(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="qp"):
        CodecParams(qp=60)
    with pytest.raises(ValueError, match="value_range"):
        CodecParams(value_range=(1.0, 0.0))


def test_corrupt_bytes_are_reported():
    data = encode_array(smooth_cube(2, t=4, h=16, w=16), CodecParams(qp=20))
    with pytest.raises(CorruptStreamError, match="bad magic"):
        decode_array(b"XXXX" + data[4:])
    with pytest.raises(CorruptStreamError, match="truncated"):
        decode_array(data[:-50])
    header, start = read_header(data)
    garbled = bytearray(data)
    garbled[start:] = bytes(len(data) - start)  # zero every stream byte
    with pytest.raises(CorruptStreamError):
        decode_array(bytes(garbled))
    with pytest.raises(CorruptStreamError, match="header"):
        decode_array(data[:9] + b"{" * (len(data) - 9))


def test_fractional_qp_codes_each_gop_tail_one_qp_coarser():
    """QP 20.5 with 8-frame GOPs: frames 0-3 of each GOP are coded exactly as at QP 20 (same bits, same
    references), the last round(0.5 * 8) = 4 at QP 21; rate and error fall strictly between QP 20 and 21."""
    assert fractional_qp_zones(20.5, 8, 16) == "5,8,q=21/13,16,q=21"  # x265 zone s,e: 0-based frames s-1..e-1
    assert fractional_qp_zones(20.25, 8, 12) == "7,8,q=21/12,12,q=21"  # 2 of 8 frames, then 1 of 4
    assert fractional_qp_zones(20.97, 8, 8) == "1,8,q=21"  # every frame, the keyframe too: QP 21's stream
    assert "zones" not in x265_options(20, "ultrafast", 8, 2, frames=16)["x265-params"]
    assert "frame-threads=1:" in x265_options(20.5, "ultrafast", 8, 2, frames=16)["x265-params"]
    assert check_qp(0.5) == 0.5 and check_qp(-3) == -3.0 and check_qp(-2.5) == -2.5
    assert corrected_qp(16.5, finer=True) == 16.25 and corrected_qp(0.25, finer=True) == 0
    assert corrected_qp(0, finer=True) == -0.25 and corrected_qp(-8, finer=True) == -8
    assert corrected_qp(-3, finer=False) == -2.75
    assert corrected_qp(48.75, finer=False) == 49 == corrected_qp(49, finer=False)
    for bad in (-8.5, 49.5, 50, 51, -9):
        with pytest.raises(ValueError, match="must be in -8..49"):
            CodecParams(qp=bad)
    cube = smooth_cube(4, t=16, h=32, w=64, seed=5)
    decoded, sizes, errors = {}, {}, {}
    for qp in (20, 20.5, 21):
        data = encode_array(cube, CodecParams(qp=qp, keyint=8, preset="ultrafast", klt_scope="chunk"))
        decoded[qp], sizes[qp] = decode_array(data), len(data) - read_header(data)[1]  # the streams alone
        errors[qp] = float(np.mean((decoded[qp].astype(np.float64) - cube) ** 2))
    head, tail = [0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]
    np.testing.assert_array_equal(decoded[20.5][:, head], decoded[20][:, head])
    assert not np.array_equal(decoded[20.5][:, tail], decoded[20][:, tail])
    assert sizes[20] > sizes[20.5] > sizes[21] and errors[20] < errors[20.5] < errors[21]


def test_fractional_qp_below_zero_codes_the_tail_at_x265_qp1_on_the_same_list():
    """QP -2.5 asks for a step of 16 * 2**(-2.5 / 6) = 11.99 list units: the stream carries entry 11 (QP -3's
    list), x265 runs at QP 0 and the last 6 of each 8 frames at QP 1 (6 * log2(11.99 / 11) = 0.74 of them).
    The head frames decode exactly as at QP -3, and rate and error lie between QP -3 and -2."""
    quantiser = x265_quantiser(-2.5)
    assert (quantiser.qp, quantiser.scaling_entry) == (0, 11) and quantiser.tail == pytest.approx(0.7434, abs=1e-4)
    for qp in (float(q) for q in np.arange(-7.9375, 0, 1 / 16) if q % 1):  # fractions: the step asked for
        q = x265_quantiser(qp)
        assert q.qp == 0 and 0 <= q.tail <= 1 and q.scaling_entry <= 16 * 2 ** (qp / 6)
        if q.scaling_entry >= 9:
            assert q.scaling_entry * 2 ** (q.tail / 6) == pytest.approx(16 * 2 ** (qp / 6))
    assert fractional_qp_zones(-2.5, 8, 16) == "3,8,q=1/11,16,q=1"
    options = x265_options(-2.5, "ultrafast", 8, 2, frames=16)
    assert options[FLAT_SCALING_OPTION] == x265_options(-3, "ultrafast", 8, 2)[FLAT_SCALING_OPTION] == "11"
    assert ":qp=0:" in options["x265-params"] and "frame-threads=1:" in options["x265-params"]
    cube = smooth_cube(4, t=16, h=32, w=64, seed=5)
    decoded, sizes, errors = {}, {}, {}
    for qp in (-3, -2.5, -2):
        data = encode_array(cube, CodecParams(qp=qp, keyint=8, preset="ultrafast", klt_scope="chunk"))
        decoded[qp], sizes[qp] = decode_array(data), len(data)
        errors[qp] = float(np.mean((decoded[qp].astype(np.float64) - cube) ** 2))
    head = [0, 1, 8, 9]
    np.testing.assert_array_equal(decoded[-2.5][:, head], decoded[-3][:, head])
    assert sizes[-3] > sizes[-2.5] > sizes[-2] and errors[-3] < errors[-2.5] < errors[-2]


def test_rate_control_lands_between_integer_qps():
    """A target met at QP 23.5 but not at 23: the integer search stops at 24, the fractional one between
    23 and 24 (23.5, or a finer point of the same size), using more of the rate (or fewer bits for a PSNR)
    than the integer point."""
    smooth = smooth_cube(4, t=16, h=32, w=64, seed=6)
    block = smooth * (1 + 0.05 * np.random.default_rng(1).standard_normal(smooth.shape[1:])).astype(np.float32)
    params = CodecParams(preset="ultrafast", keyint=16)
    half, fine_end = (measure([block], replace(params, qp=q), 1.0) for q in (23.5, 23))
    assert fine_end.bpppb > half.bpppb
    integer = choose_qp([block], params, peak=1.0, target_bpppb=half.bpppb, fraction_trials=0)
    fine = choose_qp([block], params, peak=1.0, target_bpppb=half.bpppb)
    assert integer.qp == 24 and 23 < fine.qp < 24 and (fine.qp * 16).is_integer()
    assert integer.bpppb < fine.bpppb <= half.bpppb and fine.psnr > integer.psnr
    quality = choose_qp([block], params, peak=1.0, target_psnr=half.psnr)
    assert 23 < quality.qp <= 23.5 and quality.psnr >= half.psnr and quality.bpppb < fine_end.bpppb


def test_rate_control_keeps_the_integer_qp_when_a_mixed_stream_is_worse():
    """A smooth, static scene whose P-frames are nearly free: QP 23.5 spends more than QP 24 for a lower
    PSNR (measured below), so a rate target between them keeps QP 24."""
    block = smooth_cube(4, t=16, h=32, w=64, seed=6)
    params = CodecParams(preset="ultrafast", keyint=16, klt_scope="chunk")  # one rotation: the content measured
    half, coarse = (measure([block], replace(params, qp=q), 1.0) for q in (23.5, 24))
    assert half.bpppb > coarse.bpppb and half.psnr < coarse.psnr  # the content this test is about
    point = choose_qp([block], params, peak=1.0, target_bpppb=half.bpppb)
    assert point.psnr >= coarse.psnr and point.bpppb <= half.bpppb


@pytest.mark.parametrize("mode", ["lossy", "lossless"])
def test_frames_without_any_value_are_listed_not_coded(mode):
    """Fully masked dates (and the fill of a Zarr edge chunk) cost a header entry, not video frames:
    the bytes are those of the cube without them plus a few bytes, and they decode as missing."""
    cube = smooth_cube(4, t=12, h=32, w=64, seed=7)
    empty = [0, 5, 9, 10, 11]
    holes = cube.copy()
    holes[:, empty] = np.nan
    holes[1, 3] = np.nan  # one band missing on a date: that frame is still coded
    kept = np.delete(holes, empty, axis=1)
    params = (
        CodecParams(qp=20, preset="ultrafast")
        if mode == "lossy"
        else CodecParams(mode="lossless", step=1e-4, value_range=(0.0, 1.0))
    )
    if mode == "lossless":
        holes, kept = np.rint(holes * 1e4) / 1e4, np.rint(kept * 1e4) / 1e4
    data, alone = encode_array(holes, params), encode_array(kept, params)
    assert read_header(data)[0]["empty_frames"] == empty and len(data) - len(alone) < 40
    back = decode_array(data)
    assert back.shape == holes.shape and np.isnan(back[:, empty]).all()
    np.testing.assert_array_equal(np.isnan(back), np.isnan(holes))
    np.testing.assert_array_equal(np.delete(back, empty, axis=1), decode_array(alone))


def test_all_frames_empty_and_integer_nodata_frames():
    nothing = np.full((3, 4, 16, 16), np.nan, dtype=np.float32)
    data = encode_array(nothing)
    assert len(data) < 400 and np.isnan(decode_array(data)).all() and decode_array(data).dtype == np.float32
    dn = (np.arange(2 * 6 * 16 * 16) % 5000).astype(np.uint16).reshape(2, 6, 16, 16)
    dn[:, 2] = 65535
    back = decode_array(encode_array(dn, CodecParams(mode="lossless", nodata=65535)))
    np.testing.assert_array_equal(back, dn)  # the nodata frame comes back as nodata
    assert decode_array(encode_array(dn[0], CodecParams(mode="lossless", nodata=65535))).shape == (6, 16, 16)
