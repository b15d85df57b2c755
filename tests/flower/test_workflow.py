"""SecureAggWorkflow as the fit workflow of Flower's legacy DefaultWorkflow, with a NumPyClient
behind secureagg_mod (tests/flower/secure_app/legacy_app.py), over the in-process stand-in Grid
(tests/flower/fake_grid.py: every message through Flower's protobuf, the ClientApp called afresh).

The node with partition p updates by (p + 1) * r / 100 in round r (second array -(p + 1) / 50)
and reports p + 1 examples, so every round's weighted mean is known.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

flwr = pytest.importorskip("flwr")

from flwr.app import Context, RecordDict  # noqa: E402
from flwr.common import parameters_to_ndarrays  # noqa: E402
from flwr.server import LegacyContext, ServerConfig  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402
from flwr.server.workflow import DefaultWorkflow  # noqa: E402
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD  # noqa: E402

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "secure_app"))

import legacy_app  # noqa: E402
from fake_grid import FakeGrid  # noqa: E402

import secureagg as sa  # noqa: E402
from secureagg.flower import SecureAggWorkflow  # noqa: E402
from secureagg.flower.identity import write_identity_key  # noqa: E402

NODE0 = 8_000_000_000
OPTIONS = {"clip": 1.0, "max_weight": 16}


class LegacyGrid(FakeGrid):
    """FakeGrid plus what Flower's legacy client manager reads (``grid.run.run_id``)."""

    run = SimpleNamespace(run_id=1)


class SpyFedAvg(FedAvg):
    """FedAvg that keeps what ``aggregate_fit`` was given."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.seen: list[tuple[int, list[Any], list[Any]]] = []

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
        self.seen.append((server_round, list(results), list(failures)))
        return super().aggregate_fit(server_round, results, failures)


def _nodes(n: int, key_holder: bool = False) -> dict[int, dict[str, Any]]:
    nodes: dict[int, dict[str, Any]] = {NODE0 + 13 * i: {"partition-id": i} for i in range(n)}
    if key_holder:
        nodes[NODE0 - 1] = {"secureagg-role": "key-holder", "partition-id": 99}
    return nodes


def _run(grid: FakeGrid, protocol: str = "secagg+", rounds: int = 2, *, clients: int,
         strategy: FedAvg | None = None, **kw: Any
         ) -> tuple[SecureAggWorkflow, LegacyContext, list[np.ndarray]]:
    kw.setdefault("options", OPTIONS)
    kw.setdefault("train_deadline", 2.0)
    kw.setdefault("stage_deadline", 2.0)
    workflow = SecureAggWorkflow(protocol, **kw)
    base = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    if strategy is None:
        strategy = SpyFedAvg(min_fit_clients=clients, min_available_clients=clients,
                             on_fit_config_fn=lambda r: {"server-round": r},
                             initial_parameters=legacy_app.ndarrays_to_parameters(
                                 legacy_app.initial()))
    context = LegacyContext(context=base, config=ServerConfig(num_rounds=rounds),
                            strategy=strategy)
    DefaultWorkflow(fit_workflow=workflow)(grid, context)
    final = [a.numpy() for a in context.state.array_records[MAIN_PARAMS_RECORD].values()]
    return workflow, context, final


def _partitions(grid: FakeGrid, entry: dict[str, Any], parties: list[int]) -> list[int]:
    return [int(grid.contexts[entry["nodes"][str(p)]].node_config["partition-id"])
            for p in parties]


def _expected(grid: FakeGrid, workflow: SecureAggWorkflow) -> list[np.ndarray]:
    """The global model after the recorded rounds: each applied round adds the weighted mean of
    its survivors' known updates."""
    total = [np.zeros(legacy_app.DIM), np.zeros((2, 3))]
    for entry in workflow.rounds:
        if entry["status"] != "ok":
            continue
        parts = _partitions(grid, entry, entry["survivors"])
        weight = sum(p + 1.0 for p in parts)
        total[0] += sum((p + 1) * (p + 1) * entry["round"] / 100.0 for p in parts) / weight
        total[1] += sum((p + 1) * -(p + 1) / 50.0 for p in parts) / weight
    return total


