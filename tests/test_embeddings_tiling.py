"""Chip tiling, pixel-centre lat/lon and time features."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.embeddings.tiling import axis_windows, latlon_grid, pixel_centres, time_features


@pytest.mark.parametrize(
    "n,chip,overlap,unit",
    [(20, 8, 0, 1), (100, 32, 8, 4), (230, 224, 32, 16), (10, 16, 0, 4), (57, 16, 8, 2), (64, 16, 0, 16)],
)
def test_windows_partition_the_padded_axis(n, chip, overlap, unit):
    wins = axis_windows(n, chip, overlap, unit)
    n_pad = -(-n // unit) * unit
    assert wins[0].keep_start == 0 and wins[-1].keep_stop == n_pad
    for a, b in zip(wins[:-1], wins[1:], strict=True):
        assert a.keep_stop == b.keep_start  # contiguous, no gaps, no double counting
    for w in wins:
        assert w.start <= w.keep_start < w.keep_stop <= w.start + chip
        assert w.start % unit == 0 and w.keep_start % unit == 0 and w.keep_stop % unit == 0


def test_overlap_keeps_chip_centres():
    wins = axis_windows(100, 40, 20, 1)
    assert [w.start for w in wins] == [0, 20, 40, 60]
    assert [(w.keep_start, w.keep_stop) for w in wins] == [(0, 30), (30, 50), (50, 70), (70, 100)]


def test_tiling_rejects_bad_arguments():
    with pytest.raises(ValueError, match="multiples of the patch size"):
        axis_windows(100, 30, 0, 4)
    with pytest.raises(ValueError, match="overlap"):
        axis_windows(100, 16, 16, 1)


def test_latlon_of_utm_central_meridian():
    # UTM 33N: easting 500000 is on the central meridian, 15 degrees E; northing 0 is the equator.
    lat, lon = latlon_grid(np.array([500000.0]), np.array([0.0, 1_000_000.0]), "EPSG:32633")
    np.testing.assert_allclose(lon[:, 0], 15.0, atol=1e-9)
    assert abs(lat[0, 0]) < 1e-9
    assert 9.0 < lat[1, 0] < 9.1  # 1000 km north ~ 9.04 degrees


def test_pixel_centres_extrapolate():
    np.testing.assert_array_equal(pixel_centres(np.array([5.0, 15.0, 25.0]), 2, 3), [25.0, 35.0, 45.0])


def test_time_features():
    f = time_features(np.array(["2021-01-01", "2020-12-31", "2024-03-01T10:00"], dtype="datetime64[ns]"))
    np.testing.assert_array_equal(f["month"], [0, 11, 2])
    np.testing.assert_array_equal(f["year"], [2021, 2020, 2024])
    np.testing.assert_array_equal(f["doy"], [1, 366, 61])
