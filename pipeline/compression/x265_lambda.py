"""libx265's Lagrange multiplier for our QPs below 0 (x265 QP 0 or 1 with a finer flat scaling list).

libx265 weighs rate against distortion with a multiplier looked up by frame QP in two tables of the
library (``x265_lambda_tab`` for SAD costs, ``x265_lambda2_tab`` for SSE costs). Our QPs below 0 run
x265 at QP 0 and shrink the step by ``2**(qp / 6)`` through the scaling list
(:data:`pipeline.compression.video.QP_MIN`), but the tables still hold QP 0's multiplier, about
``2**(-qp / 3)`` times too large for that step: mode decisions and RDO quantisation then throw away
detail the finer step was meant to keep, and quality fell between neighbouring QPs. While such an
encode runs, :func:`lambda_for_scaling_entry` scales entries 0 and 1 with the step (``lambda`` by the
list's ``entry / 16``, ``lambda2`` by its square, the tables' own ladder continued below QP 0) and puts
the library's values back after. Entry 1 is read by the coarser tail of a fractional QP below 0
(x265 QP 1 on the same list, :func:`pipeline.compression.video.fractional_qp_zones`).

The tables are process-global, read by every libx265 encoder in the process while it codes. Only
encoders at x265 QP 0 or 1 read entries 0 and 1 (constant QP, no adaptive quantisation, I and P frames
at one QP), so encoders that need the same entries run together and one that needs others waits. The tables
are found through the symbols of the libx265 that PyAV loaded (its 12-bit build); where they are not
found, :data:`AVAILABLE` is False and encodes run with the library's tables untouched.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: entries in each table (QP 0..69, libx265's QP_MAX_MAX + 1)
TABLE_LENGTH = 70
#: libx265's 12-bit SAD multiplier at QP 0 (``2**(0 / 6 - 2) * 2**(12 - 8)``): tells its 12-bit tables apart
TWELVE_BIT_LAMBDA_QP0 = 4.0
#: every entry of HEVC's default (flat) scaling list
DEFAULT_SCALING_ENTRY = 16
#: C++ namespaces of the 12-bit tables: a multi-bit-depth build, then a 12-bit-only build
_NAMESPACES = ("x265_12bit", "x265")


def _loaded_libx265() -> list[str]:
    """Paths of the libx265 shared objects mapped into this process (Linux ``/proc/self/maps``)."""
    import av  # noqa: F401  (loads libavcodec and with it libx265)

    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:  # not Linux, or no procfs: leave the tables alone
        return []
    return sorted({line.split()[-1] for line in lines if "libx265" in line and "/" in line})


def _find_tables() -> tuple[ctypes.Array, ctypes.Array] | None:
    """The live 12-bit ``(lambda, lambda2)`` tables of the loaded libx265, or None."""
    for path in _loaded_libx265():
        try:
            lib = ctypes.CDLL(path)  # already loaded: the same handle, the same tables
        except OSError:
            continue
        for ns in _NAMESPACES:
            mangled = f"_ZN{len(ns)}{ns}"
            try:
                lam = (ctypes.c_double * TABLE_LENGTH).in_dll(lib, f"{mangled}15x265_lambda_tabE")
                lam2 = (ctypes.c_double * TABLE_LENGTH).in_dll(lib, f"{mangled}16x265_lambda2_tabE")
            except ValueError:
                continue
            if abs(lam[0] - TWELVE_BIT_LAMBDA_QP0) < 1e-9 and 0 < lam2[0] < lam2[1]:
                return lam, lam2
    return None


_TABLES = _find_tables()
#: whether the multiplier at x265 QP 0 follows the scaling list (the loaded libx265 exposes its 12-bit
#: tables); setting it False leaves the library's tables alone (a benchmark's comparison)
AVAILABLE = _TABLES is not None
#: the table entries a scaling list changes: x265 QP 0 and 1
SCALED_ENTRIES = (0, 1)
_DEFAULT_ENTRIES = (
    [(_TABLES[0][i], _TABLES[1][i]) for i in SCALED_ENTRIES]
    if _TABLES
    else [(TWELVE_BIT_LAMBDA_QP0 * 2 ** (i / 6), 0.0) for i in SCALED_ENTRIES]
)
_state = threading.Condition()
_holders = {"entry": DEFAULT_SCALING_ENTRY, "count": 0}


def scaled_entries(scaling_entry: int) -> list[tuple[float, float]]:
    """``(lambda, lambda2)`` at each of :data:`SCALED_ENTRIES` for a flat scaling list of ``scaling_entry``.

    The step is ``scaling_entry / 16`` of the default list's at each x265 QP, so ``lambda`` scales by
    that ratio and ``lambda2`` by its square: the library's values continued down its own ladder.
    """
    ratio = scaling_entry / DEFAULT_SCALING_ENTRY
    return [(lam * ratio, lam2 * ratio**2) for lam, lam2 in _DEFAULT_ENTRIES]


def _set_entries(values: list[tuple[float, float]]) -> None:
    if _TABLES is None:  # lambda_for_scaling_entry does not call this then
        raise RuntimeError("the loaded libx265 exposes no 12-bit lambda tables to set")
    lam_table, lam2_table = _TABLES
    for i, (lam, lam2) in zip(SCALED_ENTRIES, values, strict=True):
        lam_table[i], lam2_table[i] = lam, lam2


@contextmanager
def lambda_for_scaling_entry(scaling_entry: int | None) -> Iterator[None]:
    """Hold libx265's multipliers at x265 QP 0 and 1 at the values for ``scaling_entry`` while the block (an encode) runs.

    ``scaling_entry``: the flat scaling-list entry of an encode at x265 QP 0 or 1 (16 without a list), or
    None for an encode at higher x265 QPs only (which never read entries 0 and 1): a no-op then, and
    wherever :data:`AVAILABLE` is False.
    """
    if scaling_entry is None or not AVAILABLE or _TABLES is None:
        yield
        return
    with _state:
        while _holders["count"] and _holders["entry"] != scaling_entry:
            _state.wait()
        if not _holders["count"]:
            _set_entries(scaled_entries(scaling_entry))
            _holders["entry"] = scaling_entry
        _holders["count"] += 1
    try:
        yield
    finally:
        with _state:
            _holders["count"] -= 1
            if not _holders["count"]:
                _set_entries(_DEFAULT_ENTRIES)
                _state.notify_all()
