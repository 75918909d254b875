"""Decode product QA bands into boolean flags and small-integer levels.

The rules are data (``profiles/qa_rules.yaml``), each one a transcription of a product
guide table, cited in the rule's ``source``:

* Landsat C2 L2 ``QA_PIXEL`` / ``QA_RADSAT``: USGS LSDS-1619, Tables 6-3 and 6-4.
* Sentinel-2 L2A ``SCL``: ESA L2A ATBD, scene classification values 0-11.
* HLS v2.0 ``Fmask``: HLS v2.0 User Guide, Table 9.
* MODIS ``sur_refl_state_500m`` (MOD09A1) and ``state_1km`` (MOD09GA): MODIS Surface
  Reflectance User's Guide C6.1, state QA tables; MOD13 ``pixel_reliability`` and
  ``VI_Quality``: MODIS VI User's Guide, Tables 4-5; MCD43 mandatory quality.

Decoding is element-wise integer arithmetic through xarray, so it works unchanged on
numpy-backed and (lazily) on dask-backed DataArrays.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import xarray as xr
import yaml
from pydantic import BaseModel, ConfigDict, Field

from pipeline.sensors.profiles import PROFILE_DIR, QASpec, candidate_profiles


class FieldSpec(BaseModel):
    """A bit field (``bits: n`` or ``[offset, length]``) or, without ``bits``, the whole value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bits: int | tuple[int, int] | None = None
    values: tuple[int, ...] = (1,)
    at_least: int | None = None

    def read(self, a: xr.DataArray) -> xr.DataArray:
        """The field's value (same integer dtype as ``a``)."""
        if self.bits is None:
            return a
        offset, length = (self.bits, 1) if isinstance(self.bits, int) else self.bits
        return (a >> offset) & ((1 << length) - 1)

    def test(self, a: xr.DataArray) -> xr.DataArray:
        """Boolean: the field is one of ``values`` (or ``>= at_least``)."""
        v = self.read(a)
        if self.at_least is not None:
            return v >= self.at_least
        out = v == self.values[0]
        for value in self.values[1:]:
            out = out | (v == value)
        return out


class QARule(BaseModel):
    """One product QA layout: flags, levels, the fill code and the guide it comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    source: str
    fill_value: int
    fill: str | None = None
    flags: dict[str, FieldSpec]
    levels: dict[str, FieldSpec] = Field(default_factory=dict)


@functools.cache
def qa_rules() -> dict[str, QARule]:
    """All rules of ``qa_rules.yaml`` by name (flags set to null by a YAML merge are dropped)."""
    raw = yaml.safe_load((PROFILE_DIR / "qa_rules.yaml").read_text())
    rules = {}
    for name, body in raw.items():
        body = {**body, "flags": {k: v for k, v in body["flags"].items() if v is not None}}
        rules[name] = QARule(name=name, **body)
    return rules


def all_flag_names() -> set[str]:
    """Every boolean flag name some rule defines."""
    return {f for rule in qa_rules().values() for f in rule.flags}


def qa_spec_for(collection: str, asset: str) -> QASpec:
    """The QA spec of ``asset`` (any key scheme, case-insensitive) in a collection's profile(s)."""
    profiles = candidate_profiles(collection)
    for profile in profiles:
        try:
            return profile.qa_spec(asset)
        except KeyError:
            continue
    known = sorted({q.asset for p in profiles for q in p.qa})
    raise ValueError(f"{asset!r} is not a QA asset of collection {collection!r}; QA assets: {known}")


def _as_integer(a: xr.DataArray, spec: QASpec, fill_value: int) -> xr.DataArray:
    """QA values in the product's integer dtype; NaN (masked float input) becomes fill."""
    if np.issubdtype(a.dtype, np.floating):
        if a.chunks is None:
            finite = np.isfinite(a.values)
            if not np.array_equal(a.values[finite], np.round(a.values[finite])):
                raise ValueError(f"QA asset {spec.asset!r} holds non-integer values; QA bands are integer codes")
        a = a.fillna(fill_value)
    elif not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"QA asset {spec.asset!r} must be integer (or float with NaN for fill), not {a.dtype}")
    return a.astype(spec.dtype)


def decode(rule: QARule, a: xr.DataArray, names: set[str] | None = None) -> xr.Dataset:
    """Apply a rule to integer QA values: bool flags, uint8 levels; all False/0 on fill pixels.

    ``names`` restricts the output to those flags/levels (the fill flag is always kept).
    """

    def wanted(name: str) -> bool:
        return names is None or name in names or name == rule.fill

    flags = {name: f.test(a) for name, f in rule.flags.items() if wanted(name)}
    levels = {name: f.read(a).astype(np.uint8) for name, f in rule.levels.items() if wanted(name)}
    if rule.fill is not None:
        valid = ~flags[rule.fill]
        flags = {name: (v if name == rule.fill else v & valid) for name, v in flags.items()}
        levels = {name: v.where(valid, 0).astype(np.uint8) for name, v in levels.items()}
    return xr.Dataset({**flags, **levels}, attrs={"qa_rule": rule.name, "qa_source": rule.source})


def as_dataarray(array: Any) -> xr.DataArray:
    """``array`` as a DataArray (numpy input gets default dims)."""
    return array if isinstance(array, xr.DataArray) else xr.DataArray(np.asarray(array))


def decode_qa(collection: str, asset: str, array: Any, names: set[str] | None = None) -> xr.Dataset:
    """Decode a QA array of ``collection``'s ``asset`` into flags, same dims/coords as the input.

    Boolean variables: the rule's flags (``fill``, ``cloud``, ``cloud_shadow``, ``cirrus``,
    ``snow``, ``water``, ``clear``, ``dilated_cloud``, ``adjacent_to_cloud``, ...); uint8
    variables: multi-bit levels (Landsat 2-bit confidences 0 none .. 3 high, aerosol levels,
    MODIS cloud state). ``names`` limits the output to those variables (plus ``fill``).
    Works on numpy arrays and numpy- or dask-backed DataArrays (lazy); float input is
    accepted with NaN meaning fill.
    """
    spec = qa_spec_for(collection, asset)
    rule = qa_rules()[spec.rule]
    return decode(rule, _as_integer(as_dataarray(array), spec, rule.fill_value), names)


def flag_fractions(flags: xr.Dataset) -> dict[str, float]:
    """Share of non-fill pixels with each boolean flag set (fill itself: share of all pixels)."""
    rule = qa_rules()[flags.attrs["qa_rule"]]
    n_all = flags[next(iter(rule.flags))].size
    valid = ~flags[rule.fill] if rule.fill else None
    n_valid = int(valid.sum()) if valid is not None else n_all
    out = {}
    for name in rule.flags:
        if name == rule.fill:
            out[name] = float(flags[name].sum()) / n_all
        else:
            out[name] = float(flags[name].sum()) / n_valid if n_valid else float("nan")
    return out
