"""``SecureFedAvg``: Flower's FedAvg whose training rounds go through our secure aggregation.

For the ``flwr.serverapp`` API: ``strategy.start(grid=grid, initial_arrays=..., num_rounds=...)``
exactly as with Flower's own FedAvg. Each round is one of our rounds
(:class:`~secureagg.flower.server.SecureRounds`): the sampled nodes train with the user's
unchanged train function behind :func:`~secureagg.flower.mod.secureagg_mod`, and the server
obtains only the weighted sum of the updates (``local - global``) and the total weight, masked,
encrypted or noised as the protocol says. The FedAvg step ``global += server_lr * sum / weight``
is applied in each array's dtype. Evaluation rounds (``fraction_evaluate > 0``) and
``evaluate_fn`` are Flower's, unchanged: they see the global model, which is public.

A round below the protocol's threshold (or whose aggregate is not finite) aborts and leaves the
global model exactly as it was; the run goes on. With ``run_dir=`` the run directory is written as
in simulation (``config.json``, ``transcript.jsonl`` of every message the server received and
sent, ``rounds.json`` with each round's parties, survivors, dropouts by stage and per-stage
figures, and ``result.json``), so ``secureagg audit RUN_DIR`` reads a deployed run.

Invariants: ``configure_train`` / ``aggregate_train`` (Flower's plaintext path) are refused, so no
code path of this strategy asks a node for its update in the clear.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from secureagg.audit.rundir import CONFIG, RESULT, RunDirectory, transcript_records
from secureagg.errors import ConfigurationError, InsufficientSurvivors
from secureagg.flower.server import RoundOutcome, SecureRounds, apply_mean

try:
    from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
    from flwr.serverapp.strategy import FedAvg, Result
except ImportError as exc:  # pragma: no cover - the flower extra is missing
    raise ImportError(
        "secureagg.flower needs Flower: pip install 'secureagg[flower]'"
    ) from exc

__all__ = ["SecureFedAvg"]


class SecureFedAvg(FedAvg):
    """FedAvg over our secure aggregation; see the module docstring.

    ``protocol``/``options``: :func:`secureagg.make_aggregator`'s (``"secagg+"``, ``"ckks"``, ...;
    ``clip=``, ``threat=``, ``central_dp=``, ``distributed_dp=``...). ``train_deadline`` is the
    seconds of the stage in which the nodes train (SecAgg/SecAgg+: ``masked``, where the protocol
    first uses the update; the others: the first), ``stage_deadline`` every other stage's.
    ``identities`` is the admitted nodes' public identity keys (malicious mode; see
    :mod:`secureagg.flower.identity`). With ``central_dp`` or ``distributed_dp`` in ``options``,
    one :class:`~secureagg.dp.PrivacyAccountant` (``delta``, ``max_epsilon``) composes every
    round's release; each round's entry carries its report, and the run directory its ledger.
    """

    def __init__(
        self,
        protocol: str = "secagg+",
        *,
        options: Mapping[str, Any] | None = None,
        fraction_train: float = 1.0,
        min_train_nodes: int = 2,
        weighted: bool = True,
        server_lr: float = 1.0,
        train_deadline: float = 120.0,
        stage_deadline: float = 30.0,
        identities: frozenset[bytes] | None = None,
        run_dir: str | Path | None = None,
        poll: float = 0.2,
        wait_for_nodes: float = 60.0,
        delta: float = 1e-5,
        max_epsilon: float | None = None,
        **fedavg: Any,
    ) -> None:
        fedavg.setdefault("fraction_evaluate", 0.0)
        super().__init__(fraction_train=fraction_train, min_train_nodes=min_train_nodes,
                         **fedavg)
        self.protocol = protocol
        self.options = dict(options or {})
        self.weighted = weighted
        self.server_lr = float(server_lr)
        self.train_deadline = float(train_deadline)
        self.stage_deadline = float(stage_deadline)
        self.identities = identities
        self.run_dir = None if run_dir is None else RunDirectory(run_dir)
        self.poll = poll
        self.wait_for_nodes = float(wait_for_nodes)
        self.privacy: Any = None
        if any(k in self.options for k in ("distributed_dp", "central_dp")):
            from secureagg.dp.accounting import PrivacyAccountant

            self.privacy = PrivacyAccountant(delta=delta, max_epsilon=max_epsilon)
        self.rounds: list[dict[str, Any]] = []
        self.on_round: Callable[[dict[str, Any]], None] | None = None

    # Flower's plaintext path: never used by this strategy.
    def configure_train(self, *args: Any, **kwargs: Any) -> Any:
        raise ConfigurationError("SecureFedAvg trains only through start(); a plain train "
                                 "message would ask a node for its update in the clear")

    def aggregate_train(self, *args: Any, **kwargs: Any) -> Any:
        raise ConfigurationError("SecureFedAvg aggregates only through secure aggregation")

    def summary(self) -> None:
        super().summary()

    def start(
        self,
        grid: Any,
        initial_arrays: Any,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: Any = None,
        evaluate_config: Any = None,
        evaluate_fn: Callable[[int, Any], Any] | None = None,
    ) -> Any:
        train_config = ConfigRecord() if train_config is None else train_config
        evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
        rounds = SecureRounds(
            grid, protocol=self.protocol, options=self.options, weighted=self.weighted,
            fraction=self.fraction_train, min_nodes=self.min_train_nodes,
            train_deadline=self.train_deadline, stage_deadline=self.stage_deadline,
            poll=self.poll, identities=self.identities, privacy=self.privacy,
            wait_for_nodes=self.wait_for_nodes,
        )
        result = Result()
        arrays = initial_arrays
        result.arrays = arrays
        if self.run_dir is not None:
            self.run_dir.create({
                "engine": "flower", "protocol": self.protocol, "options": self.options,
                "rounds": num_rounds, "clients": None, "weighted": self.weighted,
                "server_lr": self.server_lr, "train_deadline": self.train_deadline,
                "stage_deadline": self.stage_deadline, "parameters": {},
            })
        if evaluate_fn is not None:
            res = evaluate_fn(0, arrays)
            if res is not None:
                result.evaluate_metrics_serverapp[0] = res
        for r in range(1, num_rounds + 1):
            keys = list(arrays.keys())
            current = [arrays[k].numpy() for k in keys]
            config = ConfigRecord({**dict(train_config), "server-round": r})

            def train_content(_party: int, arrays: Any = arrays, config: Any = config) -> Any:
                return RecordDict({"arrays": arrays, "config": config})

            shapes = [tuple(int(d) for d in a.shape) for a in current]
            try:
                outcome = rounds.run_round(r, shapes, train_content)
            except InsufficientSurvivors as exc:  # too few nodes to even start the round
                outcome = None
                entry: dict[str, Any] = {"round": r, "status": "aborted",
                                         "error": " ".join(str(exc).split())}
            if outcome is not None:
                new = None if outcome.outcome is None else apply_mean(
                    current, outcome.outcome, server_lr=self.server_lr)
                if new is not None:
                    arrays = ArrayRecord(OrderedDict(
                        (k, Array(a)) for k, a in zip(keys, new, strict=True)))
                    result.arrays = arrays
                entry = self._entry(outcome, applied=new is not None)
            if self.privacy is not None:
                entry["privacy"] = self.privacy.report()
            self.rounds.append(entry)
            self._write(entry, outcome)
            if self.on_round is not None:
                self.on_round(entry)
            stop = outcome is not None and (outcome.error or "").startswith(
                "PrivacyBudgetExceeded")
            if stop:
                entry["stopped"] = "the privacy budget (max_epsilon) would be exceeded"
            if self.fraction_evaluate > 0:
                replies = grid.send_and_receive(
                    self.configure_evaluate(r, arrays, evaluate_config, grid), timeout=timeout)
                metrics = self.aggregate_evaluate(r, replies)
                if metrics is not None:
                    result.evaluate_metrics_clientapp[r] = metrics
            if evaluate_fn is not None:
                res = evaluate_fn(r, arrays)
                if res is not None:
                    result.evaluate_metrics_serverapp[r] = res
            if stop:
                break
        if self.run_dir is not None:
            self._write_result()
            self.run_dir.seal(kind="flower")
        return result

    # ------------------------------------------------------------------ the record

    @staticmethod
    def _entry(outcome: RoundOutcome, *, applied: bool) -> dict[str, Any]:
        rec = outcome.record
        nodes = {str(p): n for p, n in outcome.parties.items()}
        survivors = [] if outcome.outcome is None else list(outcome.outcome.survivor_ids)
        clients = [p for p in outcome.parties if p >= 0]
        status = "ok" if applied else "aborted"
        return {
            "round": outcome.round_id,
            "status": status,
            "error": outcome.error if outcome.error else (
                None if applied else "the aggregate is not finite; nothing was applied"),
            "clients": len(clients),
            "nodes": nodes,
            "survivors": survivors,
            "dropped": sorted(set(clients) - set(survivors)),
            "timed_out": rec.timed_out,
            "failed": rec.failed,
            "rejected": rec.rejected,
            "late": rec.late,
            "stages": rec.stages,
            "seconds": outcome.seconds,
        }

    def _write(self, entry: dict[str, Any], outcome: RoundOutcome | None) -> None:
        if self.run_dir is None:
            return
        if outcome is not None:
            lines = transcript_records(outcome.record.transcript, outcome.record.downlink)
            self.run_dir.append_transcript([{**line, "round": entry["round"]} for line in lines])
        self.run_dir.write_json("rounds.json", self.rounds)
        if self.privacy is not None:
            self.privacy.write_ledger(self.run_dir.path / "privacy_ledger.json")

    def _write_result(self) -> None:
        if self.run_dir is None:
            return
        totals = {"bytes_up": 0, "bytes_down": 0, "messages_up": 0, "messages_down": 0}
        for entry in self.rounds:
            for figures in entry.get("stages", {}).values():
                for key in totals:
                    totals[key] += int(figures[key])
        done = [e for e in self.rounds if e["status"] == "ok"]
        last = done[-1] if done else None
        self.run_dir.write_json(RESULT, {
            "status": "ok" if last is not None else "aborted",
            "engine": "flower",
            "rounds_completed": len(done),
            "rounds_aborted": len(self.rounds) - len(done),
            "survivors": [] if last is None else last["survivors"],
            "seeded": False,
            "metrics": {"totals": totals, "rejected": [
                {**r, "round": e["round"]} for e in self.rounds for r in e.get("rejected", [])]},
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        config = self.run_dir.read_json(CONFIG)
        config["clients"] = max((e.get("clients", 0) for e in self.rounds), default=0)
        self.run_dir.write_json(CONFIG, config)

