"""A tamper-evident run directory: a hash-chained transcript and a signed closing record.

Two mechanisms, both checked by ``secureagg audit``:

* **The transcript chain.** Every line of ``transcript.jsonl`` carries ``"chain"``: the SHA-256
  of the previous line's chain (for the first line, of :data:`CHAIN_GENESIS`) followed by the
  line's other fields in canonical JSON (sorted keys, no spaces). Editing, inserting, deleting or
  reordering a line changes every later chain value, and :func:`verify_chain` names the first
  line that does not follow; the last value (the *head*) commits to the whole transcript.
* **The seal.** When a run closes, :func:`seal_run` writes ``seal.json`` - the closing record:
  the library version, the run kind, the protocol and its parameters, survivors per round, the
  transcript's line count and head, the privacy ledger's SHA-256, and the SHA-256 and size of
  every other file in the directory - then ``seal.sig``, the 64-byte Ed25519 signature (RFC
  8032) of the exact bytes of ``seal.json``, and ``operator_key.pub``, the operator's public key
  (PEM, SubjectPublicKeyInfo). :func:`verify_seal` re-hashes every file, refuses any file that
  was changed, added or removed, re-walks the chain, and checks the signature.

The operator key is an Ed25519 private key in a PEM file (``openssl genpkey -algorithm ed25519
-out operator.pem``), named by ``key_path`` or, when that is not given, by the environment
variable :data:`OPERATOR_KEY_ENV`. Without either, the run is sealed with a fresh key whose
private half is discarded at once: the seal then shows that nothing changed after the run
closed *provided the auditor trusts ``operator_key.pub``*; an auditor who must know *who*
sealed it pins the operator's public key (``secureagg audit --operator-key PUB``). The seal says
which of the two it is (``operator.key_source``). With OpenSSL 3 alone an auditor can check the
signature: ``openssl pkeyutl -verify -pubin -inkey operator_key.pub -rawin -in seal.json
-sigfile seal.sig``.

What the seal cannot prove: that the run's code was honest while it ran. It fixes what the run
wrote when it closed.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> lines = chain_lines([{"stage": "a"}, {"stage": "b"}])
>>> verify_chain(lines) == (2, lines[-1]["chain"])
True
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secureagg.crypto import signing
from secureagg.errors import ConfigurationError, InvalidKeyError, InvalidSignature

__all__ = [
    "CHAIN_FIELD",
    "CHAIN_GENESIS",
    "OPERATOR_KEY_ENV",
    "SEAL",
    "SEAL_FORMAT",
    "SEAL_PUBLIC_KEY",
    "SEAL_SIGNATURE",
    "ChainError",
    "SealCheck",
    "chain_lines",
    "chain_value",
    "load_operator_key",
    "load_public_key",
    "seal_run",
    "sha256_file",
    "verify_chain",
    "verify_seal",
]

SEAL = "seal.json"
SEAL_SIGNATURE = "seal.sig"
SEAL_PUBLIC_KEY = "operator_key.pub"
SEAL_FORMAT = "secureagg/seal/v1"
OPERATOR_KEY_ENV = "SECUREAGG_OPERATOR_KEY"
CHAIN_FIELD = "chain"
CHAIN_GENESIS = b"secureagg/transcript-chain/v1"
#: Files the seal does not cover: itself, and what ``secureagg audit`` writes into the directory.
UNSEALED = frozenset({SEAL, SEAL_SIGNATURE, SEAL_PUBLIC_KEY, "report.json", "report.html"})
TRANSCRIPT = "transcript.jsonl"
LEDGER = "privacy_ledger.json"


def _canonical(entry: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in entry.items() if k != CHAIN_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def genesis() -> str:
    return hashlib.sha256(CHAIN_GENESIS).hexdigest()


def chain_value(previous: str, entry: Mapping[str, Any]) -> str:
    """The chain value of ``entry`` after the line whose chain value is ``previous``."""
    return hashlib.sha256(bytes.fromhex(previous) + _canonical(entry)).hexdigest()


def chain_lines(
    entries: Iterable[Mapping[str, Any]], previous: str | None = None
) -> list[dict[str, Any]]:
    """``entries`` with their ``chain`` field set, continuing after ``previous`` (default: the
    genesis value). A ``chain`` already in an entry is replaced."""
    head = genesis() if previous is None else previous
    out = []
    for entry in entries:
        head = chain_value(head, entry)
        out.append({**{k: v for k, v in entry.items() if k != CHAIN_FIELD}, CHAIN_FIELD: head})
    return out


class ChainError(ValueError):
    """A transcript line does not follow from the one before it; ``line`` is 1-based."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"{TRANSCRIPT} line {line}: {reason}")
        self.line = line
        self.reason = reason


