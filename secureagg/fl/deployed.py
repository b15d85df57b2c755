"""Federated rounds whose clients train on their own nodes: the seam between a run and an engine.

With ``FederatedRun(deployment=...)`` (e.g. :class:`secureagg.flower.federated.FlowerDeployment`)
a round's sampled clients train where their data is, with the run's own training code
(:class:`~secureagg.fl.pool.RoundTrainer`, rebuilt on the node), the secure aggregation runs over
the engine, and the server gets back only the aggregate and, per client, what its node reports
about its training (a :class:`~secureagg.fl.pool.TrainedClient` without the update): its FedAvg
weight, a failure and its stage (a fixed sentence or the exception's type and stage,
:func:`~secureagg.errors.failure_report` - never the message, which stays in the node's log), the
DP-SGD noise multiplier and sampling rate it used and the privacy events of its DP-SGD steps,
which are re-emitted here into the run's accountants exactly as a pool worker's are. The run then
settles the round as a simulated one: the same FedAvg step, evaluation, history, privacy ledger
and run directory, so ``secureagg audit`` reads it the same way.

Differences from a simulated round, by nature: dropouts are real (a node that does not answer in
time is a dropout of that stage; simulated ``Failures`` are refused), and a client whose node
went silent before it trained has no report (it is silent from the first stage, like a client that
dropped at ``train``), unless the engine says in which stage it went silent
(:attr:`DeployedRound.silent_from`; a SecAgg node trains only at ``masked``, so one that drops
at ``share`` has no report either).

Threat model: a node's report is its own statement about its own DP-SGD; a node that under-reports
weakens only its own records' protection. The update never comes back: it leaves the node only
through the protocol.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from secureagg.errors import ConfigurationError, MalformedMessage
from secureagg.fl import schedule
from secureagg.fl.client import ClientOutcome, LocalPhase
from secureagg.fl.pool import TrainedClient
from secureagg.fl.schedule import RoundSchedule
from secureagg.protocols.base import RoundFactory
from secureagg.transport import SimulationResult
from secureagg.validation import is_int, is_real

if TYPE_CHECKING:
    from secureagg.fl.round_loop import RoundLoop

__all__ = [
    "DeployedRound",
    "NodeRound",
    "RoundDeployment",
    "deployed_round",
    "report_from_json",
    "report_to_json",
]

#: The format of a node's training report.
REPORT_FORMAT = "secureagg-node-report/1"


@dataclass(frozen=True)
class NodeRound:
    """One round to run on an engine: client ``sampled[i]`` is the round's party ``i``."""

    round_number: int
    sampled: tuple[int, ...]
    #: the clients that may train (the others' privacy budget is spent): never asked
    allowed: frozenset[int]
    agg: RoundFactory
    #: the global model's state (public), name -> tensor
    global_state: Mapping[str, Any]
    weighted: bool
    #: the length of the flat update (the run's codec)
    dimension: int
    #: ``sa.simulate``'s per-round seed in a seeded run (then NOT secret), else ``None``
    seed: bytes | None


@dataclass
class DeployedRound:
    """What the engine brings back: each reporting client's training report (no update), the
    round's result (``None`` if it aborted) with the error and the exception, and its seconds."""

    reports: dict[int, TrainedClient] = field(default_factory=dict)
    result: SimulationResult | None = None
    error: str | None = None
    partial: Any = None
    seconds: float = 0.0
    #: client -> the protocol stage its node went silent in (no answer by the deadline, or an
    #: error reply), as the server recorded it; a client without a report and without an entry
    #: here is silent from the first stage
    silent_from: dict[int, str] = field(default_factory=dict)


class RoundDeployment(Protocol):
    def run_round(self, job: NodeRound) -> DeployedRound:
        """Run ``job`` where the clients are; see the module docstring."""


@dataclass
class DeployedOutcome:
    phase: LocalPhase
    result: SimulationResult | None
    error: str | None
    partial: Any
    seconds: float


