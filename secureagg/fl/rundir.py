"""The run directory of a federated run: what happened, what the server saw, and how to resume.

Every file is written by the run directory's one writer,
:class:`secureagg.audit.rundir.RunDirectory` (atomically: a temporary file, fsync,
``os.replace``; the two logs are appended and fsynced); this module adds only what needs torch,
the model checkpoints, whose bytes it hands to that writer.

Layout:

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
>>> d = FederatedRunDirectory(pathlib.Path(tempfile.mkdtemp()) / "run")
>>> d.create({"protocol": "plain"}); d.load_config()["protocol"]
'plain'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from secureagg.audit.rundir import HISTORY_FORMAT, RunDirectory
from secureagg.dp.torch_import import require_torch
from secureagg.errors import InvalidInputError

if TYPE_CHECKING:
    import torch
else:
    torch = require_torch()

__all__ = ["HISTORY_FORMAT", "FederatedRunDirectory"]


class FederatedRunDirectory(RunDirectory):
    """A federated run's directory: :class:`~secureagg.audit.rundir.RunDirectory` plus the torch
    checkpoints of the global model (see the module docstring)."""

    def save_checkpoint(
        self, round_number: int, state: Mapping[str, torch.Tensor]
    ) -> dict[str, Any]:
        """Write the global model after ``round_number``; return ``{round, path, sha256}``."""
        tensors = {k: v.detach().to("cpu").clone() for k, v in state.items()}
        return self.write_checkpoint(round_number, lambda fh: torch.save(tensors, fh))

    def load_checkpoint(self, info: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Load a committed checkpoint after checking its sha256 (tensors only)."""
        path = self.verified_checkpoint(info)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
        ):
            raise InvalidInputError(f"{path} does not hold a state_dict of tensors")
        return state