def verify_chain(entries: Sequence[Mapping[str, Any]]) -> tuple[int, str]:
    """Walk the chain of ``entries`` (the transcript's parsed lines, in file order); return
    ``(lines, head)`` or raise :class:`ChainError` naming the first line that does not follow."""
    head = genesis()
    for number, entry in enumerate(entries, start=1):
        stated = entry.get(CHAIN_FIELD)
        if not isinstance(stated, str):
            raise ChainError(number, "has no chain value (written without a chain, or edited)")
        try:
            expected = chain_value(head, entry)
        except (TypeError, ValueError) as exc:
            raise ChainError(number, f"cannot be hashed ({exc})") from None
        if stated != expected:
            raise ChainError(
                number,
                "its chain value does not follow from the line before: this line was edited, "
                "or a line before it was edited, inserted, deleted or moved",
            )
        head = stated
    return len(entries), head


def read_transcript_lines(path: Path) -> list[dict[str, Any]]:
    """The transcript's lines, parsed; a line that is not a JSON object raises ChainError."""
    if not path.is_file():
        return []
    out: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            raise ChainError(number, "is empty")
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ChainError(number, f"is not JSON ({exc.msg})") from None
        if not isinstance(entry, dict):
            raise ChainError(number, "is not a JSON object")
        out.append(entry)
    return out


# ------------------------------------------------------------------------------------ keys


def load_operator_key(path: str | os.PathLike[str]) -> signing.SigningKey:
    """The Ed25519 private key in the PEM (PKCS#8) file ``path``."""
    p = Path(path)
    try:
        return signing.SigningKey.from_pem(p.read_bytes())
    except FileNotFoundError:
        raise ConfigurationError(f"operator key {p} does not exist") from None
    except (OSError, InvalidKeyError) as exc:
        raise ConfigurationError(
            f"operator key {p}: {exc}; make one with "
            "'openssl genpkey -algorithm ed25519 -out operator.pem'"
        ) from None


def load_public_key(data: bytes) -> bytes:
    """The raw Ed25519 public key in ``data`` (PEM public or private key, or 64 hex digits)."""
    try:
        return signing.public_key_from_pem(data)
    except InvalidKeyError as exc:
        raise ConfigurationError(str(exc)) from None


# ------------------------------------------------------------------------------------ seal


def sha256_file(path: Path) -> str:
    """The SHA-256 of the file at ``path``, as hex (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _covered_files(root: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            rel = path.relative_to(root).as_posix()
            if rel not in UNSEALED:
                files[rel] = path
    return files


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def closing_record(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's closing record, from what it wrote: protocol, parameters, status, whether it
    was seeded, and per round who was sampled, who survived and who dropped out (from
    ``history.json`` for a federated run, ``rounds.json`` for a Flower strategy run, else
    ``result.json`` and ``config.json`` for one round)."""
    root = Path(directory)
    config = _json_file(root / "config.json")
    result = _json_file(root / "result.json")
    config = config if isinstance(config, dict) else {}
    result = result if isinstance(result, dict) else {}
    rounds: list[dict[str, Any]] = []
    history = _json_file(root / "history.json")
    flower_rounds = _json_file(root / "rounds.json")
    if isinstance(history, dict) and isinstance(history.get("rounds"), list):
        for e in history["rounds"]:
            if isinstance(e, dict):
                rounds.append({"round": e.get("round"), "status": e.get("status"),
                               "sampled": e.get("sampled"), "survivors": e.get("participants"),
                               "dropouts": e.get("dropouts")})
    elif isinstance(flower_rounds, list):
        for e in flower_rounds:
            if isinstance(e, dict):
                rounds.append({"round": e.get("round"), "status": e.get("status"),
                               "nodes": e.get("nodes"), "survivors": e.get("survivors"),
                               "dropouts": e.get("dropped")})
    elif result:
        rounds.append({"round": result.get("round_id", 0), "status": result.get("status"),
                       "sampled": config.get("clients"), "survivors": result.get("survivors"),
                       "dropouts": config.get("dropouts")})
    return {
        "command": config.get("command") or config.get("engine"),
        "protocol": config.get("protocol") or config.get("aggregator"),
        "parameters": config.get("parameters"),
        "status": result.get("status"),
        "seeded": bool(result.get("seeded") or config.get("seeded")),
        "rounds": rounds,
    }


