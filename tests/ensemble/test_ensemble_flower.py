"""``secureagg demo ensemble --engine flower`` end to end on real Flower processes (a SuperLink
and 3 SuperNodes on 127.0.0.1): each party's node trains its teacher and votes through SecAgg+;
with a seed the querier receives exactly what the in-process demo releases; the run directory
passes ``secureagg audit``; no process it started is left behind."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="needs the flower extra: pip install 'secureagg[flower]'")
pytest.importorskip("torch")
pytest.importorskip("sklearn")

from secureagg.cli import main
from tests.child_processes import child_pids

pytestmark = [
    pytest.mark.flower,
    pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

PARTIES, QUERIES, SEED = 3, 6, 4


def test_the_flower_ensemble_votes_on_the_nodes_and_writes_an_auditable_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    before = child_pids(os.getpid())
    code = main(["demo", "ensemble", "--engine", "flower", "--clients", str(PARTIES),
                 "--queries", str(QUERIES), "--seed", str(SEED), "--out", "flower-run"])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert child_pids(os.getpid()) <= before  # every Flower process it started is gone
    assert "training on 3 nodes, slowest node" in out and "queries answered" in out
    run = tmp_path / "flower-run"
    result = json.loads((run / "ensemble.json").read_text())
    assert result["engine"] == "flower" and result["queries_answered"] == QUERIES
    batches = result["batches"]
    assert [b["batch"] for b in batches] == [0, 1] and all(b["answered"] for b in batches)
    assert all(b["survivors"] == [0, 1, 2] for b in batches)
    teachers = result["teachers"]
    assert teachers["parties"] == [0, 1, 2] and teachers["failures"] == []
    assert teachers["parallel_seconds"] > 0 and teachers["sequential_seconds"] > 0
    assert set(teachers["node_train_seconds"]) == {"0", "1", "2"}
    # the noisy histograms: each row sums to the parties in the sum (one-hot votes) plus the
    # sum of its noise, within 6 standard deviations; the label is the row's argmax
    released = result["released"]
    assert len(released) == QUERIES
    for b in batches:
        bound = 6 * math.sqrt(10) * b["noise_std"]
        for q in b["queries"]:
            row = np.array(released[str(q)]["noisy_histogram"])
            assert abs(row.sum() - len(b["survivors"])) <= bound
            assert released[str(q)]["label"] == int(np.argmax(row))
    # with the seed, the deployment releases what the in-process demo releases, bit for bit:
    # the same teachers (trained on their nodes), the same noise shares, the same sums
    from secureagg.demos.ensemble import run_ensemble_demo

    local = run_ensemble_demo(out=tmp_path / "local", parties=PARTIES, queries=QUERIES,
                              batch=QUERIES // 2, workers=2, seed=SEED, quiet=True,
                              time_sequential=False)
    assert result["epsilon"] == local["epsilon"]
    assert result["private_label_accuracy"] == local["private_label_accuracy"]
    assert result["student_accuracy"] == local["student_accuracy"]
    assert result["ensemble_accuracy"] == local["ensemble_accuracy"]
    # the audit reads the deployed run and passes it
    assert main(["audit", "flower-run", "--no-html"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["kind"] == "ensemble" and report["verdict"] == "pass"
    assert report["integrity"]["sealed"]
    sealed = json.loads((run / "seal.json").read_text())["files"]
    assert "flower-logs/superlink.log" in sealed and "transcript.jsonl" in sealed
    # the server received each party's masked input once per batch, and no vote in the clear
    lines = [json.loads(line) for line in (run / "transcript.jsonl").read_text().splitlines()]
    masked = [(line["round"], line["sender"]) for line in lines
              if line.get("direction") == "up" and line.get("stage") == "masked"]
    assert sorted(masked) == [(r, p) for r in (0, 1) for p in range(PARTIES)]
