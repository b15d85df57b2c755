"""The run directory's one writer (secureagg.audit.rundir): atomic, torch-free, the same bytes.

* A failure in the middle of a write (a value JSON cannot hold, a writer that raises halfway, an
  ``os.replace`` that fails) leaves the previous file byte for byte, and no temporary file.
* ``import secureagg.audit.rundir`` imports no torch and no HE library (in a fresh interpreter).
* The JSON documents and transcript lines are the bytes the two writers it replaced produced
  (``fl/rundir.py``'s ``_json_text`` and ``cli/common.py``'s ``_write_json`` /
  ``_write_transcript``), so ``secureagg audit`` and older run directories still agree.
"""

from __future__ import annotations

import doctest
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest

from secureagg.audit import rundir
from secureagg.audit.rundir import RunDirectory, json_text, transcript_records
from secureagg.errors import ConfigurationError, InvalidInputError
from secureagg.transport import TranscriptEntry

ROOT = Path(__file__).resolve().parents[2]


def _files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.fixture
def run(tmp_path: Path) -> RunDirectory:
    d = RunDirectory(tmp_path / "run")
    d.create({"protocol": "plain", "clients": 3})
    d.write_json("result.json", {"status": "ok", "survivors": [0, 1, 2]})
    return d


def test_module_doctest() -> None:
    result = doctest.testmod(rundir)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------------- atomicity


def test_a_payload_json_cannot_hold_leaves_the_previous_file(run: RunDirectory) -> None:
    before = _files(run.path)
    with pytest.raises(ValueError, match="JSON"):
        run.write_json("result.json", {"status": "ok", "error": float("nan")})
    assert _files(run.path) == before


def test_a_writer_failing_halfway_leaves_the_previous_file(run: RunDirectory) -> None:
    before = _files(run.path)

    def half(fh: IO[bytes]) -> None:
        fh.write(b'{"status": "tor')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run.write_stream("result.json", half)
    assert _files(run.path) == before