def seal_run(
    directory: str | os.PathLike[str],
    *,
    kind: str,
    closing: Mapping[str, Any] | None = None,
    key_path: str | os.PathLike[str] | None = None,
    write: Any = None,
) -> dict[str, Any]:
    """Seal the run in ``directory`` (see the module docstring) and return ``seal.json``'s
    document. ``closing`` is the run's closing record (default: :func:`closing_record` of the
    directory); ``write(name, data)`` writes a file atomically (the run directory's writer)."""
    from secureagg.version import VERSION

    root = Path(directory)
    chosen = key_path if key_path is not None else os.environ.get(OPERATOR_KEY_ENV) or None
    if chosen is not None:
        key, source = load_operator_key(chosen), "operator key file"
    else:
        key, source = signing.SigningKey.generate(), "ephemeral (private half discarded)"
    transcript = read_transcript_lines(root / TRANSCRIPT)
    lines, head = verify_chain(transcript)
    files = {
        rel: {"sha256": sha256_file(p), "size": p.stat().st_size}
        for rel, p in _covered_files(root).items()
    }
    doc = {
        "format": SEAL_FORMAT,
        "library": f"secureagg {VERSION}",
        "sealed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": kind,
        "closing": closing_record(root) if closing is None else dict(closing),
        "transcript": {"lines": lines, "head": head},
        "ledger_sha256": files.get(LEDGER, {}).get("sha256"),
        "files": files,
        "operator": {"public_key": key.public_bytes.hex(), "key_source": source},
    }
    body = (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode("utf-8")
    if write is None:
        raise ConfigurationError("seal_run needs the run directory's atomic writer")
    write(SEAL_PUBLIC_KEY, signing.public_key_pem(key.public_bytes))
    write(SEAL, body)
    write(SEAL_SIGNATURE, key.sign(body))
    return doc


@dataclass
class SealCheck:
    """What :func:`verify_seal` found: ``problems`` (each naming the file, and the line or entry
    where there is one) and, when the seal could be read, its document."""

    problems: list[str] = field(default_factory=list)
    seal: dict[str, Any] | None = None
    pinned: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_seal(
    directory: str | os.PathLike[str], *, expected_key: bytes | None = None
) -> SealCheck:
    """Check the seal of the run in ``directory``: signature, every file's hash, no file added
    or removed, the transcript chain and its head. ``expected_key`` (raw Ed25519 public key)
    pins the operator: a seal by any other key fails."""
    root = Path(directory)
    out = SealCheck(pinned=expected_key is not None)
    seal_path = root / SEAL
    if not seal_path.is_file():
        out.problems.append(
            f"{SEAL}: missing - the run was not sealed (it did not close, or was written by an "
            "older secureagg); nothing in it can be shown unchanged"
        )
        _chain_only(root, out)
        return out
    body = seal_path.read_bytes()
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        out.problems.append(f"{SEAL}: not JSON ({exc})")
        return out
    if not isinstance(doc, dict) or doc.get("format") != SEAL_FORMAT:
        out.problems.append(f"{SEAL}: not a {SEAL_FORMAT} document")
        return out
    out.seal = doc
    try:
        stated = bytes.fromhex(str(doc["operator"]["public_key"]))
    except (KeyError, TypeError, ValueError):
        out.problems.append(f"{SEAL}: operator.public_key is missing or not hex")
        return out
    pub_path = root / SEAL_PUBLIC_KEY
    try:
        beside = load_public_key(pub_path.read_bytes())
    except (OSError, ConfigurationError) as exc:
        out.problems.append(f"{SEAL_PUBLIC_KEY}: cannot be read ({exc})")
        beside = None
    if beside is not None and beside != stated:
        out.problems.append(f"{SEAL_PUBLIC_KEY}: is not the key named in {SEAL}")
    if expected_key is not None and expected_key != stated:
        out.problems.append(
            f"{SEAL}: sealed by key {stated.hex()[:16]}..., not by the operator key you gave "
            f"({expected_key.hex()[:16]}...)"
        )
    sig_path = root / SEAL_SIGNATURE
    try:
        signing.verify(stated, body, sig_path.read_bytes())
    except FileNotFoundError:
        out.problems.append(f"{SEAL_SIGNATURE}: missing")
    except (InvalidSignature, InvalidKeyError, OSError) as exc:
        out.problems.append(
            f"{SEAL_SIGNATURE}: the signature does not verify for {SEAL} under its key "
            f"({type(exc).__name__}): {SEAL} was edited, or signed by another key"
        )
    files = doc.get("files")
    if not isinstance(files, dict):
        out.problems.append(f"{SEAL}: files is not an object")
        return out
    present = _covered_files(root)
    for rel in sorted(set(files) | set(present)):
        if rel not in present:
            out.problems.append(f"{rel}: sealed, but missing now")
        elif rel not in files:
            out.problems.append(f"{rel}: added after the run was sealed")
        else:
            want = files[rel]
            path = present[rel]
            if not isinstance(want, dict) or sha256_file(path) != want.get("sha256"):
                out.problems.append(
                    f"{rel}: changed after the run was sealed (its SHA-256 differs from the "
                    "seal's)"
                )
    _chain_only(root, out, doc.get("transcript"))
    return out


def _chain_only(root: Path, out: SealCheck, sealed: Any = None) -> None:
    try:
        lines, head = verify_chain(read_transcript_lines(root / TRANSCRIPT))
    except ChainError as exc:
        out.problems.append(str(exc))
        return
    if isinstance(sealed, dict) and (sealed.get("lines"), sealed.get("head")) != (lines, head):
        out.problems.append(
            f"{TRANSCRIPT}: {lines} lines with head {head[:16]}..., but the seal records "
            f"{sealed.get('lines')} lines with head {str(sealed.get('head'))[:16]}...: lines were "
            "removed from or added to its end"
        )
