"""How a federated run persists: its run directory is created, resumed and committed round by round.

:class:`RunPersistence` is the base of :class:`~secureagg.fl.FederatedRun` that owns the run's
progress (``history``, ``completed_rounds``, the committed checkpoint) and writes it through the
run directory's single writer (:class:`~secureagg.fl.rundir.FederatedRunDirectory`, which writes
every file through :class:`~secureagg.audit.rundir.RunDirectory`): ``config.json`` when
the run is created, then per round the transcript lines, the checkpoint of a completed round, the
privacy ledger, ``history.json`` (the commit point), ``model.pt`` and ``result.json``.

Invariants: a round is committed in the order of the run directory's commit protocol (its
transcript lines, its checkpoint, the ledger, then ``history.json``, the commit point, then
``model.pt`` and ``result.json``), so nothing of a round that was not committed survives a crash.
A resumed run reloads the committed checkpoint (checked against the model's state), drops the
transcript lines of later rounds, replays the privacy events, and refuses a configuration that
differs from the directory's (:func:`~secureagg.fl.run_config.resume_mismatches`). Without a run
directory the history is kept in memory only. Without DP, the ledger states that the run carries
no formal privacy guarantee.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from secureagg.audit.rundir import CONFIG, HISTORY_FORMAT, PRIVACY_LEDGER, RESULT
from secureagg.errors import ConfigurationError
from secureagg.fl import records
from secureagg.fl.records import RoundRecord
from secureagg.fl.run_config import RunConfiguration, jsonable, resume_mismatches

if TYPE_CHECKING:
    import torch

__all__ = ["RunPersistence"]


class RunPersistence(RunConfiguration):
    """The run's progress and its run directory (see the module docstring)."""

    history: list[dict[str, Any]]
    completed_rounds: int
    _checkpoint: dict[str, Any] | None

    def _history_doc(self) -> dict[str, Any]:
        return {
            "format": HISTORY_FORMAT,
            "completed_rounds": self.completed_rounds,
            "checkpoint": self._checkpoint,
            "rounds": self.history,
        }

    def _create(self) -> None:
        rd = self.run_dir
        if rd is None:
            return
        rd.create(self.config)
        if self.privacy is not None:
            self.privacy.attach(rd, replay=False)
        self._checkpoint = rd.save_checkpoint(0, self.model.state_dict())
        self.write_ledger()
        rd.commit(self._history_doc())
        rd.publish_model(rd.path / self._checkpoint["path"])
        self._write_result()

    def _resume(self) -> None:
        rd = self.run_dir
        if rd is None:
            return
        stored = rd.load_config()
        mismatched = resume_mismatches(stored, self.config)
        if mismatched:
            raise ConfigurationError(
                ["cannot resume: the configuration differs from the run directory's", *mismatched]
            )
        history = rd.load_history()
        state = rd.load_checkpoint(history["checkpoint"])
        self.codec.check(state, who="the checkpoint")
        self.model.load_state_dict(state)
        self.history = list(history.get("rounds", []))
        self.completed_rounds = int(history["completed_rounds"])
        self._checkpoint = dict(history["checkpoint"])
        rd.truncate_transcript(keep_through_round=self.completed_rounds)
        self.restore_privacy(self.history)
        if self.rounds != int(stored.get("rounds", self.rounds)):
            config = dict(stored)
            config["rounds"] = self.rounds
            rd.write_json(CONFIG, config)

    # ------------------------------------------------------------------ privacy hooks (DP layer)

    def restore_privacy(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Replay the run's privacy events (resume); nothing without DP."""
        if self.privacy is not None and self.run_dir is not None:
            self.privacy.attach(self.run_dir, replay=True)

    def write_ledger(self) -> None:
        """Write ``privacy_ledger.json`` (without DP: a statement saying so)."""
        if self.run_dir is None:
            return
        if self.privacy is not None:
            self.privacy.flush()
            self.run_dir.write_json(PRIVACY_LEDGER, jsonable(self.privacy.ledger()))
            return
        self.run_dir.write_json(
            PRIVACY_LEDGER,
            {
                "format": "secureagg/fl-privacy-ledger/v1",
                "differential_privacy": False,
                "statement": "no differential privacy was configured for this run: the server "
                "obtains the exact aggregate of each round, and the released model carries no "
                "formal privacy guarantee",
                "sample_level": None,
                "user_level": None,
            },
        )

    # -------------------------------------------------------------------------------- commit

    def _commit(
        self,
        entry: dict[str, Any],
        mean: Any,
        result: Any,
        participants: Sequence[int],
        *,
        updates: Mapping[int, Any] | None = None,
        new_state: Mapping[str, torch.Tensor] | None = None,
    ) -> RoundRecord:
        r = int(entry["round"])
        slots = [int(c) for c in entry["sampled"]]
        lines: list[dict[str, Any]] = []
        if result is not None:
            lines = records.transcript_lines(
                r,
                slots,
                up=getattr(result, "transcript", []) or [],
                down=getattr(result, "downlink", []) or [],
                peer=getattr(result, "peer_traffic", []) or [],
            )
        raw: list[tuple[dict[str, Any], bytes]] | None = None
        raw_bytes = getattr(result, "raw_uplink", None)
        if self.keep_raw and raw_bytes is not None:
            ups = [line for line in lines if line["direction"] == "up"]
            raw = list(zip(ups, raw_bytes, strict=True))
        entry["transcript_messages"] = len(lines)
        self.history.append(entry)
        self.completed_rounds = r
        rd = self.run_dir
        if rd is not None:
            if self.keep_messages and raw_bytes is not None:
                rd.append_messages(list(raw_bytes))
            rd.append_transcript(lines)
            if new_state is not None:
                self._checkpoint = rd.save_checkpoint(r, new_state)
            self.write_ledger()
            rd.commit(self._history_doc())
            if new_state is not None and self._checkpoint is not None:
                ckpt = rd.path / self._checkpoint["path"]
                rd.publish_model(ckpt)
                rd.prune_checkpoints(ckpt)
            self._write_result()
        record = RoundRecord(
            entry=entry,
            raw_uplink=raw,
            client_updates=dict(updates or {}),
            mean_update=None if mean is None else np.asarray(mean, dtype=np.float64),
        )
        if self.on_round is not None:
            self.on_round(record)
        return record

    def _write_result(self, *, stopped: str | None = None) -> None:
        """``result.json``: totals that ``secureagg audit`` checks against the transcript."""
        if self.run_dir is not None:
            self.run_dir.write_json(
                RESULT,
                records.result_summary(
                    self.history, rounds=self.rounds, stopped=stopped, seeded=self.seeded
                ),
            )

    @property
    def directory(self) -> Path | None:
        """The run directory's path (``None`` when the run writes none)."""
        return None if self.run_dir is None else self.run_dir.path
