"""Secure GNMax whose votes are computed on the parties' own nodes: the seam to an engine.

:meth:`SecureVoteAggregator.answer_deployed(queries, deployment)
<secureagg.ensemble.aggregate.SecureVoteAggregator.answer_deployed>` answers one batch of public
queries whose votes are cast where the teachers are: each party's node (e.g. a Flower SuperNode,
:mod:`secureagg.flower.ensemble`) holds its own private data and its own teacher, receives the
batch's public query inputs, computes and validates its votes, and submits them only through the
batch's one SecAgg+ round, with its share of distributed discrete noise added before masking
(the round spec's ``integer_noise`` option: every node rebuilds the same aggregator from the
spec and adds the same share as the in-process round would). The server gets back only the
round's result - the noisy histogram - and, per node, its report (:class:`NodeVoteReport`: voted,
declined with the rule its vote broke, or no teacher because its training failed; its training
seconds). It never gets a vote, a teacher or a weight.

The batch is admitted against the budget, accounted and recorded by the same code as an
in-process batch (:class:`~secureagg.ensemble.aggregate.BatchResult`, the ledger, the
transcript lines): the accountant counts the real survivors of the round; a round that aborts
(fewer than ``min_survivors`` parties in the sum) releases nothing and spends nothing. With the
same ``seed`` (tests only: NOT private) the deployed batch releases the same noisy histogram as
:meth:`~secureagg.ensemble.aggregate.SecureVoteAggregator.aggregate` on the same teachers' votes,
bit for bit: the round ids, the session id and every party's randomness are derived as
:func:`secureagg.simulate` derives them.

What differs by nature from an in-process batch:

- dropouts are real: a node that misses a stage's deadline or fails is a dropout of that stage
  (``BatchResult.dropped``: party -> stage);
- a node validates its own votes, so the server learns that a vote was refused only from the
  node's report (``BatchResult.refused``, the rule broken, never the vote); with
  ``malformed="abstain"`` the node submits the all-zero vote and says nothing, as in-process the
  server cannot tell;
- a party whose node has no teacher (its training failed, reported in
  :attr:`SecureVoteAggregator.node_teachers`) is not asked again: it is ``absent`` from then on,
  as is a party for which no node is connected.

Threat model: a node's report is its own statement; a node that lies in it can only hide its
own absence or refusal (the sum, the survivors and the accounting come from the protocol, not
from the reports). A report is parsed strictly; a malformed one is ignored.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from secureagg.ensemble.votes import VoteSpec
from secureagg.errors import ConfigurationError, InsufficientSurvivors, MalformedMessage
from secureagg.protocols.base import RoundFactory
from secureagg.transport import SeededRunWarning, SimulationResult, seeded_round
from secureagg.validation import is_int

if TYPE_CHECKING:
    from secureagg.ensemble.aggregate import BatchResult, SecureVoteAggregator

__all__ = [
    "REPORT_FORMAT",
    "DeployedBatch",
    "NodeVoteReport",
    "VoteBatchJob",
    "VoteDeployment",
    "answer_batch",
    "report_from_json",
    "report_to_json",
    "vote_spec_from_json",
    "vote_spec_to_json",
]

#: The format of a node's report about one batch.
REPORT_FORMAT = "secureagg-vote-report/1"
_STATUSES = ("voted", "declined", "failed")


@dataclass(frozen=True)
class VoteBatchJob:
    """One batch to answer on an engine: party ``i`` of the round is the node holding partition
    ``i``; the parties in ``skip`` are not asked (no teacher)."""

    batch: int
    #: the batch's public query inputs, ``(Q, ...)`` (what every node's teacher is asked about)
    queries: npt.NDArray[Any]
    num_parties: int
    num_classes: int
    agg: RoundFactory
    #: the vote spec (public, :func:`vote_spec_to_json`): a node whose own spec differs declines
    vote: str
    malformed: str
    skip: frozenset[int]
    #: ``sa.simulate``'s round seed in a seeded run (then NOT secret), else ``None``
    seed: bytes | None
    session_id: bytes


@dataclass(frozen=True)
class NodeVoteReport:
    """What a party's node says about one batch (no vote, no weight): ``voted``; ``declined``
    (its vote broke ``reason``, a rule of :meth:`VoteSpec.validate`, or its vote spec differs
    from the server's); ``failed`` (it has no teacher: its training failed at ``stage``, with
    ``reason``). ``trained``: it trained its teacher for this batch (its first), taking
    ``train_seconds`` after ``startup_seconds`` of one-time imports in its fresh process;
    ``teacher_epsilon``: its teacher's DP-SGD ε, if it trained with DP-SGD."""

    party: int
    batch: int
    status: Literal["voted", "declined", "failed"]
    reason: str | None = None
    stage: str | None = None
    trained: bool = False
    train_seconds: float | None = None
    startup_seconds: float | None = None
    teacher_epsilon: float | None = None


