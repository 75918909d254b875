"""Rate control: choose the libx265 QP that meets a target PSNR or a target bpppb on sample blocks.

Bisection on the integer QP (PSNR and size both fall as QP rises). For a PSNR target the
result is the largest QP whose pooled PSNR on the samples is at least the target; for a bpppb
target the smallest QP whose rate is at most the target.

The KLT's shared step spans its widest component (up to ``sqrt(bands)`` times one band's range), so
at the finest QP it tops out below what the bands coded directly reach: on a 6-band demo cube 60.5 dB
at 0.92 bpppb against 66.6 dB. A PSNR target above the KLT's ceiling is therefore met without the KLT
when that reaches it (the returned point says which); only then is it reported out of reach.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pipeline.compression.codec import CodecParams, decode_array, encode_array
from pipeline.compression.metrics import bpppb, mse
from pipeline.compression.video import QP_MAX, QP_MIN


@dataclass(frozen=True)
class RatePoint:
    """Measured outcome of one QP on the sample blocks; ``psnr`` uses ``peak``."""

    qp: int
    psnr: float
    bpppb: float
    klt: bool = True


def measure(blocks: list[np.ndarray], params: CodecParams, peak: float) -> RatePoint:
    """Encode and decode ``blocks`` (each band, time, y, x) with ``params``; pooled PSNR and rate."""
    sq, count, n_bytes, n_samples = 0.0, 0, 0, 0
    for block in blocks:
        data = encode_array(block, params)
        back = decode_array(data)
        valid = int((~np.isnan(block.astype(np.float64)) & ~np.isnan(back.astype(np.float64))).sum())
        if valid:
            sq += mse(block, back) * valid
            count += valid
        n_bytes += len(data)
        n_samples += block.size
    err = sq / count if count else 0.0
    quality = float("inf") if err == 0 else float(10 * np.log10(peak * peak / err))
    return RatePoint(params.qp, quality, bpppb(n_bytes, n_samples), params.klt)


def choose_qp(blocks: list[np.ndarray], params: CodecParams, peak: float, target_psnr: float | None = None,
             target_bpppb: float | None = None) -> RatePoint:
    """The QP meeting exactly one of ``target_psnr`` (dB at ``peak``) or ``target_bpppb``, with its measurement."""
    if (target_psnr is None) == (target_bpppb is None):
        raise ValueError("give exactly one of target_psnr and target_bpppb")
    if not blocks:
        raise ValueError("rate control needs at least one sample block")
    if params.mode != "lossy":
        raise ValueError("rate control applies to lossy mode only")
    ok = (lambda p: p.psnr >= target_psnr) if target_psnr is not None else (lambda p: p.bpppb <= target_bpppb)
    at = lambda qp: measure(blocks, replace(params, qp=qp), peak)  # noqa: E731
    # feasible side: high QP for a PSNR target is infeasible; for a rate target low QP is infeasible
    good_is_low = target_psnr is not None
    best, without_klt = at(QP_MIN if good_is_low else QP_MAX), ""
    if not ok(best) and good_is_low and params.klt:  # above the KLT's ceiling: code the bands directly
        direct = measure(blocks, replace(params, qp=QP_MIN, klt=False), peak)
        if ok(direct):
            params, best = replace(params, klt=False), direct  # `at` measures with these from now on
        else:
            without_klt = f" ({direct.psnr:.2f} dB without the KLT)"
    if not ok(best):
        goal = f"PSNR {target_psnr} dB" if good_is_low else f"{target_bpppb} bpppb"
        raise ValueError(f"target {goal} is out of reach: at QP {best.qp:g} PSNR is {best.psnr:.2f} dB{without_klt} "
                         f"and rate {best.bpppb:.3f} bpppb")
    good, bad = (QP_MIN, QP_MAX + 1) if good_is_low else (QP_MAX, QP_MIN - 1)
    while abs(bad - good) > 1:
        mid = (good + bad) // 2
        point = at(mid)
        if ok(point):
            best, good = point, mid
        else:
            bad = mid
    return best
