"""Mask policy semantics, dilation against closed-form counts, array types, errors, harmonisation."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pydantic
import pytest
import xarray as xr

from pipeline.sensors import (
    MaskPolicy,
    apply_bandpass_adjustment,
    common_bands,
    decode_qa,
    invalid_mask,
    load_profile,
)
from pipeline.sensors.mask import disk

# LSDS-1619 Table 6-3 values (see test_sensors_qa_rules.py for their bit-by-bit reading)
CLEAR, WATER, CLOUD, SHADOW, SNOW, FILL = 21824, 21952, 22280, 23888, 30048, 1
CLEAR_MEDIUM_CLOUD_CONF = 0b0101_0110_0100_0000  # clear bit, cloud confidence 2 (medium)


def _landsat(values: list[int]) -> np.ndarray:
    return np.array([values], dtype=np.uint16)


def test_default_policy_drops_cloud_shadow_fill_keeps_snow_water():
    qa = _landsat([CLEAR, WATER, CLOUD, SHADOW, SNOW, FILL])
    np.testing.assert_array_equal(invalid_mask("landsat-c2-l2", "qa_pixel", qa), [[0, 0, 1, 1, 0, 1]])
    with_snow = MaskPolicy(drop=[*MaskPolicy().drop, "snow"])
    np.testing.assert_array_equal(invalid_mask("landsat-c2-l2", "qa_pixel", qa, with_snow), [[0, 0, 1, 1, 1, 1]])


def test_min_cloud_confidence_redefines_landsat_cloud():
    qa = _landsat([CLEAR, CLEAR_MEDIUM_CLOUD_CONF, CLOUD])
    high = invalid_mask("landsat-c2-l2", "qa_pixel", qa)
    medium = invalid_mask("landsat-c2-l2", "qa_pixel", qa, MaskPolicy(min_cloud_confidence="medium"))
    np.testing.assert_array_equal(high, [[0, 0, 1]])
    np.testing.assert_array_equal(medium, [[0, 1, 1]])
    no_cloud = MaskPolicy(drop=["fill"], min_cloud_confidence="medium")  # only applies where 'cloud' is dropped
    np.testing.assert_array_equal(invalid_mask("landsat-c2-l2", "qa_pixel", qa, no_cloud), [[0, 0, 0]])


def test_policy_validation_and_serialisation():
    with pytest.raises(pydantic.ValidationError, match="unknown QA flag.*'clouds'"):
        MaskPolicy(drop=["clouds"])
    with pytest.raises(pydantic.ValidationError):
        MaskPolicy(dilation_m=-1)
    with pytest.raises(pydantic.ValidationError):
        MaskPolicy(min_cloud_confidence="certain")
    p = MaskPolicy(dilation_m=60, min_cloud_confidence="medium")
    assert MaskPolicy.model_validate_json(p.model_dump_json()) == p


@pytest.mark.parametrize("radius,count", [(0.4, 1), (1.0, 5), (1.5, 9), (2.0, 13), (2.5, 21), (3.0, 29)])
def test_disk_has_the_gauss_circle_count(radius: float, count: int):
    # lattice points with dy^2 + dx^2 <= r^2 (Gauss circle problem: N(1)=5, N(2)=13, N(3)=29)
    assert int(disk(radius).sum()) == count


def test_dilation_buffers_cloud_by_metres_but_not_fill():
    qa = np.full((21, 21), CLEAR, np.uint16)
    qa[10, 10] = CLOUD
    qa[0, 0] = FILL
    drop = invalid_mask("landsat-c2-l2", "qa_pixel", qa, MaskPolicy(dilation_m=75.0), resolution_m=30.0)
    assert drop.sum() == 21 + 1  # r = 2.5 px disk around the cloud, fill unbuffered
    assert drop[10, 12] and not drop[10, 13] and drop[12, 11] and not drop[12, 12]
    native = invalid_mask("landsat-c2-l2", "qa_pixel", qa, MaskPolicy(dilation_m=45.0))  # 30 m native: r = 1.5
    assert native.sum() == 9 + 1


@pytest.mark.parametrize("chunks", [(1, 7, 7), (1, 2, 3)])
def test_dask_dilation_matches_numpy_across_chunk_edges(chunks):
    rng = np.random.default_rng(0)
    scl = rng.choice(np.array([4, 5, 6, 9, 3], np.uint8), p=[0.5, 0.3, 0.1, 0.05, 0.05], size=(2, 23, 19))
    coords = {
        "time": np.array(["2021-01-01", "2021-01-11"], "datetime64[ns]"),
        "y": np.arange(23.0) * -10,
        "x": np.arange(19.0) * 10,
    }
    eager = xr.DataArray(scl, dims=("time", "y", "x"), coords=coords)
    lazy = eager.chunk(dict(zip(("time", "y", "x"), chunks, strict=True)))
    policy = MaskPolicy(dilation_m=30.0)
    lazy_mask = invalid_mask("sentinel-2-l2a", "SCL", lazy, policy, resolution_m=10.0)
    assert isinstance(lazy_mask.data, da.Array)
    expected = invalid_mask("sentinel-2-l2a", "SCL", eager, policy, resolution_m=10.0)
    np.testing.assert_array_equal(lazy_mask.values, expected.values)
    xr.testing.assert_equal(lazy_mask["x"], eager["x"])
    assert expected.values.sum() > (np.isin(scl, [3, 9])).sum()


def test_types_and_errors():
    qa = _landsat([CLEAR, CLOUD])
    assert isinstance(invalid_mask("landsat-c2-l2", "qa_pixel", qa), np.ndarray)
    assert decode_qa("landsat-c2-l2", "qa_pixel", qa)["cloud"].dtype == bool
    assert decode_qa("landsat-c2-l2", "qa_pixel", qa)["cloud_confidence"].dtype == np.uint8
    with pytest.raises(ValueError, match="'B04' is not a QA asset.*qa_pixel"):
        decode_qa("landsat-c2-l2", "B04", qa)
    with pytest.raises(ValueError, match="no sensor profile for collection 'nope'"):
        decode_qa("nope", "qa_pixel", qa)
    with pytest.raises(ValueError, match="non-integer"):
        decode_qa("sentinel-2-l2a", "SCL", np.array([4.5]))
    with pytest.raises(TypeError, match="must be integer"):
        decode_qa("sentinel-2-l2a", "SCL", np.array(["4"]))
    # float input with NaN (masked read) is fill; a signed read of an unsigned band is re-viewed
    nan = decode_qa("sentinel-2-l2a", "SCL", np.array([np.nan, 9.0], np.float32))
    assert nan["nodata"].values.tolist() == [True, False] and nan["cloud"].values.tolist() == [False, True]
    signed = decode_qa("modis-09A1-061", "sur_refl_state_500m", np.array([-1, 9], np.int16))
    assert signed["fill"].values.tolist() == [True, False] and signed["cloud"].values.tolist() == [False, True]


def test_common_bands_in_canonical_order():
    s2, ls, modis = (load_profile(p) for p in ("sentinel-2-l2a", "landsat-c2-l2", "modis-09A1-061"))
    assert common_bands([s2, ls, modis]) == ["blue", "green", "red", "nir08", "swir16", "swir22"]
    assert common_bands([s2, ls]) == ["coastal", "blue", "green", "red", "nir08", "swir16", "swir22"]
    assert common_bands([load_profile("hls2-l30"), load_profile("hls2-s30")]) == [
        "coastal",
        "blue",
        "green",
        "red",
        "nir08",
        "cirrus",
        "swir16",
        "swir22",
    ]
    assert common_bands([]) == []


def _cube() -> xr.Dataset:
    time = np.array(["2022-06-01", "2022-06-02", "2022-06-03"], "datetime64[ns]")
    red = np.full((3, 2, 2), 0.5, np.float32)
    red[0, 0, 0] = np.nan
    return xr.Dataset(
        {"red": (("time", "y", "x"), red), "rededge1": (("time", "y", "x"), np.full((3, 2, 2), 0.3, np.float32))},
        coords={"time": time, "sensor": ("time", ["sentinel-2", "landsat", "sentinel-2"])},
    )


def test_bandpass_adjustment_uses_the_published_hls_coefficients():
    # HLS v2.0 MSI -> OLI, red: S2A slope 0.9765 offset 0.0009; S2B slope 0.9761 offset 0.001
    out = apply_bandpass_adjustment(_cube())
    np.testing.assert_allclose(out["red"].values[2], 0.9765 * 0.5 + 0.0009, rtol=1e-6)
    np.testing.assert_array_equal(out["red"].values[1], 0.5)  # the Landsat step is the reference
    assert np.isnan(out["red"].values[0, 0, 0])
    np.testing.assert_array_equal(out["rededge1"].values, _cube()["rededge1"].values)  # no OLI counterpart
    assert out["red"].dtype == np.float32
    per_platform = _cube().assign_coords(platform=("time", ["Sentinel-2B", "landsat-8", "sentinel-2a"]))
    out = apply_bandpass_adjustment(per_platform)
    np.testing.assert_allclose(out["red"].values[0, 1, 1], 0.9761 * 0.5 + 0.001, rtol=1e-6)
    np.testing.assert_allclose(out["red"].values[2], 0.9765 * 0.5 + 0.0009, rtol=1e-6)
    with pytest.raises(ValueError, match="sentinel-2c"):
        apply_bandpass_adjustment(per_platform.assign_coords(platform=("time", ["sentinel-2c", "x", "sentinel-2a"])))
    with pytest.raises(ValueError, match="no bandpass coefficients from 'modis'"):
        apply_bandpass_adjustment(_cube(), sensor="modis")


@pytest.mark.parametrize(
    "policy",
    [MaskPolicy(), MaskPolicy(min_cloud_confidence="medium", drop=["cloud", "snow"]), MaskPolicy(dilation_m=60.0)],
)
def test_lookup_table_masks_equal_bit_decoding_for_every_product(policy):
    """The per-value lookup table gives exactly the flags decoded bit by bit, for every QA asset."""
    from pipeline.sensors.mask import _flag_masks
    from pipeline.sensors.profiles import collection_table

    rng = np.random.default_rng(7)
    checked = 0
    for collection in collection_table():
        for profile in [load_profile(p) for p in collection_table()[collection].candidates]:
            for qa in profile.qa:
                info = np.iinfo(qa.dtype) if np.dtype(qa.dtype).kind in "iu" else None
                if info is None or np.dtype(qa.dtype).itemsize > 2:
                    continue
                values = rng.integers(info.min, info.max + 1, size=(2, 40, 40), dtype=qa.dtype)
                values[0, :3] = info.min  # include both ends of the range
                values[0, -3:] = info.max
                array = xr.DataArray(values, dims=("time", "y", "x"))
                plain, cloudy = _flag_masks(collection, qa.asset, array, policy)
                expected = (plain | cloudy).values if policy.dilation_m == 0 else None
                got = invalid_mask(collection, qa.asset, array, policy, resolution_m=30.0)
                lazy = invalid_mask(collection, qa.asset, array.chunk({"y": 20}), policy, resolution_m=30.0)
                if expected is not None:
                    np.testing.assert_array_equal(got.values, expected, err_msg=f"{collection} {qa.asset}")
                np.testing.assert_array_equal(lazy.values, got.values)
                checked += 1
    assert checked >= 6
