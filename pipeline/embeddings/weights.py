"""Finding (and, on request, downloading) released model weights, and fingerprinting them.

Lookup order for a model's weights file:

1. an explicit path (a file, or a folder holding the file);
2. the eocube cache ``$EOCUBE_WEIGHTS_DIR`` (default ``~/.cache/eocube/weights``), as ``<model>/<file>``;
3. the Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``),
   ``models--<org>--<name>/snapshots/<rev>/<file>``;
4. a download into the eocube cache, only with ``allow_download=True`` (``urllib``; HF ``resolve/main`` URLs).

Otherwise a :class:`WeightsNotFoundError` names the file and every place that was searched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path


class WeightsNotFoundError(FileNotFoundError):
    """The weights file is in none of the searched places (and no download was asked for)."""


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's official weights live. ``companions`` are files needed beside the weights
    (e.g. Galileo's ``config.json``), fetched from the same place."""

    filename: str
    hf_repo: str | None = None
    hf_path: str | None = None  # path of the file inside the HF repo (default: filename)
    url: str | None = None  # direct URL when the weights are not on the HF hub
    companions: dict[str, str] = field(default_factory=dict)  # local name -> URL or HF path

    def download_url(self, hf_path: str | None = None) -> str:
        if self.hf_repo:
            return f"https://huggingface.co/{self.hf_repo}/resolve/main/{hf_path or self.hf_path or self.filename}"
        if self.url:
            return self.url
        raise WeightsNotFoundError(f"no download location is known for {self.filename}")


def cache_dir() -> Path:
    """The eocube weights cache: ``$EOCUBE_WEIGHTS_DIR`` or ``~/.cache/eocube/weights``."""
    return Path(os.environ.get("EOCUBE_WEIGHTS_DIR") or Path.home() / ".cache" / "eocube" / "weights")


def hf_hub_dir() -> Path:
    """The Hugging Face hub cache folder (``HF_HUB_CACHE``, ``HF_HOME/hub`` or ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def _hf_candidates(repo: str, rel_path: str) -> list[Path]:
    snapshots = hf_hub_dir() / f"models--{repo.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return [snapshots / "<revision>" / rel_path]
    return sorted(snapshots.glob(f"*/{rel_path}"), key=lambda p: p.stat().st_mtime, reverse=True) or [
        snapshots / "<revision>" / rel_path
    ]


def _download(url: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False, suffix=".part") as tmp:
        with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (https URLs from our table)
            shutil.copyfileobj(resp, tmp)
    Path(tmp.name).replace(dest)
    return dest


def resolve_weights(
    model: str, source: WeightsSource, weights: str | Path | None = None, allow_download: bool = False
) -> Path:
    """Path of ``model``'s weights file (see the module docstring for the lookup order)."""
    looked: list[Path] = []
    if weights is not None:
        path = Path(weights).expanduser()
        candidate = path / source.filename if path.is_dir() else path
        if candidate.is_file():
            return candidate
        raise WeightsNotFoundError(f"{model}: weights file {candidate} does not exist")
    local = cache_dir() / model / source.filename
    looked.append(local)
    if local.is_file():
        return local
    if source.hf_repo:
        for cand in _hf_candidates(source.hf_repo, source.hf_path or source.filename):
            looked.append(cand)
            if cand.is_file():
                return cand
    if allow_download:
        path = _download(source.download_url(), local)
        for name, where in source.companions.items():
            url = where if "://" in where else source.download_url(where)
            _download(url, local.parent / name)
        return path
    searched = "; ".join(str(p) for p in looked)
    raise WeightsNotFoundError(
        f"{model}: weights file {source.filename!r} not found. Looked in: {searched}. "
        f"Pass weights=PATH, place it in {cache_dir() / model}, or use allow_download=True "
        f"(from {source.download_url()})."
    )


def companion_file(weights_path: Path, name: str) -> Path:
    """A file expected beside the weights (e.g. ``config.json``); clear error if it is missing."""
    path = weights_path.parent / name
    if not path.is_file():
        raise WeightsNotFoundError(f"{name} not found beside the weights at {weights_path.parent}")
    return path


@lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file (memoised on path, size and mtime)."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
