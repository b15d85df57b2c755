"""``SecureAggWorkflow``: our secure aggregation as the fit workflow of Flower's legacy
``DefaultWorkflow``, in place of Flower's ``SecAggPlusWorkflow``.

For a ServerApp written against Flower's legacy API (a ``flwr.server.strategy`` strategy inside a
``LegacyContext``)::

    context = LegacyContext(context=context, config=ServerConfig(num_rounds=10),
                            strategy=FedAvg(...))
    workflow = DefaultWorkflow(fit_workflow=SecureAggWorkflow(
        "secagg+", options={"clip": 1.0, "max_weight": 1000}))
    workflow(grid, context)

and, on the nodes, ``ClientApp(client_fn=..., mods=[secureagg_mod])`` around the user's unchanged
NumPyClient. Each fit round is then one of our rounds
(:class:`~secureagg.flower.server.SecureRounds`, one per workflow and run):

1. the strategy's ``configure_fit`` samples the nodes and writes their FitIns, exactly as for
   Flower's own fit workflow; the sampled client nodes are the round's parties, party ``i`` the
   ``i``-th of them. A sampled node that is not a client (the HE key holder: it is a node of the
   run like any other for Flower's client manager) is left out; one that never said what it is,
   or (malicious mode) whose identity key is not admitted, is left out as a failure;
2. the party's message of the stage where the protocol first uses the update (SecAgg/SecAgg+:
   ``masked``, as in Flower's SecAgg+ workflow; the others: its first message) carries its FitIns
   (Flower's legacy ``fitins.*`` records) beside ours:
   :func:`~secureagg.flower.mod.secureagg_mod` calls the user's ``fit`` with them and feeds
   ``returned weights - received weights`` (weighted by ``num_examples`` when ``weighted``) to
   the protocol;
3. the server obtains only the weighted sum of the updates and the total weight (masked,
   encrypted or noised as the protocol says) and computes the new global weights
   ``global + server_lr * sum / total_weight`` in each array's dtype;
4. as in Flower's SecAgg+ workflow, only the aggregate reaches the strategy: ``aggregate_fit``
   gets one FitRes per surviving node, every one carrying those same new weights
   (``num_examples=1``, no metrics - the nodes' FitRes metrics never leave the nodes), so any
   averaging strategy (FedAvg and its kin) returns them unchanged up to the float rounding of
   averaging identical arrays, and a server-optimiser strategy (FedAdam, FedAvgM...) takes its
   step towards them. The nodes that dropped out of the round (a missed deadline, an error, a
   refused reply) and those left out in 1 are passed as ``failures``: a strategy with
   ``accept_failures=False`` then keeps the global model, as it would in Flower.

A round that aborts (fewer survivors than the protocol's threshold, fewer than two eligible
nodes, a number of nodes for which the protocol has no secure parameters, or an aggregate that
is not finite) leaves the global model exactly as it was, is logged, and does not call
``aggregate_fit`` (Flower's SecAgg+ workflow halts the same way); the run goes on. Under DP, the
round that would spend more than ``max_epsilon`` is refused before anything is sent, and every
later fit round is skipped (``DefaultWorkflow`` still runs its evaluation rounds). Every round's
record is in :attr:`SecureAggWorkflow.rounds` (the entries of
:class:`~secureagg.flower.strategy.SecureFedAvg`). Evaluation is Flower's, unchanged: it sees the
global model, which is public.

Invariants: the workflow never sends a node a plain ``train`` message (the mod would refuse it),
so no code path asks a node for its update or weights in the clear; the FitRes handed to the
strategy hold nothing but the public new global model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from logging import INFO, WARNING
from typing import Any

from secureagg.aggregators import make_aggregator
from secureagg.errors import ConfigurationError, InsufficientSurvivors, PrivacyBudgetExceeded
from secureagg.flower.server import RoundOutcome, SecureRounds, apply_mean
from secureagg.flower.strategy import SecureFedAvg
from secureagg.protocols.base import RoundFactory

try:
    import flwr.compat.common.recorddict_compat as compat
    from flwr.common import (
        Code,
        FitRes,
        Status,
        log,
        ndarrays_to_parameters,
        parameters_to_ndarrays,
    )
    from flwr.server.compat import LegacyContext
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey
except ImportError as exc:  # pragma: no cover - the flower extra is missing
    raise ImportError(
        "secureagg.flower needs Flower: pip install 'secureagg[flower]'"
    ) from exc

__all__ = ["SecureAggWorkflow"]

BUDGET_SPENT = ("the privacy budget (max_epsilon) would be exceeded: nothing more is trained "
                "or released")


class SecureAggWorkflow:
    """The fit workflow of ``DefaultWorkflow(fit_workflow=...)``; see the module docstring.

    ``protocol``/``options``: :func:`secureagg.make_aggregator`'s (``"secagg+"``, ``"ckks"``,
    ...; ``clip=``, ``max_weight=``, ``threat=``, ``central_dp=``, ``distributed_dp=``...).
    ``train_deadline`` is the seconds of the stage in which the nodes train (SecAgg/SecAgg+:
    ``masked``; the others: the first), ``stage_deadline`` every other stage's. ``identities``
    is the admitted nodes' public identity keys (malicious mode). With ``central_dp`` or
    ``distributed_dp`` in ``options``, one :class:`~secureagg.dp.PrivacyAccountant` (``delta``,
    ``max_epsilon``) composes every round's release, and each round's entry carries its report.
    """

    def __init__(
        self,
        protocol: str = "secagg+",
        *,
        options: Mapping[str, Any] | None = None,
        weighted: bool = True,
        server_lr: float = 1.0,
        train_deadline: float = 120.0,
        stage_deadline: float = 30.0,
        identities: frozenset[bytes] | None = None,
        poll: float = 0.2,
        wait_for_nodes: float = 60.0,
        delta: float = 1e-5,
        max_epsilon: float | None = None,
    ) -> None:
        self.protocol = protocol
        self.options = dict(options or {})
        self.weighted = bool(weighted)
        self.server_lr = float(server_lr)
        self.train_deadline = float(train_deadline)
        self.stage_deadline = float(stage_deadline)
        self.identities = identities
        self.poll = float(poll)
        self.wait_for_nodes = float(wait_for_nodes)
        self.privacy: Any = None
        if any(k in self.options for k in ("distributed_dp", "central_dp")):
            from secureagg.dp.accounting import PrivacyAccountant

            self.privacy = PrivacyAccountant(delta=delta, max_epsilon=max_epsilon)
        self.malicious = self.options.get("threat") == "malicious"
        if self.malicious and not identities:
            raise ConfigurationError(
                "malicious mode needs the admitted nodes' identity keys (identities=...)")
        #: One entry per fit round, as ``SecureFedAvg.rounds``'s, plus ``strategy`` (whether
        #: ``aggregate_fit`` returned parameters) and ``left_out`` (sampled nodes that were not
        #: parties, and why); a round skipped after the privacy budget has status ``skipped``.
        self.rounds: list[dict[str, Any]] = []
        self.on_round: Callable[[dict[str, Any]], None] | None = None
        #: Why training stopped (the privacy budget), if it did: later fit rounds are skipped.
        self.stopped: str | None = None
        self.secure: SecureRounds | None = None

    def _secure_rounds(self, grid: Any) -> SecureRounds:
        """This workflow's :class:`SecureRounds` for ``grid`` (built at the first call with it:
        one session, and one ``hello`` per node, for the run)."""
        if self.secure is None or self.secure.grid is not grid:
            # protocol=None: each round's aggregator is built here for its number of parties
            # (the strategy decides it), and handed to run_round.
            self.secure = SecureRounds(
                grid, protocol=None, options=self.options, weighted=self.weighted,
                train_deadline=self.train_deadline, stage_deadline=self.stage_deadline,
                poll=self.poll, identities=self.identities, privacy=self.privacy,
                wait_for_nodes=self.wait_for_nodes,
            )
        return self.secure

    def aggregator(self, num_clients: int) -> RoundFactory:
        """The round's aggregator for ``num_clients`` parties (the strategy decides how many)."""
        extra = {} if self.privacy is None else {"privacy": self.privacy}
        return make_aggregator(self.protocol, num_clients=num_clients, **self.options, **extra)

    def __call__(self, grid: Any, context: Any) -> None:
        """One fit round of ``DefaultWorkflow``: the round number and the global parameters
        from ``context.state``, the new parameters written back there."""
        if not isinstance(context, LegacyContext):
            raise TypeError(f"Expect a LegacyContext, but get {type(context).__name__}.")
        cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
        current_round = int(cfg[WorkflowKey.CURRENT_ROUND])  # type: ignore[arg-type]
        if self.stopped is not None:
            log(WARNING, "fit round %s skipped: %s", current_round, self.stopped)
            self._record({"round": current_round, "status": "skipped", "error": self.stopped})
            return
        parameters = compat.arrayrecord_to_parameters(
            context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        instructions = context.strategy.configure_fit(
            current_round, parameters, context.client_manager)
        if not instructions:
            log(INFO, "configure_fit: no clients selected, cancel")
            return
        log(INFO, "configure_fit: strategy sampled %s nodes (out of %s)", len(instructions),
            context.client_manager.num_available())
        secure = self._secure_rounds(grid)
        secure.meet()
        proxies: list[Any] = []
        fitins: list[Any] = []
        failures: list[tuple[Any, Any] | BaseException] = []
        left_out: dict[str, str] = {}
        for proxy, ins in instructions:
            info = secure.nodes.get(proxy.node_id)
            reason = None
            if info is None:
                reason = "did not say what it is (hello)"
            elif info.role != "client":
                left_out[str(proxy.node_id)] = f"not a client ({info.role})"
                continue
            elif self.malicious and info.identity not in (self.identities or ()):
                reason = "its identity key is not admitted"
            if reason is not None:
                left_out[str(proxy.node_id)] = reason
                failures.append(Exception(f"node {proxy.node_id}: {reason}"))
                continue
            proxies.append(proxy)
            fitins.append(ins)
        current = parameters_to_ndarrays(parameters)
        shapes = [tuple(int(d) for d in a.shape) for a in current]

        def train_content(party: int) -> Any:
            # the node's legacy FitIns, as Flower's own fit workflow sends them
            return compat.fitins_to_recorddict(fitins[party], True)

        outcome: RoundOutcome | None = None
        entry: dict[str, Any] = {"round": current_round, "status": "aborted"}
        agg = None
        if len(proxies) < 2:
            entry["error"] = f"{len(proxies)} eligible client node(s) sampled; at least 2 needed"
        else:
            try:  # a number of parties with no secure parameters aborts this round, not the run
                agg = self.aggregator(len(proxies))
            except ConfigurationError as exc:
                entry["error"] = f"no {self.protocol} round for {len(proxies)} clients: " + (
                    " ".join(str(exc).split()))
        if agg is not None:
            try:
                outcome = secure.run_round(current_round, shapes, train_content,
                                           nodes=[p.node_id for p in proxies], agg=agg)
            except (InsufficientSurvivors, PrivacyBudgetExceeded) as exc:
                entry["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        new = None
        if outcome is not None:
            if outcome.outcome is not None:
                new = apply_mean(current, outcome.outcome, server_lr=self.server_lr)
            entry = SecureFedAvg._entry(outcome, applied=new is not None)
        entry["left_out"] = left_out
        if str(entry.get("error") or "").startswith("PrivacyBudgetExceeded"):
            self.stopped = entry["stopped"] = BUDGET_SPENT
        if self.privacy is not None:
            entry["privacy"] = self.privacy.report()
        if outcome is not None and outcome.outcome is not None and new is not None:
            survivors = set(outcome.outcome.survivor_ids)
            results = []
            for party, proxy in enumerate(proxies):
                if party in survivors:
                    results.append((proxy, FitRes(
                        Status(Code.OK, "the secure aggregate"), ndarrays_to_parameters(new),
                        1, {})))
                else:
                    failures.append(Exception(
                        f"node {proxy.node_id} (party {party}) dropped out of round "
                        f"{current_round}{_why(outcome, party)}"))
            log(INFO, "aggregate_fit: received the secure aggregate of %s nodes and %s failures",
                len(results), len(failures))
            aggregated, metrics = context.strategy.aggregate_fit(
                current_round, results, failures)
            entry["strategy"] = "applied" if aggregated else "returned no parameters"
            if aggregated:
                context.state.array_records[MAIN_PARAMS_RECORD] = (
                    compat.parameters_to_arrayrecord(aggregated, True))
                context.history.add_metrics_distributed_fit(
                    server_round=current_round, metrics=metrics)
        else:
            log(WARNING, "secure aggregation round %s aborted, the global model is unchanged: "
                "%s", current_round, entry.get("error"))
        self._record(entry)

    def _record(self, entry: dict[str, Any]) -> None:
        self.rounds.append(entry)
        if self.on_round is not None:
            self.on_round(entry)


def _why(outcome: RoundOutcome, party: int) -> str:
    """Why ``party`` is not among the survivors, from the round's record (if it says)."""
    rec = outcome.record
    for stage, parties in rec.timed_out.items():
        if party in parties:
            return f": no answer by the deadline of stage {stage!r}"
    for event in rec.failed:
        if event.get("party") == party:
            return f": stage {event.get('stage')!r} failed: {event.get('error')}"
    return ""
