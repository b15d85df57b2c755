"""Known-answer vectors of our binding to Flower (protocols/flower/spec.md): the records of a
hello, a keygen hello and a step, as Flower deflates them (so a change of our field names, or of
Flower's encoding of a ConfigRecord, is a deliberate, versioned change), and a node's training
report. Regenerate with ``SECUREAGG_REGENERATE_VECTORS=1``."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, RecordDict

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from secureagg.fl.client import ClientOutcome
from secureagg.fl.deployed import report_from_json, report_to_json
from secureagg.fl.pool import TrainedClient
from secureagg.flower import records
from secureagg.flower.mod import _hello
from tests.vectors import load_vectors, regenerate, write_vectors


def _cases() -> dict[str, dict[str, Any]]:
    return {
        "hello": records.hello(),
        "keygen": records.hello(keygen=True, session=bytes(range(16)), round_id=3,
                                protocol="ckks", options='{"clip":1.0}', num_clients=5),
        "first-step": records.step(party=2, sender=-1, message=b"SAGG\x01example",
                                   digest=b"\x07" * 32, spec=b"SPEC-BYTES"),
        "step": records.step(party=2, sender=-1, message=b"SAGG\x01example",
                             digest=b"\x07" * 32),
    }


def _report() -> str:
    outcome = ClientOutcome(client=4, update=None, weight=37, seconds=1.5, error=None,
                            stage="train", privacy={"noise_multiplier": 1.1, "sample_rate": 0.25})
    return report_to_json(TrainedClient(
        outcome=outcome, events=(("sample", {"kind": "gaussian-steps", "steps": 8}),),
        noise_multiplier=1.1, sample_rate=0.25))


def _digest(values: dict[str, Any]) -> str:
    return hashlib.sha256(ConfigRecord(values).deflate()).hexdigest()


def test_records_and_report_match_the_vectors() -> None:
    cases = _cases()
    got = [{"name": k, "fields": sorted(v), "deflated_sha256": _digest(v)}
           for k, v in cases.items()]
    got.append({"name": "report", "json": _report()})
    if regenerate():
        write_vectors("flower", "records", description="our records inside Flower messages: "
                      "field names and the sha256 of Flower's deflated ConfigRecord; a node's "
                      "training report", generated_by="tests/flower/test_flower_vectors.py",
                      vectors=got)
        pytest.skip("vectors regenerated")
    assert load_vectors("flower", "records") == got


def test_the_report_vector_reads_back() -> None:
    (vector,) = [v for v in load_vectors("flower", "records") if v["name"] == "report"]
    trained = report_from_json(vector["json"], client=4)
    assert trained.outcome.weight == 37 and trained.noise_multiplier == 1.1
    assert trained.events == (("sample", {"kind": "gaussian-steps", "steps": 8}),)
    with pytest.raises(Exception, match="names client 4"):
        report_from_json(vector["json"], client=5)


def test_a_client_node_answers_hello_with_its_role_and_partition() -> None:
    context = Context(run_id=1, node_id=9, node_config={"partition-id": 3}, state=RecordDict(),
                      run_config={})
    assert _hello(ConfigRecord(records.hello()), context) == {
        "role": "client", "identity": b"", "public": b"", "partition": 3}
