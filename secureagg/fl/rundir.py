"""The run directory of a federated run: what happened, what the server saw, and how to resume.

Layout (all JSON is UTF-8, written to a temporary file and moved into place with ``os.replace``,
so a crash never leaves a half-written file):

* ``config.json`` - the run's configuration (protocol, aggregator parameters, clip, clients,
  rounds, seeds of the public schedule, DP settings, the model codec's entries, versions);
* ``history.json`` - **the commit point**: ``completed_rounds``, the checkpoint of the global model
  after that round (path and sha256), and per round: status (``completed``/``aborted``),
  participants, dropouts, client failures, stragglers, bytes, seconds per stage, clipped values,
  evaluation metrics, epsilon so far;
* ``transcript.jsonl`` - every message of every round, one JSON object per line: ``round``,
  ``direction`` (``up`` = received by the server, ``down`` = sent by it, ``peer`` = between other
  parties), stage, kind, sender and recipient (global client ids; negative ids are the server and
  helpers), the protocol's round id, size and sha256 of the encoded bytes;
* ``privacy_ledger.json`` - the privacy events and the epsilon spent (or a statement that no DP was
  configured);
* ``checkpoints/round-NNNNN.pt`` - the global model after round NNNNN (``round-00000.pt`` is the
  initial model), ``torch.save`` of the ``state_dict`` only (tensors; loads with
  ``weights_only=True``); only the committed one is kept;
* ``model.pt`` - the latest committed global model (same format);
* ``result.json`` - a summary (status, clients that contributed, message totals) that
  ``secureagg audit RUN_DIR`` cross-checks against ``transcript.jsonl``.

Commit protocol of a round ``r``: append its transcript lines, write ``checkpoints/round-r.pt``,
write the ledger, then replace ``history.json`` (the commit), then refresh ``model.pt`` and
``result.json`` and delete older checkpoints. Resuming reads ``history.json`` only: transcript
lines of later rounds are dropped, the committed checkpoint is loaded after its sha256 is checked,
and the run continues at round ``r + 1``. Nothing of a round that was not committed survives.

>>> import tempfile, pathlib
>>> d = RunDirectory(pathlib.Path(tempfile.mkdtemp()) / "run")
>>> d.create({"protocol": "plain"}); d.load_config()["protocol"]
'plain'
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secureagg.dp._torch import require_torch
from secureagg.errors import ConfigurationError, InvalidInputError

if TYPE_CHECKING:
    import torch
else:
    torch = require_torch()

__all__ = ["HISTORY_FORMAT", "RunDirectory"]

HISTORY_FORMAT = "secureagg/fl-history/v1"


def _json_text(payload: Any) -> str:
    return json.dumps(payload, indent=2, allow_nan=False, sort_keys=False) + "\n"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class RunDirectory:
    """Reads and writes one run directory (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # ------------------------------------------------------------------------------ basics

    @property
    def history_path(self) -> Path:
        return self.path / "history.json"

    @property
    def transcript_path(self) -> Path:
        return self.path / "transcript.jsonl"

    def exists(self) -> bool:
        """True when the directory holds a run (a ``config.json``)."""
        return (self.path / "config.json").is_file()

    def has_history(self) -> bool:
        return self.history_path.is_file()

    def write_json(self, name: str, payload: Any) -> None:
        _atomic_write_bytes(self.path / name, _json_text(payload).encode("utf-8"))

    def read_json(self, name: str) -> Any:
        path = self.path / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidInputError(f"{path} is missing: not a federated run directory") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInputError(f"{path} cannot be read as JSON: {exc}") from None

    def create(self, config: Mapping[str, Any]) -> None:
        """Create the directory and write ``config.json``; refuse a directory holding a run."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigurationError(f"{self.path} exists and is not a directory")
        if self.exists():
            raise ConfigurationError(
                f"{self.path} already holds a run; resume it (resume=True) or choose another "
                "run_dir"
            )
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.write_json("config.json", dict(config))
        self.transcript_path.write_text("", encoding="utf-8")

    def load_config(self) -> dict[str, Any]:
        config = self.read_json("config.json")
        if not isinstance(config, dict):
            raise InvalidInputError(f"{self.path / 'config.json'} does not hold a JSON object")
        return config

    # -------------------------------------------------------------------------- checkpoints

    def checkpoint_path(self, round_number: int) -> Path:
        return self.path / "checkpoints" / f"round-{round_number:05d}.pt"

    def save_checkpoint(
        self, round_number: int, state: Mapping[str, torch.Tensor]
    ) -> dict[str, Any]:
        """Write the global model after ``round_number``; return ``{round, path, sha256}``."""
        path = self.checkpoint_path(round_number)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tensors = {k: v.detach().to("cpu").clone() for k, v in state.items()}
        torch.save(tensors, tmp)
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return {
            "round": round_number,
            "path": str(path.relative_to(self.path)),
            "sha256": _sha256_file(path),
        }

    def load_checkpoint(self, info: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Load a committed checkpoint after checking its sha256 (tensors only)."""
        path = self.path / str(info.get("path", ""))
        if not path.is_file():
            raise InvalidInputError(f"the committed checkpoint {path} is missing")
        if _sha256_file(path) != info.get("sha256"):
            raise InvalidInputError(
                f"{path} does not match the sha256 recorded in history.json; the run directory "
                "was modified"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
        ):
            raise InvalidInputError(f"{path} does not hold a state_dict of tensors")
        return state

    def prune_checkpoints(self, keep: Path) -> None:
        for old in (self.path / "checkpoints").glob("round-*.pt"):
            if old.resolve() != keep.resolve():
                old.unlink(missing_ok=True)

    def publish_model(self, checkpoint: Path) -> None:
        """Copy the committed checkpoint to ``model.pt`` (atomically)."""
        tmp = self.path / ".model.pt.tmp"
        shutil.copyfile(checkpoint, tmp)
        os.replace(tmp, self.path / "model.pt")

    # --------------------------------------------------------------------------- transcript

    def append_transcript(self, lines: Iterable[Mapping[str, Any]]) -> None:
        with self.transcript_path.open("a", encoding="utf-8") as fh:
            for line in lines:
                fh.write(json.dumps(dict(line), allow_nan=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read_transcript(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self.transcript_path.is_file():
            return out
        for number, line in enumerate(
            self.transcript_path.read_text(encoding="utf-8").splitlines(), start=1
        ):
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
            text = "".join(json.dumps(e, allow_nan=False) + "\n" for e in kept)
            _atomic_write_bytes(self.transcript_path, text.encode("utf-8"))
        return len(entries) - len(kept)

    # ------------------------------------------------------------------------------ history

    def commit(self, history: Mapping[str, Any]) -> None:
        """Replace ``history.json`` atomically: the commit point of a round."""
        self.write_json("history.json", dict(history))

    def load_history(self) -> dict[str, Any]:
        history = self.read_json("history.json")
        if not isinstance(history, dict) or history.get("format") != HISTORY_FORMAT:
            raise InvalidInputError(
                f"{self.history_path} is not a {HISTORY_FORMAT} history; cannot resume from it"
            )
        return history
