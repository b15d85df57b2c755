"""What a federated round records: the history entry, transcript lines and the summary line.

Everything here is computed from what the simulator measured and the server received (``res``
metrics and transcript), with the protocol's local client slots mapped back to global client ids.
Nothing reads a party's internals.

Overhead figures (per round):

* ``bytes.expansion``: bytes the server received per participant, divided by the plaintext
  float32 payload (4 bytes per aggregated value);
* ``seconds.critical_path``: the round's duration if the clients ran in parallel - the slowest
  client's training plus the aggregator's set-up (e.g. HE key generation) and, per protocol stage,
  the slowest client, the server, any helper (HE key holder) and *all* encoding and decoding of
  messages (counted as if sequential: conservative); the simulator runs all parties in one
  process, so wall time is the *sum* over clients and is reported separately as
  ``seconds.round_wall``;
* ``seconds.aggregation_critical``: the protocol's share of the critical path.

>>> format_round({"round": 2, "status": "aborted", "error": "too few", "sampled": [0, 1]}, 5)
'round 2/5 ABORTED (too few); global model unchanged'
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.fl.schedule import RoundSchedule
from secureagg.transport import SimulationResult
from secureagg.transport.results import transcript_lines

WITHHELD_CLIPS = (
    "not recorded under user-level DP: how many values the encoder clipped is a function of the "
    "clients' un-noised updates, which the privacy accounting does not cover"
)

__all__ = [
    "RoundDraft",
    "RoundRecord",
    "aborted_entry",
    "completed_entry",
    "format_round",
    "result_summary",
    "stage_seconds",
    "transcript_lines",
]


@dataclass(frozen=True)
class RoundRecord:
    """One round, in memory: the persisted ``entry`` plus optional raw material for analysis.

    ``raw_uplink`` (``keep_raw=True``): ``(transcript line, bytes)`` for every message the server
    received; ``client_updates``: global client id -> the plaintext update it computed (never
    persisted, never sent: for tests and analyses of what the server saw); ``mean_update``: the
    averaged update the server applied (``None`` when the round aborted).
    """

    entry: dict[str, Any]
    raw_uplink: list[tuple[dict[str, Any], bytes]] | None = None
    client_updates: dict[int, npt.NDArray[np.floating[Any]]] = field(default_factory=dict)
    mean_update: npt.NDArray[np.float64] | None = None

    @property
    def round_number(self) -> int:
        return int(self.entry["round"])

    @property
    def completed(self) -> bool:
        return bool(self.entry["status"] == "completed")


def stage_seconds(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per protocol stage: slowest client, all clients, server, helper and codec seconds."""
    out: dict[str, dict[str, float]] = {}
    for stage, row in (metrics.get("stages") or {}).items():
        out[stage] = {
            "client_max": float(row.get("client_seconds_max", 0.0)),
            "client_total": float(row.get("client_seconds_total", 0.0)),
            "server": float(row.get("server_seconds", 0.0)),
            "helper": float(row.get("helper_seconds", 0.0)),
            "codec": float(row.get("codec_seconds", 0.0)),
        }
    return out


def aggregation_critical_path(metrics: Mapping[str, Any]) -> float:
    """Seconds of the protocol if clients ran in parallel (see the module docstring)."""
    total = float(metrics.get("setup_seconds", 0.0))
    for row in stage_seconds(metrics).values():
        total += row["client_max"] + row["server"] + row["helper"] + row["codec"]
    return total


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} GB"  # pragma: no cover - the loop always returns


def format_round(entry: Mapping[str, Any], total_rounds: int) -> str:
    """The one-line summary of a round (used by the progress display)."""
    head = f"round {entry['round']}/{total_rounds}"
    if entry.get("status") != "completed":
        return f"{head} ABORTED ({entry.get('error', 'unknown')}); global model unchanged"
    parts = [f"{len(entry.get('participants', []))}/{len(entry.get('sampled', []))} clients"]
    for key, value in (entry.get("metrics") or {}).items():
        if isinstance(value, float):
            parts.append(f"{key} {value:.4f}")
    if entry.get("evaluation_error"):
        parts.append("evaluate FAILED")
    privacy = entry.get("privacy") or {}
    if privacy.get("epsilon") is not None:
        parts.append(f"ε {privacy['epsilon']:.2f}")
    b = entry.get("bytes") or {}
    if b:
        parts.append(f"up {_fmt_bytes(float(b.get('up', 0)))} ({b.get('expansion', 0):.2f}x)")
    failures = entry.get("client_failures") or []
    if failures:
        parts.append(f"{len(failures)} client failure(s)")
    clipped = (entry.get("clipped") or {}).get("total", 0)
    if clipped:
        parts.append(f"{clipped} values clipped")
    seconds = entry.get("seconds") or {}
    parts.append(f"{seconds.get('round_wall', 0.0):.2f} s")
    return f"{head}: " + ", ".join(parts)


# ------------------------------------------------------------------------------- history entries


