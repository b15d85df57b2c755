"""Side (b) of benchmarks/bench_flower.py: Flower 1.42's own SecAgg+ on the same deployment.

ServerApp (legacy API, as in Flower's secaggplus example): ``LegacyContext`` with Flower's
``FedAvg`` (initial parameters given, so no get_parameters round; no evaluation round) and
``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares, reconstruction_threshold, ...))``,
over the Grid wrapped by ``bench_shared.GridMeter``. The SecAgg+ workflow is subclassed only to
mark the end of each round for the meter (after Flower's unmask stage has applied the aggregate)
and to record whether the round completed; Flower's code runs unchanged. Written per round: the
meter's figures (wall seconds from the round's first push to the aggregate, Flower-message bytes
per client, one entry per push batch = SecAgg+ stage) and the error of the new global model
against the known mean update.

ClientApp: ``client_fn`` -> a NumPyClient whose ``fit`` returns the received parameters plus the
node's fixed update (``bench_shared.update_for``) and 1 example, behind an optional drop mod
(node config ``bench-drop=true``: the node answers the ``collect_masked_vectors`` stage with an
error reply) and Flower's ``secaggplus_mod``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.client import Client, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key
from flwr.serverapp import Grid, ServerApp


def _shared(context: Context) -> Any:
    path = str(context.run_config["shared-dir"])
    if path not in sys.path:
        sys.path.insert(0, path)
    import bench_shared

    return bench_shared


def drop_mod(message: Message, context: Context, call_next: Any) -> Message:
    if context.node_config.get("bench-drop") is True and message.has_content():
        record = message.content.config_records.get("secaggplus_configs")
        if record is not None and record.get("stage") == "collect_masked_vectors":
            from flwr.app import Error

            return Message(Error(code=4699, reason="benchmark: this node drops at its masked "
                                 "input"), reply_to=message)
    return call_next(message, context)


class BenchClient(NumPyClient):
    def __init__(self, partition: int, shared: Any) -> None:
        self.partition = partition
        self.shared = shared

    def fit(self, parameters: list[Any], config: Any) -> tuple[list[Any], int, dict[str, Any]]:
        out = [(p + self.shared.update_for(self.partition, p.size).reshape(p.shape))
               .astype(p.dtype) for p in parameters]
        return out, 1, {}


def client_fn(context: Context) -> Client:
    return BenchClient(int(context.node_config["partition-id"]), _shared(context)).to_client()


client_app = ClientApp(client_fn=client_fn, mods=[drop_mod, secaggplus_mod])


class MeteredSecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAggPlusWorkflow; tells the meter when a round's aggregate is there."""

    def __init__(self, meter: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.meter = meter
        self.completed: dict[int, bool] = {}

    def __call__(self, grid: Grid, context: Context) -> None:
        r = int(context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])
        self.completed[r] = False
        super().__call__(grid, context)
        self.meter.end(str(r))

    def unmask_stage(self, grid: Grid, context: Any, state: Any) -> bool:
        done = super().unmask_stage(grid, context, state)
        r = int(context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])
        self.completed[r] = bool(done)
        return done


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    shared = _shared(context)
    cfg = context.run_config
    meter = shared.GridMeter(grid)
    n, dim = int(cfg["num-nodes"]), int(cfg["dim"])
    expected = shared.expected_mean(shared.partitions_of(str(cfg["expected-partitions"])), dim)
    errors: dict[int, float] = {}

    def evaluate(r: int, ndarrays: list[Any], _config: Any) -> None:
        if r > 0:
            errors[r] = float(np.max(np.abs(ndarrays[0] - r * expected)))

    strategy = FedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n,
        initial_parameters=ndarrays_to_parameters([np.zeros(dim, dtype=np.float32)]),
        evaluate_fn=evaluate,
    )
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=int(cfg["rounds"])),
                           strategy=strategy)
    fit = MeteredSecAggPlus(
        meter, num_shares=int(cfg["num-shares"]),
        reconstruction_threshold=int(cfg["reconstruction-threshold"]),
        clipping_range=float(cfg["clipping-range"]), max_weight=float(cfg["max-weight"]),
        timeout=float(cfg["stage-timeout"]),
    )
    DefaultWorkflow(fit_workflow=fit)(grid, legacy)
    rounds = []
    for r in range(1, int(cfg["rounds"]) + 1):
        figures = meter.round_figures(str(r))
        masked = [s for s in figures["stages"] if "collect_masked_vectors" in s["labels"]]
        rounds.append({
            "round": r, "status": "ok" if fit.completed.get(r) else "aborted",
            "survivors": masked[0]["messages_up"] - masked[0]["errors"] if masked else None,
            "max_abs_error": errors.get(r), "meter": figures,
        })
    Path(str(cfg["result-path"])).write_text(json.dumps({
        "impl": "flower", "protocol": "SecAggPlusWorkflow", "num_nodes": n, "dim": dim,
        "parameters": {"num_shares": int(cfg["num-shares"]),
                       "reconstruction_threshold": int(cfg["reconstruction-threshold"]),
                       "clipping_range": float(cfg["clipping-range"]),
                       "quantization_range": fit.quantization_range,
                       "modulus_range": fit.modulus_range, "max_weight": fit.max_weight},
        "rounds": rounds,
    }, default=str, indent=1), encoding="utf-8")
