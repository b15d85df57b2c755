"""SecureFedAvg, the link and the mod end to end in one process, over a stand-in Grid that
serialises every message with Flower's protobuf and calls the node's ClientApp afresh for each
(tests/flower/fake_grid.py); the real-process tests are in test_deployment.py.

The test app's node with partition p updates by (p + 1) * r / 100 in round r (second array
-(p + 1) / 50) and reports p + 1 examples, so every aggregate is known.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

flwr = pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict  # noqa: E402

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "secure_app"))

import secure_app  # noqa: E402
from fake_grid import FakeGrid  # noqa: E402

import secureagg as sa  # noqa: E402
from secureagg.errors import ConfigurationError  # noqa: E402
from secureagg.flower import SecureFedAvg, secureagg_mod  # noqa: E402
from secureagg.flower.identity import write_identity_key  # noqa: E402

NODE0 = 7_000_000_000


def _nodes(n: int, **extra: dict[str, Any]) -> dict[int, dict[str, Any]]:
    nodes = {NODE0 + 17 * i: {"partition-id": i, "num-partitions": n} for i in range(n)}
    for cfg in nodes.values():
        cfg.update(extra.get(str(cfg["partition-id"]), {}))
    return nodes


def _initial(dim: int = 6) -> ArrayRecord:
    return ArrayRecord(OrderedDict([
        ("w", Array(np.zeros(dim, dtype=np.float32))),
        ("b", Array(np.zeros((2, 3), dtype=np.float64))),
    ]))


def _updates(partitions: list[int], r: int, dim: int = 6) -> list[list[np.ndarray]]:
    return [[np.full(dim, (p + 1) * r / 100.0), np.full((2, 3), -(p + 1) / 50.0)]
            for p in partitions]


def _run(grid: FakeGrid, protocol: str = "secagg+", rounds: int = 2, **kw: Any
         ) -> tuple[SecureFedAvg, dict[str, np.ndarray]]:
    kw.setdefault("options", {"clip": 1.0, "max_weight": 16})
    kw.setdefault("stage_deadline", 2.0)
    kw.setdefault("train_deadline", 2.0)
    kw.setdefault("min_train_nodes", len(grid.contexts))
    strategy = SecureFedAvg(protocol, **kw)
    result = strategy.start(grid=grid, initial_arrays=_initial(), num_rounds=rounds)
    return strategy, {k: v.numpy() for k, v in result.arrays.items()}


def _partitions(grid: FakeGrid, entry: dict[str, Any], parties: list[int]) -> list[int]:
    nodes = {int(k): v for k, v in entry["nodes"].items()}
    return [int(grid.contexts[nodes[p]].node_config["partition-id"]) for p in parties]


def _expected(grid: FakeGrid, strategy: SecureFedAvg, *, weighted: bool = True
              ) -> list[np.ndarray]:
    total = [np.zeros(6), np.zeros((2, 3))]
    for entry in strategy.rounds:
        if entry["status"] != "ok":
            continue
        parts = _partitions(grid, entry, entry["survivors"])
        ups = _updates(parts, entry["round"])
        w = [p + 1.0 if weighted else 1.0 for p in parts]
        for j in range(2):
            total[j] += sum(wi * u[j] for wi, u in zip(w, ups, strict=True)) / sum(w)
    return total


def test_secagg_plus_rounds_release_exactly_the_weighted_mean() -> None:
    grid = FakeGrid(secure_app.client_app, _nodes(5))
    strategy, arrays = _run(grid)
    assert [e["status"] for e in strategy.rounds] == ["ok", "ok"]
    assert all(e["survivors"] == [0, 1, 2, 3, 4] for e in strategy.rounds)
    expected = _expected(grid, strategy)
    bound = sa.make_aggregator("secagg+", num_clients=5, clip=1.0, max_weight=16).error_bound()
    np.testing.assert_allclose(arrays["w"], expected[0], atol=2 * bound + 1e-6)
    np.testing.assert_allclose(arrays["b"], expected[1], atol=2 * bound)
    assert arrays["w"].dtype == np.float32


def test_the_aggregate_equals_the_in_memory_simulation_of_the_same_inputs() -> None:
    grid = FakeGrid(secure_app.client_app, _nodes(4))
    strategy, arrays = _run(grid, rounds=1)
    entry = strategy.rounds[0]
    parts = _partitions(grid, entry, entry["survivors"])
    agg = sa.make_aggregator("secagg+", num_clients=4, clip=1.0, max_weight=16)
    res = sa.simulate(agg, _updates(parts, 1), weights=[p + 1 for p in parts])
    mean = [a / res.total_weight for a in res.aggregate]
    np.testing.assert_allclose(arrays["b"], mean[1], atol=2 * agg.error_bound())
    np.testing.assert_allclose(arrays["w"], mean[0], atol=2 * agg.error_bound() + 1e-6)


def test_a_node_silent_from_its_masked_input_is_a_dropout_and_the_round_completes() -> None:
    grid = FakeGrid(secure_app.client_app, _nodes(5))
    victim = sorted(grid.contexts)[2]
    grid.answers_left[victim] = 3  # it answers hello, advertise and share, then is gone
    strategy, arrays = _run(grid, rounds=1, min_train_nodes=5)
    entry = strategy.rounds[0]
    assert entry["status"] == "ok"
    dropped_nodes = [entry["nodes"][str(p)] for p in entry["dropped"]]
    assert dropped_nodes == [victim]
    assert entry["timed_out"] == {"masked": [entry["dropped"][0]]}
    np.testing.assert_allclose(arrays["b"], _expected(grid, strategy)[1], atol=1e-6)


def test_below_threshold_the_round_aborts_and_the_model_is_unchanged() -> None:
    grid = FakeGrid(secure_app.client_app, _nodes(4))
    for node in sorted(grid.contexts)[:3]:
        grid.answers_left[node] = 3
    strategy, arrays = _run(grid, rounds=1)
    entry = strategy.rounds[0]
    assert entry["status"] == "aborted"
    assert "InsufficientSurvivors" in entry["error"]
    assert np.all(arrays["w"] == 0) and np.all(arrays["b"] == 0)


@pytest.mark.parametrize("fault", ["garbage", "replay", "foreign"])
def test_a_node_sending_bad_replies_is_dropped_and_the_round_goes_on(fault: str) -> None:
    grid = FakeGrid(secure_app.client_app, _nodes(5, **{"1": {"fault": fault}}))
    strategy, arrays = _run(grid, rounds=2)
    first, second = strategy.rounds
    bad = next(p for p in range(5) if _partitions(grid, first, [p]) == [1])
    assert first["status"] == "ok" and bad in first["dropped"], first
    assert first["rejected"] or first["failed"], first
    assert second["status"] == "ok" and second["dropped"] == []
    expected = _expected(grid, strategy)
    np.testing.assert_allclose(arrays["b"], expected[1], atol=1e-6)


def test_the_mod_refuses_a_plain_train_message() -> None:
    grid = FakeGrid(secure_app.client_app, _nodes(1))
    node = next(iter(grid.contexts))
    message = Message(RecordDict({"arrays": _initial(), "config": ConfigRecord(
        {"server-round": 1})}), dst_node_id=node, message_type="train")
    (reply,) = grid.send_and_receive([message])
    assert reply.has_error() and "secure aggregation" in reply.error.reason
    assert not reply.has_content()


def test_a_node_refuses_a_replayed_round() -> None:
    grid = FakeGrid(secure_app.client_app, _nodes(3))
    _run(grid, rounds=1, min_train_nodes=3)
    node, first = next((n, m) for n, m in grid.delivered
                       if "spec" in m.content.config_records.get("secureagg", {}))
    reply = secureagg_mod(first, grid.contexts[node], lambda m, c: pytest.fail("trained again"))
    assert reply.has_error() and "replayed" in reply.error.reason


def test_malicious_mode_admits_only_listed_identity_keys(tmp_path: Path) -> None:
    keys = {}
    for i in range(5):
        keys[i] = write_identity_key(tmp_path / f"node{i}.pem")
    grid = FakeGrid(secure_app.client_app, _nodes(
        5, **{str(i): {"secureagg-identity-key": str(tmp_path / f"node{i}.pem")}
              for i in range(5)}))
    admitted = frozenset(keys[i] for i in range(4))  # node 4 is not listed
    strategy, arrays = _run(grid, rounds=1, min_train_nodes=4, identities=admitted,
                            options={"clip": 1.0, "max_weight": 16, "threat": "malicious"})
    entry = strategy.rounds[0]
    assert entry["status"] == "ok" and entry["clients"] == 4
    assert 4 not in _partitions(grid, entry, list(range(4)))
    np.testing.assert_allclose(arrays["b"], _expected(grid, strategy)[1], atol=1e-6)


def test_the_server_never_receives_a_plain_update() -> None:
    """Every byte the server received, over all stages, holds no client's update in the clear:
    the known update values (as float64 or the quantised field elements) never appear."""
    grid = FakeGrid(secure_app.client_app, _nodes(4))
    seen: list[bytes] = []

    def keep(node: int, reply: Message) -> Message:
        if reply.has_content():
            seen.extend(reply.content.config_records["secureagg"].get("messages", []))
        return reply

    grid.tamper = keep
    _run(grid, rounds=1)
    for p in range(4):
        needle = np.full(6, (p + 1) / 100.0).tobytes()[:16]
        assert all(needle not in blob for blob in seen)
    assert seen


def _he_nodes(n: int) -> dict[int, dict[str, Any]]:
    nodes = _nodes(n)
    nodes[NODE0 - 1] = {"secureagg-role": "key-holder", "partition-id": 99}
    return nodes


@pytest.mark.parametrize("protocol", ["ckks", "paillier"])
def test_he_rounds_with_the_key_holder_on_its_own_node(protocol: str) -> None:
    grid = FakeGrid(secure_app.client_app, _he_nodes(4))
    strategy, arrays = _run(grid, protocol, rounds=2, min_train_nodes=4)
    assert [e["status"] for e in strategy.rounds] == ["ok", "ok"], strategy.rounds
    for entry in strategy.rounds:
        assert entry["nodes"]["-2"] == NODE0 - 1  # the key holder's node, never a client's
        assert sorted(int(p) for p in entry["nodes"]) == [-2, 0, 1, 2, 3]
    expected = _expected(grid, strategy)
    np.testing.assert_allclose(arrays["b"], expected[1], atol=1e-3)
    np.testing.assert_allclose(arrays["w"], expected[0], atol=1e-3)
    # The key holder's secret key stays in its node's state; no message to the server holds it.
    kh_state = grid.contexts[NODE0 - 1].state.config_records["secureagg.state"]
    assert kh_state["key"]


def test_an_he_round_without_a_key_holder_node_is_refused_clearly() -> None:
    grid = FakeGrid(secure_app.client_app, _nodes(3))
    with pytest.raises(ConfigurationError, match="key-holder node"):
        _run(grid, "ckks", rounds=1, wait_for_nodes=1.0)


@pytest.mark.parametrize(("protocol", "option"), [
    ("secagg+", {"distributed_dp": {"l2_clip": 1.0, "noise_multiplier": 0.5, "dimension": 12}}),
    ("ckks", {"central_dp": {"l2_clip": 1.0, "noise_multiplier": 0.5}, "clip": 1.0}),
])
def test_dp_rounds_compose_in_one_accountant(protocol: str, option: dict[str, Any]) -> None:
    grid = FakeGrid(secure_app.client_app, _he_nodes(4) if protocol == "ckks" else _nodes(4))
    strategy, _ = _run(grid, protocol, rounds=2, options=option, weighted=False,
                       min_train_nodes=4)
    assert [e["status"] for e in strategy.rounds] == ["ok", "ok"], strategy.rounds
    eps = [max(s["epsilon"] for s in e["privacy"]["streams"]) for e in strategy.rounds]
    rounds = [max(s["rounds"] + s["steps"] for s in e["privacy"]["streams"])
              for e in strategy.rounds]
    assert rounds == [1, 2], rounds
    assert 0 < eps[0] < eps[1]


@pytest.mark.parametrize("protocol", ["plain", "secagg"])
def test_the_other_protocols_release_the_weighted_mean(protocol: str) -> None:
    grid = FakeGrid(secure_app.client_app, _nodes(4))
    options = {} if protocol == "plain" else {"clip": 1.0, "max_weight": 16}
    strategy, arrays = _run(grid, protocol, rounds=1, options=options)
    assert strategy.rounds[0]["status"] == "ok", strategy.rounds[0]
    expected = _expected(grid, strategy)
    np.testing.assert_allclose(arrays["b"], expected[1], atol=1e-6)


def test_a_refused_step_ends_the_nodes_part_in_the_round() -> None:
    """After the node refuses a message, its stored state is gone: a later message of the same
    round is not answered from the state it had before the refusal."""
    grid = FakeGrid(secure_app.client_app, _nodes(3))
    _run(grid, rounds=1, min_train_nodes=3)
    node, later = next((n, msg) for n, msg in grid.delivered
                       if msg.content.config_records.get("secureagg", {}).get("kind") == "step"
                       and "spec" not in msg.content.config_records["secureagg"])
    context = grid.contexts[node]
    assert context.state.config_records["secureagg.state"]["state"]  # what the round left
    bad = FakeGrid.copy_message(later)
    bad.content.config_records["secureagg"]["message"] = b"SAGG-not-a-message"
    reply = secureagg_mod(bad, context, lambda m, c: pytest.fail("no training"))
    assert reply.has_error()
    again = secureagg_mod(FakeGrid.copy_message(later), context,
                          lambda m, c: pytest.fail("no training"))
    assert again.has_error() and "no round in progress" in again.error.reason


def test_secagg_plus_with_the_default_minimum_of_two_nodes() -> None:
    grid = FakeGrid(secure_app.client_app, _nodes(3))
    strategy, arrays = _run(grid, rounds=1, min_train_nodes=2)
    assert strategy.rounds[0]["status"] == "ok" and strategy.rounds[0]["clients"] == 3
    np.testing.assert_allclose(arrays["b"], _expected(grid, strategy)[1], atol=1e-6)


def test_a_round_the_privacy_budget_refuses_sends_nothing_and_stops_the_run() -> None:
    grid = FakeGrid(secure_app.client_app, _nodes(4))
    option = {"distributed_dp": {"l2_clip": 1.0, "noise_multiplier": 0.5, "dimension": 12}}
    strategy, arrays = _run(grid, rounds=3, options=option, weighted=False, max_epsilon=1e-3)
    (entry,) = strategy.rounds
    assert entry["status"] == "aborted" and "PrivacyBudgetExceeded" in entry["error"]
    assert entry.get("stopped")
    assert not [m for _, m in grid.delivered if "spec" in m.content.config_records.get(
        "secureagg", {})]
    assert np.all(arrays["w"] == 0)
