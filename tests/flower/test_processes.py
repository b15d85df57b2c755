"""secureagg.flower.processes.Deployment: real Flower 1.42 processes on 127.0.0.1.

One insecure deployment of three SuperNodes is shared by the module (starting one takes a few
seconds); the TLS test starts its own. The ping app (``ping_app/``) sends one "query" message to
every SuperNode and writes what each echoed back (its node config and node id) to a JSON file.
Skipped without the flower extra, and where there is no /proc (the stop check reads it).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flwr", reason="needs the flower extra: pip install 'secureagg[flower]'")

from secureagg.errors import ConfigurationError, MissingDependencyError
from secureagg.flower import processes
from secureagg.flower.processes import Deployment, DeploymentError

try:
    import tomllib
except ImportError:  # Python 3.10: flwr depends on tomli
    import tomli as tomllib  # type: ignore[no-redef]

pytestmark = [
    pytest.mark.flower,
    pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc"),
]

PING_APP = Path(__file__).parent / "ping_app"
EXTRA = [{"site": 'a "quoted" site'}, {"weight": 0.25, "honest": False}, {}]


def ping(dep: Deployment, tmp_path: Path, **config: Any) -> tuple[Any, dict[str, Any]]:
    result = tmp_path / "ping.json"
    config = {"result-path": str(result), "num-nodes": dep.num_nodes, **config}
    outcome = dep.run(PING_APP, run_config=config, timeout=90)
    return outcome, (json.loads(result.read_text()) if result.exists() else {})


def descendants(pids: set[int]) -> set[int]:
    table = processes._proc_table()
    found, frontier = set(), set(pids)
    while frontier:
        frontier = {pid for pid, row in table.items() if row[0] in frontier}
        found |= frontier
    return found


def gone(pid: int) -> bool:
    """True if the pid is reaped, or a zombie waiting for init (dead, holds nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return processes._proc_table().get(pid, (0, 0, "Z", 0))[2] == "Z"


@pytest.fixture(scope="module")
def local() -> Iterator[Deployment]:
    with Deployment(3, node_configs=EXTRA) as dep:
        yield dep
        pids = set(dep.pids.values())
    assert all(gone(pid) for pid in pids)


# ------------------------------------------------------------------- without processes


def test_config_values_become_toml_and_bad_ones_are_refused() -> None:
    values = {"a": True, "b": 3, "c": 0.5, "d": 'x "y" \\ z', "e": "caf\u00e9\x7f", "f": -2}
    assert tomllib.loads(processes._toml_table(values, "t")) == values
    with pytest.raises(ConfigurationError) as info:
        processes._toml_table({"bad key": 1, "x": [1], "y": None}, "run_config")
    assert len(info.value.problems) == 3


def test_bad_arguments_are_refused_before_any_process_starts() -> None:
    with pytest.raises(ConfigurationError):
        Deployment(0)
    with pytest.raises(ConfigurationError, match="2 entries for 3 nodes"):
        Deployment(3, node_configs=[{}, {}])
    with pytest.raises(ConfigurationError, match="not a bool"):
        Deployment(1, node_configs=[{"x": object()}])  # type: ignore[dict-item]
    dep = Deployment(1)
    with pytest.raises(DeploymentError, match="not running"):
        dep.run(PING_APP, timeout=1)
    dep.stop()  # never started: nothing to do, and idempotent
    dep.stop()


def test_missing_flower_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = processes.importlib.util.find_spec
    monkeypatch.setattr(processes.importlib.util, "find_spec",
                        lambda name, *a: None if name == "flwr" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"secureagg\[flower\]"):
        Deployment(1).start()


# --------------------------------------------------------------- the shared deployment


def test_ping_reaches_every_node_with_its_node_config(local: Deployment, tmp_path: Path) -> None:
    outcome, result = ping(local, tmp_path)
    outcome.check()
    assert outcome.status == "finished:completed" and outcome.returncode == 0
    assert len(set(result["node_ids"])) == 3
    assert sorted(result["node_ids"]) == sorted(local.node_ids)
    echoes = {int(k): v for k, v in result["echoes"].items()}
    assert set(echoes) == set(local.node_ids)
    for i, node_id in enumerate(local.node_ids):  # SuperNode i echoes partition-id i
        assert echoes[node_id] == {"partition-id": i, "num-partitions": 3, **EXTRA[i],
                                   "node-id": node_id, "stage": 0}
    # What the SuperLink stored: the run (its config override) and the three nodes (int64).
    with sqlite3.connect(f"file:{local.superlink_database}?mode=ro", uri=True) as db:
        runs = dict(db.execute("SELECT run_id, override_config FROM run").fetchall())
        nodes = {n % 2**64 for (n,) in db.execute("SELECT node_id FROM node")}
    assert json.loads(runs[outcome.run_id - 2**64 * (outcome.run_id >= 2**63)])["num-nodes"] == 3
    assert set(local.node_ids) <= nodes


def test_a_failing_server_app_is_reported_with_its_log(local: Deployment, tmp_path: Path) -> None:
    outcome, _ = ping(local, tmp_path, fail=True)
    assert not outcome.ok
    assert outcome.status == "finished:failed"
    assert "asked to fail" in outcome.details
    assert "RuntimeError: ping app: asked to fail" in outcome.log
    with pytest.raises(DeploymentError, match="finished:failed") as info:
        outcome.check()
    assert "RuntimeError" in str(info.value)


def test_an_app_flwr_refuses_is_reported_as_not_started(local: Deployment, tmp_path: Path) -> None:
    outcome = local.run(tmp_path, timeout=60)  # no pyproject.toml there
    assert outcome.status == "not-started" and outcome.run_id is None and outcome.returncode
    with pytest.raises(DeploymentError, match="Failed to load Flower App configuration"):
        outcome.check()


def test_a_run_past_its_timeout_is_stopped(local: Deployment, tmp_path: Path) -> None:
    result = tmp_path / "never.json"  # the ServerApp waits for 99 nodes that never come
    config = {"result-path": str(result), "num-nodes": 99, "stage-timeout": 300.0}
    outcome = local.run(PING_APP, run_config=config, timeout=6)
    assert outcome.status == "timeout" and outcome.returncode is None and not outcome.ok
    assert outcome.run_id is not None
    assert local.run_status(outcome.run_id)[0].startswith("finished")  # flwr stop stopped it


def test_kill_node_takes_its_whole_process_group(local: Deployment) -> None:
    # Last on the shared deployment: it kills SuperNode 2.
    pid = local.node_pid(2)
    group = [p for p, row in processes._proc_table().items() if row[1] == pid]
    assert len(group) >= 2  # the SuperNode and its SuperExec
    local.kill_node(2, signal.SIGKILL)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert "supernode-2" not in local.pids and local.node_pid(2) == pid
    for other in (local.node_pid(0), local.node_pid(1), local.pids["superlink"]):
        os.kill(other, 0)  # still running


# ------------------------------------------------------------------------------- TLS


def test_tls_deployment_pings_and_stop_leaves_nothing(tmp_path: Path) -> None:
    dep = Deployment(2, tls=True)
    with dep:
        config = (dep.flwr_home / "config.toml").read_text()
        assert "root-certificates" in config and "insecure" not in config
        assert "https://127.0.0.1" in dep.log("superlink")
        outcome, result = ping(dep, tmp_path)
        outcome.check()
        assert sorted(result["node_ids"]) == sorted(dep.node_ids)
        assert {e["partition-id"] for e in result["echoes"].values()} == {0, 1}
        ours = set(dep.pids.values())
        everything = ours | descendants(ours)  # SuperExecs; the SuperLink's in its own session
        assert len(everything) >= 2 * len(ours)
    for pid in ours:  # our children: reaped by stop()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert all(gone(pid) for pid in everything)
    assert not dep.workdir.exists()  # a temporary work dir is removed
    dep.stop()  # idempotent
