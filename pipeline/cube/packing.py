"""Reflectance kept as the sensors' integer DN on one scale/offset grid (CF packed data).

A cube stored with ``storage="scaled-int"`` holds, per band, integers ``q`` with
``reflectance = q * scale_factor + add_offset`` and ``_FillValue`` where masked: the CF
packing convention, which ``xarray.open_zarr`` (and any CF reader) decodes back to
reflectance with NaN. It halves the bytes of float32 and skips the float conversion on
write. It is possible when every item of every sensor in the cube shares, per band, one
integer dtype, one nodata value and one scale, and item offsets differ by whole DN steps
(Sentinel-2's baseline-04.00 ``-1000`` DN BOA offset is such a step: items before it are
shifted up by 1000 DN, saturating at the dtype's maximum). Mixed grids, such as Landsat
(scale 2.75e-5) with Sentinel-2 (1e-4), raise :class:`~pipeline.model.RequestError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pystac

from pipeline.model import RequestError
from pipeline.sensors import SensorProfile, item_band_specs


@dataclass(frozen=True)
class PackedGrid:
    """One band's integer grid: ``reflectance = q * scale + offset``, ``fill`` where masked."""

    dtype: str
    scale: float
    offset: float
    fill: int

    def attrs(self) -> dict[str, float | int]:
        """The CF attributes that let a reader decode ``q`` to reflectance."""
        return {"scale_factor": self.scale, "add_offset": self.offset, "_FillValue": self.fill}

    def shift(self, offsets: np.ndarray) -> np.ndarray:
        """Whole DN steps to add to each time step's DN so it lands on this grid (int64)."""
        return np.rint((np.asarray(offsets, np.float64) - self.offset) / self.scale).astype(np.int64)


def packed_grid(
    band: str, profiles: Iterable[SensorProfile], item_scaling: Iterable[tuple[str, float, float]]
) -> PackedGrid:
    """The one integer grid of ``band`` over ``profiles`` and per-item ``(item_id, scale, offset)``.

    Raises :class:`RequestError` naming the band and the reason when there is none.
    """
    specs = [p.band(band) for p in profiles]
    dtypes = {s.dtype for s in specs}
    fills = {s.nodata for s in specs}
    if len(dtypes) != 1 or not np.issubdtype(np.dtype(next(iter(dtypes))), np.integer):
        raise RequestError(
            f"scaled-int storage: band {band!r} has DN dtypes {sorted(dtypes)}, not one integer "
            "dtype; use storage='float32'"
        )
    fill = next(iter(fills))
    if len(fills) != 1 or fill is None:
        raise RequestError(
            f"scaled-int storage: band {band!r} has nodata values {sorted(map(str, fills))}, "
            "not one fill value; use storage='float32'"
        )
    scaling = list(item_scaling)
    scales = {round(s, 12) for _, s, _ in scaling}
    if len(scales) != 1:
        raise RequestError(
            f"scaled-int storage: band {band!r} has scales {sorted(scales)} across items, "
            "not one integer grid; use storage='float32'"
        )
    scale = next(iter(scales))
    grid = PackedGrid(next(iter(dtypes)), scale, min(o for _, _, o in scaling), int(fill))
    for item_id, _, offset in scaling:
        steps = (offset - grid.offset) / scale
        if abs(steps - round(steps)) > 1e-3:
            raise RequestError(
                f"scaled-int storage: band {band!r} of item {item_id} has offset {offset}, "
                f"{steps:.3f} DN from the grid's {grid.offset}; use storage='float32'"
            )
    return grid


def packed_grids(
    items_by_profile: Sequence[tuple[SensorProfile, Sequence[pystac.Item]]], bands: Sequence[str]
) -> dict[str, PackedGrid]:
    """Per band, the integer grid shared by every item (see :func:`packed_grid`)."""
    specs = [
        (item.id, {s.common_name: s for s in item_band_specs(item, profile)})
        for profile, items in items_by_profile
        for item in items
    ]
    profiles = [p for p, _ in items_by_profile]
    return {b: packed_grid(b, profiles, [(i, s[b].scale, s[b].offset) for i, s in specs if b in s]) for b in bands}


def pack_dn(
    dn: np.ndarray,
    invalid: np.ndarray,
    shift: np.ndarray,
    fill: int,
    block_info: dict | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """DN on the packed grid, ``fill`` where ``invalid`` (one pass, the DN's own dtype).

    ``dn``, ``invalid``: ``(time, y, x)`` blocks; ``shift``: whole DN steps per time step of the
    whole cube (:meth:`PackedGrid.shift`), cut to the block with Dask's ``block_info``. Shifted
    values saturate at the dtype's maximum. ``out``: a buffer of ``dn``'s shape to write into.
    """
    t0, t1 = block_info[0]["array-location"][0] if block_info else (0, dn.shape[0])
    steps = np.asarray(shift[t0:t1])
    out = np.empty(dn.shape, dn.dtype) if out is None else out
    if steps.any():
        top = np.iinfo(dn.dtype).max
        np.minimum(dn, (top - steps[:, None, None]).astype(dn.dtype), out=out, casting="unsafe")
        out += steps[:, None, None].astype(out.dtype)
    else:
        np.copyto(out, dn, casting="unsafe")
    out[invalid] = fill
    return out