def _bound(n: int) -> float:
    return sa.make_aggregator("secagg+", num_clients=n, **OPTIONS).error_bound()


def test_two_secagg_plus_rounds_give_exactly_the_weighted_mean() -> None:
    grid = LegacyGrid(legacy_app.client_app, _nodes(5))
    workflow, context, final = _run(grid, clients=5)
    assert [e["status"] for e in workflow.rounds] == ["ok", "ok"], workflow.rounds
    assert all(e["survivors"] == [0, 1, 2, 3, 4] and e["strategy"] == "applied"
               for e in workflow.rounds)
    # Round 1 moves w by sum((p+1)^2)/100 / sum(p+1) = 55/1500, round 2 by twice that; b by
    # -sum((p+1)^2)/50 / sum(p+1) = -55/750 per round.
    w_expected, b_expected = 3 * 55 / 1500, 2 * -55 / 750
    np.testing.assert_allclose(_expected(grid, workflow)[0], w_expected)
    np.testing.assert_allclose(final[0], w_expected, atol=2 * _bound(5) + 1e-6)
    np.testing.assert_allclose(final[1], b_expected, atol=2 * _bound(5))
    assert final[0].dtype == np.float32 and final[1].dtype == np.float64
    # Flower's evaluate round went through the mod to every NumPyClient with the new model.
    losses = dict(context.history.losses_distributed)
    np.testing.assert_allclose(losses[2], legacy_app.DIM * w_expected, rtol=1e-5)
    # The strategy saw only the aggregate: identical parameters, one FitRes per survivor.
    strategy = context.strategy
    assert isinstance(strategy, SpyFedAvg)
    for _, results, failures in strategy.seen:
        assert len(results) == 5 and failures == []
        params = [parameters_to_ndarrays(res.parameters) for _, res in results]
        assert all(np.array_equal(p[1], params[0][1]) for p in params)
        assert all(res.metrics == {} and res.num_examples == 1 for _, res in results)


def test_the_nodes_fit_is_called_only_through_the_secure_round() -> None:
    """What the server received holds no FitRes: not the weights, not the metrics."""
    grid = LegacyGrid(legacy_app.client_app, _nodes(3))
    seen: list[Any] = []

    def keep(node: int, reply: Any) -> Any:
        if reply.has_content():
            seen.append(reply.content)
        return reply

    grid.tamper = keep
    workflow, _, _ = _run(grid, rounds=1, clients=3)
    assert workflow.rounds[0]["status"] == "ok"
    fitres = [c for c in seen if any(k.startswith("fitres") for k in
                                     [*c.array_records, *c.config_records, *c.metric_records])]
    assert fitres == []
    for content in seen:
        for record in [*content.config_records.values(), *content.metric_records.values()]:
            assert "secret-metric" not in record


def test_a_node_silent_from_its_masked_input_is_a_dropout_and_the_round_completes() -> None:
    grid = LegacyGrid(legacy_app.client_app, _nodes(5))
    victim = sorted(grid.contexts)[2]
    grid.answers_left[victim] = 3  # hello, advertise, share; then gone
    workflow, context, final = _run(grid, rounds=1, clients=5)
    entry = workflow.rounds[0]
    assert entry["status"] == "ok", entry
    dropped = [entry["nodes"][str(p)] for p in entry["dropped"]]
    assert dropped == [victim]
    assert entry["timed_out"] == {"masked": entry["dropped"]}
    parts = sorted(_partitions(grid, entry, entry["survivors"]))
    assert parts == [0, 1, 3, 4]
    # survivors' weights 1, 2, 4, 5: mean of (p+1)/100 weighted by p+1 = 46/1200
    np.testing.assert_allclose(final[0], 46 / 1200, atol=2 * _bound(5) + 1e-6)
    np.testing.assert_allclose(final[1], -46 / 600, atol=2 * _bound(5))
    (_, results, failures), = context.strategy.seen  # type: ignore[attr-defined]
    assert len(results) == 4 and len(failures) == 1
    assert f"node {victim}" in str(failures[0]) and "masked" in str(failures[0])


