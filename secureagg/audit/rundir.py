"""The run directory: the one place that writes (and reads back) what a run leaves behind.

Every command and training driver writes its run directory through :class:`RunDirectory`:
``secureagg simulate`` and ``secureagg demo`` (one aggregation round), the federated run
(:mod:`secureagg.fl`, which adds the torch checkpoints in :mod:`secureagg.fl.rundir` and writes
them through :meth:`RunDirectory.write_stream`) and the split-learning demo. ``secureagg audit``
reads what it wrote. This module imports neither torch nor any HE library.

Files (all JSON is UTF-8; documents are indented by 2 and end with a newline):

* ``config.json`` - the run's configuration;
* ``result.json`` - a summary that ``secureagg audit RUN_DIR`` cross-checks against the
  transcript;
* ``transcript.jsonl`` - one JSON object per message: ``direction`` (``up`` = received by the
  server, ``down`` = sent by it, ``peer`` = between other parties), stage, kind, sender,
  recipient, round id, size and sha256 of the encoded bytes (a federated run adds ``round``);
* ``messages.bin`` - optional (``keep_messages``): the bytes of every message the server
  received, in the order of the transcript's ``up`` lines, so that every hash can be re-checked;
  it costs exactly the uplink's bytes on disk;
* ``history.json`` - a federated run's commit point (:data:`HISTORY_FORMAT`);
* ``privacy_ledger.json`` and ``privacy_events.jsonl`` - the accountants' report and every
  privacy event as it was emitted;
* ``checkpoints/round-NNNNN.pt`` and ``model.pt`` - the committed global model (the bytes come
  from :mod:`secureagg.fl.rundir`; here they are only stored, hashed, verified and copied);
* any other JSON document a demo adds (``comparison.json``, ``split.json``);
* ``seal.json``, ``seal.sig`` and ``operator_key.pub`` - the signed closing record written when
  the run closes (:mod:`secureagg.audit.seal`); every line of ``transcript.jsonl`` carries its
  hash-chain value ``chain``.

Invariants (what a crash can and cannot leave behind):

* A whole file (every JSON document, a transcript written in one go, a checkpoint, ``model.pt``)
  is written to ``.NAME.tmp`` in the same directory, flushed and fsynced, then moved into place
  with :func:`os.replace`: a reader sees the previous file or the new one, never a mix, and a
  failure before the move (a value JSON cannot hold, a full disk, a crash) leaves the previous
  file intact.
* The two logs (``transcript.jsonl`` of a federated run, ``privacy_events.jsonl``) are appended
  to and fsynced after each batch of lines: rewriting them per round would cost quadratic I/O. A
  crash during an append can leave a torn last line; the readers here recognise it, and a
  federated run drops it on resume because it belongs to a round that was not committed.

>>> import tempfile, pathlib
>>> d = RunDirectory(pathlib.Path(tempfile.mkdtemp()) / "run")
>>> d.create({"protocol": "plain"}); d.load_config()["protocol"]
'plain'
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from secureagg.audit import seal
from secureagg.errors import ConfigurationError, InvalidInputError

__all__ = [
    "CONFIG",
    "HISTORY",
    "HISTORY_FORMAT",
    "MODEL",
    "PRIVACY_EVENTS",
    "PRIVACY_LEDGER",
    "RESULT",
    "TRANSCRIPT",
    "RunDirectory",
    "json_text",
    "new_run_path",
    "transcript_records",
]

CONFIG = "config.json"
RESULT = "result.json"
TRANSCRIPT = "transcript.jsonl"
HISTORY = "history.json"
PRIVACY_LEDGER = "privacy_ledger.json"
PRIVACY_EVENTS = "privacy_events.jsonl"
#: With ``keep_messages``: the bytes of every message the server received, in transcript order
#: (the ``up`` lines); each line's ``size`` and ``sha256`` locate and check its bytes.
MESSAGES = "messages.bin"
MODEL = "model.pt"
CHECKPOINTS = "checkpoints"

HISTORY_FORMAT = "secureagg/fl-history/v1"


class _Recorded(Protocol):
    """A transcript record (:class:`secureagg.transport.TranscriptEntry`)."""

    def to_dict(self) -> dict[str, Any]: ...


def json_text(payload: Any) -> str:
    """A JSON document as the run directory stores it (indent 2, no NaN, a final newline)."""
    return json.dumps(payload, indent=2, allow_nan=False) + "\n"


def new_run_path(name: str, *, base: str | os.PathLike[str] | None = None) -> Path:
    """``runs/<UTC time>-<name>`` under ``base`` (default: the working directory), made unique
    by a ``-k`` suffix; not created."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    root = Path.cwd() if base is None else Path(base)
    first = root / "runs" / f"{stamp}-{name.replace(os.sep, '_')}"
    path, k = first, 0
    while path.exists():
        k += 1
        path = first.with_name(f"{first.name}-{k}")
    return path


