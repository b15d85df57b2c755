"""Our protocols on REAL Flower processes: a SuperLink and SuperNodes on 127.0.0.1, started by the
fixtures and stopped by pid (secureagg.flower.processes.Deployment), running the test app
(secure_app/: SecureFedAvg behind secureagg_mod, known updates per node, faults per node).

Sizes: ``SECUREAGG_SLOW_SCALE=small`` (what CI sets) runs one round per protocol; ``full`` two.
Node p's update in round r is (p + 1) * r / 100 in its first array and -(p + 1) / 50 in its
second, weighted by p + 1, so every aggregate is known exactly.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr", reason="needs the flower extra: pip install 'secureagg[flower]'")

from flwr.app import ConfigRecord

import secureagg as sa
from secureagg.errors import MalformedMessage
from secureagg.flower.identity import write_identity_key
from secureagg.flower.processes import Deployment
from secureagg.protocols.secagg import messages as m
from secureagg.transport.codec import decode

pytestmark = [
    pytest.mark.flower,
    pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc"),
]

APP = Path(__file__).parent / "secure_app"
ROUNDS = 2 if os.environ.get("SECUREAGG_SLOW_SCALE", "small") == "full" else 1
CLIENTS = 5
OPTIONS = {"clip": 1.0, "max_weight": 16}
# chi-square critical value, 255 degrees of freedom, p = 1e-6 (tests/protocols/secagg)
CHI2_255_CRIT = 370.0


def _chi2_top_byte(values: np.ndarray) -> float:
    top = (values.astype(np.uint64) >> np.uint64(24)).astype(np.int64) & 0xFF
    counts = np.bincount(top, minlength=256).astype(float)
    expected = counts.sum() / 256
    return float(((counts - expected) ** 2 / expected).sum())


class ObjectWatcher:
    """Copies every object Flower's SuperLink holds in its database while a run goes on (Flower
    deletes them once delivered): what the SuperLink saw."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.objects: dict[str, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                con = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=1)
                try:
                    for key, content in con.execute("select object_id, content from objects"):
                        if content:
                            self.objects[key] = bytes(content)
                finally:
                    con.close()
            except sqlite3.Error:
                pass
            time.sleep(0.05)

    def __enter__(self) -> ObjectWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    folder = tmp_path_factory.mktemp("identity")
    paths = [folder / f"node{i}.pem" for i in range(CLIENTS)]
    lines = [write_identity_key(p).hex() for p in paths]
    admitted = folder / "admitted.txt"
    admitted.write_text("\n".join(lines) + "\n")
    return admitted, paths


@pytest.fixture(scope="module")
def deployment(keys: tuple[Path, list[Path]], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Deployment]:
    """Five client nodes (each with an identity key file) and one HE key-holder node."""
    _, paths = keys
    configs: list[dict[str, Any]] = [{"secureagg-identity-key": str(p)} for p in paths]
    configs.append({"secureagg-role": "key-holder"})
    with Deployment(len(configs), node_configs=configs,
                    workdir=tmp_path_factory.mktemp("deployment")) as dep:
        yield dep


def _run(dep: Deployment, tmp: Path, protocol: str, *, rounds: int = ROUNDS,
         options: dict[str, Any] | None = None, **config: Any) -> dict[str, Any]:
    result = tmp / f"{protocol}-{time.monotonic_ns()}.json"
    run_config = {
        "result-path": str(result), "run-dir": str(tmp / f"run-{time.monotonic_ns()}"),
        "protocol": protocol, "rounds": rounds,
        "options": json.dumps({**OPTIONS, **(options or {})}), "min-nodes": CLIENTS,
        "stage-deadline": 30.0, "train-deadline": 60.0, **config,
    }
    outcome = dep.run(APP, run_config=run_config, timeout=240 + 120 * rounds)
    outcome.check()
    doc = json.loads(result.read_text())
    doc["run_dir"] = run_config["run-dir"]
    return doc


def _expected(doc: dict[str, Any], *, upto: int | None = None) -> list[np.ndarray]:
    parts = {int(k): v for k, v in doc["partitions"].items()}
    total = [np.zeros(6), np.zeros((2, 3))]
    for entry in doc["rounds"]:
        if entry["status"] != "ok" or (upto is not None and entry["round"] > upto):
            continue
        p = [parts[int(entry["nodes"][str(s)])] for s in entry["survivors"]]
        w = np.array([q + 1.0 for q in p])
        q1 = np.array([q + 1.0 for q in p])
        total[0] += float(np.dot(w, q1)) * entry["round"] / 100 / w.sum()
        total[1] += -float(np.dot(w, q1)) / 50 / w.sum()
    return total


def _final(doc: dict[str, Any], r: int | None = None) -> dict[str, np.ndarray]:
    rows = doc["arrays"]
    row = rows[-1] if r is None else next(x for x in rows if x["round"] == r)
    return {k: np.array(v) for k, v in row["arrays"].items()}


