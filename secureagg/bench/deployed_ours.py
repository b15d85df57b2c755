"""Side (a) of ``secureagg bench --deployed``: our secagg+ round through Flower's deployment engine.

The app directory :data:`APP_DIR` (``deployed_apps/ours``, shipped in the package) names this
module's ``server_app`` and ``client_app``; :mod:`secureagg.bench.deployed` submits it with
``flwr run`` to a local :class:`~secureagg.flower.processes.Deployment`.

ServerApp: :class:`secureagg.flower.SecureFedAvg` with ``"secagg+"`` and the run config's
options, over the Grid wrapped by :class:`~secureagg.bench.deployed_meter.GridMeter`; each round
ends (for the meter) when the strategy records it (``on_round``). It writes, per round, the
meter's figures (wall seconds from the first push of the round's group to the aggregate,
Flower-message bytes per client, one entry per push batch = stage) beside the strategy's own
per-stage figures (wall, protocol bytes, server compute, the nodes' reported compute), and the
error of the new global model against the known mean update, as JSON at ``result-path``.

ClientApp: :func:`drop_mod` (node config ``bench-drop=true``: the node answers its third protocol
step of every round, the ``masked`` stage of secagg+, with an error reply, so the server must
recover its pairwise masks), then :func:`~secureagg.flower.secureagg_mod` around a train function
that returns the received weights plus the node's fixed update
(:func:`~secureagg.bench.deployed_meter.update_for`) with weight 1 (no training: the benchmark
measures the aggregation).

Run config (``flwr run ... --run-config``): ``result-path``, ``num-nodes``, ``dim``, ``rounds``,
``options`` (JSON of :func:`secureagg.make_aggregator` options), ``train-deadline``,
``stage-deadline``, ``poll`` (seconds between the server's pulls) and ``expected-partitions``
(comma list: the nodes whose updates make the aggregate).
"""

from __future__ import annotations

import json
from collections import OrderedDict
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
from secureagg.flower.mod import secureagg_mod

try:
    from flwr.app import (
        Array,
        ArrayRecord,
        ConfigRecord,
        Error,
        Message,
        MetricRecord,
        RecordDict,
    )
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
except ImportError:  # pragma: no cover - the flower extra is missing
    raise MissingDependencyError("flwr", "flower", purpose="the deployed benchmark") from None

__all__ = ["APP_DIR", "DROP_STEP", "client_app", "drop_mod", "server_app"]

#: The directory ``flwr run`` submits (its pyproject.toml names the apps below).
APP_DIR = Path(__file__).with_name("deployed_apps") / "ours"
#: advertise, share, masked, unmask: a dropping node answers its 3rd step (masked) with an error
DROP_STEP = 3


def drop_mod(message: Any, context: Any, call_next: Any) -> Any:
    """With node config ``bench-drop=true``: answer the round's masked-input step with an error."""
    record = message.content.config_records.get("secureagg") if message.has_content() else None
    if context.node_config.get("bench-drop") is not True or record is None or (
            record.get("kind") != "step"):
        return call_next(message, context)
    state = context.state.config_records.get("bench-drop")
    steps = 0 if state is None or "spec" in record else int(state["steps"])
    context.state.config_records["bench-drop"] = ConfigRecord({"steps": steps + 1})
    if steps + 1 == DROP_STEP:
        return Message(Error(code=4699, reason="benchmark: this node drops at its masked input"),
                       reply_to=message)
    return call_next(message, context)


client_app = ClientApp(mods=[drop_mod, secureagg_mod])


@client_app.train()
def train(message: Any, context: Any) -> Any:
    """The received weights plus this node's fixed update, weight 1 (no training)."""
    partition = int(str(context.node_config["partition-id"]))
    out = OrderedDict()
    for key, value in message.content["arrays"].items():
        a = value.numpy()
        out[key] = Array((a + update_for(partition, a.size).reshape(a.shape)).astype(a.dtype))
    metrics = MetricRecord({"num-examples": 1})
    return Message(RecordDict({"arrays": ArrayRecord(out), "metrics": metrics}),
                   reply_to=message)


server_app = ServerApp()


@server_app.main()
def main(grid: Any, context: Any) -> None:
    """Run ``rounds`` secagg+ rounds over the metered grid; write the figures to result-path."""
    import secureagg
    from secureagg.bench.output import write_json
    from secureagg.flower.strategy import SecureFedAvg

    cfg: dict[str, Any] = dict(context.run_config)
    meter = GridMeter(grid)
    n, dim = int(cfg["num-nodes"]), int(cfg["dim"])
    options = json.loads(str(cfg["options"]))
    expected = expected_mean(partitions_of(str(cfg["expected-partitions"])), dim)
    strategy = SecureFedAvg(
        "secagg+", options=options, min_train_nodes=n,
        train_deadline=float(cfg["train-deadline"]),
        stage_deadline=float(cfg["stage-deadline"]),
        poll=float(cfg["poll"]),
    )
    strategy.on_round = lambda entry: meter.end(str(entry["round"]))
    errors: dict[int, float] = {}

    def evaluate(r: int, arrays: ArrayRecord) -> None:
        if r > 0:
            errors[r] = float(np.max(np.abs(arrays["w"].numpy() - r * expected)))

    initial = ArrayRecord(OrderedDict([("w", Array(np.zeros(dim, dtype=np.float32)))]))
    strategy.start(grid=grid, initial_arrays=initial,
                   num_rounds=int(cfg["rounds"]),
                   evaluate_fn=evaluate)
    rounds = []
    for entry in strategy.rounds:
        r = int(entry["round"])
        rounds.append({
            "round": r, "status": entry["status"], "error": entry.get("error"),
            "survivors": len(entry.get("survivors", [])), "dropped": entry.get("dropped"),
            "max_abs_error": errors.get(r),
            "meter": meter.round_figures(str(r)),
            "engine_stages": entry.get("stages", {}), "engine_seconds": entry.get("seconds"),
        })
    agg = secureagg.make_aggregator("secagg+", num_clients=n, **options)
    params = {k: v for k, v in agg.parameters().items() if k != "threat_model_note"}
    document = {
        "impl": "ours", "protocol": "secagg+", "num_nodes": n, "dim": dim,
        "parameters": params, "rounds": rounds,
        "hello_seconds": meter.round_figures("hello")["stages"],
    }
    # through JSON text once: numpy scalars and other non-JSON leaves become strings
    write_json(Path(str(cfg["result-path"])), json.loads(json.dumps(document, default=str)))