@dataclass
class DeployedBatch:
    """What the engine brings back: the round's result (``None`` if it did not complete, then
    ``partial`` is the exception), the reports by party, the stage in which each silent party
    went silent, and the parties without a node."""

    result: SimulationResult | None
    reports: dict[int, NodeVoteReport] = field(default_factory=dict)
    partial: Exception | None = None
    silent_from: dict[int, str] = field(default_factory=dict)
    missing: tuple[int, ...] = ()
    #: reports that did not parse (party -> why): ignored
    bad_reports: dict[int, str] = field(default_factory=dict)


class VoteDeployment(Protocol):
    def run_batch(self, job: VoteBatchJob) -> DeployedBatch:
        """Run ``job``'s one secure round where the teachers are; see the module docstring."""


# ------------------------------------------------------------------------------- the records


def vote_spec_to_json(spec: VoteSpec) -> str:
    """The vote spec as canonical JSON (what a node compares its own spec with)."""
    return json.dumps({"kind": spec.kind, "num_classes": spec.num_classes, "top_k": spec.top_k,
                       "clip": spec.clip, "clip_norm": spec.clip_norm,
                       "resolution": spec.resolution}, sort_keys=True, separators=(",", ":"))


def vote_spec_from_json(text: str) -> VoteSpec:
    """:func:`vote_spec_to_json`'s inverse; refuses anything else (``MalformedMessage``)."""
    try:
        values = json.loads(text)
    except (TypeError, ValueError):
        raise MalformedMessage("the vote spec is not JSON") from None
    keys = {"kind", "num_classes", "top_k", "clip", "clip_norm", "resolution"}
    if not isinstance(values, dict) or set(values) != keys:
        raise MalformedMessage(f"the vote spec must have exactly the keys {sorted(keys)}")
    try:
        return VoteSpec(**values)
    except ConfigurationError as exc:
        raise MalformedMessage(f"the vote spec is invalid: {exc}") from None


def report_to_json(report: NodeVoteReport) -> str:
    return json.dumps({"format": REPORT_FORMAT, "party": report.party, "batch": report.batch,
                       "status": report.status, "reason": report.reason, "stage": report.stage,
                       "trained": report.trained, "train_seconds": report.train_seconds,
                       "startup_seconds": report.startup_seconds,
                       "teacher_epsilon": report.teacher_epsilon}, sort_keys=True)


def report_from_json(text: str, *, party: int, batch: int) -> NodeVoteReport:
    """A node's report, read strictly (it came from another party): the format, the party and
    the batch it names must be the expected ones; ``MalformedMessage`` otherwise."""
    try:
        values = json.loads(text)
    except (TypeError, ValueError):
        raise MalformedMessage("the report is not JSON") from None
    keys = {"format", "party", "batch", "status", "reason", "stage", "trained", "train_seconds",
            "startup_seconds", "teacher_epsilon"}
    if not isinstance(values, dict) or set(values) != keys:
        raise MalformedMessage(f"a vote report has exactly the keys {sorted(keys)}")
    problems = []
    if values["format"] != REPORT_FORMAT:
        problems.append(f"format {values['format']!r} is not {REPORT_FORMAT!r}")
    if values["party"] != party or not is_int(values["party"]):
        problems.append(f"the report is party {values['party']!r}'s, expected {party}")
    if values["batch"] != batch or not is_int(values["batch"]):
        problems.append(f"the report is for batch {values['batch']!r}, expected {batch}")
    if values["status"] not in _STATUSES:
        problems.append(f"status must be one of {_STATUSES}, got {values['status']!r}")
    for key in ("reason", "stage"):
        if values[key] is not None and not (isinstance(values[key], str)
                                            and len(values[key]) <= 2000):
            problems.append(f"{key} must be null or a string of at most 2000 characters")
    if not isinstance(values["trained"], bool):
        problems.append("trained must be true or false")
    for key in ("train_seconds", "startup_seconds", "teacher_epsilon"):
        value = values[key]
        if value is not None and not (isinstance(value, int | float) and not isinstance(
                value, bool) and math.isfinite(value) and value >= 0):
            problems.append(f"{key} must be null or a finite number >= 0")
    if problems:
        raise MalformedMessage("; ".join(problems))
    return NodeVoteReport(
        party=party, batch=batch, status=values["status"], reason=values["reason"],
        stage=values["stage"], trained=values["trained"],
        **{key: None if values[key] is None else float(values[key])
           for key in ("train_seconds", "startup_seconds", "teacher_epsilon")},
    )


# ------------------------------------------------------------------------------ one batch


