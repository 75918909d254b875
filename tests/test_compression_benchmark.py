"""The rate-distortion benchmark's command runs on any cube store (its figures are in benchmarks/RESULTS.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
BANDS = ["blue", "green", "red", "nir08"]


def reflectance_cube(t: int = 12, h: int = 32, w: int = 48) -> xr.Dataset:
    """Float32 reflectance with NaN clouds and a few bright cloud edges above 2, as real L2A cubes have."""
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    base = 0.15 + 0.06 * np.sin(xx / 7 + tt / 4) + 0.04 * np.cos(yy / 5)
    data = {}
    for k, b in enumerate(BANDS):
        v = base * (0.8 + 0.4 * k)
        v[(tt == 2) & (xx < 10)] = np.nan
        v[(tt == 5) & (yy == 0) & (xx < 3)] = 2.4  # 0.03 % of the samples: they set no scale
        data[b] = (("time", "y", "x"), v.astype(np.float32))
    return xr.Dataset(
        data,
        coords={
            "time": pd.date_range("2022-01-01", periods=t, freq="5D"),
            "y": 10.0 * -np.arange(h),
            "x": 10.0 * np.arange(w),
        },
    )


def test_benchmark_scales_reflectance_but_not_digital_numbers(tmp_path):
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.compression_rd import default_bands, load_cube
    finally:
        sys.path.remove(str(ROOT))
    cube = reflectance_cube()
    assert default_bands(cube) == BANDS
    named = cube.rename(blue="B02", green="B03", red="B04", nir08="B8A").assign(
        SCL=cube["red"].fillna(0).astype("uint8")
    )
    assert default_bands(named) == ["B02", "B03", "B04", "B8A"]  # the class map is not a band
    dn = load_cube(cube, BANDS)
    expected = np.stack([cube[b].values for b in BANDS]) * 10000
    observed = np.isfinite(expected)
    np.testing.assert_array_equal(dn[observed], np.clip(np.rint(expected[observed]), 1, 65535))
    assert (dn[~observed] == 0).all()
    as_dn = cube.map(lambda v: v * 10000)  # the same bands already in DN, decoded to float as xarray does
    np.testing.assert_array_equal(load_cube(as_dn, BANDS), dn)


def test_benchmark_command_writes_its_tables_and_plot(tmp_path):
    reflectance_cube().to_zarr(tmp_path / "cube.zarr", zarr_format=3, consolidated=False)
    out = tmp_path / "rd"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "compression-rd",
            "--cube",
            str(tmp_path / "cube.zarr"),
            "--qps",
            "24,36",
            "--value-range",
            "0,25000",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    table = (out / "rd_table.md").read_text()
    for config in (
        "ours (KLT, gbrp12 triplets) | qp=24",
        "no KLT (gbrp12 triplets) | qp=36",
        "per-band gray12",
        "xarrayvideo recipe",
        "ours lossless (ffv1 gbrp16) | lossless",
        "blosc-zstd9+bitshuffle",
    ):
        assert config in table
    lossless = next(line for line in table.splitlines() if "ours lossless" in line)
    assert lossless.split("|")[5].strip() == "inf"  # PSNR of the lossless row: exact
    assert (out / "rd_equal_rate.md").exists() and (out / "rd_curve.png").stat().st_size > 10_000
    at_rates = [
        line.split("|")
        for line in (out / "rd_at_xarrayvideo_rates.md").read_text().splitlines()
        if line.startswith("| level=")
    ]
    assert len(at_rates) == 5  # one row per level of the recipe
    for cells in at_rates:
        if cells[4].strip() != "–":  # ours was rate-controlled to their rate: at or under it
            assert float(cells[5]) <= float(cells[2]) + 1e-9


def test_benchmark_refuses_a_range_the_cube_falls_outside(tmp_path):
    cube = reflectance_cube()
    cube["red"] = cube["red"] * 5  # reflectance up to 2.6: outside 0..10000 DN
    cube.to_zarr(tmp_path / "cube.zarr", zarr_format=3, consolidated=False)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "compression-rd",
            "--cube",
            str(tmp_path / "cube.zarr"),
            "--qps",
            "36",
            "--out",
            str(tmp_path / "rd"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert run.returncode != 0 and "outside value_range (0.0, 10000.0)" in run.stderr
    assert not (tmp_path / "rd" / "rd_table.md").exists()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "compression-rd",
            "--cube",
            str(tmp_path / "cube.zarr"),
            "--qps",
            "36",
            "--value-range",
            "auto",
            "--out",
            str(tmp_path / "rd"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "our fixed range 0..65535 DN" in run.stdout  # red up to 26,000 DN: the 16-bit range covers it
