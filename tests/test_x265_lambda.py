"""libx265's rate-distortion multiplier below QP 0 (pipeline.compression.x265_lambda)."""

from __future__ import annotations

import threading
from pathlib import Path

import av
import numpy as np
import pytest
import xarray as xr

from pipeline.compression import x265_lambda
from pipeline.compression.codec import CodecParams, decode_array, encode_array
from pipeline.compression.video import StreamSpec, _low_qp_scaling_entry, ffv1_options, x265_options

BUNDLED_X265 = sorted((Path(av.__file__).parent.parent / "av.libs").glob("libx265*"))
needs_tables = pytest.mark.skipif(
    not x265_lambda.AVAILABLE, reason="the loaded libx265 exposes no 12-bit lambda tables"
)


def live_entries() -> list[tuple[float, float]]:
    lam, lam2 = x265_lambda._TABLES
    return [(lam[i], lam2[i]) for i in x265_lambda.SCALED_ENTRIES]


@pytest.mark.skipif(not BUNDLED_X265, reason="PyAV without its bundled libx265 (a system FFmpeg build)")
def test_tables_of_pyav_bundled_libx265_are_found():
    assert x265_lambda.AVAILABLE
    lam, lam2 = x265_lambda._TABLES
    assert lam[0] == 4.0 and lam[6] == 8.0  # 12-bit SAD multiplier 2**(qp/6 - 2) * 16: doubles every 6 QP
    assert 0.5 < lam2[12] / lam[12] ** 2 < 0.9  # the SSE multiplier is about 0.6-0.7 of its square


@needs_tables
def test_entries_0_and_1_follow_the_scaling_list_while_held_and_are_restored_after():
    default = live_entries()
    assert x265_lambda.SCALED_ENTRIES == (0, 1) and default[1][0] > default[0][0]
    assert x265_lambda.scaled_entries(16) == default
    quarter = [(lam / 4, lam2 / 16) for lam, lam2 in default]  # a step 4x finer: lambda / 4, lambda2 / 16
    assert x265_lambda.scaled_entries(4) == quarter
    with x265_lambda.lambda_for_scaling_entry(4):
        assert live_entries() == quarter
        with x265_lambda.lambda_for_scaling_entry(4):  # a second encoder at the same QP shares it
            assert live_entries() == quarter
        assert live_entries() == quarter
    assert live_entries() == default
    with x265_lambda.lambda_for_scaling_entry(None):  # an encode above x265 QP 0 leaves the tables alone
        assert live_entries() == default


@needs_tables
def test_an_encoder_needing_another_entry_waits_for_the_holders():
    held, release, order = threading.Event(), threading.Event(), []

    def first() -> None:
        with x265_lambda.lambda_for_scaling_entry(9):
            order.append(("first", live_entries()))
            held.set()
            release.wait(5)
            order.append(("first leaves", live_entries()))

    def second() -> None:
        held.wait(5)
        with x265_lambda.lambda_for_scaling_entry(4):
            order.append(("second", live_entries()))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    held.wait(5)
    threads[1].join(0.3)
    assert threads[1].is_alive() and [o[0] for o in order] == ["first"]  # still waiting for entry 4
    release.set()
    for t in threads:
        t.join(5)
    assert [o[0] for o in order] == ["first", "first leaves", "second"]
    assert order[1][1] == x265_lambda.scaled_entries(9) and order[2][1] == x265_lambda.scaled_entries(4)


def test_only_libx265_streams_at_x265_qp0_or_1_take_entries_0_and_1():
    spec = lambda opts, codec="libx265": StreamSpec(codec, "gray12le", 16, 64, opts)  # noqa: E731
    assert _low_qp_scaling_entry(spec(x265_options(2, "fast+rdo", 8, 1))) is None
    assert _low_qp_scaling_entry(spec(x265_options(1.5, "fast+rdo", 8, 1))) == 16  # reads entry 1 (and 2)
    assert _low_qp_scaling_entry(spec(x265_options(0, "fast+rdo", 8, 1))) == 16
    assert _low_qp_scaling_entry(spec(x265_options(-4.5, "fast+rdo", 8, 1, frames=8))) == 9  # tail at QP 1
    assert _low_qp_scaling_entry(spec(x265_options(-5, "fast+rdo", 8, 1))) == 9
    assert _low_qp_scaling_entry(spec(ffv1_options(1), "ffv1")) is None


