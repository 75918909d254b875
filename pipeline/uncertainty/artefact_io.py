"""Folders of trained models: ``weights.safetensors`` + ``card.json``, written atomically, verified on read.

A *card* is a JSON document describing the model (kind, format version, inputs, training
provenance, ...) and ending with ``"sha256": {"weights.safetensors": <hex>}``. Reading an artefact
checks its kind and format version and recomputes the weights' sha256 before anything is built,
so a changed or corrupt file is one line naming it (:class:`ArtefactError`).

Writing goes to a hidden sibling folder that is renamed into place only when complete. An existing
artefact folder (holding ``card.json``, or ``model.json`` of format 2) is replaced only with
``overwrite``; a folder holding anything else is never written into.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTS = "weights.safetensors"
CARD = "card.json"
#: Files that mark a folder as an eocube model artefact (format 3+ card, format-2 config).
MARKERS = (CARD, "model.json")


class ArtefactError(ValueError):
    """An artefact that cannot be used (missing file, wrong kind or version, changed weights, inputs that
    do not match): its message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def utc_now() -> str:
    """Current UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return f"{dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ}"


def is_artefact(folder: Path) -> bool:
    """True when ``folder`` holds a card or a format-2 model config."""
    return any((folder / m).is_file() for m in MARKERS)


def check_output(folder: str | Path, overwrite: bool = False) -> Path:
    """``folder`` if an artefact may be written there: free, an empty folder, or (with ``overwrite``) an artefact."""
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise FileExistsError(f"{folder} exists and is not a folder; refusing to write an artefact there")
    if not folder.exists() or not any(folder.iterdir()):
        return folder
    if not is_artefact(folder):
        raise FileExistsError(f"{folder} exists and is not an eocube artefact; refusing to write into it")
    if not overwrite:
        raise FileExistsError(f"artefact {folder} already exists; pass overwrite (--overwrite) to replace it")
    return folder


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_artefact(
    folder: str | Path, tensors: dict[str, np.ndarray], card: dict[str, Any], overwrite: bool = False
) -> Path:
    """Write ``tensors`` as ``weights.safetensors`` and ``card`` (plus its ``sha256``) as ``card.json``.

    Written into a hidden sibling and moved to ``folder`` only when complete; see :func:`check_output`.
    Returns ``folder``. The ``card`` passed in gets its ``sha256`` entry set.
    """
    from safetensors.numpy import save_file

    folder = check_output(folder, overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / WEIGHTS))
        card["sha256"] = {WEIGHTS: sha256_file(tmp / WEIGHTS)}
        (tmp / CARD).write_text(json.dumps(card, indent=2, default=_json_default, allow_nan=False) + "\n")
        if folder.exists():
            check_output(folder, overwrite)  # again: something may have appeared meanwhile
            old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_card(folder: str | Path, kind: str, versions: Iterable[int]) -> dict[str, Any]:
    """The card of artefact ``folder``, checked for ``kind`` and a format version in ``versions``."""
    folder = Path(folder)
    path = folder / CARD
    if not folder.is_dir():
        raise ArtefactError(f"{folder} does not exist: not a saved {kind} artefact")
    if not path.is_file():
        raise ArtefactError(f"{path} not found: not a saved {kind} artefact")
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtefactError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(card, dict) or card.get("kind") != kind:
        got = card.get("kind") if isinstance(card, dict) else type(card).__name__
        raise ArtefactError(f"{path} is a {got!r} card, not {kind!r}")
    versions = tuple(versions)
    if card.get("format_version") not in versions:
        raise ArtefactError(
            f"{path} has format_version {card.get('format_version')!r}; this eocube reads "
            f"{', '.join(map(str, versions))}"
        )
    return card


def read_weights(folder: str | Path, card: dict[str, Any]) -> dict[str, np.ndarray]:
    """The tensors of ``weights.safetensors`` after checking its sha256 against the card's."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(folder) / WEIGHTS
    expected = (card.get("sha256") or {}).get(WEIGHTS)
    if not path.is_file():
        raise ArtefactError(f"{path} not found (the artefact's card names it)")
    if not expected:
        raise ArtefactError(f"{Path(folder) / CARD} records no sha256 for {WEIGHTS}")
    actual = sha256_file(path)
    if actual != expected:
        raise ArtefactError(
            f"{path} has sha256 {actual[:16]}… but the card records {expected[:16]}…: "
            "the weights were changed or corrupted"
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtefactError(f"{path} cannot be read: {exc}") from None
