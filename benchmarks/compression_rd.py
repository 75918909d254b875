"""Rate-distortion benchmark of pipeline.compression on the real Sentinel-2 Romania cube or any cube store.

    python -m benchmarks compression-rd [--shared ../shared] [--out benchmarks/figures/compression]
    python -m benchmarks compression-rd --cube benchmarks/_work/downstream/cube.zarr \
        --out benchmarks/figures/compression/demo          # a demo cube (eocube demo / compression-downstream)

With ``--cube``, the store's red, green, blue and nir08 reflectance (``--bands`` names others; a cube
without those four gives every band variable the compression stage would video-code, e.g. B02..B8A of
a DeepExtremeCubes minicube) are coded as DN (x 10000) on the fixed range 0..10000 DN (the codec's reflectance default 0..1); masked (NaN) pixels travel in the
codec's lossless mask and are left out of PSNR, SAM and max error. Romania is coded on 0..20000 DN
(its clouds are data, up to 18,224 DN). ``--value-range lo,hi`` overrides either; ``--value-range auto``
takes the nearest usual range covering the observed values (e.g. 0..20000 for a cube with bright clouds).

Bands B02, B03, B04, B08 (uint16 DN, clouds included, as in xarrayvideo), coded in chunks of
32 frames x 100 x 100 px. Configurations: ours (KLT, triplets in gbrp12le), no KLT (triplets),
per-band gray12le, and the xarrayvideo library's lossy recipe (re-created in
``benchmarks/xarrayvideo_style.py``: per-band min/max, YUV 4:4:4, preset medium, CRF, one video per
three bands over the whole series); lossless: ffv1, zstd, blosc-zstd+bitshuffle; lossy baseline:
BitRound+zstd on float32 reflectance. PSNR peaks: 10000 DN (reflectance 1.0) and 65535. Writes a
table (Markdown), the PSNR of each lossy configuration at equal rates (log-interpolated between
measured points, never extrapolated), ours rate-controlled to each measured rate of the xarrayvideo
recipe and measured there (``rd_at_xarrayvideo_rates.md``: equal bpppb without interpolation), and a
PNG rate-distortion plot with the xarrayvideo paper points for reference.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import xarray as xr
from numcodecs import BitRound, Blosc, Zstd

from benchmarks import xarrayvideo_style
from pipeline.compression.codec import CodecParams, decode_array, encode_array
from pipeline.compression.metrics import psnr, spectral_angle, ssim
from pipeline.compression.ratecontrol import choose_qp
from pipeline.compression.stage import as_dataset, check_value_range, select_variables, usual_range_covering

XARRAYVIDEO = "xarrayvideo recipe (re-created)"
EQUAL_RATES = (0.1, 0.25, 0.5, 1.0, 2.0)
PAPER = {
    "DeepExtremeCubes (paper)": [(0.1, 40.60), (1.0, 54.28)],
    "DynamicEarthNet (paper)": [(0.1, 55.86), (1.0, 65.91)],
}
CONFIGS = {
    "ours (KLT, gbrp12 triplets)": dict(klt=True, packing="triplet"),
    "no KLT (gbrp12 triplets)": dict(klt=False, packing="triplet"),
    "per-band gray12": dict(klt=False, packing="gray"),
}


ROMANIA_BANDS = ["B2", "B3", "B4", "B8"]
PIPELINE_BANDS = ["blue", "green", "red", "nir08"]


def load(shared: Path) -> np.ndarray:
    ds = xr.open_dataset(shared / "data/sentinel2-romania/sentinel2_cube_subset_romania_10m.nc", mask_and_scale=False)
    return np.stack([ds[b].values for b in ROMANIA_BANDS])


def default_bands(ds: xr.Dataset) -> list[str]:
    """The four pipeline bands where a cube has them, else the variables the compression stage video-codes."""
    return PIPELINE_BANDS if set(PIPELINE_BANDS) <= set(ds.data_vars) else select_variables(ds)[0]


def load_cube(store: Path, bands: list[str]) -> np.ndarray:
    """``(band, time, y, x)`` uint16 DN of a cube store or NetCDF file; 0 where masked (NaN).

    Reflectance bands (float values of about 0..1, a few bright clouds above; 99.9th percentile
    at most 10) are scaled by 10000; bands already in digital numbers (values in the thousands, e.g.
    a NetCDF of uint16 DN) are taken as they are.
    """
    ds = as_dataset(store)
    values = np.stack([ds[b].values for b in bands])
    reflectance = np.issubdtype(values.dtype, np.floating) and np.nanpercentile(values, 99.9) <= 10
    scale = values.dtype.type(10000 if reflectance else 1)  # in the bands' own precision
    return np.where(np.isfinite(values), np.clip(np.rint(values * scale), 1, 65535), 0).astype(np.uint16)


def max_abs_error(ref: np.ndarray, test: np.ndarray) -> float:
    """Largest absolute difference over samples valid (not NaN) in both arrays."""
    if ref.shape != test.shape:
        raise ValueError(f"shapes differ: {ref.shape} vs {test.shape}")
    r, t = ref.astype(np.float64), test.astype(np.float64)
    ok = ~(np.isnan(r) | np.isnan(t))
    return float(np.abs(r[ok] - t[ok]).max())


def run_codec(dn: np.ndarray, params: CodecParams, t_chunk: int = 32) -> tuple[np.ndarray, int, float, float]:
    """Decoded cube, bytes, encode and decode seconds, chunk by chunk along time."""
    out, size, t_enc, t_dec = np.empty_like(dn), 0, 0.0, 0.0
    for t in range(0, dn.shape[1], t_chunk):
        t0 = time.perf_counter()
        data = encode_array(dn[:, t : t + t_chunk], params)
        t1 = time.perf_counter()
        out[:, t : t + t_chunk] = decode_array(data)
        t_dec += time.perf_counter() - t1
        t_enc += t1 - t0
        size += len(data)
    return out, size, t_enc, t_dec


def row(
    name: str,
    dn: np.ndarray,
    back: np.ndarray,
    size: int,
    t_enc: float,
    t_dec: float,
    setting: str,
    observed: np.ndarray | None = None,
) -> dict:
    """Rate and distortion of one run; pixels outside ``observed`` (masked) are left out of PSNR, SAM, max."""
    ref, rec = dn.astype(np.float64), back.astype(np.float64)
    if observed is not None:
        ref, rec = ref[:, observed][:, None, None, :], rec[:, observed][:, None, None, :]
    mb = dn.size * 2 / 1e6  # uint16 megabytes
    return {
        "config": name,
        "setting": setting,
        "bpppb": 8 * size / dn.size,
        "ratio": dn.size * 2 / size,
        "psnr_10000": psnr(ref, rec, 10000),
        "psnr_65535": psnr(ref, rec, 65535),
        "ssim": ssim(dn.astype(np.float64) / 10000, back.astype(np.float64) / 10000, 1.0),
        "sam_deg": spectral_angle(ref, rec),
        "max_abs_dn": max_abs_error(ref, rec),
        "enc_MBps": mb / t_enc if t_enc else np.nan,
        "dec_MBps": mb / t_dec if t_dec else np.nan,
    }


def numcodecs_row(name: str, dn: np.ndarray, codec, as_float: bool, observed: np.ndarray | None = None) -> dict:
    src = (dn.astype(np.float32) / 10000) if as_float else dn
    t0 = time.perf_counter()
    enc = codec.encode(np.ascontiguousarray(src))
    t1 = time.perf_counter()
    dec = np.frombuffer(codec.decode(enc), dtype=src.dtype).reshape(src.shape)
    t2 = time.perf_counter()
    back = dec * 10000 if as_float else dec
    return row(name, dn, back, len(enc), t1 - t0, t2 - t1, "", observed)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/figures/compression"))
    ap.add_argument("--qps", default="-8,-6,-3,0,4,8,12,16,20,24,30,36")
    ap.add_argument("--cube", type=Path, help="a cube store or NetCDF file to use instead of the Romania cube")
    ap.add_argument(
        "--bands",
        help="with --cube: comma-separated band variables; default blue,green,red,nir08 "
        "where the cube has them (a pipeline cube), else every variable the "
        "compression stage would video-code",
    )
    ap.add_argument(
        "--value-range",
        help="fixed DN range lo,hi of our codec, or auto (the nearest usual range "
        "covering the observed values, as the compression stage's auto); default "
        "0,20000 for Romania (clouds are in the data, up to 18,224 DN) and 0,10000 "
        "with --cube (the codec's reflectance default 0..1; clouds are masked)",
    )
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cube:
        bands = args.bands.split(",") if args.bands else default_bands(as_dataset(args.cube))
        dn, nodata = load_cube(args.cube, bands), 0
        title = f"{args.cube.name}: {','.join(bands)}, {' x '.join(map(str, dn.shape[1:]))}"
    else:
        dn, nodata, bands = load(args.shared), None, ROMANIA_BANDS
        title = "Sentinel-2 Romania, B02 B03 B04 B08, 140 x 100 x 100"
    observed = None if nodata is None else np.all(dn != nodata, axis=0)
    if args.value_range == "auto":
        value_range = usual_range_covering(dn[:, observed] if observed is not None else dn)
    else:
        value_range = (
            tuple(map(float, args.value_range.split(",")))
            if args.value_range
            else ((0.0, 10000.0) if args.cube else (0.0, 20000.0))
        )
    print(f"{title}; our fixed range {value_range[0]:g}..{value_range[1]:g} DN", flush=True)
    check_value_range([dn[:, observed] if observed is not None else dn], bands, value_range)
    rows = []
    for name, cfg in CONFIGS.items():
        for qp in map(int, args.qps.split(",")):
            p = CodecParams(qp=qp, value_range=value_range, nodata=nodata, **cfg)
            rows.append(row(name, dn, *run_codec(dn, p), f"qp={qp}", observed))
            print(rows[-1], flush=True)
    for level in xarrayvideo_style.LEVELS:
        back, size, t_enc, t_dec = xarrayvideo_style.roundtrip(dn, level)
        rows.append(row(XARRAYVIDEO, dn, np.rint(back), size, t_enc, t_dec, f"level={level}", observed))
        print(rows[-1], flush=True)
    rows.append(
        row(
            "ours lossless (ffv1 gbrp16)",
            dn,
            *run_codec(dn, CodecParams(mode="lossless", nodata=nodata)),
            "lossless",
            observed,
        )
    )
    rows.append(numcodecs_row("zstd-22", dn, Zstd(level=22), False, observed))
    rows.append(numcodecs_row("blosc-zstd9+bitshuffle", dn, Blosc("zstd", 9, Blosc.BITSHUFFLE), False, observed))
    for keep in (4, 6, 8, 10):
        r = numcodecs_row("BitRound+zstd (float32 refl.)", dn, _BitRoundZstd(keep), True, observed)
        r["setting"] = f"keepbits={keep}"
        rows.append(r)
    write(rows, args.out, title)
    write_equal_rate(rows, args.out)
    write_at_rates_of(rows, XARRAYVIDEO, dn, CodecParams(value_range=value_range, nodata=nodata), observed, args.out)


class _BitRoundZstd:
    """BitRound then zstd, as one numcodecs-like codec."""

    def __init__(self, keepbits: int) -> None:
        self.round, self.zstd = BitRound(keepbits), Zstd(level=9)

    def encode(self, a: np.ndarray) -> bytes:
        return self.zstd.encode(self.round.encode(a))

    def decode(self, b: bytes) -> bytes:
        return bytes(self.zstd.decode(b))


def psnr_at(rows: list[dict], config: str, rate: float) -> float:
    """PSNR (peak 10000) of ``config`` at ``rate`` bpppb, linear in log-rate between measured points; NaN outside."""
    pts = sorted((r["bpppb"], r["psnr_10000"]) for r in rows if r["config"] == config and np.isfinite(r["psnr_10000"]))
    if len(pts) < 2 or not pts[0][0] <= rate <= pts[-1][0]:
        return float("nan")
    rates, quality = zip(*pts, strict=True)
    return float(np.interp(np.log(rate), np.log(rates), quality))


def write_equal_rate(rows: list[dict], out: Path) -> None:
    """Table of every lossy video configuration's PSNR at ``EQUAL_RATES`` and its gap to ours."""
    ours = next(iter(CONFIGS))
    configs = [*CONFIGS, XARRAYVIDEO]
    head = "| bpppb | " + " | ".join(configs) + " | " + " | ".join(f"ours − {c}" for c in configs[1:]) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(configs) - 1)]
    for rate in EQUAL_RATES:
        vals = [psnr_at(rows, c, rate) for c in configs]
        gaps = [vals[0] - v for v in vals[1:]]
        lines.append(
            f"| {rate} | " + " | ".join(f"{v:.2f}" for v in vals) + " | " + " | ".join(f"{g:+.2f}" for g in gaps) + " |"
        )
    text = (
        f"PSNR (dB, peak 10000 DN) at equal rate; nan = rate outside that configuration's measured points "
        f"(ours = {ours}).\n\n" + "\n".join(lines) + "\n"
    )
    (out / "rd_equal_rate.md").write_text(text)
    print(text)


