"""What both deployed-benchmark apps share: the nodes' fixed updates and the server-side meter.

Used by :mod:`secureagg.bench.deployed_ours` (our secagg+ through ``SecureFedAvg`` and
``secureagg_mod``) and :mod:`secureagg.bench.deployed_flower` (Flower 1.42's
``SecAggPlusWorkflow`` and ``secaggplus_mod``), which :mod:`secureagg.bench.deployed` runs on one
local deployment (``secureagg bench --deployed``). It needs numpy only; :class:`GridMeter`
imports Flower's serialisation when it is built (in a ServerApp process).

The meter measures both apps the same way, on the Grid object the ServerApp is given: it replaces
that object's ``push_messages`` and ``pull_messages`` by counting wrappers (instance attributes;
Flower's own ``send_and_receive`` and our ``FlowerLink`` both call them, so Flower's polling is
unchanged). For every message pushed and every reply pulled it adds
``flwr.common.serde.message_to_proto(message).ByteSize()`` - the protobuf size of the whole
Flower message, metadata and content - to the destination's (down) or the source's (up) count,
per group id (= the round) and per push batch. Times are ``time.perf_counter()`` in the ServerApp
process (seconds): a round starts at its first push and ends when the app calls
:meth:`GridMeter.end` (Flower: the workflow returned the aggregate; ours: the strategy recorded
the round). Sizes are bytes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["UPDATE_SCALE", "GridMeter", "expected_mean", "partitions_of", "update_for"]

UPDATE_SCALE = 0.1  # every coordinate in [-0.1, 0.1]: inside clip 1.0 for several rounds


def update_for(partition: int, dim: int, seed: int = 2024) -> npt.NDArray[np.float32]:
    """The fixed update of node ``partition``: the same in every round, run and implementation
    (public benchmark data, uniform in [-0.1, 0.1) from a keystream of the library's CSPRNG under
    the fixed seed ``seed`` and the context ``bench/deployed/<partition>``)."""
    from secureagg.crypto import labels, prg

    stream = prg.Keystream(seed.to_bytes(32, "big"), label=labels.SIM_DRIVER,
                           context=b"bench/deployed/%d" % partition)
    values = stream.uniform(dim)
    values *= 2 * UPDATE_SCALE
    values -= UPDATE_SCALE
    return values.astype(np.float32)


def expected_mean(partitions: list[int], dim: int) -> npt.NDArray[np.float64]:
    """The mean update of the nodes that contribute (each with weight 1)."""
    total = np.zeros(dim, dtype=np.float64)
    for p in partitions:
        total += update_for(p, dim)
    return total / len(partitions)


def partitions_of(text: str) -> list[int]:
    """``"0,1,3"`` -> ``[0, 1, 3]`` (the run config's ``expected-partitions``)."""
    return [int(p) for p in str(text).split(",") if p.strip()]


class GridMeter:
    """Counts the serialized size and times of the messages a ServerApp pushes and pulls."""

    def __init__(self, grid: Any) -> None:
        from flwr.common.serde import message_to_proto

        self._serialize: Any = message_to_proto
        self._push, self._pull = grid.push_messages, grid.pull_messages
        self.first_push: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        #: group -> list of push batches: {"t": start, "down": {node: bytes}, "up": ...}
        self.batches: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._batch_of: dict[str, dict[str, Any]] = {}  # message id -> its batch
        self.pull_requests: dict[str, int] = defaultdict(int)  # pull_messages calls
        self.overhead: dict[str, float] = defaultdict(float)  # seconds spent counting
        grid.push_messages = self.push_messages
        grid.pull_messages = self.pull_messages

    def _size(self, message: Any) -> int:
        return int(self._serialize(message).ByteSize())

    def push_messages(self, messages: Any) -> Any:
        messages = list(messages)
        t0 = time.perf_counter()
        groups = {str(m.metadata.group_id) for m in messages}
        group = groups.pop() if len(groups) == 1 else "mixed"
        self.first_push.setdefault(group, t0)
        batch: dict[str, Any] = {"t": t0, "down": defaultdict(int), "up": defaultdict(int),
                                 "messages_down": len(messages), "messages_up": 0,
                                 "last_reply": None, "labels": set(), "group": group,
                                 "errors": 0}
        for m in messages:
            batch["down"][int(m.metadata.dst_node_id)] += self._size(m)
            batch["labels"].add(_label(m))
        self.batches[group].append(batch)
        self.overhead[group] += time.perf_counter() - t0
        ids = list(self._push(messages))
        for message_id in ids:
            if message_id:
                self._batch_of[message_id] = batch
        return ids

    def pull_messages(self, message_ids: Any) -> Any:
        message_ids = list(message_ids)
        replies = list(self._pull(message_ids))
        t0 = time.perf_counter()
        asked = next((self._batch_of[i] for i in message_ids if i in self._batch_of), None)
        group = "other" if asked is None else str(asked["group"])
        self.pull_requests[group] += 1
        for reply in replies:
            batch = self._batch_of.get(str(reply.metadata.reply_to_message_id))
            if batch is None:
                continue
            batch["up"][int(reply.metadata.src_node_id)] += self._size(reply)
            batch["messages_up"] += 1
            batch["last_reply"] = t0
            if reply.has_error():
                batch["errors"] += 1
        self.overhead[group] += time.perf_counter() - t0
        return replies

    def end(self, group: str) -> None:
        self.ended[group] = time.perf_counter()

    def round_figures(self, group: str) -> dict[str, Any]:
        """Wall seconds from the round's first push to its end, the bytes per client (mean over
        the nodes that were sent anything in the round, and max) and one entry per push batch."""
        batches = self.batches.get(group, [])
        end = self.ended.get(group)
        start = self.first_push.get(group)
        down: dict[int, int] = defaultdict(int)
        up: dict[int, int] = defaultdict(int)
        stages = []
        for i, b in enumerate(batches):
            nxt = batches[i + 1]["t"] if i + 1 < len(batches) else end
            for node, size in b["down"].items():
                down[node] += size
            for node, size in b["up"].items():
                up[node] += size
            stages.append({
                "labels": sorted(b["labels"]),
                "wall_seconds": None if nxt is None else nxt - b["t"],
                "seconds_to_last_reply": None if b["last_reply"] is None
                else b["last_reply"] - b["t"],
                "bytes_down": sum(b["down"].values()), "bytes_up": sum(b["up"].values()),
                "messages_down": b["messages_down"], "messages_up": b["messages_up"],
                "errors": b["errors"],
            })
        clients = sorted(down)
        n = max(1, len(clients))
        return {
            "wall_seconds": None if end is None or start is None else end - start,
            "bytes_per_client": {
                "down_mean": sum(down[c] for c in clients) / n,
                "up_mean": sum(up[c] for c in clients) / n,
                "down_max": max((down[c] for c in clients), default=0),
                "up_max": max((up[c] for c in clients), default=0),
            },
            "clients": len(clients),
            "stages": stages,
            "pull_requests": self.pull_requests.get(group, 0),
            "meter_overhead_seconds": self.overhead.get(group, 0.0),
        }


def _label(message: Any) -> str:
    """Flower's SecAgg+ stage name, if the message carries one; else its message type."""
    if message.has_content():
        record = message.content.config_records.get("secaggplus_configs")
        if record is not None and "stage" in record:
            return str(record["stage"])
    return str(message.metadata.message_type)