def test_rdo_quantisation_below_zero_only_with_the_scaled_multiplier(monkeypatch):
    monkeypatch.setattr(x265_lambda, "AVAILABLE", True)
    assert "rdoq-level=2" in x265_options(-8, "fast+rdo", 8, 1)["x265-params"]
    monkeypatch.setattr(x265_lambda, "AVAILABLE", False)
    assert "rdoq-level=0" in x265_options(-4, "fast+rdo", 8, 1)["x265-params"]
    assert "rdoq-level=2" in x265_options(-3, "fast+rdo", 8, 1)["x265-params"]


def rd_point(dn: np.ndarray, qp: int) -> tuple[float, float]:
    data = encode_array(dn, CodecParams(qp=qp, value_range=(0, 20000)))
    err = decode_array(data).astype(np.float64) - dn
    return 8 * len(data) / dn.size, 10 * np.log10(10000**2 / np.mean(err**2))


@needs_tables
@pytest.mark.shared
def test_scaled_multiplier_gains_at_equal_rate_on_real_sentinel2(shared_dir, monkeypatch):
    """Below QP 0 the scaled multiplier is >= 0.5 dB (about 1 dB measured) above the library's own at
    equal rate, interpolated in log rate between the library multiplier's neighbouring points."""
    path = shared_dir / "data" / "sentinel2-romania" / "sentinel2_cube_subset_romania_10m.nc"
    if not path.exists():
        pytest.skip(f"{path} not found")
    ds = xr.open_dataset(path, mask_and_scale=False).isel(time=slice(0, 16))
    dn = np.stack([ds[b].values for b in ["B2", "B3", "B4", "B8"]])
    scaled = [rd_point(dn, qp) for qp in (-3, -6)]
    monkeypatch.setattr(x265_lambda, "AVAILABLE", False)
    as_is = sorted(rd_point(dn, qp) for qp in (0, -3, -6, -8))
    rates, psnrs = np.log([r for r, _ in as_is]), [p for _, p in as_is]
    for rate, quality in scaled:
        assert rates[0] < np.log(rate) < rates[-1]
        assert quality > np.interp(np.log(rate), rates, psnrs) + 0.5


@pytest.mark.shared
def test_the_qp_floor_codes_real_landsat_fill_edges_without_broken_blocks(shared_dir):
    """Entry 3 (QP -14) leaves 4x4 blocks thousands of DN off beside this scene's fill; the floor must not."""
    import rasterio

    from pipeline.compression.video import QP_MIN

    scene = shared_dir / "data" / "landsat-c2l2" / "LC08_L2SP_005009_20150710"
    files = sorted(scene.glob("*SR_B[1-7].TIF"))
    if not files:
        pytest.skip(f"no SR bands under {scene}")
    dn = np.stack([rasterio.open(f).read(1, window=((0, 256), (0, 256))) for f in files])[:, None].repeat(4, axis=1)
    assert (dn == 0).mean() > 0.2 and dn.max() > 30000  # fill beside bright data: the hard case
    for with_klt in (True, False):
        data = encode_array(dn, CodecParams(qp=QP_MIN, value_range=(0, 65535), klt=with_klt))
        err = np.abs(decode_array(data).astype(np.float64) - dn)
        assert err.max() < 1000  # about 220-320 DN here; the broken blocks are off by 3,600-33,000


@needs_tables
def test_concurrent_encodes_at_different_negative_qps_match_sequential_ones():
    """Threads coding at QP -3, -6, -2.5 (tail at x265 QP 1), 0 and 1 at once get the bytes each gets alone:
    entries 0 and 1 are never shared wrongly."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(2)
    yy, xx = np.meshgrid(np.arange(48), np.arange(64), indexing="ij")
    base = 0.3 + 0.1 * np.sin(xx / 6)[None] * np.cos(yy / 5 + np.arange(8)[:, None, None] / 3)
    cube = np.stack([base * (0.7 + 0.2 * k) for k in range(3)]) + rng.normal(0, 0.004, (3, 8, 48, 64))
    cube = np.clip(cube, 0, 1).astype(np.float32)
    qps = [-3, -6, 0, -2.5, 1] * 2
    alone = {qp: encode_array(cube, CodecParams(qp=qp)) for qp in set(qps)}
    assert len(set(alone.values())) == 5
    with ThreadPoolExecutor(max_workers=len(qps)) as pool:
        together = list(pool.map(lambda qp: encode_array(cube, CodecParams(qp=qp)), qps))
    assert [data == alone[qp] for data, qp in zip(together, qps, strict=True)] == [True] * len(qps)
    assert live_entries() == x265_lambda.scaled_entries(16)