def test_a_failed_replace_leaves_the_previous_file(
    run: RunDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _files(run.path)

    def no_replace(src: object, dst: object) -> None:
        raise OSError("power cut before the rename")

    monkeypatch.setattr(os, "replace", no_replace)
    for write in (
        lambda: run.write_json("result.json", {"status": "changed"}),
        lambda: run.commit({"format": rundir.HISTORY_FORMAT, "completed_rounds": 1}),
        lambda: run.write_transcript([{"direction": "up", "size": 1}]),
        lambda: run.write_checkpoint(1, lambda fh: fh.write(b"model")),
    ):
        with pytest.raises(OSError, match="power cut"):
            write()
        assert _files(run.path) == before


def test_a_whole_file_is_replaced_not_rewritten_in_place(run: RunDirectory) -> None:
    old = run.path / "result.json"
    inode = old.stat().st_ino
    run.write_json("result.json", {"status": "changed"})
    assert json.loads(old.read_text()) == {"status": "changed"}
    assert old.stat().st_ino != inode  # a new file moved into place
    assert not list(run.path.glob(".*.tmp"))


def test_the_logs_are_appended_and_a_torn_line_is_dropped_on_resume(run: RunDirectory) -> None:
    run.append_transcript([{"round": 1, "direction": "up"}, {"round": 2, "direction": "up"}])
    with run.transcript_path.open("a", encoding="utf-8") as fh:
        fh.write('{"round": 3, "dire')  # a crash during an append
    entries = run.read_transcript()
    assert entries[-1] == {"round": -1, "torn_line": 3}
    assert run.truncate_transcript(keep_through_round=1) == 2
    kept = run.read_transcript()
    assert [{k: v for k, v in e.items() if k != "chain"} for e in kept] == [
        {"round": 1, "direction": "up"}
    ]
    # the rewritten log is a valid chain, and a fresh writer appends after its head
    rundir.RunDirectory(run.path).append_transcript([{"round": 2, "direction": "up"}])
    from secureagg.audit import seal

    lines = seal.read_transcript_lines(run.transcript_path)
    assert seal.verify_chain(lines) == (2, lines[-1]["chain"])
    run.append_lines(rundir.PRIVACY_EVENTS, ['{"a": 1}', '{"b": 2}'])
    assert run.read_lines(rundir.PRIVACY_EVENTS) == ['{"a": 1}', '{"b": 2}']


# --------------------------------------------------------------------------- the documents


def test_create_refuses_a_directory_holding_a_run(run: RunDirectory) -> None:
    with pytest.raises(ConfigurationError, match="already holds a run"):
        run.create({"protocol": "plain"})
    assert run.load_config() == {"protocol": "plain", "clients": 3}
    assert (run.path / "checkpoints").is_dir()
    assert run.transcript_path.read_bytes() == b""


def test_history_is_checked_on_load(run: RunDirectory) -> None:
    with pytest.raises(InvalidInputError, match="missing"):
        run.load_history()
    run.commit({"format": "something else"})
    with pytest.raises(InvalidInputError, match="cannot resume"):
        run.load_history()
    run.commit({"format": rundir.HISTORY_FORMAT, "completed_rounds": 2})
    assert run.has_history() and run.load_history()["completed_rounds"] == 2


def test_checkpoints_are_verified_published_and_pruned(run: RunDirectory) -> None:
    first = run.write_checkpoint(0, lambda fh: fh.write(b"initial"))
    second = run.write_checkpoint(1, lambda fh: fh.write(b"round one"))
    assert second["path"] == os.path.join("checkpoints", "round-00001.pt")
    path = run.verified_checkpoint(second)
    run.publish_model(path)
    assert (run.path / "model.pt").read_bytes() == b"round one"
    run.prune_checkpoints(path)
    assert not (run.path / first["path"]).exists()
    path.write_bytes(b"tampered")
    with pytest.raises(InvalidInputError, match="was modified"):
        run.verified_checkpoint(second)
    with pytest.raises(InvalidInputError, match="missing"):
        run.verified_checkpoint(first)


def test_json_documents_are_the_bytes_both_old_writers_produced() -> None:
    payload = {"status": "ok", "b": [1, 2.5, None], "a": {"z": "é", "y": True}}
    old_fl = json.dumps(payload, indent=2, allow_nan=False, sort_keys=False) + "\n"
    old_cli = json.dumps(payload, indent=2, allow_nan=False) + "\n"
    assert json_text(payload) == old_fl == old_cli


def test_transcript_lines_are_the_bytes_the_cli_wrote(tmp_path: Path) -> None:
    def entry(kind: str, sender: int, recipient: int) -> TranscriptEntry:
        return TranscriptEntry(
            stage="upload", kind=kind, sender=sender, recipient=recipient, round_id=7,
            size=12, sha256="ab" * 32,
        )

    up, down, peer = [entry("plain/upload", 0, -1)], [entry("x/down", -1, 0)], [entry("p", 1, 2)]
    # each line: the record's fields, then "chain" = sha256(previous chain || canonical JSON),
    # computed here independently of secureagg.audit.seal
    head = hashlib.sha256(b"secureagg/transcript-chain/v1").digest()
    lines = []
    for direction, entries in (("up", up), ("down", down), ("peer", peer)):
        for e in entries:
            body = {"direction": direction, **e.to_dict()}
            canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
            head = hashlib.sha256(head + canonical).digest()
            lines.append(json.dumps({**body, "chain": head.hex()}) + "\n")
    run = RunDirectory(tmp_path / "cli")
    run.write_transcript(transcript_records(up, down, peer))
    assert run.transcript_path.read_text(encoding="utf-8") == "".join(lines)


# ------------------------------------------------------------------------------ torch-free

_PROBE = """
import json, sys, tempfile, pathlib
import secureagg.audit.rundir as rd
d = rd.RunDirectory(pathlib.Path(tempfile.mkdtemp()) / "run")
d.create({"protocol": "plain"})
d.write_checkpoint(0, lambda fh: fh.write(b"bytes"))
heavy = {"torch", "tenseal", "phe", "gmpy2", "opacus", "flwr", "sklearn"}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


def test_the_module_imports_no_torch() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_resume_drops_the_kept_message_bytes_of_uncommitted_rounds(run: RunDirectory) -> None:
    run.append_messages([b"aaa", b"bb"])
    run.append_transcript([{"round": 1, "direction": "up", "size": 3},
                           {"round": 1, "direction": "down", "size": 9},
                           {"round": 1, "direction": "up", "size": 2}])
    run.append_messages([b"cccc"])  # round 2's bytes, then a crash before its lines
    assert (run.path / rundir.MESSAGES).read_bytes() == b"aaabbcccc"
    assert run.truncate_transcript(keep_through_round=1) == 0
    assert (run.path / rundir.MESSAGES).read_bytes() == b"aaabb"