def _check_sum(doc: dict[str, Any], atol: float) -> None:
    expected = _expected(doc)
    arrays = _final(doc)
    np.testing.assert_allclose(arrays["w"], expected[0], atol=atol)
    np.testing.assert_allclose(arrays["b"], expected[1], atol=atol)


def test_secagg_plus_on_real_processes_and_what_the_superlink_holds(
    deployment: Deployment, tmp_path: Path,
) -> None:
    db = deployment.superlink_database
    assert db is not None
    with ObjectWatcher(db) as watcher:
        doc = _run(deployment, tmp_path, "secagg+", dim=4096)
    assert [e["status"] for e in doc["rounds"]] == ["ok"] * ROUNDS
    assert all(len(e["survivors"]) == CLIENTS for e in doc["rounds"])
    # the same aggregate as the in-memory simulation of the same inputs
    entry = doc["rounds"][0]
    parts = {int(k): v for k, v in doc["partitions"].items()}
    p = [parts[int(entry["nodes"][str(s)])] for s in range(CLIENTS)]
    agg = sa.make_aggregator("secagg+", num_clients=CLIENTS, **OPTIONS)
    res = sa.simulate(agg, [[np.full(4096, (q + 1) / 100), np.full((2, 3), -(q + 1) / 50)]
                            for q in p], weights=[q + 1 for q in p])
    first = _final(doc, 1)
    np.testing.assert_allclose(first["b"], res.aggregate[1] / res.total_weight,
                               atol=2 * agg.error_bound())
    np.testing.assert_allclose(first["w"], res.aggregate[0] / res.total_weight,
                               atol=2 * agg.error_bound() + 1e-6)
    # What Flower's SuperLink held while the run went on: our messages, masked.
    masked = []
    plain_patterns = [np.full(4, (q + 1) / 100).tobytes() for q in range(CLIENTS)] + [
        np.full(4, (q + 1) / 100, dtype=np.float32).tobytes() for q in range(CLIENTS)]
    for blob in watcher.objects.values():
        assert not any(pattern in blob for pattern in plain_patterns)
        if not blob.startswith(b"ConfigRecord"):
            continue
        record = ConfigRecord.inflate(blob)
        values = [v for value in record.values()
                  for v in (value if isinstance(value, list) else [value])
                  if isinstance(v, bytes)]
        for value in values:
            try:
                message = decode(value)
            except MalformedMessage:
                continue
            if isinstance(message, m.MaskedInput):
                masked.append(message.values)
    assert masked, f"no masked input seen among {len(watcher.objects)} objects"
    for values in masked:
        assert values.size >= 4096
        assert _chi2_top_byte(values) < CHI2_255_CRIT
    # audit reads the deployed run directory
    from secureagg.cli import main as cli_main

    assert cli_main(["audit", doc["run_dir"]]) == 0


def test_malicious_secagg_plus_with_identity_keys(
    deployment: Deployment, keys: tuple[Path, list[Path]], tmp_path: Path,
) -> None:
    admitted, _ = keys
    doc = _run(deployment, tmp_path, "secagg+", options={"threat": "malicious"},
               identities=str(admitted))
    assert [e["status"] for e in doc["rounds"]] == ["ok"] * ROUNDS
    _check_sum(doc, atol=1e-5)


@pytest.mark.parametrize("protocol", ["ckks", "paillier"])
def test_he_with_the_key_holder_node(deployment: Deployment, tmp_path: Path,
                                     protocol: str) -> None:
    doc = _run(deployment, tmp_path, protocol)
    assert [e["status"] for e in doc["rounds"]] == ["ok"] * ROUNDS, doc["rounds"]
    key_holder = deployment.node_ids[CLIENTS]
    for entry in doc["rounds"]:
        assert entry["nodes"]["-2"] == key_holder
        assert key_holder not in [entry["nodes"][str(s)] for s in entry["survivors"]]
    _check_sum(doc, atol=1e-3)


def _watch_kills(dep: Deployment, folder: Path, stop: threading.Event, killed: list[int]) -> None:
    while not stop.is_set():
        for marker in folder.glob("*.kill"):
            node = int(marker.stem)
            if node not in killed:
                dep.kill_node(node)
                killed.append(node)
        time.sleep(0.2)


