"""The legacy-API test app: a NumPyClient behind ``ClientApp(client_fn=..., mods=[secureagg_mod])``
and a ServerApp that runs Flower's ``DefaultWorkflow(fit_workflow=SecureAggWorkflow(...))`` with
a legacy FedAvg in a ``LegacyContext``.

The client's update is known, as in ``secure_app.py``: in round r (the FitIns config
``server-round``, from the strategy's ``on_fit_config_fn``) the node with partition p adds
``(p + 1) * r / 100`` to every coordinate of the first array and ``-(p + 1) / 50`` to the second,
and reports ``p + 1`` examples and a metric that must never reach the server. ``evaluate``
returns the sum of the first array it is given as its loss (so the test sees which model was
evaluated) and ``p + 1`` examples; ``get_parameters`` returns zeros.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

from secureagg.flower import SecureAggWorkflow, secureagg_mod

DIM = 6


def initial() -> list[np.ndarray]:
    return [np.zeros(DIM, dtype=np.float32), np.zeros((2, 3), dtype=np.float64)]


class KnownClient(NumPyClient):
    def __init__(self, partition: int) -> None:
        self.partition = partition

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return initial()

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]
            ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        r = int(config["server-round"])
        p = self.partition
        deltas = [(p + 1) * r / 100.0, -(p + 1) / 50.0]
        new = [(a + d).astype(a.dtype) for a, d in zip(parameters, deltas, strict=True)]
        return new, p + 1, {"secret-metric": 1000.0 + p}

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]
                 ) -> tuple[float, int, dict[str, Any]]:
        return float(np.sum(parameters[0])), self.partition + 1, {}


def client_fn(context: Context) -> Any:
    return KnownClient(int(context.node_config.get("partition-id", 0))).to_client()


client_app = ClientApp(client_fn=client_fn, mods=[secureagg_mod])


def strategy(min_nodes: int, **kw: Any) -> FedAvg:
    """A legacy FedAvg that sends the round number to the clients and evaluates on all nodes."""
    kw.setdefault("initial_parameters", ndarrays_to_parameters(initial()))
    return FedAvg(min_fit_clients=min_nodes, min_available_clients=min_nodes,
                  on_fit_config_fn=lambda r: {"server-round": r}, **kw)


server_app = ServerApp()


@server_app.main()
def main(grid: Any, context: Context) -> None:
    cfg = context.run_config
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=int(cfg["rounds"])),
                           strategy=strategy(int(cfg["min-nodes"])))
    workflow = SecureAggWorkflow(
        str(cfg["protocol"]), options=json.loads(str(cfg["options"])),
        train_deadline=float(cfg["train-deadline"]), stage_deadline=float(cfg["stage-deadline"]),
    )
    DefaultWorkflow(fit_workflow=workflow)(grid, legacy)
    final = legacy.state.array_records[MAIN_PARAMS_RECORD]
    Path(str(cfg["result-path"])).write_text(json.dumps({
        "rounds": workflow.rounds,
        "arrays": [a.numpy().tolist() for a in final.values()],
        "losses": legacy.history.losses_distributed,
    }, default=str), encoding="utf-8")