def transcript_records(
    up: Iterable[_Recorded], down: Iterable[_Recorded] = (), peer: Iterable[_Recorded] = ()
) -> list[dict[str, Any]]:
    """The lines of a one-round transcript: ``up``, then ``down``, then ``peer`` records."""
    return [
        {"direction": direction, **entry.to_dict()}
        for direction, entries in (("up", up), ("down", down), ("peer", peer))
        for entry in entries
    ]


def _fsync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class RunDirectory:
    """Reads and writes one run directory (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._head: str | None = None  # the transcript chain's last value, once known

    # ------------------------------------------------------------------------ atomic writes

    def write_stream(self, name: str, write: Callable[[IO[bytes]], object]) -> Path:
        """Write ``name`` (relative to the directory) by calling ``write`` on a temporary file
        beside it, then fsync and move it into place; return its path. If ``write`` raises, the
        previous file is untouched and the temporary file is removed."""
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with tmp.open("wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_directory(path.parent)
        return path

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Replace ``name`` with ``data`` atomically."""
        return self.write_stream(name, lambda fh: fh.write(data))

    def write_json(self, name: str, payload: Any) -> None:
        """Replace the JSON document ``name`` atomically (serialised before anything is
        written: a payload JSON cannot hold leaves the previous file as it was)."""
        self.write_bytes(name, json_text(payload).encode("utf-8"))

    def append_lines(self, name: str, lines: Sequence[str]) -> None:
        """Append ``lines`` (each without its newline) to the log ``name`` and fsync."""
        path = self.path / name
        with path.open("a", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())

    # ------------------------------------------------------------------------------ reading

    def exists(self) -> bool:
        """True when the directory holds a run (a ``config.json``)."""
        return (self.path / CONFIG).is_file()

    def read_json(self, name: str) -> Any:
        path = self.path / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidInputError(f"{path} is missing: not a federated run directory") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInputError(f"{path} cannot be read as JSON: {exc}") from None

    def read_lines(self, name: str) -> list[str]:
        """The lines of the log ``name`` (none if it does not exist)."""
        path = self.path / name
        if not path.is_file():
            return []
        return path.read_text(encoding="utf-8").splitlines()

    # ------------------------------------------------------------------------------- config

    def create(self, config: Mapping[str, Any]) -> None:
        """Create the directory and write ``config.json``; refuse a directory holding a run."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigurationError(f"{self.path} exists and is not a directory")
        if self.exists():
            raise ConfigurationError(
                f"{self.path} already holds a run; resume it (resume=True) or choose another "
                "run_dir"
            )
        (self.path / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        self.write_json(CONFIG, dict(config))
        self.write_transcript([])

    def load_config(self) -> dict[str, Any]:
        config = self.read_json(CONFIG)
        if not isinstance(config, dict):
            raise InvalidInputError(f"{self.path / CONFIG} does not hold a JSON object")
        return config

    # --------------------------------------------------------------------------- transcript

    @property
    def transcript_path(self) -> Path:
        return self.path / TRANSCRIPT

    def write_transcript(self, lines: Iterable[Mapping[str, Any]]) -> None:
        """Replace ``transcript.jsonl`` with ``lines`` in one atomic write (a one-round run);
        each line gets its ``chain`` value (:mod:`secureagg.audit.seal`)."""
        chained = seal.chain_lines(lines)
        text = "".join(json.dumps(line, allow_nan=False) + "\n" for line in chained)
        self.write_bytes(TRANSCRIPT, text.encode("utf-8"))
        self._head = chained[-1][seal.CHAIN_FIELD] if chained else seal.genesis()

    def append_transcript(self, lines: Iterable[Mapping[str, Any]]) -> None:
        """Append a round's lines to ``transcript.jsonl``, chained after the last line
        (serialised first, then one fsync)."""
        chained = seal.chain_lines(lines, self._chain_head())
        self.append_lines(TRANSCRIPT, [json.dumps(line, allow_nan=False) for line in chained])
        if chained:
            self._head = chained[-1][seal.CHAIN_FIELD]

    def append_messages(self, blobs: Sequence[bytes]) -> None:
        """Append the bytes of the server-received messages of a round to ``messages.bin``,
        in the order of the round's ``up`` transcript lines (then fsync)."""
        with (self.path / MESSAGES).open("ab") as fh:
            for blob in blobs:
                fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())

    def _chain_head(self) -> str:
        if self._head is None:
            entries = self.read_transcript()
            head = entries[-1].get(seal.CHAIN_FIELD) if entries else seal.genesis()
            if not isinstance(head, str):
                raise InvalidInputError(
                    f"{self.transcript_path}: its last line has no chain value; cannot append"
                )
            self._head = head
        return self._head

    def read_transcript(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for number, line in enumerate(self.read_lines(TRANSCRIPT), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                # A crash during an append can leave a torn last line; it belongs to a round that
                # was not committed and is dropped by truncate_transcript.
                entry = {"round": -1, "torn_line": number}
            out.append(entry)
        return out

    def truncate_transcript(self, *, keep_through_round: int) -> int:
        """Drop lines of rounds after ``keep_through_round`` (uncommitted); return how many."""
        entries = self.read_transcript()
        kept = [
            e for e in entries if isinstance(e.get("round"), int) and
            1 <= e["round"] <= keep_through_round
        ]
        if len(kept) != len(entries):
            self.write_transcript(kept)
        messages = self.path / MESSAGES
        if messages.is_file():  # drop the bytes of uncommitted rounds (appended before a crash)
            size = sum(int(e.get("size", 0)) for e in kept if e.get("direction") == "up")
            if messages.stat().st_size > size:
                with messages.open("r+b") as fh:
                    fh.truncate(size)
                    fh.flush()
                    os.fsync(fh.fileno())
        return len(entries) - len(kept)

    # --------------------------------------------------------------------------------- seal

    def seal(
        self,
        *,
        kind: str,
        closing: Mapping[str, Any] | None = None,
        key_path: str | os.PathLike[str] | None = None,
    ) -> dict[str, Any]:
        """Seal the run as it stands (:func:`secureagg.audit.seal.seal_run`): ``seal.json``,
        ``seal.sig`` and ``operator_key.pub``, written atomically. Called when a run closes."""
        return seal.seal_run(
            self.path, kind=kind, closing=closing, key_path=key_path, write=self.write_bytes
        )

    # ------------------------------------------------------------------------------ history

    @property
    def history_path(self) -> Path:
        return self.path / HISTORY

    def has_history(self) -> bool:
        return self.history_path.is_file()

    def commit(self, history: Mapping[str, Any]) -> None:
        """Replace ``history.json`` atomically: the commit point of a round."""
        self.write_json(HISTORY, dict(history))

    def load_history(self) -> dict[str, Any]:
        history = self.read_json(HISTORY)
        if not isinstance(history, dict) or history.get("format") != HISTORY_FORMAT:
            raise InvalidInputError(
                f"{self.history_path} is not a {HISTORY_FORMAT} history; cannot resume from it"
            )
        return history

    # -------------------------------------------------------------------------- checkpoints

    def checkpoint_path(self, round_number: int) -> Path:
        return self.path / CHECKPOINTS / f"round-{round_number:05d}.pt"

    def write_checkpoint(
        self, round_number: int, write: Callable[[IO[bytes]], object]
    ) -> dict[str, Any]:
        """Store the model after ``round_number`` (its bytes written by ``write``); return the
        metadata ``history.json`` commits: ``{round, path, sha256}``."""
        path = self.checkpoint_path(round_number)
        self.write_stream(str(path.relative_to(self.path)), write)
        return {
            "round": round_number,
            "path": str(path.relative_to(self.path)),
            "sha256": seal.sha256_file(path),
        }

    def verified_checkpoint(self, info: Mapping[str, Any]) -> Path:
        """The path of a committed checkpoint, after checking its sha256 against ``info``."""
        path = self.path / str(info.get("path", ""))
        if not path.is_file():
            raise InvalidInputError(f"the committed checkpoint {path} is missing")
        if seal.sha256_file(path) != info.get("sha256"):
            raise InvalidInputError(
                f"{path} does not match the sha256 recorded in history.json; the run directory "
                "was modified"
            )
        return path

    def prune_checkpoints(self, keep: Path) -> None:
        for old in (self.path / CHECKPOINTS).glob("round-*.pt"):
            if old.resolve() != keep.resolve():
                old.unlink(missing_ok=True)

    def publish_model(self, checkpoint: Path) -> None:
        """Copy the committed checkpoint to ``model.pt`` (atomically)."""
        with checkpoint.open("rb") as src:
            self.write_stream(MODEL, lambda fh: shutil.copyfileobj(src, fh))
