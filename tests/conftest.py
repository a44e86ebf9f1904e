"""Shared test fixtures: the read-only reference data beside the project."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEMO = Path(__file__).resolve().parents[1] / "qdukd" / "demo_data"

torch.set_num_threads(2)


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test naming what is missing."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"reference data not found: {p} (CI has ../shared/data beside the project)")
    return p


@pytest.fixture
def shared() -> Path:
    return shared_path()