@dataclass(frozen=True)
class RoundDraft:
    """What is known about a round before its outcome: the plan and the clients' training."""

    round_number: int
    plan: RoundSchedule
    silent: Mapping[int, str]  # slot -> stage it is silent from
    failures: list[dict[str, Any]]
    stragglers: list[int]
    train_seconds: Mapping[int, float]
    started: float  # perf_counter at the start of the round
    seeded: bool
    dimension: int  # aggregated values per update
    #: user-level DP: the encoder's clip counts are functions of the clients' un-noised (clipped)
    #: updates, which the user-level accounting does not cover - they are not recorded
    withhold_clip_counts: bool = False

    def clip_record(
        self, clipped: Mapping[str, Any], slots: Sequence[int] | None = None
    ) -> dict[str, Any]:
        """The ``clipped`` entry: the total and, given the slots' client ids, the count per
        client; or a statement that they are withheld."""
        if self.withhold_clip_counts:
            return {"withheld": WITHHELD_CLIPS}
        if slots is None:
            return {"total": int(clipped.get("total", 0))}
        per_client = {
            str(slots[int(k)]): int(v)
            for k, v in (clipped.get("per_client") or {}).items()
            if int(v)
        }
        return {"total": int(clipped.get("total", 0)), "per_client": per_client}

    def base(self) -> dict[str, Any]:
        plan, seconds = self.plan, self.train_seconds
        return {
            "round": self.round_number,
            "sampled": list(plan.sampled),
            "dropouts": {str(c): s for c, s in sorted(plan.dropouts.items())},
            "silent_from": {str(plan.sampled[s]): st for s, st in sorted(self.silent.items())},
            "stragglers": sorted(self.stragglers),
            "client_failures": self.failures,
            "seconds": {
                "train_total": float(sum(seconds.values())),
                "train_max": float(max(seconds.values(), default=0.0)),
            },
            "seeded": self.seeded,
        }

    def traffic(self, metrics: Mapping[str, Any], participants: int) -> dict[str, Any]:
        totals = metrics.get("totals") or {}
        up = int(totals.get("bytes_up", 0))
        payload = 4 * self.dimension
        return {
            "up": up,
            "down": int(totals.get("bytes_down", 0)),
            "peer": int(totals.get("bytes_peer", 0)),
            "messages_up": int(totals.get("messages_up", 0)),
            "messages_down": int(totals.get("messages_down", 0)),
            "up_per_participant": up / participants if participants else 0.0,
            "plaintext_payload": payload,
            "expansion": (up / participants / payload) if participants else 0.0,
        }


def aborted_entry(
    draft: RoundDraft,
    *,
    error: str,
    result: Any,
    privacy: dict[str, Any] | None,
    agg_wall: float = 0.0,
) -> dict[str, Any]:
    """The history entry of an aborted round (``result``: a partial result or exception)."""
    entry = draft.base()
    metrics = getattr(result, "metrics", None) or {}
    entry.update(
        status="aborted",
        error=error,
        participants=[],
        total_weight=0.0,
        metrics={},
        evaluation_error=None,
        privacy=privacy,
        bytes=draft.traffic(metrics, 0),
        clipped=draft.clip_record(metrics.get("clipped") or {}),
    )
    entry["seconds"].update(
        stages=stage_seconds(metrics),
        setup=float(metrics.get("setup_seconds", 0.0)),
        aggregation_wall=agg_wall,
        aggregation_critical=aggregation_critical_path(metrics) if metrics else 0.0,
        round_wall=time.perf_counter() - draft.started,
    )
    return entry


def completed_entry(
    draft: RoundDraft,
    *,
    res: SimulationResult,
    participants: list[int],
    metrics: dict[str, Any],
    eval_error: str | None,
    eval_seconds: float,
    agg_wall: float,
    privacy: dict[str, Any] | None,
    mean: Any,
) -> dict[str, Any]:
    """The history entry of a completed round."""
    entry = draft.base()
    m = res.metrics
    slots = draft.plan.sampled
    critical = aggregation_critical_path(m)
    entry.update(
        status="completed",
        error=None,
        participants=participants,
        total_weight=float(res.total_weight),
        metrics=metrics,
        evaluation_error=eval_error,
        privacy=privacy,
        bytes=draft.traffic(m, len(participants)),
        clipped=draft.clip_record(m.get("clipped") or {}, slots),
        client_aborts=[
            {**a, "client": slots[int(a["client"])]} for a in m.get("client_aborts", [])
        ],
        rejected=len(m.get("rejected", [])),
        update_norm=float(np.linalg.norm(mean)),
    )
    entry["seconds"].update(
        stages=stage_seconds(m),
        setup=float(m.get("setup_seconds", 0.0)),
        aggregation_wall=agg_wall,
        aggregation_critical=critical,
        critical_path=entry["seconds"]["train_max"] + critical,
        evaluate=eval_seconds,
        round_wall=time.perf_counter() - draft.started,
        # work the clients did ahead of the round (HE encryption pools), not in critical_path
        offline_client_max=float((m.get("offline") or {}).get("client_seconds_max", 0.0)),
    )
    return entry


def result_summary(
    history: Sequence[Mapping[str, Any]], *, rounds: int, stopped: str | None, seeded: bool
) -> dict[str, Any]:
    """``result.json``: status and message totals (``secureagg audit`` checks the transcript)."""
    totals = {"bytes_up": 0, "bytes_down": 0, "messages_up": 0, "messages_down": 0}
    for e in history:
        b = e.get("bytes") or {}
        totals["bytes_up"] += int(b.get("up", 0))
        totals["bytes_down"] += int(b.get("down", 0))
        totals["messages_up"] += int(b.get("messages_up", 0))
        totals["messages_down"] += int(b.get("messages_down", 0))
    done_rounds = len(history)
    completed = [e for e in history if e.get("status") == "completed"]
    return {
        "kind": "federated",
        "status": "ok" if done_rounds >= rounds or stopped is not None else "running",
        "stopped": stopped,
        "rounds_done": done_rounds,
        "rounds_completed": len(completed),
        "rounds_aborted": done_rounds - len(completed),
        "survivors": sorted({c for e in history for c in e.get("participants", [])}),
        "final_metrics": completed[-1].get("metrics") if completed else None,
        "seeded": seeded,
        "metrics": {"totals": totals},
    }