def test_below_threshold_the_round_aborts_and_the_parameters_are_unchanged() -> None:
    grid = LegacyGrid(legacy_app.client_app, _nodes(4))
    for node in sorted(grid.contexts)[:3]:
        grid.answers_left[node] = 3
    workflow, context, final = _run(grid, rounds=1, clients=4)
    entry = workflow.rounds[0]
    assert entry["status"] == "aborted" and "InsufficientSurvivors" in entry["error"], entry
    assert np.all(final[0] == 0) and np.all(final[1] == 0)
    assert context.strategy.seen == []  # type: ignore[attr-defined]


def test_a_strategy_refusing_failures_keeps_the_model() -> None:
    grid = LegacyGrid(legacy_app.client_app, _nodes(4))
    grid.answers_left[sorted(grid.contexts)[0]] = 3
    strategy = SpyFedAvg(min_fit_clients=4, min_available_clients=4, accept_failures=False,
                         on_fit_config_fn=lambda r: {"server-round": r},
                         initial_parameters=legacy_app.ndarrays_to_parameters(
                             legacy_app.initial()))
    workflow, _, final = _run(grid, rounds=1, clients=4, strategy=strategy)
    entry = workflow.rounds[0]
    assert entry["status"] == "ok" and entry["strategy"] == "returned no parameters", entry
    assert np.all(final[0] == 0)


def test_ckks_with_a_key_holder_node() -> None:
    grid = LegacyGrid(legacy_app.client_app, _nodes(4, key_holder=True))
    workflow, _, final = _run(grid, "ckks", rounds=2, clients=5)
    assert [e["status"] for e in workflow.rounds] == ["ok", "ok"], workflow.rounds
    for entry in workflow.rounds:
        # The strategy sampled all 5 nodes; the key holder is the key holder, not a client.
        assert entry["nodes"]["-2"] == NODE0 - 1
        assert sorted(int(p) for p in entry["nodes"]) == [-2, 0, 1, 2, 3]
        assert entry["left_out"] == {str(NODE0 - 1): "not a client (key-holder)"}
    # weights 1..4: sum((p+1)^2) / sum(p+1) = 30/10 per unit
    np.testing.assert_allclose(final[0], 3 * 3 / 100, atol=1e-3)
    np.testing.assert_allclose(final[1], 2 * -3 / 50, atol=1e-3)
    np.testing.assert_allclose(_expected(grid, workflow)[1], 2 * -3 / 50)
    assert grid.contexts[NODE0 - 1].state.config_records["secureagg.state"]["key"]


def test_dp_rounds_compose_in_one_accountant_and_training_stops_at_the_budget() -> None:
    grid = LegacyGrid(legacy_app.client_app, _nodes(4))
    options = {"distributed_dp": {"l2_clip": 1.0, "noise_multiplier": 0.5, "dimension": 12}}
    # one round costs about ε = 10.8 here, two would cost 22.1
    workflow, context, _ = _run(grid, rounds=3, clients=4, options=options, weighted=False,
                                max_epsilon=20.0)
    first, refused, skipped = workflow.rounds
    assert (first["status"], refused["status"], skipped["status"]) == (
        "ok", "aborted", "skipped"), workflow.rounds
    assert refused["error"].startswith("PrivacyBudgetExceeded") and refused["stopped"]
    eps = [max(s["epsilon"] for s in e["privacy"]["streams"]) for e in (first, refused)]
    assert 0 < eps[0] <= 20.0 and eps[1] == eps[0]  # the refused round spent nothing
    # the model evaluated after rounds 2 and 3 is the one round 1 produced
    losses = dict(context.history.losses_distributed)
    assert losses[1] == losses[2] == losses[3] and losses[1] != 0


