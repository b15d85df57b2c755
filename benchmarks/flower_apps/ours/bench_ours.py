"""Side (a) of benchmarks/bench_flower.py: our secagg+ round through Flower's deployment engine.

ServerApp: :class:`secureagg.flower.SecureFedAvg` with ``"secagg+"`` and the run config's
options, over the Grid wrapped by ``bench_shared.GridMeter``; each round ends (for the meter) when
the strategy records it (``on_round``). It writes, per round, the meter's figures (wall seconds
from the first push of the round's group to the aggregate, Flower-message bytes per client, one
entry per push batch = stage) beside the strategy's own per-stage figures (wall, protocol bytes,
server compute, the nodes' reported compute), and the error of the new global model against the
known mean update.

ClientApp: an optional drop mod (node config ``bench-drop=true``: the node answers its third
protocol step of every round, the ``masked`` stage of secagg+, with an error reply, so the server
must recover its pairwise masks), then ``secureagg_mod`` around a train function that returns the
received weights plus the node's fixed update (``bench_shared.update_for``) with weight 1.
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

import secureagg
from secureagg.flower import SecureFedAvg, secureagg_mod

DROP_STEP = 3  # advertise, share, masked, unmask: the node drops at its masked input


def _shared(context: Context) -> Any:
    path = str(context.run_config["shared-dir"])
    if path not in sys.path:
        sys.path.insert(0, path)
    import bench_shared

    return bench_shared


def drop_mod(message: Message, context: Context, call_next: Any) -> Message:
    record = message.content.config_records.get("secureagg") if message.has_content() else None
    if context.node_config.get("bench-drop") is not True or record is None or (
            record.get("kind") != "step"):
        return call_next(message, context)
    state = context.state.config_records.get("bench-drop")
    steps = 0 if state is None or "spec" in record else int(state["steps"])  # type: ignore[arg-type]
    context.state.config_records["bench-drop"] = ConfigRecord({"steps": steps + 1})
    if steps + 1 == DROP_STEP:
        from flwr.app import Error

        return Message(Error(code=4699, reason="benchmark: this node drops at its masked input"),
                       reply_to=message)
    return call_next(message, context)


client_app = ClientApp(mods=[drop_mod, secureagg_mod])


@client_app.train()
def train(message: Message, context: Context) -> Message:
    shared = _shared(context)
    partition = int(context.node_config["partition-id"])
    out = OrderedDict()
    for key, value in message.content["arrays"].items():
        a = value.numpy()
        out[key] = Array((a + shared.update_for(partition, a.size).reshape(a.shape))
                         .astype(a.dtype))
    metrics = MetricRecord({"num-examples": 1})
    return Message(RecordDict({"arrays": ArrayRecord(out), "metrics": metrics}),
                   reply_to=message)


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    shared = _shared(context)
    cfg = context.run_config
    meter = shared.GridMeter(grid)
    n, dim = int(cfg["num-nodes"]), int(cfg["dim"])
    options = json.loads(str(cfg["options"]))
    expected = shared.expected_mean(shared.partitions_of(str(cfg["expected-partitions"])), dim)
    strategy = SecureFedAvg(
        "secagg+", options=options, min_train_nodes=n,
        train_deadline=float(cfg["train-deadline"]), stage_deadline=float(cfg["stage-deadline"]),
        poll=float(cfg["poll"]),
    )
    strategy.on_round = lambda entry: meter.end(str(entry["round"]))
    errors: dict[int, float] = {}

    def evaluate(r: int, arrays: ArrayRecord) -> None:
        if r > 0:
            errors[r] = float(np.max(np.abs(arrays["w"].numpy() - r * expected)))

    initial = ArrayRecord(OrderedDict([("w", Array(np.zeros(dim, dtype=np.float32)))]))
    strategy.start(grid=grid, initial_arrays=initial, num_rounds=int(cfg["rounds"]),
                   evaluate_fn=evaluate)
    rounds = []
    for entry in strategy.rounds:
        r = int(entry["round"])
        rounds.append({
            "round": r, "status": entry["status"], "error": entry.get("error"),
            "survivors": len(entry["survivors"]), "dropped": entry["dropped"],
            "max_abs_error": errors.get(r),
            "meter": meter.round_figures(str(r)),
            "engine_stages": entry["stages"], "engine_seconds": entry["seconds"],
        })
    agg = secureagg.make_aggregator("secagg+", num_clients=n, **options)
    params = {k: v for k, v in agg.parameters().items() if k != "threat_model_note"}
    Path(str(cfg["result-path"])).write_text(json.dumps({
        "impl": "ours", "protocol": "secagg+", "num_nodes": n, "dim": dim,
        "parameters": params, "rounds": rounds,
        "hello_seconds": meter.round_figures("hello")["stages"],
    }, default=str, indent=1), encoding="utf-8")