def deployed_round(
    loop: RoundLoop,
    *,
    round_number: int,
    plan: RoundSchedule,
    agg: RoundFactory,
    global_state: Mapping[str, Any],
    allowed: Callable[[int], tuple[bool, str]],
    seed: bytes | None,
) -> DeployedOutcome:
    """Run round ``round_number`` on ``loop.deployment`` and turn what came back into the local
    phase a simulated round would have had (the run's ``_settle`` does the rest)."""
    deployment = loop.deployment
    if deployment is None:  # pragma: no cover - the caller checks
        raise ConfigurationError("the run has no deployment")
    if float(loop.failures.dropout_rate) > 0 or loop.failures.schedule:
        raise ConfigurationError(
            "simulated dropouts (failures=) do not apply to a deployed run: its dropouts are real"
        )
    phase = LocalPhase()
    verdicts = {c: allowed(c) for c in plan.sampled}
    job = NodeRound(
        round_number=round_number, sampled=tuple(plan.sampled),
        allowed=frozenset(c for c, (ok, _) in verdicts.items() if ok), agg=agg,
        global_state=global_state, weighted=loop.weighting == "examples",
        dimension=loop.codec.size, seed=seed,
    )
    t0 = time.perf_counter()
    out = deployment.run_round(job)
    first = next(iter(agg.dropout_stages), schedule.TRAIN_STAGE)
    for slot, cid in enumerate(plan.sampled):
        ok, note = verdicts[cid]
        if not ok:
            phase.failures.append({"client": cid, "stage": "budget", "error": note})
            phase.silent[slot] = first
            continue
        report = out.reports.get(cid)
        if report is None:  # its node went silent before it trained: a protocol dropout
            phase.silent[slot] = out.silent_from.get(cid, first)
            continue
        outcome = report.absorb_into(loop.privacy)  # the clients' order, as a sequential run
        if loop.privacy is not None:
            loop.privacy.flush()
        phase.outcomes.append(outcome)
        phase.train_seconds[cid] = outcome.seconds
        if outcome.failed:
            phase.failures.append({"client": cid, "stage": outcome.stage, "error": outcome.error})
            phase.silent[slot] = first
    return DeployedOutcome(phase, out.result, out.error, out.partial,
                           out.seconds or time.perf_counter() - t0)


# ---------------------------------------------------------------------------- the node's report


def report_to_json(trained: TrainedClient) -> str:
    """The node's report (everything but the update) as JSON text. Its ``error`` is the
    outcome's, which :func:`~secureagg.fl.client.train_client` already reduced to what may leave
    the node (no exception message)."""
    o = trained.outcome
    return json.dumps({
        "format": REPORT_FORMAT,
        "client": o.client,
        "weight": o.weight,
        "seconds": o.seconds,
        "error": o.error,
        "stage": o.stage,
        "privacy": None if o.privacy is None else dict(o.privacy),
        "events": [[level, event] for level, event in trained.events],
        "noise_multiplier": trained.noise_multiplier,
        "sample_rate": trained.sample_rate,
    }, allow_nan=False)


def report_from_json(text: str, *, client: int) -> TrainedClient:
    """A node's report, read strictly (it came from another machine); ``client`` is the client
    the server asked, and the report must be its."""
    try:
        doc = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise MalformedMessage(f"client {client}'s report is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != REPORT_FORMAT:
        raise MalformedMessage(f"client {client}'s report is not a {REPORT_FORMAT} document")
    if doc.get("client") != client:
        raise MalformedMessage(f"the report of client {client} names client {doc.get('client')}")
    weight: Any = doc.get("weight")
    seconds: Any = doc.get("seconds")
    error: Any = doc.get("error")
    stage: Any = doc.get("stage")
    events: Any = doc.get("events")
    problems = []
    if not is_int(weight) or weight < 0:
        problems.append("weight")
    if not is_real(seconds) or not math.isfinite(float(seconds)) or seconds < 0:
        problems.append("seconds")
    if error is not None and not isinstance(error, str):
        problems.append("error")
    if not isinstance(stage, str):
        problems.append("stage")
    if not isinstance(events, list) or not all(
        isinstance(e, list) and len(e) == 2 and e[0] in ("sample", "user")
        and isinstance(e[1], dict) for e in events
    ):
        problems.append("events")
    for key in ("noise_multiplier", "sample_rate"):
        value = doc.get(key)
        if value is not None and not (is_real(value) and math.isfinite(float(value))):
            problems.append(key)
    privacy = doc.get("privacy")
    if privacy is not None and not isinstance(privacy, dict):
        problems.append("privacy")
    if problems:
        raise MalformedMessage(f"client {client}'s report: bad {', '.join(problems)}")
    outcome = ClientOutcome(
        client=client, update=None, weight=int(weight), seconds=float(seconds), error=error,
        stage=stage, privacy=privacy,
    )
    return TrainedClient(
        outcome=outcome,
        events=tuple((str(level), dict(event)) for level, event in events),
        noise_multiplier=None if doc.get("noise_multiplier") is None
        else float(doc["noise_multiplier"]),
        sample_rate=None if doc.get("sample_rate") is None else float(doc["sample_rate"]),
    )
