"""Shared test configuration.

``SECUREAGG_SLOW_SCALE`` sets how big the ``slow`` tests (exhaustive sweeps, fuzzing) run:
``small`` (CI's default, seconds) or ``full`` (minutes, run by hand: ``SECUREAGG_SLOW_SCALE=full
python -m pytest -m slow``).
"""

from __future__ import annotations

import os

import pytest


def slow_scale() -> str:
    scale = os.environ.get("SECUREAGG_SLOW_SCALE", "small")
    if scale not in ("small", "full"):
        raise ValueError("SECUREAGG_SLOW_SCALE must be 'small' or 'full'")
    return scale


@pytest.fixture
def full_scale() -> bool:
    return slow_scale() == "full"
