"""Codec settings behind the defaults of pipeline.compression: QP floor, ffv1 context model, x265 preset, rate control.

    python -m benchmarks compression-settings [--shared ../shared]
    python -m benchmarks compression-settings --only floor        # section 1 alone (about 15 s)
    python -m benchmarks compression-settings --only presets      # section 3 alone (about 4 min)
    python -m benchmarks compression-settings --only streams      # section 4 alone (about 1 min)
    python -m benchmarks compression-settings --only klt          # section 5 alone (about 4 min)
    python -m benchmarks compression-settings --only ratecontrol  # section 6 alone (about 9 min)
    python -m benchmarks compression-settings --only overhead     # section 7 alone (about 1 min)

1. **QP floor and the multiplier below QP 0.** PSNR, rate and max error at QP 0, -3, ..., -14, -18
   (below 0: x265 QP 0 with a flat scaling list of 16 * 2**(qp/6), see ``pipeline.compression.video``),
   with libx265's QP-0 rate-distortion multiplier as is (and RDO quantisation off below -3, the
   codec's fallback; KLT) and scaled with the step (``pipeline.compression.x265_lambda``, the default;
   with the KLT and with the bands coded directly), on
   16 frames of the real Sentinel-2 Romania cube (0..20000 DN), both real Landsat 8 scenes (7 SR bands,
   256 x 256, 4 identical frames, 0..65535 DN) and full-range white noise (which libx265 at 12 bits codes
   with errors of thousands of codes at any QP, and not even reproducibly). The codec's floor
   (``QP_MIN``) is lifted for this run only.
2. **ffv1 context model.** Lossless size and decode speed with the small (``context=0``, the default) and
   the large (``context=1``) model on the Romania cube and both Landsat scenes (bit-exact round trips).
3. **x265 preset.** On the whole Romania cube in 32-frame chunks (0..20000 DN, the KLT path as in
   ``compression-rd``): PSNR (peak 10000) at 0.1 and 1.0 bpppb, log-interpolated over QPs -5..28, and
   encoding MB/s per core, for x265 ``fast``, the default ``fast+rdo`` (fast + rdoq-level 2), fast + rd 4,
   fast + rd 4 + rdoq-level 2, ``medium`` and ``slow``; then bpppb / PSNR / MB/s per QP (12, 4, 0, -1..-5)
   for ``fast+rdo`` and fast + rd 4 + rdoq-level 2, with and without the KLT (the ladder below 0 is
   ``pipeline.compression.video.QP_MIN``).
4. **Weak streams and header size.** On the first 32-frame chunk of the Romania cube (0..20000 DN, KLT)
   at QP 16, 22 and 28: the header's bytes, each stream's bytes and each KLT component's standard
   deviation over x265's step (the ratio that :data:`pipeline.compression.codec.WEAK_STREAM_FRACTION`
   compares against); then PSNR (peak 10000) at 0.1 and 0.25 bpppb over the whole cube with weak streams
   skipped (the default), with every stream coded and with every stream but the first skipped.
5. **What the KLT can give, and what it is fitted on.** On the whole Romania cube (0..20000 DN): the
   high-rate coding gain of an orthonormal rotation over coding the bands apart, for Gaussian data
   (``10/N * log10(prod diag C / prod diag(W C W^T))``), with ``C`` the band covariance of the raw
   values, of planar-predictor residuals ``x - (left + up - upper-left)`` and of frame differences, and
   ``W`` fitted on each of them; then PSNR (peak 10000) at 0.1 .. 2.0 bpppb with the codec's KLT fitted
   on raw values, on spatial first differences, on an equal-trace blend of the two, and
   on the darkest 80 % and 50 % of pixels (by band sum: bright clouds left out), with the default KLT
   coded one component per gray12 video instead of gbrp12 triplets, and with the components' code
   range taken from the chunk's own minimum and maximum instead of the fixed box (all one rotation a
   chunk); the bits per sample one rotation per date is predicted to save in each chunk
   (``klt.frame_rotation_saving``), then one rotation a date fitted on each date's raw values and on
   its spatial differences (``klt_scope="date"``), and the default ``klt_scope="auto"``.
6. **Fractional QPs and rate control.** On the Romania cube's five 32-frame chunks (0..20000 DN, KLT;
   PSNR peak 10000): rate and PSNR at QP -4, 4 and 16 and quarter steps to the next integer, against the
   chord between the integer points; then ``ratecontrol.choose_qp`` for targets of 0.1, 0.25, 0.5, 1.0 and
   1.5 bpppb and 40, 45, 50 and 55 dB, stopping at integer QPs (``fraction_trials=0``) and with the default fractional search:
   the QP, rate, PSNR and trial encodes of each, and what the fraction gains (dB at a rate target,
   bits at a PSNR target).
7. **Mask and header bytes.** The Romania cube (0..20000 DN, KLT) with its real SCL cloud, cloud-shadow and
   no-data pixels (classes 0, 3, 8, 9, 10) as NaN, in 32-frame chunks at QP 16 and 24: per chunk, the
   header's bytes compressed with plain zlib (format 3) and from the format's preset dictionary (format 4,
   the default), and the mask's bytes coded one ffv1 frame per date with a value (format 3) and as the
   partly missing frames only, stacked into tall ffv1 images (format 4, the default); then the whole
   cube's bpppb both ways.
"""

