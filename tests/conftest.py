"""Shared test fixtures: the read-only reference data beside the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEMO = Path(__file__).resolve().parents[1] / "qdukd" / "demo_data"

torch.set_num_threads(2)


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; when it is missing, skip the test naming it, or fail it where
    ``QDUKD_REQUIRE_SHARED=1`` (CI, where a skip would hide a broken data mount).

    Args:
        parts: path components below ``../shared/data``.
    """
    p = SHARED.joinpath(*parts)
    if not p.exists():
        message = f"reference data not found: {p} (CI has ../shared/data beside the project)"
        if os.environ.get("QDUKD_REQUIRE_SHARED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return p


@pytest.fixture
def shared() -> Path:
    return shared_path()
