"""Shared pytest fixtures.

``shared_dir`` points at the real data and weights that live beside the project
(``../shared`` from the repository root, or ``$EOCUBE_SHARED``). Tests that need it
skip with a clear reason where it is absent (users elsewhere); CI has it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (faults.py) importable by name

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_root() -> Path:
    env = os.environ.get("EOCUBE_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    root = _shared_root()
    if not (root / "README.md").exists():
        pytest.skip(f"real data/weights not found at {root} (set EOCUBE_SHARED or place shared/ beside the repo)")
    return root


@pytest.fixture(scope="session")
def demo_archive(tmp_path_factory) -> Path:
    """The embedded demo archive, generated once per test session."""
    from pipeline.demo.archive import generate_archive

    return generate_archive(tmp_path_factory.mktemp("demo-archive"))


@pytest.fixture(scope="session")
def prefect_harness():
    """A real, temporary Prefect API (SQLite) for flow runs in this session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