from __future__ import annotations

import argparse
import glob
import json
import time
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr

import pipeline.compression.codec as codec
import pipeline.compression.video as video
from benchmarks.compression_rd import psnr_at, run_codec
from pipeline.compression import klt, ratecontrol, x265_lambda
from pipeline.compression.codec import CodecParams, decode_array, encode_array, read_header
from pipeline.compression.header import pack_header

#: settings of section 3 beyond x265's own presets, registered for this run only
EXTRA_PRESETS = {"fast+rd4": ("fast", "rd=4"), "fast+rd4+rdoq": ("fast", "rd=4:rdoq-level=2")}


def romania(shared: Path, frames: int | None = None) -> np.ndarray:
    ds = xr.open_dataset(shared / "data/sentinel2-romania/sentinel2_cube_subset_romania_10m.nc", mask_and_scale=False)
    return np.stack([ds[b].values[:frames] for b in ["B2", "B3", "B4", "B8"]])


def landsat(scene: Path) -> np.ndarray:
    """The scene's SR_B1..B7 as (band, 1, y, x) uint16 DN."""
    return np.stack([rasterio.open(f).read(1) for f in sorted(glob.glob(str(scene / "*SR_B[1-7].TIF")))])[:, None]


def qp_floor(cases: dict[str, tuple[np.ndarray, tuple[float, float]]]) -> None:
    """Rate, quality and max error per QP below 0: libx265's QP-0 multiplier as is (KLT) against the
    scaled multiplier (KLT and bands coded directly)."""
    codec.QP_MIN = video.QP_MIN = -24  # lifted for the sweep only
    available = x265_lambda.AVAILABLE
    runs = [("as is, KLT", False, True)] + (
        [("scaled, KLT", True, True), ("scaled, no KLT", True, False)] if available else []
    )
    print(
        "| data | QP | scaling entry | "
        + " | ".join(f"{name}: bpppb / PSNR / max err" for name, _, _ in runs)
        + " |\n|---|---|---|"
        + "---|" * len(runs)
    )
    for name, (x, value_range) in cases.items():
        peak = value_range[1] - value_range[0]
        for qp in (0, -3, -6, -8, -12, -14, -18):
            cells = []
            for _, scaled, with_klt in runs:
                x265_lambda.AVAILABLE = scaled
                data = encode_array(x, CodecParams(qp=qp, value_range=value_range, klt=with_klt))
                err = decode_array(data).astype(np.float64) - x
                quality = 10 * np.log10(peak**2 / np.mean(err**2))
                cells.append(f"{8 * len(data) / x.size:.3f} / {quality:.2f} / {np.abs(err).max():.0f}")
            entry = video.x265_options(qp, video.DEFAULT_PRESET, 8, 1).get(video.FLAT_SCALING_OPTION, "16")
            print(f"| {name} | {qp} | {entry} | " + " | ".join(cells) + " |", flush=True)
    x265_lambda.AVAILABLE = available


def ffv1_context(cases: dict[str, np.ndarray]) -> None:
    default = video.ffv1_options
    print("\n| data | ffv1 context | bpppb | decode MB/s |\n|---|---|---|---|")
    for name, x in cases.items():
        for context in ("0", "1"):
            video.ffv1_options = lambda threads, c=context: {**default(threads), "context": c}
            data = encode_array(x, CodecParams(mode="lossless", nodata=0))
            t0 = time.perf_counter()
            back = decode_array(data)
            seconds = time.perf_counter() - t0
            assert np.array_equal(back, x), "lossless round trip is not exact"
            print(
                f"| {name} | {context} | {8 * len(data) / x.size:.3f} | {x.size * 2 / 1e6 / seconds:.1f} |", flush=True
            )
    video.ffv1_options = default


