"""What a store holds: committed slices, sizes, provenance, failures and runs (``eocube status``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from pipeline.store import journal
from pipeline.store.engines import open_engine
from pipeline.store.paths import is_eocube_store
from pipeline.store.zarr_store import StoreError


@dataclass
class StoreStatus:
    """A store's state. Sizes in bytes (uncompressed for slices, on disk for the store);
    ``committed_fraction`` is the share of ``(time, y, x)`` cells inside committed slices (1 for a
    store written in one piece, ``layout="one-shot"``); ``failed_items`` are the items whose reads
    failed, ``{item_id: {asset: reason}}`` (their pixels masked where they failed)."""

    path: str
    engine: str
    shape: dict[str, int]
    variables: list[str]
    time_range: list[str]
    committed: list[dict]
    committed_fraction: float
    failures: list[dict]
    bytes_on_disk: int
    sources: dict[str, int]
    runs: list[dict] = field(default_factory=list)
    failed_items: dict[str, dict[str, str]] = field(default_factory=dict)
    layout: str = "slices"
    products: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def store_status(path: Path | str) -> StoreStatus:
    """Read the status of any eocube store (a backfill's, a run's, a compressed or derived one);
    raises :class:`StoreError` if ``path`` is not an eocube store."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"no store at {path}")
    if not is_eocube_store(path):
        raise StoreError(f"{path} is not an eocube store")
    engine = open_engine(path)
    sliced = engine.exists()
    ds = engine.open() if sliced else xr.open_zarr(path, consolidated=None)
    if not ds.data_vars:
        raise StoreError(f"{path} is an eocube store without its cube (its cube group or records are missing)")
    committed = sorted(engine.committed().values(), key=lambda r: (r["t"], r["y"], r["x"])) if sliced else []
    covered = sum(int(np.prod([b - a for a, b in (r["t"], r["y"], r["x"])])) for r in committed)
    total = int(np.prod([ds.sizes.get(d, 1) for d in ("time", "y", "x")])) if sliced else 0
    fails = [f for sid, f in journal.failures(path).items() if sid not in {r["slice"] for r in committed}]
    times = ds.time.values if "time" in ds.coords else np.array([], "datetime64[ns]")
    sources = json.loads(ds.attrs.get("eocube:source_items", "{}"))
    return StoreStatus(
        path=str(path),
        engine=engine.kind,
        shape={str(d): int(n) for d, n in ds.sizes.items()},
        variables=[str(v) for v in ds.data_vars],
        time_range=[str(np.datetime_as_string(times.min(), "s")), str(np.datetime_as_string(times.max(), "s"))]
        if len(times)
        else [],
        committed=committed,
        committed_fraction=covered / total if total else 1.0,
        failures=fails,
        bytes_on_disk=_disk_bytes(path),
        sources={k: len(v) for k, v in sources.items()},
        runs=journal.runs(path),
        failed_items=json.loads(ds.attrs.get("eocube:failed_items", "{}")),
        layout="slices" if sliced else "one-shot",
        products=product_status(engine) if sliced else {},
    )


def product_status(engine) -> dict[str, dict]:
    """Per derived product of the store: its variables and shape, units made, and units not computed (why)."""
    from pipeline.store.stac import PRODUCT_GROUPS

    units = engine.units()
    out = {}
    for name in PRODUCT_GROUPS:
        group = engine.open_group(name)
        if group is None:
            continue
        states = [u["products"][name] for u in units.values() if name in u.get("products", {})]
        out[name] = {
            "variables": sorted(str(v) for v in group.data_vars),
            "shape": {str(d): int(n) for d, n in group.sizes.items()},
            "units_computed": sum(s == "computed" for s in states),
            "not_computed": {
                u["unit"]: u["products"][name]
                for u in units.values()
                if u.get("products", {}).get(name, "computed") != "computed"
            },
        }
    return out
