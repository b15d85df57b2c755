"""A FederatedRun whose clients train on Flower nodes (FlowerDeployment + node_trainer), over the
in-process stand-in Grid: the same model as the run in one process, bit for bit, with the same
seed - with and without DP - and the same history, accounting and run directory."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flwr")
torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).parent))

from fake_grid import FakeGrid  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

from secureagg.demos import flower_apps  # noqa: E402
from secureagg.demos.federated_task import DemoSettings, build_run, digits_task  # noqa: E402
from secureagg.errors import ConfigurationError  # noqa: E402
from secureagg.flower.federated import FlowerDeployment, node_trainer  # noqa: E402
from secureagg.flower.mod import secureagg_mod  # noqa: E402

NODE0 = 5_000_000_000


def _grid(settings: DemoSettings, *, seeded: bool = True, **extra: Any) -> FakeGrid:
    nodes = {NODE0 + 31 * i: {"partition-id": i, "num-partitions": settings.clients,
                              "secureagg-allow-seeded": seeded}
             for i in range(settings.clients)}
    return FakeGrid(flower_apps.client_app, nodes,
                    run_config={"settings": flower_apps.settings_to_json(settings)}, **extra)


def _both(settings: DemoSettings, tmp_path: Path) -> tuple[Any, Any, FakeGrid]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = build_run(settings, digits_task(settings), run_dir=tmp_path / "local",
                          progress=False)
        local.run()
        grid = _grid(settings)
        deployed = build_run(
            settings, digits_task(settings), run_dir=tmp_path / "deployed", progress=False,
            deployment=FlowerDeployment(grid, stage_deadline=5.0, train_deadline=60.0,
                                        wait_for_nodes=1.0),
        )
        deployed.run()
    return local, deployed, grid


def _same_model(a: Any, b: Any) -> None:
    sa_, sb = a.model.state_dict(), b.model.state_dict()
    assert list(sa_) == list(sb)
    for key in sa_:
        assert torch.equal(sa_[key], sb[key]), key


def test_a_deployed_run_gives_the_same_model_bit_for_bit(tmp_path: Path) -> None:
    settings = DemoSettings(clients=4, rounds=2, epsilon=None, run_seed=11, hidden=16)
    local, deployed, grid = _both(settings, tmp_path)
    _same_model(local, deployed)
    trained = [m for _, m in grid.delivered if "arrays" in m.content.array_records]
    assert len(trained) == 2 * 4  # every client trained on its node, in both rounds
    assert [h["status"] for h in deployed.history] == ["completed", "completed"]
    assert [h["participants"] for h in deployed.history] == [
        h["participants"] for h in local.history]
    assert [h["metrics"] for h in deployed.history] == [h["metrics"] for h in local.history]


def test_with_dp_sgd_and_distributed_dp_the_model_and_the_ledger_are_the_same(
    tmp_path: Path,
) -> None:
    settings = DemoSettings(clients=4, rounds=2, epsilon=8.0, run_seed=5, hidden=16)
    local, deployed, _ = _both(settings, tmp_path)
    _same_model(local, deployed)
    assert local.privacy is not None and deployed.privacy is not None
    assert deployed.privacy.summary([0, 1, 2, 3]) == local.privacy.summary([0, 1, 2, 3])
    ledger = json.loads((tmp_path / "deployed" / "privacy_ledger.json").read_text())
    assert ledger["sample_level"]["streams"] and ledger["user_level"]["streams"]


def test_a_node_does_not_take_a_seed_unless_its_config_allows_it(tmp_path: Path) -> None:
    settings = DemoSettings(clients=3, rounds=1, epsilon=None, run_seed=3, hidden=8)
    grid = _grid(settings, seeded=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = build_run(settings, digits_task(settings), run_dir=None, progress=False,
                        deployment=FlowerDeployment(grid, stage_deadline=2.0,
                                                    train_deadline=30.0, wait_for_nodes=1.0))
        run.run()
    entry = run.history[0]
    assert entry["status"] == "aborted"
    failed = grid_errors(run)
    assert failed and all("seed" in f["error"] for f in failed)


def grid_errors(run: Any) -> list[dict[str, Any]]:
    last = run.deployment.last
    return [] if last is None else list(last.record.failed)


def test_simulated_dropouts_are_refused_in_a_deployed_run() -> None:
    settings = DemoSettings(clients=3, rounds=1, epsilon=None, dropout=0.2, hidden=8)
    grid = _grid(settings, seeded=False)
    run = build_run(settings, digits_task(settings), run_dir=None, progress=False,
                    deployment=FlowerDeployment(grid, wait_for_nodes=1.0))
    with pytest.raises(ConfigurationError, match="dropouts"):
        run.run()


def test_settings_round_trip_through_the_run_config() -> None:
    settings = DemoSettings(clients=5, rounds=3, epsilon=4.0, threat="malicious")
    back = flower_apps.settings_from_json(flower_apps.settings_to_json(settings))
    assert back == dataclasses.replace(settings, workers=None)
    with pytest.raises(ConfigurationError, match="unknown demo settings"):
        flower_apps.settings_from_json('{"clients": 3, "bogus": 1}')


def test_a_node_silent_after_advertising_is_recorded_at_the_stage_it_went_silent(
        tmp_path: Path) -> None:
    """A SecAgg node trains only at ``masked``: one that goes silent after its key advertisement
    has no training report, and the run record still names the stage it went silent in (not the
    first stage), consistent with the transcript, which holds its advertisement."""
    settings = DemoSettings(clients=4, rounds=1, epsilon=None, dropout=0.0, hidden=8)
    grid = _grid(settings)
    victim = NODE0 + 31 * 2
    grid.answers_left[victim] = 2  # the round's hello and advertise; silent from then on
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = build_run(settings, digits_task(settings), run_dir=tmp_path / "run", progress=False,
                        deployment=FlowerDeployment(grid, stage_deadline=3.0, train_deadline=30.0,
                                                    wait_for_nodes=1.0))
        run.run()
    entry = json.loads((tmp_path / "run" / "history.json").read_text("utf-8"))["rounds"][0]
    assert entry["status"] in ("ok", "completed")
    assert 2 not in entry["participants"]
    assert entry["silent_from"] == {"2": "share"}
    sent = {(line["stage"], line["sender"]) for line in map(
        json.loads, (tmp_path / "run" / "transcript.jsonl").read_text("utf-8").splitlines())
        if line["direction"] == "up"}
    assert ("advertise", 2) in sent and ("share", 2) not in sent


SECRET = "SECRET-ROW-42"


def test_a_node_whose_train_raises_reports_the_type_and_stage_and_keeps_the_message(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The user's train function on client 1's node raises with a message quoting its data: the
    node's report (and so the history, the transcript and every run-directory file) says only
    ``RuntimeError at stage train``; the full message is in the node's own log."""
    settings = DemoSettings(clients=4, rounds=1, epsilon=None, run_seed=7, hidden=8)

    def bad_train(model: Any, loader: Any, opt: Any) -> None:
        raise RuntimeError(f"row {SECRET} of /data/client1.csv has age=-3")

    def build(context: Any) -> Any:
        task = digits_task(settings)
        if context.node_config["partition-id"] == 1:
            task = dataclasses.replace(task, train=bad_train)
        return build_run(settings, task, run_dir=None, progress=False)

    app = ClientApp(mods=[secureagg_mod])
    app.train()(node_trainer(build))
    nodes = {NODE0 + 31 * i: {"partition-id": i, "num-partitions": settings.clients,
                              "secureagg-allow-seeded": True} for i in range(settings.clients)}
    grid = FakeGrid(app, nodes)
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="secureagg"):
        warnings.simplefilter("ignore")
        run = build_run(settings, digits_task(settings), run_dir=tmp_path / "run",
                        progress=False,
                        deployment=FlowerDeployment(grid, stage_deadline=5.0,
                                                    train_deadline=60.0, wait_for_nodes=1.0))
        run.run()
    entry = run.history[0]
    assert entry["status"] == "completed" and 1 not in entry["participants"]
    assert entry["client_failures"] == [
        {"client": 1, "stage": "train", "error": "RuntimeError at stage train"}]
    # what the server received and wrote holds the type and the stage, never the message
    assert grid.received and not [n for n, wire in grid.received if SECRET.encode() in wire]
    assert any(b"RuntimeError at stage train" in wire for _, wire in grid.received)
    files = [f for f in (tmp_path / "run").rglob("*") if f.is_file()]
    assert any(f.name == "history.json" for f in files)
    assert not [f.name for f in files if SECRET.encode() in f.read_bytes()]
    assert "RuntimeError at stage train" in (tmp_path / "run" / "history.json").read_text()
    assert SECRET not in json.dumps(run.history, default=str)
    # the node keeps the full text in its log (WARNING, with the traceback)
    local = [r for r in caplog.records if SECRET in r.getMessage()]
    assert local and all(r.levelno == logging.WARNING and r.exc_info for r in local)
