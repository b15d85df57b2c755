"""Side (b) of ``secureagg bench --deployed``: Flower 1.42's own SecAgg+ on the same deployment.

The app directory :data:`APP_DIR` (``deployed_apps/flower``, shipped in the package) names this
module's ``server_app`` and ``client_app``. Nothing of ours runs in Flower's protocol: the
ServerApp is Flower's legacy API as in Flower's secaggplus example - ``LegacyContext`` with
Flower's ``FedAvg`` (initial parameters given, so no get_parameters round; no evaluation round)
and ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares, reconstruction_threshold,
...))`` - over the Grid wrapped by :class:`~secureagg.bench.deployed_meter.GridMeter`. The SecAgg+
workflow is subclassed only to mark the end of each round for the meter (after Flower's unmask
stage has applied the aggregate) and to record whether the round completed. Written per round to
``result-path`` (JSON): the meter's figures (wall seconds from the round's first push to the
aggregate, Flower-message bytes per client, one entry per push batch = SecAgg+ stage) and the
error of the new global model against the known mean update.

ClientApp: ``client_fn`` -> a ``NumPyClient`` whose ``fit`` returns the received parameters plus
the node's fixed update (:func:`~secureagg.bench.deployed_meter.update_for`) and 1 example,
behind :func:`drop_mod` (node config ``bench-drop=true``: the node answers the
``collect_masked_vectors`` stage with an error reply) and Flower's ``secaggplus_mod``.

Run config: ``result-path``, ``num-nodes``, ``dim``, ``rounds``, ``num-shares``,
``reconstruction-threshold``, ``clipping-range``, ``max-weight``, ``stage-timeout`` (seconds)
and ``expected-partitions``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from secureagg.bench.deployed_meter import (
    GridMeter,
    expected_mean,
    partitions_of,
    update_for,
)
from secureagg.errors import MissingDependencyError

try:
    from flwr.app import Error, Message
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
except ImportError:  # pragma: no cover - the flower extra is missing
    raise MissingDependencyError("flwr", "flower", purpose="the deployed benchmark") from None

__all__ = ["APP_DIR", "client_app", "drop_mod", "server_app"]

#: The directory ``flwr run`` submits (its pyproject.toml names the apps below).
APP_DIR = Path(__file__).with_name("deployed_apps") / "flower"


def drop_mod(message: Any, context: Any, call_next: Any) -> Any:
    """With node config ``bench-drop=true``: answer ``collect_masked_vectors`` with an error."""
    if context.node_config.get("bench-drop") is True and message.has_content():
        record = message.content.config_records.get("secaggplus_configs")
        if record is not None and record.get("stage") == "collect_masked_vectors":
            return Message(Error(code=4699, reason="benchmark: this node drops at its masked "
                                 "input"), reply_to=message)
    return call_next(message, context)


class FixedUpdateClient(NumPyClient):
    """``fit`` returns the parameters plus the node's fixed update, and 1 example."""

    def __init__(self, partition: int) -> None:
        self.partition = partition

    def fit(self, parameters: list[Any], config: Any) -> tuple[list[Any], int, dict[str, Any]]:
        out = [(p + update_for(self.partition, p.size).reshape(p.shape)).astype(p.dtype)
               for p in parameters]
        return out, 1, {}


def client_fn(context: Any) -> Any:
    partition = int(str(context.node_config["partition-id"]))
    return FixedUpdateClient(partition).to_client()


client_app = ClientApp(client_fn=client_fn, mods=[drop_mod, secaggplus_mod])


def _metered_workflow(meter: GridMeter, **kwargs: Any) -> Any:
    """Flower's SecAggPlusWorkflow; tells the meter when a round's aggregate is there."""
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key

    class MeteredSecAggPlus(SecAggPlusWorkflow):
        def __init__(self) -> None:
            super().__init__(**kwargs)
            self.completed: dict[int, bool] = {}

        def __call__(self, grid: Any, context: Any) -> None:
            r = int(context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])
            self.completed[r] = False
            super().__call__(grid, context)
            meter.end(str(r))

        def unmask_stage(self, grid: Any, context: Any, state: Any) -> bool:
            done = bool(super().unmask_stage(grid, context, state))
            r = int(context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])
            self.completed[r] = done
            return done

    return MeteredSecAggPlus()


server_app = ServerApp()


@server_app.main()
def main(grid: Any, context: Any) -> None:
    """Flower's FedAvg + SecAggPlusWorkflow for ``rounds`` rounds; the figures to result-path."""
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow

    from secureagg.bench.output import write_json

    cfg: dict[str, Any] = dict(context.run_config)
    meter = GridMeter(grid)
    n, dim = int(cfg["num-nodes"]), int(cfg["dim"])
    num_rounds = int(cfg["rounds"])
    expected = expected_mean(partitions_of(str(cfg["expected-partitions"])), dim)
    errors: dict[int, float] = {}

    def evaluate(r: int, ndarrays: list[Any], _config: Any) -> None:
        if r > 0:
            errors[r] = float(np.max(np.abs(ndarrays[0] - r * expected)))

    strategy = FedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n,
        initial_parameters=ndarrays_to_parameters([np.zeros(dim, dtype=np.float32)]),
        evaluate_fn=evaluate,
    )
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=num_rounds),
                           strategy=strategy)
    fit = _metered_workflow(
        meter, num_shares=int(cfg["num-shares"]),
        reconstruction_threshold=int(cfg["reconstruction-threshold"]),
        clipping_range=float(cfg["clipping-range"]),
        max_weight=float(cfg["max-weight"]),
        timeout=float(cfg["stage-timeout"]),
    )
    DefaultWorkflow(fit_workflow=fit)(grid, legacy)
    rounds = []
    for r in range(1, num_rounds + 1):
        figures = meter.round_figures(str(r))
        masked = [s for s in figures["stages"] if "collect_masked_vectors" in s["labels"]]
        rounds.append({
            "round": r, "status": "ok" if fit.completed.get(r) else "aborted",
            "survivors": masked[0]["messages_up"] - masked[0]["errors"] if masked else None,
            "max_abs_error": errors.get(r), "meter": figures,
        })
    document = {
        "impl": "flower", "protocol": "SecAggPlusWorkflow", "num_nodes": n, "dim": dim,
        "parameters": {"num_shares": int(cfg["num-shares"]),
                       "reconstruction_threshold": int(
                           cfg["reconstruction-threshold"]),
                       "clipping_range": float(cfg["clipping-range"]),
                       "quantization_range": fit.quantization_range,
                       "modulus_range": fit.modulus_range, "max_weight": fit.max_weight},
        "rounds": rounds,
    }
    write_json(Path(str(cfg["result-path"])), json.loads(json.dumps(document, default=str)))