def test_killed_nodes_garbage_and_below_threshold(tmp_path: Path) -> None:
    """Round 1: node 1 replies garbage, node 5 replays its first reply, node 6 answers with the
    bytes the server relayed to it (other nodes' messages), and node 2 is SIGKILLed after share
    keys, before its masked upload; the round completes over 0, 3, 4 with the exact sum and
    names every dropped node. Round 2: nodes 3 and 4 are killed there too, the others still
    misbehave: one survivor, below the threshold of 2; the round aborts and the global model
    stays as round 1 left it."""
    faults = tmp_path / "faults"
    faults.mkdir()
    configs: list[dict[str, Any]] = [
        {},
        {"fault": "garbage", "fault-round": 0},
        {"fault": "kill-at=3", "fault-round": 1, "fault-dir": str(faults)},
        {"fault": "kill-at=3", "fault-round": 2, "fault-dir": str(faults)},
        {"fault": "kill-at=3", "fault-round": 2, "fault-dir": str(faults)},
        {"fault": "replay", "fault-round": 0},
        {"fault": "foreign", "fault-round": 0},
    ]
    stop = threading.Event()
    killed: list[int] = []
    with Deployment(len(configs), node_configs=configs, workdir=tmp_path / "dep") as dep:
        watcher = threading.Thread(target=_watch_kills, args=(dep, faults, stop, killed))
        watcher.start()
        try:
            # the nodes train in the masked stage (where node 2 dies): its deadline is the
            # train deadline, here the same as every other stage's
            doc = _run(dep, tmp_path, "secagg+", rounds=2,
                       **{"stage-deadline": 15.0, "train-deadline": 15.0,
                          "min-nodes": len(configs)})
        finally:
            stop.set()
            watcher.join()
    parts = {int(k): v for k, v in doc["partitions"].items()}
    first, second = doc["rounds"]
    assert first["status"] == "ok", first
    dropped = sorted(parts[int(first["nodes"][str(p)])] for p in first["dropped"])
    assert dropped == [1, 2, 5, 6]
    assert sorted(parts[int(first["nodes"][str(p)])] for p in first["survivors"]) == [0, 3, 4]
    assert any(parts[int(first["nodes"][str(p)])] == 2
               for p in first["timed_out"].get("masked", [])), first["timed_out"]
    assert first["rejected"] or first["failed"]
    stage_limit = 15.0 * len(first["stages"])
    assert sum(s["seconds"] for s in first["stages"].values()) < stage_limit + 5
    after_first = _final(doc, 1)
    expected = _expected(doc, upto=1)
    np.testing.assert_allclose(after_first["b"], expected[1], atol=1e-6)
    assert second["status"] == "aborted" and "InsufficientSurvivors" in second["error"]
    after_second = _final(doc, 2)
    for key in after_first:
        assert np.array_equal(after_first[key], after_second[key])
    # nodes 3 and 4 die only if round 2 got to its masked stage (Flower may already have
    # retired node 2, and then the round could not even sample enough nodes)
    assert 2 in killed and set(killed) <= {2, 3, 4}


def test_the_same_round_over_tls(tmp_path: Path) -> None:
    with Deployment(3, tls=True, workdir=tmp_path / "dep") as dep:
        doc = _run(dep, tmp_path, "secagg+", rounds=1, **{"min-nodes": 3})
    assert doc["rounds"][0]["status"] == "ok" and len(doc["rounds"][0]["survivors"]) == 3
    _check_sum(doc, atol=1e-5)


def test_a_seeded_federated_run_on_supernodes_is_bit_identical_to_one_process(
    tmp_path: Path,
) -> None:
    """The demo's FederatedRun deployed (each client trains on its own SuperNode with the run's
    code) and the same run in one process, same seed: the same model, bit for bit."""
    import warnings

    torch = pytest.importorskip("torch")
    from secureagg.demos import flower_apps
    from secureagg.demos.federated_task import DemoSettings, build_run, digits_task

    settings = DemoSettings(clients=3, rounds=1, epsilon=None, run_seed=7, hidden=8)
    configs = [{"secureagg-allow-seeded": True} for _ in range(settings.clients)]
    run_dir = tmp_path / "deployed"
    with Deployment(settings.clients, node_configs=configs, workdir=tmp_path / "dep") as dep:
        dep.run(flower_apps.APP_DIR, run_config={
            "settings": flower_apps.settings_to_json(settings), "run-dir": str(run_dir),
            "train-deadline": 120.0, "stage-deadline": 30.0}, timeout=400).check()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = build_run(settings, digits_task(settings), run_dir=None, progress=False)
        local.run()
    deployed = torch.load(run_dir / "model.pt", weights_only=True)
    state = local.model.state_dict()
    assert list(deployed) == list(state)
    for key, value in state.items():
        assert torch.equal(deployed[key], value), key
    history = json.loads((run_dir / "history.json").read_text())["rounds"]
    assert [h["status"] for h in history] == ["completed"]
    # the deployed run's directory is sealed, and the auditor's recomputations pass on it
    from secureagg.cli import main as cli_main

    assert cli_main(["audit", str(run_dir), "--no-html"]) == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert report["kind"] == "federated" and report["integrity"]["sealed"]
    assert any(c["group"] == "survivors" and c["ok"] for c in report["checks"])
