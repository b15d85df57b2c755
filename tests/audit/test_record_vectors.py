"""Known-answer vectors of the run record (protocols/audit/spec.md): the transcript chain and the
seal's signature. A change of the canonical form, the genesis or the signed bytes is a deliberate,
versioned change. Regenerate with ``SECUREAGG_REGENERATE_VECTORS=1``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from secureagg.audit import seal
from secureagg.audit.rundir import RunDirectory
from secureagg.crypto import signing
from tests.vectors import load_vectors, regenerate, write_vectors

# RFC 8032, section 7.1, TEST 1: a published test key, never a real one.
RFC8032_SECRET = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
RFC8032_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"

ENTRIES: list[dict[str, Any]] = [
    {"direction": "up", "stage": "advertise", "kind": "secagg/key-advertisement", "sender": 0,
     "recipient": -1, "round_id": 7, "size": 130, "sha256": "ab" * 32},
    {"direction": "down", "stage": "share", "kind": "secagg/key-broadcast", "sender": -1,
     "recipient": 0, "round_id": 7, "size": 512, "sha256": "cd" * 32, "round": 1},
    {"direction": "up", "stage": "masked", "kind": "secagg/masked-input", "sender": 1,
     "recipient": -1, "round_id": 7, "size": 4058, "sha256": "ef" * 32, "note": "é"},
]


def _independent_chain(entries: list[dict[str, Any]]) -> list[str]:
    """The spec's formula, written out here apart from secureagg.audit.seal."""
    head = hashlib.sha256(b"secureagg/transcript-chain/v1").digest()
    out = []
    for entry in entries:
        body = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode("utf-8")
        head = hashlib.sha256(head + body).digest()
        out.append(head.hex())
    return out


def _seal_case() -> dict[str, Any]:
    key = signing.SigningKey.from_private_bytes(bytes.fromhex(RFC8032_SECRET))
    body = (json.dumps({"format": seal.SEAL_FORMAT, "kind": "simulate",
                        "transcript": {"lines": 3, "head": _independent_chain(ENTRIES)[-1]}},
                       indent=2) + "\n").encode()
    return {"secret": RFC8032_SECRET, "public": key.public_bytes.hex(), "body": body.hex(),
            "signature": key.sign(body).hex()}


def test_chain_vectors() -> None:
    computed = {"entries": ENTRIES, "chain": _independent_chain(ENTRIES)}
    if regenerate():
        write_vectors("audit", "chain", description="transcript lines and their chain values",
                      generated_by="tests/audit/test_record_vectors.py", vectors=[computed])
    (vector,) = load_vectors("audit", "chain")
    assert vector["chain"] == computed["chain"]
    lines = seal.chain_lines(vector["entries"])
    assert [line["chain"] for line in lines] == vector["chain"]
    assert seal.verify_chain(lines) == (3, vector["chain"][-1])


def test_seal_signature_vectors(tmp_path: Path) -> None:
    computed = _seal_case()
    if regenerate():
        write_vectors("audit", "seal", description="a seal body signed by RFC 8032's TEST 1 key",
                      generated_by="tests/audit/test_record_vectors.py", vectors=[computed])
    (vector,) = load_vectors("audit", "seal")
    assert vector["public"] == RFC8032_PUBLIC
    key = signing.SigningKey.from_private_bytes(bytes.fromhex(vector["secret"]))
    body = bytes.fromhex(vector["body"])
    assert key.sign(body).hex() == vector["signature"]  # Ed25519 is deterministic
    signing.verify(bytes.fromhex(vector["public"]), body, bytes.fromhex(vector["signature"]))


def test_a_run_sealed_with_a_known_key_verifies_and_pins(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = signing.SigningKey.from_private_bytes(bytes.fromhex(RFC8032_SECRET))
    pem = key.private_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    (tmp_path / "operator.pem").write_bytes(pem)
    run = RunDirectory(tmp_path / "run")
    run.create({"protocol": "plain"})
    run.write_transcript(ENTRIES)
    doc = run.seal(kind="simulate", key_path=tmp_path / "operator.pem")
    assert doc["operator"] == {"public_key": RFC8032_PUBLIC, "key_source": "operator key file"}
    assert doc["transcript"] == {"lines": 3, "head": _independent_chain(ENTRIES)[-1]}
    assert seal.verify_seal(run.path, expected_key=bytes.fromhex(RFC8032_PUBLIC)).ok
    pem_pub = (run.path / seal.SEAL_PUBLIC_KEY).read_bytes()
    assert seal.load_public_key(pem_pub).hex() == RFC8032_PUBLIC
    other = signing.SigningKey.generate().public_bytes
    assert not seal.verify_seal(run.path, expected_key=other).ok