def _queries(queries: object) -> npt.NDArray[Any]:
    try:
        x = np.asarray(queries)
    except (TypeError, ValueError):
        raise ConfigurationError("queries must be an array of public query inputs") from None
    if x.ndim < 1 or x.shape[0] < 1 or x.dtype.kind not in "biuf":
        raise ConfigurationError(
            f"queries must be a numeric array of at least one row (one per query), got shape "
            f"{x.shape} and dtype {x.dtype}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ConfigurationError("queries hold NaN or Inf")
    return x


def answer_batch(agg: SecureVoteAggregator, queries: object,
                 deployment: VoteDeployment) -> BatchResult:
    """:meth:`SecureVoteAggregator.answer_deployed`: see the module docstring."""
    x = _queries(queries)
    q = int(x.shape[0])
    admitted = agg._admit(q)
    if not isinstance(admitted, tuple):
        return admitted
    batch, worst = admitted
    round_seed: bytes | None = None
    session_id = agg._session_id
    if agg.seed is not None:  # as sa.simulate derives them: a seeded run is NOT secret
        warnings.warn("seeded simulation: keys, masks and noise of the deployed batch are "
                      "reproducible from the seed and therefore NOT secret; use seed= only for "
                      "tests and benchmarks", SeededRunWarning, stacklevel=3)
        round_seed, session_id = seeded_round(agg.seed, batch)
    no_teacher = frozenset(p for p, t in agg.node_teachers.items() if t.get("status") == "failed")
    job = VoteBatchJob(
        batch=batch, queries=x, num_parties=agg.num_parties, num_classes=agg.num_classes,
        agg=agg._agg, vote=vote_spec_to_json(agg.spec), malformed=agg.malformed,
        skip=no_teacher, seed=round_seed, session_id=session_id,
    )
    t0 = time.perf_counter()
    got = deployment.run_batch(job)
    seconds = time.perf_counter() - t0
    refused: dict[int, str] = {}
    absent: set[int] = set(no_teacher) | set(got.missing)
    for party, report in sorted(got.reports.items()):
        if report.trained or report.status == "failed":
            agg.node_teachers[party] = {
                "status": "failed" if report.status == "failed" else "trained",
                "stage": report.stage if report.status == "failed" else None,
                "error": report.reason if report.status == "failed" else None,
                "batch": batch, "train_seconds": report.train_seconds,
                "startup_seconds": report.startup_seconds,
                "teacher_epsilon": report.teacher_epsilon,
            }
        if report.status == "failed":
            absent.add(party)
        elif report.status == "declined":
            refused[party] = report.reason or "declined"
    survivors = set() if got.result is None else set(got.result.survivors)
    unheard = set(range(agg.num_parties)) - survivors - set(refused) - absent - set(
        got.silent_from) - set(got.reports)
    absent |= unheard  # asked, and never answered nor timed out: e.g. a node that left
    silent = {p: agg.silent_stage for p in (set(refused) | absent) - survivors}
    dropped = {p: s for p, s in got.silent_from.items() if p not in silent}
    outcome: SimulationResult | InsufficientSurvivors
    if got.result is not None:
        outcome = got.result
    elif isinstance(got.partial, InsufficientSurvivors):
        outcome = got.partial
    else:  # not an abort for too few parties: misconfiguration or a protocol failure
        raise got.partial if got.partial is not None else ConfigurationError(
            f"batch {batch}: the deployment returned neither a result nor an error")
    return agg._settle(batch, q, worst, outcome, seconds=seconds, refused=refused,
                       absent=tuple(sorted(absent - survivors)), dropped=dropped, silent=silent)


def teacher_summary(node_teachers: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """JSON-ready: which parties' nodes trained a teacher, the failures, and the training
    seconds the nodes reported (the slowest is the wall time of training in parallel, without
    the engine's overheads and the one-time imports of each node's fresh process - the slowest
    of those is ``max_startup_seconds`` - and their sum what one machine would have spent
    training one after the other)."""
    seconds = {p: t.get("train_seconds") for p, t in node_teachers.items()}
    timed = [s for s in seconds.values() if isinstance(s, float)]
    startup = [t.get("startup_seconds") for t in node_teachers.values()]
    return {
        "max_startup_seconds": max((s for s in startup if isinstance(s, float)), default=None),
        "trained": sorted(p for p, t in node_teachers.items() if t.get("status") == "trained"),
        "failures": [{"party": p, "stage": t.get("stage"), "error": t.get("error")}
                     for p, t in sorted(node_teachers.items()) if t.get("status") == "failed"],
        "train_seconds": {str(p): s for p, s in sorted(seconds.items())},
        "max_train_seconds": max(timed) if timed else None,
        "sum_train_seconds": sum(timed) if timed else None,
    }
