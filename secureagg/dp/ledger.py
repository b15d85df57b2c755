"""The privacy ledger file format: what :class:`~secureagg.dp.accounting.PrivacyAccountant` writes
and what an auditor reads back and replays.

Two formats, both JSON:

* :data:`LEDGER_FORMAT` - one accountant's report
  (:meth:`~secureagg.dp.accounting.PrivacyAccountant.report`): accountant, δ, budget, the
  ``seeded`` flag, per stream the ε, the method and the budget stops, and every privacy event;
* :data:`FEDERATED_LEDGER_FORMAT` - a federated run's ``privacy_ledger.json``: one
  :data:`LEDGER_FORMAT` report per level (``"sample_level"``, ``"user_level"``) or ``None``.

This module computes no ε. **Invariant:** the ``events`` of a ledger are the complete record the
accountant consumed - runs of identical Gaussian steps are merged into one event (as Opacus's
history merges them), nothing is dropped - so
:meth:`~secureagg.dp.accounting.PrivacyAccountant.from_ledger` replaying them recomputes every
figure the ledger states; a ledger is checked by replay, never trusted for its numbers. A
non-finite ε is written as ``"inf"`` so the file stays strict JSON.

>>> ledger_to_replay({"format": LEDGER_FORMAT, "events": []})["format"]
'secureagg-privacy-ledger/1'
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from secureagg.dp.events import GaussianSteps, PrivacyEvent
from secureagg.errors import ConfigurationError, InvalidInputError

__all__ = [
    "FEDERATED_LEDGER_FORMAT",
    "LEDGER_FORMAT",
    "compress_events",
    "json_float",
    "ledger_to_replay",
    "read_ledger",
    "write_ledger_json",
]

LEDGER_FORMAT = "secureagg-privacy-ledger/1"
#: A federated run's ``privacy_ledger.json``: one :data:`LEDGER_FORMAT` report per level
#: (``"sample_level"``: DP-SGD per client, ``"user_level"``: the released sums), or ``None``.
FEDERATED_LEDGER_FORMAT = "secureagg/fl-privacy-ledger/v1"
_LEVELS = ("sample", "user")


def read_ledger(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a ledger JSON file written by :meth:`PrivacyAccountant.write_ledger` or by a
    federated run (``privacy_ledger.json``)."""
    data = json.loads(Path(path).read_text("utf-8"))
    if not isinstance(data, dict) or data.get("format") not in (
        LEDGER_FORMAT,
        FEDERATED_LEDGER_FORMAT,
    ):
        raise InvalidInputError(
            f"{path}: not a {LEDGER_FORMAT} or {FEDERATED_LEDGER_FORMAT} ledger"
        )
    return data


def write_ledger_json(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``report`` as indented JSON with sorted keys to ``path``; return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", "utf-8")
    return out


def ledger_to_replay(
    ledger: str | os.PathLike[str] | Mapping[str, Any],
    *,
    level: Literal["sample", "user"] | None = None,
) -> dict[str, Any]:
    """The one :data:`LEDGER_FORMAT` ledger in ``ledger`` (a path or a loaded dict), for
    :meth:`PrivacyAccountant.from_ledger` to replay.

    A :data:`FEDERATED_LEDGER_FORMAT` ledger holds one per ``level``; ``level`` may be omitted
    when the run has only one of them, and must be omitted for a plain :data:`LEDGER_FORMAT`.
    """
    data = read_ledger(ledger) if not isinstance(ledger, Mapping) else dict(ledger)
    if data.get("format") == FEDERATED_LEDGER_FORMAT:
        data = _federated_level(data, level)
    elif level is not None:
        raise ConfigurationError(
            f"level= selects a level of a {FEDERATED_LEDGER_FORMAT} ledger; this one is "
            f"{data.get('format')!r}"
        )
    if data.get("format") != LEDGER_FORMAT:
        raise InvalidInputError(f"not a {LEDGER_FORMAT} ledger: {data.get('format')!r}")
    return data


def _federated_level(data: Mapping[str, Any], level: str | None) -> dict[str, Any]:
    present = [lv for lv in _LEVELS if isinstance(data.get(f"{lv}_level"), Mapping)]
    if not present:
        raise InvalidInputError("this federated ledger holds no privacy accounting (no DP)")
    if level is None:
        if len(present) > 1:
            raise ConfigurationError(
                "this federated ledger holds two accountants: pass level='sample' (DP-SGD, "
                "one stream per client) or level='user' (the released sums)"
            )
        level = present[0]
    if level not in _LEVELS:
        raise ConfigurationError(f"level must be 'sample' or 'user', got {level!r}")
    if level not in present:
        raise ConfigurationError(f"this federated ledger has no {level}-level accounting")
    return dict(data[f"{level}_level"])


def json_float(value: float) -> float | str:
    """``value``, or ``"inf"`` where it is not finite (strict JSON has no infinity)."""
    return value if math.isfinite(value) else "inf"


def compress_events(events: Sequence[PrivacyEvent]) -> list[PrivacyEvent]:
    """Merge runs of identical Gaussian steps (same stream and parameters) into one event."""
    out: list[PrivacyEvent] = []
    for e in events:
        last = out[-1] if out else None
        if (
            isinstance(e, GaussianSteps)
            and isinstance(last, GaussianSteps)
            and replace(last, steps=1) == replace(e, steps=1)
        ):
            out[-1] = replace(last, steps=last.steps + e.steps)
        else:
            out.append(e)
    return out
