"""A :class:`~secureagg.fl.FederatedRun` on Flower: each client trains on its own SuperNode.

The server side is :class:`FlowerDeployment`, the run's ``deployment=`` (see
:mod:`secureagg.fl.deployed`): every round, the run's sampled clients are mapped to the nodes that
hold their partitions (``partition-id`` in each node's config), and one secure round runs over
Flower (:class:`~secureagg.flower.server.SecureRounds`) with the run's own aggregator - its
protocol, its DP wrappers and its privacy accountant. The message at which a node trains (see
:mod:`secureagg.flower.mod`: SecAgg/SecAgg+ at ``masked``, the others first) carries the
global model and the round number to each node.

The node side is :func:`node_trainer`: the ClientApp's train function. It rebuilds the same run on
the node from the same task (``build(context)``, without a run directory), trains its own client
with the run's code (:class:`~secureagg.fl.pool.RoundTrainer`: the same seeds, the same DP-SGD)
and returns the flat update and a report (:func:`~secureagg.fl.deployed.report_to_json`) to
:func:`~secureagg.flower.mod.secureagg_mod`, which sends the update only through the protocol and
the report (weight, failure, DP-SGD events) in the clear. So a deployed run records, accounts and
applies each round as the simulated run does, and with the same seed gives the same model.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from secureagg.errors import ConfigurationError, MalformedMessage, fixed_message
from secureagg.fl.deployed import (
    DeployedRound,
    NodeRound,
    report_from_json,
    report_to_json,
)
from secureagg.fl.pool import RoundTrainer, train_captured
from secureagg.flower.mod import REPORT, UPDATE
from secureagg.flower.server import RoundOutcome, SecureRounds
from secureagg.transport import seeded_round

__all__ = ["FlowerDeployment", "node_trainer"]


class FlowerDeployment:
    """Runs a federated run's rounds over a Flower ``grid``; see the module docstring.

    ``train_deadline``: seconds of the stage in which the nodes train (SecAgg/SecAgg+: ``masked``;
    the others: the first); ``stage_deadline``: every other stage's.
    """

    def __init__(
        self,
        grid: Any,
        *,
        train_deadline: float = 300.0,
        stage_deadline: float = 30.0,
        identities: frozenset[bytes] | None = None,
        poll: float = 0.2,
        wait_for_nodes: float = 120.0,
        min_nodes: int = 2,
    ) -> None:
        self.rounds = SecureRounds(
            grid, protocol=None, train_deadline=train_deadline,
            stage_deadline=stage_deadline, identities=identities, poll=poll,
            wait_for_nodes=wait_for_nodes, min_nodes=min_nodes,
        )
        self.last: RoundOutcome | None = None

    def run_round(self, job: NodeRound) -> DeployedRound:
        from flwr.app import ArrayRecord, ConfigRecord, RecordDict

        t0 = time.perf_counter()
        held = self.rounds.nodes_of_partitions(job.sampled)
        nodes = [held.get(c) if c in job.allowed else None for c in job.sampled]
        arrays = ArrayRecord(torch_state_dict=OrderedDict(
            (k, v.detach().cpu()) for k, v in job.global_state.items()))
        session_id: bytes | None = None
        round_seed: bytes | None = None
        if job.seed is not None:  # as sa.simulate derives them: a seeded run is NOT secret
            round_seed, session_id = seeded_round(job.seed, job.round_number)

        def content(party: int) -> Any:
            return RecordDict({"arrays": arrays, "config": ConfigRecord(
                {"round": job.round_number, "client": job.sampled[party]})})

        outcome = self.rounds.run_round(
            job.round_number, [(job.dimension,)], content, nodes=nodes, agg=job.agg,
            seed=round_seed, session_id=session_id, weighted=job.weighted,
        )
        self.last = outcome
        reports = {}
        for party, text in outcome.reports.items():
            client = job.sampled[party]
            try:
                reports[client] = report_from_json(text, client=client)
            except MalformedMessage as exc:
                outcome.record.rejected.append(
                    {"stage": "train", "sender": party, "error": f"MalformedMessage: {exc}"})
        result = outcome.simulation_result(seeded=job.seed is not None)
        silent_from = {  # by the run's client ids
            job.sampled[party]: stage for party, stage in outcome.silent_from(
                getattr(job.agg, "dropout_stages", ()), len(job.sampled)).items()}
        return DeployedRound(reports=reports, result=result, error=outcome.error,
                             partial=outcome.exception, seconds=time.perf_counter() - t0,
                             silent_from=silent_from)


def node_trainer(build: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    """The ClientApp train function of a deployed federated run: ``build(context)`` returns the
    run (a :class:`~secureagg.fl.FederatedRun` built from the same task and settings as the
    server's, without a run directory); the node trains the client of its ``partition-id``."""

    def train(message: Any, context: Any) -> Any:
        from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

        config = message.content["config"]
        client = int(config["client"])
        partition = context.node_config.get("partition-id")
        if partition != client:
            raise fixed_message(ConfigurationError(  # public facts: the server named both
                f"this node holds partition {partition}; it was asked to train client {client}"))
        run = build(context)
        state = message.content["arrays"].to_torch_state_dict()
        run.model.load_state_dict(state)
        trainer = RoundTrainer(
            round_number=int(config["round"]), model=run.model,
            global_state={k: v.detach().clone() for k, v in run.model.state_dict().items()},
            codec=run.codec, train=run.train, loaders=run.client_loaders, weights=run.weights,
            optimizer_factory=run.optimizer_factory, privacy=run.privacy,
            torch_seed_source=run.torch_seed_source,
        )
        with run.threads():
            trained = train_captured(trainer, client)
        content = RecordDict({REPORT: ConfigRecord({
            "report": report_to_json(trained), "weight": float(trained.outcome.weight)})})
        update = trained.outcome.update
        if update is not None and not trained.outcome.failed:
            content.array_records[UPDATE] = ArrayRecord(OrderedDict(update=Array(update)))
        return Message(content, reply_to=message)

    return train
