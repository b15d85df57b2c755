"""Where a node trains: at the stage where the protocol first uses the update (SecAgg/SecAgg+:
``masked``, as Flower's own SecAgg+ trains at its masked-vector stage), once per round; so the
state Flower moves into and out of a fresh ClientApp process for each earlier message holds the
party's keys and no update. In one process over the stand-in Grid (tests/flower/fake_grid.py).
"""

from __future__ import annotations

import json
import logging
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.common.serde import context_to_proto

sys.path.insert(0, str(Path(__file__).parent))

from fake_grid import FakeGrid

from secureagg.flower import SecureFedAvg, secureagg_mod
from secureagg.flower.mod import STATE
from secureagg.protocols.secagg.state import SecAggClientState
from secureagg.transport.party_state import state_from_bytes

NODE0 = 8_000_000_000
#: what a failing train function quotes from its data: it must never leave the node
SECRET = "SECRET-ROW-42"


class Probe:
    """A ClientApp whose outermost mod records, per node and step, whether the step asked the
    node to train, the size of the node's whole Context as Flower serialises it after the step,
    and the stored party state; its train function counts its calls and may fail."""

    def __init__(self, *, fail: frozenset[int] = frozenset()) -> None:
        self.steps: dict[int, list[dict[str, Any]]] = {}
        self.train_calls: dict[int, list[int]] = {}  # node -> the step numbers it trained at
        self.fail = fail
        self.app = ClientApp(mods=[self.probe, secureagg_mod])
        self.app.train()(self.train)

    def probe(self, message: Message, context: Context, call_next: Any) -> Message:
        ours = message.content.config_records.get("secureagg") if message.has_content() else None
        step = ours is not None and ours.get("kind") == "step"
        if step:
            steps = self.steps.setdefault(context.node_id, [])
            if "spec" in ours:
                steps.clear()
            steps.append({"train": bool(ours.get("train", False))})
        reply = call_next(message, context)
        if step:
            record = context.state.config_records.get(STATE)
            steps[-1].update(context_bytes=context_to_proto(context).ByteSize(),
                             state=None if record is None else record.get("state"))
        return reply

    def train(self, message: Message, context: Context) -> Message:
        self.train_calls.setdefault(context.node_id, []).append(len(self.steps[context.node_id]))
        partition = int(context.node_config["partition-id"])
        if partition in self.fail:
            raise RuntimeError(f"this node's data is gone: {SECRET}")
        out = OrderedDict((k, Array((v.numpy() + (partition + 1) / 100).astype(v.numpy().dtype)))
                          for k, v in message.content["arrays"].items())
        return Message(RecordDict({"arrays": ArrayRecord(out),
                                   "metrics": MetricRecord({"num-examples": 1})}),
                       reply_to=message)


def _run(dim: int, *, protocol: str = "secagg+", fail: frozenset[int] = frozenset(),
         options: dict[str, Any] | None = None, run_dir: Path | None = None,
         ) -> tuple[Probe, SecureFedAvg, np.ndarray, FakeGrid]:
    probe = Probe(fail=fail)
    grid = FakeGrid(probe.app, {NODE0 + 13 * i: {"partition-id": i} for i in range(5)})
    strategy = SecureFedAvg(protocol, options=options or {"clip": 1.0}, min_train_nodes=5,
                            stage_deadline=5.0, train_deadline=5.0, run_dir=run_dir)
    initial = ArrayRecord(OrderedDict([("w", Array(np.zeros(dim, dtype=np.float32)))]))
    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=1,
                            train_config=ConfigRecord({"lr": 0.1}))
    return probe, strategy, result.arrays["w"].numpy(), grid


