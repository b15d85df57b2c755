"""Private ensembles on Flower: each SuperNode holds one party's data and trains its teacher there;
its votes on each batch of public queries leave the node only through SecAgg+, with its share of
distributed discrete noise added before masking.

The server side is :class:`FlowerVotes`, the ``deployment`` of
:meth:`SecureVoteAggregator.answer_deployed <secureagg.ensemble.aggregate.SecureVoteAggregator.
answer_deployed>` (see :mod:`secureagg.ensemble.deployed`): for each batch it maps party ``i`` to
the connected node whose node config says ``partition-id = i``, and runs the batch's one secure
round over the Grid with :class:`~secureagg.flower.server.SecureRounds`. The message at which a
node trains (SecAgg/SecAgg+: its ``masked`` step, see :mod:`secureagg.flower.mod`) carries the
batch's public query inputs (ArrayRecord ``arrays``, array ``queries``) and a ConfigRecord
``config``: ``batch``, ``party``, ``num-queries``, ``vote`` (the vote spec as JSON) and
``malformed``.

The node side is :func:`vote_node`: the ClientApp train function behind
:func:`~secureagg.flower.secureagg_mod`. ``build(context)`` returns the node's
:class:`VoteNode` - the user's teacher factory and ``train(model, loader)``, the node's own data
(its ``partition-id``), the vote spec. At its first vote message the node trains its teacher with
the same code as :func:`secureagg.ensemble.teachers.train_teachers` (with the same ``seed``: the
same teacher, bit for bit) and keeps its weights in ``Context.state`` (ArrayRecord
:data:`TEACHER`; Flower starts a fresh ClientApp process for every message and keeps the context
on the SuperNode), then for every batch it computes its votes, validates them with the vote spec
and returns them to the mod as the update (:data:`~secureagg.flower.mod.UPDATE`: float64,
integer-valued, row-major ``Q*C``), which sends it only masked, noise share included. Its report
(:data:`~secureagg.flower.mod.REPORT`, :func:`~secureagg.ensemble.deployed.report_to_json`) holds
its status, the rule a refused vote broke, its training seconds and failure (the exception's type
and stage, :func:`~secureagg.errors.failure_report`; the message stays in the node's log) - never
a vote. A
malformed vote makes the node decline the batch (``malformed="absent"``; with ``"abstain"`` it
submits the all-zero vote and keeps the reason to itself); a failed training is recorded in
``Context.state`` and reported, and the node takes no part from then on.

Trust domain: the server (querier) is trusted with nothing but the noisy histogram; each node
runs the user's code on its own data. The query inputs are public by definition.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from secureagg.ensemble.deployed import (
    DeployedBatch,
    NodeVoteReport,
    VoteBatchJob,
    report_from_json,
    report_to_json,
    vote_spec_from_json,
)
from secureagg.ensemble.votes import VoteSpec
from secureagg.errors import (
    ConfigurationError,
    InsufficientSurvivors,
    MalformedMessage,
    fixed_message,
)
from secureagg.flower import records
from secureagg.flower.mod import REPORT, UPDATE
from secureagg.flower.server import RoundOutcome, SecureRounds

if TYPE_CHECKING:
    from secureagg.ensemble.teachers import TeacherDP, TeacherSet

__all__ = ["TEACHER", "TEACHER_STATUS", "FlowerVotes", "VoteNode", "vote_node"]

#: Where a node keeps its trained teacher's weights in ``Context.state`` (never sent anywhere).
TEACHER = "secureagg.teacher"
#: Where a node keeps what became of its teacher's training (``party``, ``status`` trained or
#: failed, ``stage``, ``error``, ``seconds``, ``epsilon``).
TEACHER_STATUS = "secureagg.teacher-status"

_log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- server


class FlowerVotes:
    """Runs each batch's secure round over a Flower ``grid``; see the module docstring.

    ``train_deadline``: seconds of the stage in which the nodes vote (and, at their first batch,
    train their teachers); ``stage_deadline``: every other stage's. ``min_nodes`` and
    ``wait_for_nodes``: how many client nodes to wait for, and how long, before a batch.
    """

    def __init__(self, grid: Any, *, train_deadline: float = 300.0, stage_deadline: float = 30.0,
                 identities: frozenset[bytes] | None = None, poll: float = 0.2,
                 wait_for_nodes: float = 120.0, min_nodes: int = 2) -> None:
        self.rounds = SecureRounds(
            grid, protocol=None, train_deadline=train_deadline, stage_deadline=stage_deadline,
            identities=identities, poll=poll, wait_for_nodes=wait_for_nodes,
            min_nodes=min_nodes)
        #: the last batch's round, as the engine recorded it
        self.last: RoundOutcome | None = None

    def run_batch(self, job: VoteBatchJob) -> DeployedBatch:
        from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

        n, q = job.num_parties, int(job.queries.shape[0])
        held = self.rounds.nodes_of_partitions(list(range(n)))
        nodes = [None if p in job.skip else held.get(p) for p in range(n)]
        missing = tuple(p for p in range(n) if p not in job.skip and p not in held)
        queries = ArrayRecord(OrderedDict(queries=Array(np.ascontiguousarray(job.queries))))

        def content(party: int) -> Any:
            return RecordDict({"arrays": queries, "config": ConfigRecord({
                "batch": job.batch, "party": party, "num-queries": q, "vote": job.vote,
                "malformed": job.malformed})})

        outcome = self.rounds.run_round(
            job.batch, [(q * job.num_classes,)], content, nodes=nodes, agg=job.agg,
            seed=job.seed, session_id=job.session_id, weighted=False)
        self.last = outcome
        rec = outcome.record
        reports, bad = {}, {}
        for party, text in outcome.reports.items():
            try:
                reports[party] = report_from_json(text, party=party, batch=job.batch)
            except MalformedMessage as exc:
                bad[party] = str(exc)
        result = outcome.simulation_result(seeded=job.seed is not None)
        partial = outcome.exception
        if isinstance(partial, InsufficientSurvivors):  # what the server had seen: on record
            vars(partial).update(transcript=list(rec.transcript), downlink=list(rec.downlink))
        return DeployedBatch(
            result=result, reports=reports, partial=partial,
            silent_from=outcome.silent_from(getattr(job.agg, "dropout_stages", ()), n),
            missing=missing, bad_reports=bad)


# ------------------------------------------------------------------------------------ node


@dataclass(frozen=True)
class VoteNode:
    """What a party's node holds: the user's ``make_teacher()`` and ``train(model, loader)``
    (``train(model, loader, optimizer)`` with ``optimizer=``; DP-SGD with ``dp=``, as
    :func:`~secureagg.ensemble.teachers.train_teachers`), its own ``loader``, the ``spec`` of its
    votes, and optionally ``votes(model, queries) -> (Q, C)`` vote matrix (default: the spec's
    encoding of the teacher's softmax, as :meth:`TeacherSet.predict_proba` computes it). ``seed``
    makes the teacher's initialisation and data order (and DP-SGD noise: then NOT private)
    reproducible: tests and benchmarks only."""

    make_teacher: Callable[[], Any]
    train: Callable[..., Any]
    loader: Any
    spec: VoteSpec
    optimizer: Callable[[Any], Any] | None = None
    dp: TeacherDP | None = None
    seed: bytes | int | None = None
    votes: Callable[[Any, npt.NDArray[Any]], npt.ArrayLike] | None = None


def _teacher(node: VoteNode, party: int, context: Any) -> tuple[TeacherSet, NodeVoteReport]:
    """The node's teacher (trained now, at its first vote, or restored from ``Context.state``)
    and the report's teacher fields."""
    from flwr.app import ArrayRecord, ConfigRecord

    from secureagg.dp.torch_import import require_torch
    from secureagg.ensemble.teachers import TeacherSet, train_teacher_of, warm_up_training

    status = context.state.config_records.get(TEACHER_STATUS)
    if status is None or status.get("party") != party:
        startup = warm_up_training(dp_sgd=node.dp is not None)  # timed apart from training
        teachers = train_teacher_of(party, node.make_teacher, node.train, node.loader,
                                    optimizer=node.optimizer, dp=node.dp, seed=node.seed)
        seconds = float(teachers.train_seconds[party])
        saved: dict[str, Any] = {"party": party, "seconds": seconds, "startup": startup}
        if teachers.failures:
            failure = teachers.failures[0]
            saved.update(status="failed", stage=str(failure["stage"]),
                         error=str(failure["error"]))
        else:
            saved["status"] = "trained"
            epsilon = teachers.epsilon(party)
            if epsilon is not None:
                saved["epsilon"] = float(epsilon)
            context.state.array_records[TEACHER] = ArrayRecord(
                torch_state_dict=teachers.teachers[party].state_dict())
        context.state.config_records[TEACHER_STATUS] = ConfigRecord(saved)
        trained = True
    else:
        saved = dict(status)
        trained = False
        restored: dict[int, Any] = {}
        record = context.state.array_records.get(TEACHER)
        if saved.get("status") == "trained" and record is not None:
            with require_torch().random.fork_rng(devices=[]):  # the node's RNG untouched
                model = node.make_teacher()
            model.load_state_dict(record.to_torch_state_dict())
            restored[party] = model.eval()
        teachers = TeacherSet(teachers=restored, failures=(), train_seconds={}, wall_seconds=0.0,
                              num_parties=1, workers=1, start_method="none (restored)",
                              seeded=node.seed is not None)
    failed = saved.get("status") != "trained" or party not in teachers.teachers
    epsilon = saved.get("epsilon")
    report = NodeVoteReport(
        party=party, batch=-1, status="failed" if failed else "voted",
        reason=str(saved.get("error", "no teacher")) if failed else None,
        stage=str(saved.get("stage", "train")) if failed else None, trained=trained,
        train_seconds=float(saved["seconds"]) if trained else None,
        startup_seconds=float(saved["startup"]) if trained else None,
        teacher_epsilon=float(epsilon) if isinstance(epsilon, float) else None)
    return teachers, report


def vote_node(build: Callable[[Any], VoteNode]) -> Callable[[Any, Any], Any]:
    """The ClientApp train function of a deployed private ensemble (module docstring):
    ``build(context)`` returns the node's :class:`VoteNode`; the node votes as the party of its
    ``partition-id``."""

    def train(message: Any, context: Any) -> Any:
        import dataclasses

        from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

        config = message.content.config_records.get("config")
        arrays = message.content.array_records.get("arrays")
        if config is None or arrays is None or "queries" not in arrays:
            raise fixed_message(MalformedMessage(
                "a vote message carries the ConfigRecord 'config' and the ArrayRecord 'arrays' "
                "with the array 'queries'"))
        party, batch = records.int_field(config, "party"), records.int_field(config, "batch")
        count = records.int_field(config, "num-queries")
        server_spec = vote_spec_from_json(records.field(config, "vote", str))
        malformed = records.field(config, "malformed", str)
        partition = context.node_config.get("partition-id")
        if partition != party:
            raise fixed_message(ConfigurationError(  # public facts: the server named both
                f"this node holds partition {partition}; it was asked to vote as party {party}"))
        queries = arrays["queries"].numpy()
        if queries.ndim < 1 or queries.shape[0] != count:
            raise fixed_message(MalformedMessage(  # the public queries' shape
                f"the batch has {count} queries, its inputs "
                f"{queries.shape[0] if queries.ndim else 0} rows"))
        node = build(context)
        t0 = time.perf_counter()
        teachers, report = _teacher(node, party, context)
        report = dataclasses.replace(report, batch=batch)
        ints = None
        if report.status == "voted":
            ints, reason = _votes(node, server_spec, teachers, party, queries)
            if ints is None and malformed == "abstain":  # the server cannot tell; logged here
                _log.warning("party %s, batch %s: vote refused (%s); abstaining", party, batch,
                             reason)
                ints = np.zeros((count, node.spec.num_classes), dtype=np.int64)
            elif ints is None:
                report = dataclasses.replace(report, status="declined", reason=reason)
        content = RecordDict({REPORT: ConfigRecord({"report": report_to_json(report)})})
        if ints is not None:
            content.array_records[UPDATE] = ArrayRecord(OrderedDict(
                update=Array(np.ascontiguousarray(ints.reshape(-1), dtype=np.float64))))
        _log.info("party %s, batch %s: %s in %.2f s", party, batch, report.status,
                  time.perf_counter() - t0)
        return Message(content, reply_to=message)

    return train


def _votes(node: VoteNode, server_spec: VoteSpec, teachers: TeacherSet, party: int,
           queries: npt.NDArray[Any]) -> tuple[npt.NDArray[np.int64] | None, str]:
    """The node's integer votes validated with its vote spec, or ``None`` and why not."""
    if node.spec != server_spec:
        return None, "this node's vote spec differs from the server's"
    try:
        model = teachers.teachers[party]
        votes = (node.votes(model, queries) if node.votes is not None
                 else node.spec.encode(teachers.predict_proba(queries)[party]))
    except Exception as exc:  # the user's model or vote function failed: no vote
        _log.warning("party %s: no vote", party, exc_info=True)
        return None, f"no vote: {type(exc).__name__}"
    ints, reason = node.spec.validate(votes, num_queries=int(queries.shape[0]))
    return ints, reason or ""