def presets(dn: np.ndarray) -> None:
    video.X265_PRESETS.update(EXTRA_PRESETS)
    rows, per_qp = [], {}
    for preset in ("fast", "fast+rdo", "fast+rd4", "fast+rd4+rdoq", "medium", "slow"):
        seconds = 0.0
        for qp in (-5, -3, 0, 4, 8, 12, 16, 20, 24, 28):
            back, size, t_enc, _ = run_codec(dn, CodecParams(qp=qp, value_range=(0, 20000), preset=preset))
            err = back.astype(np.float64) - dn
            rows.append(
                {"config": preset, "bpppb": 8 * size / dn.size, "psnr_10000": 10 * np.log10(10000**2 / np.mean(err**2))}
            )
            per_qp[preset, True, qp] = (rows[-1]["bpppb"], rows[-1]["psnr_10000"], dn.nbytes / 1e6 / t_enc)
            seconds += t_enc
        print(
            f"| {preset} | {psnr_at(rows, preset, 0.1):.2f} | {psnr_at(rows, preset, 1.0):.2f} | "
            f"{10 * dn.nbytes / 1e6 / seconds:.1f} |",
            flush=True,
        )
    print(
        "\n| preset | KLT | "
        + " | ".join(f"QP {q}" for q in (12, 4, 0, -1, -2, -3, -4, -5))
        + " |\n|---|---|"
        + "---|" * 8
    )
    for preset in ("fast+rdo", "fast+rd4+rdoq"):
        for use_klt in (True, False):
            cells = []
            for qp in (12, 4, 0, -1, -2, -3, -4, -5):
                if (preset, use_klt, qp) not in per_qp:
                    back, size, t_enc, _ = run_codec(
                        dn, CodecParams(qp=qp, value_range=(0, 20000), preset=preset, klt=use_klt)
                    )
                    err = back.astype(np.float64) - dn
                    per_qp[preset, use_klt, qp] = (
                        8 * size / dn.size,
                        10 * np.log10(10000**2 / np.mean(err**2)),
                        dn.nbytes / 1e6 / t_enc,
                    )
                cells.append("{:.3f}/{:.2f}/{:.1f}".format(*per_qp[preset, use_klt, qp]))
            print(f"| {preset} | {'yes' if use_klt else 'no'} | " + " | ".join(cells) + " |", flush=True)


def streams(dn: np.ndarray) -> None:
    chunk = dn[:, :32]
    print("| QP | header bytes | chunk bytes | stream bytes | component std / x265 step |\n|---|---|---|---|---|")
    for qp in (16, 22, 28):
        data = encode_array(chunk, CodecParams(qp=qp, value_range=(0, 20000)))
        header, start = read_header(data)
        comps = klt.forward(
            chunk.astype(np.float64), np.asarray(header["klt"]["mean"]), np.asarray(header["klt"]["matrix"])
        )
        step_dn = header["quantiser"]["step"] * video.x265_step_codes(qp)
        sizes = ", ".join(
            f"{s['components']}: {s['bytes']}" if "bytes" in s else f"{s['components']}: skipped"
            for s in header["streams"]
        )
        ratios = ", ".join(f"{c.std() / step_dn:.3f}" for c in comps)
        print(f"| {qp} | {start} | {len(data)} | {sizes} | {ratios} |", flush=True)
    print("\n| weak streams | PSNR @ 0.1 bpppb | PSNR @ 0.25 bpppb |\n|---|---|---|")
    default = codec.WEAK_STREAM_FRACTION
    for label, fraction in (("skipped (default)", default), ("all coded", 0.0), ("all but the first skipped", np.inf)):
        codec.WEAK_STREAM_FRACTION = fraction
        rows = []
        for qp in (8, 12, 16, 20, 24, 28, 32):
            back, size, _, _ = run_codec(dn, CodecParams(qp=qp, value_range=(0, 20000)))
            err = back.astype(np.float64) - dn
            rows.append(
                {"config": label, "bpppb": 8 * size / dn.size, "psnr_10000": 10 * np.log10(10000**2 / np.mean(err**2))}
            )
        print(f"| {label} | {psnr_at(rows, label, 0.1):.2f} | {psnr_at(rows, label, 0.25):.2f} |", flush=True)
    codec.WEAK_STREAM_FRACTION = default