def write_at_rates_of(
    rows: list[dict],
    config: str,
    dn: np.ndarray,
    params: CodecParams,
    observed: np.ndarray | None,
    out: Path,
    t_chunk: int = 32,
) -> None:
    """Ours, rate-controlled to each measured rate of ``config`` and measured there: a side by side at equal
    bpppb without interpolation (``ratecontrol.choose_qp`` on every 32-frame chunk of the cube)."""
    blocks = [dn[:, t : t + t_chunk] for t in range(0, dn.shape[1], t_chunk)]
    lines = [
        f"| {config}: setting | bpppb | PSNR | ours: QP | bpppb | PSNR | ours − {config} |",
        "|---|---|---|---|---|---|---|",
    ]
    for theirs in sorted((r for r in rows if r["config"] == config), key=lambda r: r["bpppb"]):
        try:
            point = choose_qp(blocks, params, 10000, target_bpppb=theirs["bpppb"])
        except ValueError:  # below the rate of our coarsest QP
            lines.append(
                f"| {theirs['setting']} | {theirs['bpppb']:.4f} | {theirs['psnr_10000']:.2f} | – | – | – | – |"
            )
            continue
        mine = row("ours", dn, *run_codec(dn, replace(params, qp=point.qp, klt=point.klt), t_chunk), "", observed)
        lines.append(
            f"| {theirs['setting']} | {theirs['bpppb']:.4f} | {theirs['psnr_10000']:.2f} | {point.qp:g}"
            f"{'' if point.klt else ' (no KLT)'} | {mine['bpppb']:.4f} | {mine['psnr_10000']:.2f} | "
            f"{mine['psnr_10000'] - theirs['psnr_10000']:+.2f} |"
        )
    text = (
        f"Ours at the measured rates of {config} (rate control to each rate; PSNR in dB, peak 10000 DN).\n\n"
        + "\n".join(lines)
        + "\n"
    )
    (out / "rd_at_xarrayvideo_rates.md").write_text(text)
    print(text)


def write(rows: list[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    (out / "rd_table.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 5))
    for name in {r["config"] for r in rows}:
        pts = sorted(
            (r["bpppb"], r["psnr_10000"]) for r in rows if r["config"] == name and np.isfinite(r["psnr_10000"])
        )
        if len(pts) > 1:
            ax.plot(*zip(*pts, strict=True), marker="o", label=name)
    for name, pts in PAPER.items():
        ax.scatter(*zip(*pts, strict=True), marker="*", s=150, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("bpppb")
    ax.set_ylabel("PSNR (dB, peak 10000 DN = reflectance 1.0)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(out / "rd_curve.png", dpi=120, bbox_inches="tight")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
