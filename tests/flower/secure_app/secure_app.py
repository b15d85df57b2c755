"""The test app: SecureFedAvg on the server, secureagg_mod around a train function whose update
is known (it depends only on the node's partition and the round), and a fault mod.

Each node's update in round r is ``(partition + 1) * r / 100`` in every coordinate (second
array: ``-(partition + 1) / 50``), and it reports ``partition + 1`` examples. The ServerApp first
asks every node its partition (a ``query`` message, passed through by the mod), then runs
``rounds`` rounds and writes the node->partition map, every round's record and every round's
global arrays to ``result-path``.

Faults, from the node config ``fault`` (with ``fault-round``, default 1; 0: every round):
- ``kill-at=K``: at the K-th protocol step of that round, write ``<fault-dir>/<partition>.kill``
  and sleep: the test then SIGKILLs this node;
- ``garbage``: every protocol reply of that round is replaced by random bytes;
- ``replay``: from the second step of that round on, the node answers with its first reply;
- ``foreign``: from the second step on, it answers with the bytes the server sent it (messages
  written by the server or relayed from other nodes).
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from secureagg.flower import SecureFedAvg, secureagg_mod
from secureagg.flower.identity import read_allowed_keys


def fault_mod(message: Message, context: Context, call_next: Any) -> Message:
    fault = str(context.node_config.get("fault", ""))
    record = message.content.config_records.get("secureagg") if message.has_content() else None
    if not fault or record is None or record.get("kind") != "step":
        return call_next(message, context)
    spec_round = int(context.node_config.get("fault-round", 1))
    state = context.state.config_records.get("fault")
    seen = {} if state is None else dict(state)
    if "spec" in record:
        seen = {"round": int(str(message.metadata.group_id)), "steps": 0}
    seen["steps"] = int(seen.get("steps", 0)) + 1
    active = spec_round == 0 or int(seen.get("round", -1)) == spec_round
    if active and fault.startswith("kill-at=") and seen["steps"] == int(fault.split("=")[1]):
        context.state.config_records["fault"] = ConfigRecord(seen)
        marker = Path(str(context.node_config["fault-dir"])) / (
            f"{context.node_config['partition-id']}.kill")
        marker.write_text(str(os.getpid()))
        time.sleep(600)
    incoming = bytes(record["message"])
    reply = call_next(message, context)
    if active and not reply.has_error():
        ours = reply.content.config_records["secureagg"]
        messages = list(ours["messages"])
        if fault == "garbage":
            ours["messages"] = [os.urandom(len(m) or 16) for m in messages]
        elif fault == "replay":
            if seen["steps"] == 1 and messages:
                seen["first"] = messages[0]
            elif "first" in seen:
                ours["messages"] = [seen["first"]] * max(1, len(messages))
                ours["recipients"] = [-1] * max(1, len(messages))
        elif fault == "foreign" and seen["steps"] > 1:
            ours["messages"] = [incoming]
            ours["recipients"] = [-1]
    context.state.config_records["fault"] = ConfigRecord(seen)
    return reply


client_app = ClientApp(mods=[fault_mod, secureagg_mod])


@client_app.train()
def train(message: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    r = int(message.content["config"]["server-round"])
    arrays = message.content["arrays"]
    out = OrderedDict()
    for i, (key, value) in enumerate(arrays.items()):
        a = value.numpy()
        delta = (partition + 1) * r / 100.0 if i == 0 else -(partition + 1) / 50.0
        out[key] = Array((a + delta).astype(a.dtype))
    metrics = MetricRecord({"num-examples": partition + 1})
    return Message(RecordDict({"arrays": ArrayRecord(out), "metrics": metrics}),
                   reply_to=message)


@client_app.query()
def partition(message: Message, context: Context) -> Message:
    record = ConfigRecord({"partition": int(context.node_config["partition-id"])})
    return Message(RecordDict({"echo": record}), reply_to=message)


server_app = ServerApp()


def _partitions(grid: Grid, wanted: int) -> dict[str, int]:
    deadline = time.monotonic() + 60
    while len(list(grid.get_node_ids())) < wanted and time.monotonic() < deadline:
        time.sleep(0.2)
    nodes = list(grid.get_node_ids())
    replies = grid.send_and_receive(
        [Message(RecordDict({"q": ConfigRecord({})}), dst_node_id=n, message_type="query")
         for n in nodes], timeout=60)
    return {str(r.metadata.src_node_id): int(r.content["echo"]["partition"])
            for r in replies if not r.has_error()}


DEFAULTS: dict[str, Any] = {
    "result-path": "", "run-dir": "", "protocol": "secagg+", "options": "{}", "rounds": 2,
    "dim": 6, "weighted": True, "train-deadline": 60.0, "stage-deadline": 20.0, "min-nodes": 3,
    "identities": "",
}


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    # pyproject.toml's [tool.flwr.app.config] under `flwr run`; these defaults under
    # flwr.simulation.run_simulation, which reads no pyproject
    cfg = {**DEFAULTS, **dict(context.run_config)}
    options = json.loads(str(cfg["options"]))
    identities = read_allowed_keys(str(cfg["identities"])) if cfg["identities"] else None
    parts = _partitions(grid, int(cfg["min-nodes"]))
    dim = int(cfg["dim"])
    initial = ArrayRecord(OrderedDict([
        ("w", Array(np.zeros(dim, dtype=np.float32))),
        ("b", Array(np.zeros((2, 3), dtype=np.float64))),
    ]))
    strategy = SecureFedAvg(
        str(cfg["protocol"]), options=options, weighted=bool(cfg["weighted"]),
        min_train_nodes=int(cfg["min-nodes"]), train_deadline=float(cfg["train-deadline"]),
        stage_deadline=float(cfg["stage-deadline"]), identities=identities,
        run_dir=str(cfg["run-dir"]) or None,
    )
    history: list[dict[str, Any]] = []

    def evaluate(r: int, arrays: ArrayRecord) -> None:
        history.append({"round": r, "arrays": {k: v.numpy().tolist() for k, v in arrays.items()}})

    strategy.start(grid=grid, initial_arrays=initial, num_rounds=int(cfg["rounds"]),
                   evaluate_fn=evaluate)
    result = {"partitions": parts, "rounds": strategy.rounds, "arrays": history}
    if cfg["result-path"]:
        Path(str(cfg["result-path"])).write_text(json.dumps(result, default=str),
                                                 encoding="utf-8")
    LAST_RESULT.clear()
    LAST_RESULT.update(result)


#: The last run's result in this process (what an in-process simulation reads back).
LAST_RESULT: dict[str, Any] = {}