@pytest.mark.parametrize("protocol", ["secagg+", "secagg"])
def test_nodes_train_once_at_masked_and_keep_no_update_before_it(protocol: str) -> None:
    sizes = {}
    for dim in (10, 50_000):
        probe, strategy, w, _ = _run(dim, protocol=protocol)
        assert strategy.rounds[0]["status"] == "ok", strategy.rounds[0]
        np.testing.assert_allclose(w, np.full(dim, 0.03), atol=1e-6)  # mean of 0.01 .. 0.05
        for node, steps in probe.steps.items():
            # advertise, share, masked, unmask; the update goes in at the third, once
            assert [s["train"] for s in steps] == [False, False, True, False]
            assert probe.train_calls[node] == [3]
            for s in steps[:2]:
                state = state_from_bytes(s["state"])
                assert isinstance(state, SecAggClientState) and state.update.size == 0
        sizes[dim] = [s["context_bytes"] for s in probe.steps[NODE0]]
    # what Flower carries into and out of the ClientApp processes before the masked step does
    # not grow with d (the spec's shapes differ by a few bytes); 8 bytes per value did, before
    assert all(abs(a - b) < 64 for a, b in zip(sizes[10][:2], sizes[50_000][:2], strict=True))
    assert max(sizes[50_000][:2]) < 4_000 < 8 * 50_000


def test_a_node_whose_training_fails_at_masked_is_a_dropout_named_as_a_training_failure(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="secureagg"):
        probe, strategy, w, grid = _run(20, fail=frozenset({3}), run_dir=tmp_path / "run")
    entry = strategy.rounds[0]
    assert entry["status"] == "ok", entry
    assert len(entry["survivors"]) == 4 and len(entry["dropped"]) == 1
    (failure,) = entry["failed"]
    assert failure["stage"] == "masked" and failure["party"] == entry["dropped"][0]
    # the node's refusal names the type and the stage of its failure, never its message
    assert failure["error"] == "Flower error 4601: RuntimeError at stage train"
    _nowhere_on_the_server_side(SECRET, grid, strategy.rounds, tmp_path / "run")
    # ... which the node keeps in its own log, with the traceback
    local = [r for r in caplog.records if SECRET in r.getMessage()]
    assert local and all(r.levelno == logging.WARNING and r.exc_info for r in local)
    # the survivors' mean (0.01, 0.02, 0.03, 0.05): the failed node's masks were recovered
    np.testing.assert_allclose(w, np.full(20, 0.0275), atol=1e-6)
    assert sum(len(calls) for calls in probe.train_calls.values()) == 5


def _nowhere_on_the_server_side(secret: str, grid: FakeGrid, records: Any, run_dir: Path) -> None:
    """``secret`` is in no reply the server received (Flower's wire bytes), in no round record
    and in no file of the run directory; and the run directory was written (not vacuous)."""
    assert grid.received and not [n for n, wire in grid.received if secret.encode() in wire]
    assert secret not in json.dumps(records, default=str)
    files = [f for f in run_dir.rglob("*") if f.is_file()]
    assert files and not [f for f in files if secret.encode() in f.read_bytes()]


def test_plain_still_trains_at_the_first_step() -> None:
    probe, strategy, w, _ = _run(8, protocol="plain", options={})
    assert strategy.rounds[0]["status"] == "ok", strategy.rounds[0]
    for node, steps in probe.steps.items():
        assert [s["train"] for s in steps] == [True]
        assert probe.train_calls[node] == [1]
    np.testing.assert_allclose(w, np.full(8, 0.03), atol=1e-6)


def test_a_node_asked_to_train_twice_in_a_round_refuses_without_training() -> None:
    probe, _, _, grid = _run(6)
    node, masked = next((n, m) for n, m in grid.delivered
                        if m.content.config_records.get("secureagg", {}).get("train"))
    calls = len(probe.train_calls[node])
    reply = grid.app(FakeGrid.copy_message(masked), grid.contexts[node])
    # our own fixed refusal of what the server asked: type, stage and its (data-free) text
    assert reply.has_error() and reply.error.reason == (
        "ConfigurationError at stage step: this node has trained in this round already; it "
        "trains once per round")
    assert len(probe.train_calls[node]) == calls == 1