def test_malicious_mode_leaves_out_a_node_whose_key_is_not_admitted(tmp_path: Path) -> None:
    nodes = _nodes(5)
    keys = []
    for i, cfg in enumerate(nodes[n] for n in sorted(nodes)):
        keys.append(write_identity_key(tmp_path / f"node{i}.pem"))
        cfg["secureagg-identity-key"] = str(tmp_path / f"node{i}.pem")
    grid = LegacyGrid(legacy_app.client_app, nodes)
    workflow, context, final = _run(grid, rounds=1, clients=5, identities=frozenset(keys[:4]),
                                    options={**OPTIONS, "threat": "malicious"})
    entry = workflow.rounds[0]
    outsider = sorted(nodes)[4]
    assert entry["status"] == "ok" and entry["clients"] == 4, entry
    assert entry["left_out"] == {str(outsider): "its identity key is not admitted"}
    # partitions 0..3, weights 1..4: sum((p+1)^2) / sum(p+1) = 30/10 per unit
    np.testing.assert_allclose(final[0], 3 / 100, atol=2 * _bound(4) + 1e-6)
    np.testing.assert_allclose(final[1], -3 / 50, atol=2 * _bound(4))
    (_, results, failures), = context.strategy.seen  # type: ignore[attr-defined]
    assert len(results) == 4 and [str(f) for f in failures] == [
        f"node {outsider}: its identity key is not admitted"]


def test_flowers_plain_fit_workflow_gets_nothing_from_a_secure_node() -> None:
    """The default (plaintext) fit workflow against the same nodes: every FitIns is refused."""
    grid = LegacyGrid(legacy_app.client_app, _nodes(3))
    base = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    strategy = legacy_app.strategy(3)
    context = LegacyContext(context=base, config=ServerConfig(num_rounds=1), strategy=strategy)
    DefaultWorkflow()(grid, context)
    final = [a.numpy() for a in context.state.array_records[MAIN_PARAMS_RECORD].values()]
    assert np.all(final[0] == 0) and np.all(final[1] == 0)


def test_the_legacy_server_app_runs_the_workflow(tmp_path: Path) -> None:
    """legacy_app.server_app: the documented ServerApp (LegacyContext + DefaultWorkflow)."""
    grid = LegacyGrid(legacy_app.client_app, _nodes(3))
    out = tmp_path / "result.json"
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={
        "rounds": 1, "min-nodes": 3, "protocol": "secagg+", "options": json.dumps(OPTIONS),
        "train-deadline": 2.0, "stage-deadline": 2.0, "result-path": str(out)})
    legacy_app.server_app(grid, context)
    result = json.loads(out.read_text())
    assert [e["status"] for e in result["rounds"]] == ["ok"]
    # weights 1, 2, 3: sum((p+1)^2)/100 / sum(p+1) = 14/600
    np.testing.assert_allclose(result["arrays"][0], 14 / 600, atol=2 * _bound(3) + 1e-6)


PYPROJECT = """
[project]
name = "secureagg-legacy-test"
version = "0.1.0"
description = "SecureAggWorkflow in Flower's legacy DefaultWorkflow, with a NumPyClient."
license = "Apache-2.0"
dependencies = ["flwr>=1.42"]

[tool.flwr.app]
publisher = "secureagg"

[tool.flwr.app.components]
serverapp = "legacy_app:server_app"
clientapp = "legacy_app:client_app"

[tool.flwr.app.config]
result-path = ""
protocol = "secagg+"
options = "{}"
rounds = 1
min-nodes = 3
train-deadline = 60.0
stage-deadline = 20.0
"""


@pytest.mark.flower
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_the_legacy_app_on_real_flower_processes(tmp_path: Path) -> None:
    """legacy_app on a real SuperLink and 3 SuperNodes (secureagg.flower.processes.Deployment):
    one secagg+ round through DefaultWorkflow gives the weighted mean."""
    from secureagg.flower.processes import Deployment

    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(HERE / "secure_app" / "legacy_app.py", app)
    (app / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    out = tmp_path / "result.json"
    with Deployment(3, workdir=tmp_path / "dep") as dep:
        dep.run(app, run_config={"result-path": str(out), "options": json.dumps(OPTIONS)},
                timeout=240).check()
    result = json.loads(out.read_text())
    assert [e["status"] for e in result["rounds"]] == ["ok"], result["rounds"]
    np.testing.assert_allclose(result["arrays"][0], 14 / 600, atol=2 * _bound(3) + 1e-6)
    np.testing.assert_allclose(result["arrays"][1], -14 / 300, atol=2 * _bound(3))
