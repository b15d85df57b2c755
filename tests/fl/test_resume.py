"""Resume: a run continued from its directory after a crash equals an uninterrupted run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from secureagg.errors import ConfigurationError, InvalidInputError

torch = pytest.importorskip("torch")
from secureagg.audit.rundir import RunDirectory  # noqa: E402
from secureagg.fl import Failures, FederatedRun  # noqa: E402
from tests.fl.conftest import (  # noqa: E402
    flat_params,
    make_evaluate,
    make_loaders,
    make_model,
    train,
)

pytestmark = pytest.mark.filterwarnings("ignore::secureagg.transport.SeededRunWarning")

FAILURES = Failures(dropout_rate=0.2, schedule={3: {2: "masked"}})


def make_run(run_dir: Path, loaders: list[Any], *, rounds: int = 4, resume: bool = False,
             trainer: Any = train, **kwargs: Any) -> FederatedRun:
    return FederatedRun(
        make_model(seed=kwargs.pop("model_seed", 0)), train=trainer, client_loaders=loaders,
        evaluate=make_evaluate(loaders), aggregator="secagg+", rounds=rounds, seed=21,
        failures=FAILURES, progress=False, run_dir=run_dir, resume=resume, **kwargs,
    )


def stable(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History entries without wall-clock fields."""
    return [{k: v for k, v in e.items() if k != "seconds"} for e in history]


def transcript(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "transcript.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path]:
    """One uninterrupted 4-round run, shared by the tests (which must not modify it)."""
    path = tmp_path_factory.mktemp("reference") / "run"
    run = make_run(path, make_loaders())
    run.run()
    return flat_params(run.model), path


def copy_of(reference: tuple[np.ndarray, Path], tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(reference[1], target)
    return target


def test_run_directory_contents(reference: tuple[np.ndarray, Path]) -> None:
    final, path = reference
    for name in ("config.json", "history.json", "transcript.jsonl", "privacy_ledger.json",
                 "model.pt", "result.json"):
        assert (path / name).is_file(), name
    history = json.loads((path / "history.json").read_text())
    assert history["completed_rounds"] == 4
    assert [e["round"] for e in history["rounds"]] == [1, 2, 3, 4]
    assert list((path / "checkpoints").iterdir()) == [path / "checkpoints" / "round-00004.pt"]
    state = torch.load(path / "model.pt", weights_only=True)
    model = make_model()
    model.load_state_dict(state)
    np.testing.assert_array_equal(flat_params(model), final)
    lines = transcript(path)
    up = [x for x in lines if x["direction"] == "up"]
    assert {x["round"] for x in lines} == {1, 2, 3, 4}
    assert sum(x["size"] for x in up) == sum(e["bytes"]["up"] for e in history["rounds"])
    assert {x["kind"] for x in up} >= {"secagg/masked-input", "secagg/key-advertisement"}
    assert all(len(x["sha256"]) == 64 for x in lines)
    config = json.loads((path / "config.json").read_text())
    assert config["protocol"] == "secagg+"
    assert config["seeded"] is True


def test_resume_after_completed_rounds_matches_uninterrupted(
    reference: tuple[np.ndarray, Path], tmp_path: Path, loaders: list[Any]
) -> None:
    final, ref_dir = reference
    path = tmp_path / "split"
    make_run(path, loaders, rounds=2).run()
    # A fresh process would build a fresh model: a different initialisation must not matter.
    resumed = make_run(path, loaders, rounds=4, resume=True, model_seed=123)
    assert resumed.completed_rounds == 2
    resumed.run()
    np.testing.assert_array_equal(flat_params(resumed.model), final)
    ref_history = json.loads((ref_dir / "history.json").read_text())["rounds"]
    assert stable(resumed.history) == stable(ref_history)
    assert transcript(path) == transcript(ref_dir)  # same messages, byte for byte (sha256)


def test_crash_inside_a_round_loses_and_repeats_nothing(
    reference: tuple[np.ndarray, Path], tmp_path: Path, loaders: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    final, ref_dir = reference
    path = tmp_path / "crash"
    original = RunDirectory.commit

    def crash_at_round_3(self: RunDirectory, history: dict[str, Any]) -> None:
        if history["completed_rounds"] == 3:
            raise KeyboardInterrupt("power cut after the transcript and checkpoint of round 3")
        original(self, history)

    monkeypatch.setattr(RunDirectory, "commit", crash_at_round_3)
    with pytest.raises(KeyboardInterrupt):
        make_run(path, loaders).run()
    monkeypatch.setattr(RunDirectory, "commit", original)
    assert json.loads((path / "history.json").read_text())["completed_rounds"] == 2
    assert {x["round"] for x in transcript(path)} == {1, 2, 3}  # round 3 half-written

    resumed = make_run(path, loaders, resume=True)
    assert resumed.completed_rounds == 2
    resumed.run()
    np.testing.assert_array_equal(flat_params(resumed.model), final)
    assert transcript(path) == transcript(ref_dir)


def test_crash_in_training_then_resume(
    reference: tuple[np.ndarray, Path], tmp_path: Path, loaders: list[Any]
) -> None:
    final, _ = reference
    calls = {"n": 0}

    def flaky(model: Any, loader: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 13:  # somewhere in round 3
            raise SystemExit("the machine went away")
        train(model, loader)

    path = tmp_path / "flaky"
    with pytest.raises(SystemExit):
        make_run(path, loaders, trainer=flaky).run()
    resumed = make_run(path, loaders, resume=True)
    resumed.run()
    np.testing.assert_array_equal(flat_params(resumed.model), final)


def test_resume_refuses_a_different_configuration(
    reference: tuple[np.ndarray, Path], loaders: list[Any], tmp_path: Path
) -> None:
    path = copy_of(reference, tmp_path)
    with pytest.raises(ConfigurationError, match="already holds a run"):
        make_run(path, loaders)
    with pytest.raises(ConfigurationError, match="clip"):
        make_run(path, loaders, resume=True, clip=0.5)
    # A tampered checkpoint is detected, not loaded.
    ckpt = path / "checkpoints" / "round-00004.pt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 1
    ckpt.write_bytes(bytes(data))
    with pytest.raises(InvalidInputError, match="sha256"):
        make_run(path, loaders, resume=True)


def test_extending_a_finished_run(
    reference: tuple[np.ndarray, Path], loaders: list[Any], tmp_path: Path
) -> None:
    path = copy_of(reference, tmp_path)
    more = make_run(path, loaders, rounds=5, resume=True)
    more.run()
    assert [e["round"] for e in more.history] == [1, 2, 3, 4, 5]
    assert json.loads((path / "config.json").read_text())["rounds"] == 5
