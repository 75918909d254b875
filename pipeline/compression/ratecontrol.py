"""Rate control: choose the libx265 QP that meets a target PSNR or a target bpppb on sample blocks.

A bracketing search on the integer QP (PSNR and size both fall as QP rises), then on the fraction
between that QP and its neighbour that misses the target, in :data:`FRACTION_TRIALS` halvings (1/16 QP; a
fractional QP codes each GOP's tail one QP coarser,
:func:`pipeline.compression.video.fractional_qp_zones`). For a
PSNR target the result is the largest QP whose pooled PSNR on the samples is at least the target; for
a bpppb target the smallest QP whose rate is at most the target. One integer QP step moves the rate
by a sizeable share, so stopping at integers left up to that much of a rate target unused
(``python -m benchmarks compression-settings --only ratecontrol`` compares both searches).

The integer search keeps a bracket (a QP meeting the target, one missing it) and tries next where the
line through its two ends' margins crosses the target (PSNR in dB, rate in log bpppb: both close to
linear in QP over a bracket; an end that stays put twice has its margin halved, the Illinois rule),
halving instead while an end is not measured yet or when interpolation twice running failed to halve
the bracket. On a margin monotone in QP it lands on the same QP as a bisection, in fewer trials (each
trial codes every sample block).

The KLT's shared step spans its widest component (up to ``sqrt(bands)`` times one band's range), so
at the finest QP it tops out below what the bands coded directly reach, and at the highest rates (as
measured on real Sentinel-2) coding the bands directly is the cheaper of the two. So when the KLT's
QP comes out at or below :data:`DIRECT_CHECK_QP`, or the KLT cannot meet a PSNR target at all, the same
search runs without the KLT and the better point is returned (fewer bits for a PSNR target, higher
PSNR for a rate target; the point says which path it took). Only a target that neither path meets is
reported out of reach.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from pipeline.compression.codec import CodecParams, decode_array, encode_array
from pipeline.compression.metrics import bpppb, mse
from pipeline.compression.video import QP_MAX, QP_MIN


@dataclass(frozen=True)
class RatePoint:
    """Measured outcome of one QP on the sample blocks; ``psnr`` uses ``peak``."""

    qp: float
    psnr: float
    bpppb: float
    klt: bool = True


def measure(blocks: list[np.ndarray], params: CodecParams, peak: float) -> RatePoint:
    """Encode and decode ``blocks`` (each band, time, y, x) with ``params``; pooled PSNR and rate."""

    def coded(block: np.ndarray) -> tuple[float, int, int]:
        """The block's squared error (summed where both are valid), valid samples and coded bytes."""
        data = encode_array(block, params)
        back = decode_array(data)
        valid = int((~np.isnan(block.astype(np.float64)) & ~np.isnan(back.astype(np.float64))).sum())
        return (mse(block, back) * valid if valid else 0.0), valid, len(data)

    # the codec releases the GIL: the blocks are coded side by side, one a core
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with ThreadPoolExecutor(max(1, min(len(blocks), cores // max(1, params.threads)))) as pool:
        results = list(pool.map(coded, blocks))
    sq = sum(r[0] for r in results)
    count = sum(r[1] for r in results)
    n_bytes = sum(r[2] for r in results)
    n_samples = sum(b.size for b in blocks)
    err = sq / count if count else 0.0
    quality = float("inf") if err == 0 else float(10 * np.log10(peak * peak / err))
    return RatePoint(params.qp, quality, bpppb(n_bytes, n_samples), params.klt)


#: a KLT point at or below this QP is compared with coding the bands directly (the high-rate regime)
DIRECT_CHECK_QP = 0


#: trials a bisection over the integers makes: halving QP_MIN..QP_MAX, then the feasible end (the
#: interpolating search makes fewer on the usual margins; the progress bar's estimate)
TRIALS_PER_SEARCH = 1 + int(np.ceil(np.log2(QP_MAX - QP_MIN + 1)))
#: halvings of the step between two integer QPs after the integer search (4: to 1/16 QP)
FRACTION_TRIALS = 4


def next_qp(good: int, bad: int, at_good: float | None, at_bad: float | None) -> int:
    """The integer QP to try next strictly between ``good`` (meets the target) and ``bad`` (misses it), at
    least 2 apart: where the line through their margins ``at_good`` (>= 0) and ``at_bad`` (< 0) crosses 0,
    rounded toward ``good`` (the side the answer is on); halfway where a margin is unknown or not finite."""
    mid = (good + bad) // 2
    if at_good is None or at_bad is None or not (math.isfinite(at_good) and math.isfinite(at_bad)):
        return mid
    if not at_good >= 0 > at_bad:
        return mid
    cross = good + (bad - good) * at_good / (at_good - at_bad)
    qp = math.floor(cross) if bad > good else math.ceil(cross)
    lo, hi = min(good, bad), max(good, bad)
    return min(max(qp, lo + 1), hi - 1)


def _integer_search(
    blocks: list[np.ndarray],
    params: CodecParams,
    peak: float,
    margin: Callable[[RatePoint], float],
    good_is_low: bool,
    on_trial: Callable[[], None] = lambda: None,
) -> tuple[RatePoint | None, RatePoint | None, int]:
    """``(point, end, miss)``: the integer point nearest the target that meets it (``margin`` >= 0; None if
    none does), the feasible end's point (measured only when no other point meets the target, else None),
    and the neighbouring integer QP that misses the target (outside QP_MIN..QP_MAX if none does).

    The next QP tried is :func:`next_qp` of the bracket; the feasible end (QP_MIN for a PSNR target: the
    slowest encode of all) is tried last, only if every point on the way there missed."""

    def at(qp: int) -> RatePoint:
        point = measure(blocks, replace(params, qp=qp), peak)
        on_trial()
        return point

    good, bad = (QP_MIN, QP_MAX + 1) if good_is_low else (QP_MAX, QP_MIN - 1)
    best: RatePoint | None = None
    m_good: float | None = None  # the ends' margins as interpolated (``bad``'s once measured)
    m_bad: float | None = None
    moved, slow = "", 0  # the end that moved last; interpolated trials running that did not halve the bracket
    while abs(bad - good) > 1:
        width = abs(bad - good)
        qp = next_qp(good, bad, *((m_good, m_bad) if slow < 2 else (None, None)))
        interpolated = qp != (good + bad) // 2
        point = at(qp)
        side = "good" if margin(point) >= 0 else "bad"
        if side == "good":
            best, good, m_good = point, qp, margin(point)
            if moved == "good" and m_bad is not None:
                m_bad /= 2  # the bad end stuck twice: lean the line toward it (the Illinois rule)
        else:
            bad, m_bad = qp, margin(point)
            if moved == "bad" and m_good is not None:
                m_good /= 2
        moved = side
        slow = slow + 1 if interpolated and 2 * abs(bad - good) > width else 0
    if best is not None:
        return best, None, bad
    end = at(good)
    return (end if margin(end) >= 0 else None), end, bad


def _refine(
    blocks: list[np.ndarray],
    params: CodecParams,
    peak: float,
    ok: Callable[[RatePoint], bool],
    better: Callable[[RatePoint, RatePoint], bool],
    point: RatePoint,
    miss: int,
    halvings: int,
    on_trial: Callable[[], None],
) -> RatePoint:
    """The fractional QP between ``point`` (meets the target) and the integer ``miss`` (misses it) nearest the
    target that still meets it, if it is ``better`` than ``point``; else ``point`` (also where there is no
    neighbour). On content whose P-frames cost next to nothing (a smooth,
    static scene) a mixed stream can be worse than the integer one at less rate: that one is kept then."""
    if not QP_MIN <= miss <= QP_MAX:
        return point
    best, good, bad = point, float(point.qp), float(miss)
    for _ in range(halvings):
        mid = (good + bad) / 2
        trial = measure(blocks, replace(params, qp=mid, klt=point.klt), peak)
        on_trial()
        if ok(trial):
            good = mid
            if better(trial, best):
                best = trial
        else:
            bad = mid
    return best


def _rate_margin(goal: float, point: RatePoint) -> float:
    """The log of the room a point's rate leaves under the rate ``goal`` (>= 0: it meets it)."""
    if point.bpppb <= 0:
        return math.inf
    return math.log(goal / point.bpppb) if goal > 0 else -math.inf


def choose_qp(
    blocks: list[np.ndarray],
    params: CodecParams,
    peak: float,
    target_psnr: float | None = None,
    target_bpppb: float | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    fraction_trials: int = FRACTION_TRIALS,
) -> RatePoint:
    """The QP meeting exactly one of ``target_psnr`` (dB at ``peak``) or ``target_bpppb``, with its measurement.

    ``fraction_trials``: halvings of the step between two integer QPs (0: integers only).
    ``progress("rate control", done, total)`` is called after each trial QP.
    """
    if (target_psnr is None) == (target_bpppb is None):
        raise ValueError("give exactly one of target_psnr and target_bpppb")
    if not blocks:
        raise ValueError("rate control needs at least one sample block")
    if params.mode != "lossy":
        raise ValueError("rate control applies to lossy mode only")
    good_is_low = target_psnr is not None  # a PSNR target is met at low QPs, a rate target at high ones
    margin: Callable[[RatePoint], float]
    if target_psnr is not None:  # dB above the target
        margin, better = (lambda p: p.psnr - target_psnr), (lambda a, b: a.bpppb < b.bpppb)
    else:
        margin, better = partial(_rate_margin, float(target_bpppb)), (lambda a, b: a.psnr > b.psnr)  # type: ignore[arg-type]

    def ok(p: RatePoint) -> bool:
        return margin(p) >= 0

    trials, total = 0, TRIALS_PER_SEARCH + fraction_trials

    def on_trial() -> None:
        nonlocal trials
        trials += 1
        if progress:
            progress("rate control", trials, max(total, trials))

    def refined(p: RatePoint | None, p_miss: int) -> RatePoint | None:
        return None if p is None else _refine(blocks, params, peak, ok, better, p, p_miss, fraction_trials, on_trial)

    point, end, miss = _integer_search(blocks, params, peak, margin, good_is_low, on_trial)
    total = trials + fraction_trials
    without_klt = ""
    if params.klt and (point is None or point.qp <= DIRECT_CHECK_QP):
        total = trials + TRIALS_PER_SEARCH + 2 * fraction_trials
        direct, direct_end, direct_miss = _integer_search(
            blocks, replace(params, klt=False), peak, margin, good_is_low, on_trial
        )
        # both refined before they are compared: which is better can change within a QP
        point, direct = refined(point, miss), refined(direct, direct_miss)
        if direct is not None and (point is None or better(direct, point)):
            point = direct
        if direct_end is not None:  # measured: no direct point met the target either
            without_klt = f" ({direct_end.psnr:.2f} dB without the KLT)"
    else:
        point = refined(point, miss)
    if progress:
        progress("rate control", trials, trials)
    if point is None:  # then both searches measured their feasible end
        goal = f"PSNR {target_psnr} dB" if good_is_low else f"{target_bpppb} bpppb"
        if end is None:
            raise ValueError(f"target {goal} is out of reach")
        raise ValueError(
            f"target {goal} is out of reach: at QP {end.qp:g} PSNR is {end.psnr:.2f} dB{without_klt} "
            f"and rate {end.bpppb:.3f} bpppb"
        )
    return point