def rate_control(dn: np.ndarray) -> None:
    """Fractional QPs against the chord of their integer neighbours; rate control to integer QPs against
    fractional ones, on the cube's 32-frame chunks as the samples."""
    blocks = [dn[:, t : t + 32] for t in range(0, dn.shape[1], 32)]
    params = CodecParams(value_range=(0, 20000))
    print("| QP | bpppb | PSNR | PSNR − chord of the integer points |\n|---|---|---|---|")
    for base in (-4, 4, 16):
        points = [ratecontrol.measure(blocks, replace(params, qp=base + f), 10000) for f in (0, 0.25, 0.5, 0.75, 1)]
        lo, hi = points[0], points[-1]
        for p in points:
            chord = lo.psnr + (p.bpppb - lo.bpppb) * (hi.psnr - lo.psnr) / (hi.bpppb - lo.bpppb)
            print(f"| {p.qp:g} | {p.bpppb:.4f} | {p.psnr:.2f} | {p.psnr - chord:+.3f} |", flush=True)
    print()
    print(
        "| target | integer QPs: QP / bpppb / PSNR / trials | fractional QPs: QP / bpppb / PSNR / trials "
        "| fractional − integer |\n|---|---|---|---|"
    )
    targets = [("target_bpppb", r) for r in (0.1, 0.25, 0.5, 1.0, 1.5)] + [
        ("target_psnr", q) for q in (40.0, 45.0, 50.0, 55.0)
    ]
    for name, value in targets:
        cells, points = [], []
        for halvings in (0, ratecontrol.FRACTION_TRIALS):
            trials = []
            point = ratecontrol.choose_qp(
                blocks,
                params,
                10000,
                **{name: value},
                fraction_trials=halvings,
                progress=lambda stage, done, total, trials=trials: trials.append(done),
            )
            points.append(point)
            cells.append(f"{point.qp:g} / {point.bpppb:.4f} / {point.psnr:.2f} / {max(trials)}")
        gain = (
            f"{points[1].psnr - points[0].psnr:+.2f} dB"
            if name == "target_bpppb"
            else f"{100 * (points[1].bpppb / points[0].bpppb - 1):+.1f} % bits"
        )
        label = f"{value:g} bpppb" if name == "target_bpppb" else f"{value:g} dB"
        print(f"| {label} | {cells[0]} | {cells[1]} | {gain} |", flush=True)


def covariance(samples: np.ndarray) -> np.ndarray:
    """Band covariance of ``samples`` (band, ...)."""
    flat = samples.reshape(samples.shape[0], -1)
    return np.cov(flat - flat.mean(axis=1, keepdims=True))


def rotation(cov: np.ndarray) -> np.ndarray:
    """Eigenvectors of ``cov`` as rows, strongest first."""
    values, vectors = np.linalg.eigh(cov)
    return vectors[:, np.argsort(values)[::-1]].T


def coding_gain_db(cov: np.ndarray, w: np.ndarray) -> float:
    """High-rate gain (dB) of coding ``w``'s components instead of the bands, for Gaussian data of covariance ``cov``."""
    return float(10 / len(cov) * (np.log10(np.diag(cov)).sum() - np.log10(np.diag(w @ cov @ w.T)).sum()))


def klt_fit(dn: np.ndarray) -> None:
    x = dn.astype(np.float64)
    residuals = {
        "raw values": x,
        "planar-predictor residuals": x[..., 1:, 1:] - x[..., 1:, :-1] - x[..., :-1, 1:] + x[..., :-1, :-1],
        "frame differences": x[:, 1:] - x[:, :-1],
    }
    covs = {name: covariance(r) for name, r in residuals.items()}
    print("| rotation fitted on | " + " | ".join(f"gain on {n} (dB)" for n in covs) + " |\n|---|" + "---|" * len(covs))
    for fitted, cov in covs.items():
        w = rotation(cov)
        print(f"| {fitted} | " + " | ".join(f"{coding_gain_db(c, w):.2f}" for c in covs.values()) + " |")

    def fitted_on(kind: str):
        def fit(values: np.ndarray, max_samples: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
            mean, raw = default(values, max_samples)
            v = values.astype(np.float64)
            grad = (covariance(v[..., :, 1:] - v[..., :, :-1]) + covariance(v[..., 1:, :] - v[..., :-1, :])) / 2
            if kind == "gradients":
                cov = grad
            elif kind.startswith("darkest"):  # pixels whose band sum is at most its q-quantile: clouds left out
                flat = v.reshape(len(v), -1)
                brightness = flat.sum(axis=0)
                cov = covariance(flat[:, brightness <= np.quantile(brightness, float(kind[len("darkest") :]))])
            else:
                full = covariance(v)
                cov = full / np.trace(full) + grad / np.trace(grad)
            w = rotation(cov)
            return mean, w * np.sign(w[np.arange(len(w)), np.abs(w).argmax(axis=1)])[:, None]

        return fit

    def bounds_from_data(mean: np.ndarray, matrix: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
        comps = klt.forward(current[0], mean, matrix).reshape(len(matrix), -1)  # the chunk being coded
        return comps.min(axis=1) - 1e-6, comps.max(axis=1) + 1e-6

    def remember(values: np.ndarray, max_samples: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
        current[0] = values
        return default(values, max_samples)

    def raw_covariance(frame: np.ndarray, max_samples: int = 50_000) -> np.ndarray:
        flat = frame.reshape(len(frame), -1).astype(np.float64)
        return np.atleast_2d(np.cov(flat[:, :: max(1, flat.shape[1] // max_samples)]))

    print(
        "\nRotations per date: bits per sample they are predicted to save per 32-date chunk "
        "(klt.frame_rotation_saving; klt_scope='auto' takes them from "
        f"{klt.MIN_FRAME_ROTATION_SAVING}):",
        end=" ",
    )
    for t in range(0, x.shape[1], 32):
        mean, matrix = map(klt.compact, klt.fit_klt(x[:, t : t + 32]))
        frames = klt.fit_frame_rotations(x[:, t : t + 32], matrix)[1]
        print(
            f"{klt.frame_rotation_saving(x[:, t : t + 32], mean, matrix, frames, (0, 20000)):.3f}", end=" ", flush=True
        )
    print()

    default, fixed_bounds, current = klt.fit_klt, klt.component_bounds, [None]
    date_fit = klt.spatial_difference_covariance
    rates = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0)
    print("\n| KLT | " + " | ".join(f"PSNR @ {r} bpppb" for r in rates) + " |\n|---|" + "---|" * len(rates))
    runs = [
        ("one rotation a chunk, fitted on raw values", default, "triplet", "chunk"),
        ("fitted on spatial differences", fitted_on("gradients"), "triplet", "chunk"),
        ("fitted on raw values + differences", fitted_on("blend"), "triplet", "chunk"),
        ("one rotation a chunk, one gray12 video per component", default, "gray", "chunk"),
        ("fitted on the darkest 80 % of pixels", fitted_on("darkest0.8"), "triplet", "chunk"),
        ("fitted on the darkest 50 % of pixels", fitted_on("darkest0.5"), "triplet", "chunk"),
        ("one rotation a chunk, component bounds from the chunk's data", remember, "triplet", "chunk"),
        ("one rotation a date, fitted on raw values", default, "triplet", "date"),
        ("one rotation a date, fitted on spatial differences", default, "triplet", "date"),
        ("auto: a rotation a date where predicted to pay (default)", default, "triplet", "auto"),
    ]
    for label, fit, packing, scope in runs:
        klt.fit_klt = fit
        klt.component_bounds = bounds_from_data if fit is remember else fixed_bounds
        klt.spatial_difference_covariance = raw_covariance if label.endswith("date, fitted on raw values") else date_fit
        rows = []
        for qp in (-8, -3, 0, 4, 8, 16, 24, 30, 36):
            back, size, _, _ = run_codec(
                dn, CodecParams(qp=qp, value_range=(0, 20000), packing=packing, klt_scope=scope)
            )
            err = back.astype(np.float64) - dn
            rows.append(
                {"config": label, "bpppb": 8 * size / dn.size, "psnr_10000": 10 * np.log10(10000**2 / np.mean(err**2))}
            )
        print(f"| {label} | " + " | ".join(f"{psnr_at(rows, label, r):.2f}" for r in rates) + " |", flush=True)
    klt.fit_klt, klt.component_bounds, klt.spatial_difference_covariance = default, fixed_bounds, date_fit


def format3_mask_bytes(missing: np.ndarray) -> int:
    """Bytes of a chunk's mask as format 3 coded it: one ffv1 frame per date (or band and date) with a value."""
    coded = missing[:, ~missing.all(axis=(0, 2, 3))]
    frames = coded[:1] if (coded == coded[:1]).all() else coded
    spec = video.StreamSpec("ffv1", "gray", *frames.shape[2:], video.ffv1_options(1))
    packets, extradata = video.encode_stream(frames.reshape(-1, 1, *frames.shape[2:]).astype(np.uint8), spec)
    return len(extradata) + sum(map(len, packets))


def overhead(shared: Path) -> None:
    ds = xr.open_dataset(shared / "data/sentinel2-romania/sentinel2_cube_subset_romania_10m.nc", mask_and_scale=False)
    masked = np.isin(ds["SCL"].values, [0, 3, 8, 9, 10])
    cube = np.where(masked, np.nan, romania(shared).astype(np.float32))
    print(
        f"masked: {masked.mean():.1%} of pixels; dates with a value: {(~masked.all(axis=(1, 2))).sum()} of {len(masked)}"
    )
    print(
        "| QP | chunk | header: format 3 / 4 (bytes) | mask: format 3 / 4 (bytes) | chunk bytes (format 4) |\n|---|---|---|---|---|"
    )
    for qp in (16, 24):
        old = new = 0
        for t in range(0, cube.shape[1], 32):
            chunk = cube[:, t : t + 32]
            data = encode_array(chunk, CodecParams(qp=qp, value_range=(0, 20000)))
            header, start = read_header(data)
            plain = 9 + len(zlib.compress(json.dumps(header, separators=(",", ":")).encode(), 9))
            mask_now = header["mask"]["extradata"] + sum(header["mask"]["packets"])
            mask_then = format3_mask_bytes(np.isnan(chunk))
            assert start == len(pack_header(header))
            print(f"| {qp} | {t // 32} | {plain} / {start} | {mask_then} / {mask_now} | {len(data)} |", flush=True)
            new += len(data)
            old += len(data) - start - mask_now + plain + mask_then
        print(
            f"| {qp} | all | bpppb format 3 / 4: {8 * old / cube.size:.4f} / {8 * new / cube.size:.4f} "
            f"({new / old - 1:+.1%}) | | |",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    ap.add_argument(
        "--only", choices=("floor", "presets", "streams", "klt", "ratecontrol", "overhead"), help="run one section only"
    )
    args = ap.parse_args(argv)
    if args.only == "ratecontrol":
        rate_control(romania(args.shared))
        return
    if args.only == "overhead":
        overhead(args.shared)
        return
    if args.only == "klt":
        klt_fit(romania(args.shared))
        return
    if args.only == "presets":
        print("| x265 setting | PSNR @ 0.1 bpppb | PSNR @ 1.0 bpppb | encode MB/s (all QPs) |\n|---|---|---|---|")
        presets(romania(args.shared))
        return
    if args.only == "streams":
        streams(romania(args.shared))
        return
    scenes = sorted((args.shared / "data/landsat-c2l2").glob("LC08_*"))
    noise = np.random.default_rng(0).integers(0, 20000, size=(4, 8, 64, 64)).astype(np.uint16)
    qp_floor(
        {
            "Romania (16 frames)": (romania(args.shared, 16), (0, 20000)),
            **{
                f"Landsat {s.name} (256 px)": (landsat(s)[:, :, :256, :256].repeat(4, axis=1), (0, 65535))
                for s in scenes
            },
            "white noise 0..20000": (noise, (0, 20000)),
        }
    )
    if args.only == "floor":
        return
    ffv1_context(
        {"Romania (140 frames, one chunk)": romania(args.shared), **{f"Landsat {s.name}": landsat(s) for s in scenes}}
    )
    print("\n| x265 setting | PSNR @ 0.1 bpppb | PSNR @ 1.0 bpppb | encode MB/s (all QPs) |\n|---|---|---|---|")
    presets(romania(args.shared))
    print()
    streams(romania(args.shared))
    print()
    klt_fit(romania(args.shared))
    print()
    rate_control(romania(args.shared))
    print()
    overhead(args.shared)


if __name__ == "__main__":
    main()
