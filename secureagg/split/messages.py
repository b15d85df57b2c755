"""Messages of the split-learning exchange (see ``protocols/split/spec.md``).

Threat model: every message crosses the cut between the client (which holds the raw inputs) and
the server. The plaintext messages carry exactly what split learning reveals by design - the
cut-layer activations forward and gradients back - and nothing else: no raw input, no label
(except :attr:`Activations.labels` in the *vanilla-with-shared-labels* set-up, which the user
chooses explicitly). The receiving party validates every field (session, step, shape, batch,
finiteness) before it touches its model, see :mod:`secureagg.split.checks`.

Each tensor travels as a 1-D ``float32`` array plus its ``shape``; the first axis is the batch.
``step`` numbers the exchanges of one client, so that a gradient for another step, a replayed
message or a reordered batch is refused. ``example_ids`` (vanilla topology, labels at the server)
tell the server which records of its label table the batch holds, in order.

>>> import numpy as np
>>> m = Activations(session_id=b"s" * 16, step=0, shape=(2, 3),
...                 values=np.zeros(6, dtype=np.float32), example_ids=None, labels=None)
>>> m.KIND
'split/activations'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from secureagg.protocols.base import Message

__all__ = [
    "Activations",
    "CutGradients",
    "CutTensor",
    "OutputGradients",
    "ServerOutputs",
]


@dataclass(frozen=True)
class CutTensor(Message):
    """Base of every plaintext tensor crossing the cut (no ``KIND``: never sent as such)."""

    session_id: bytes
    step: int
    shape: tuple[int, ...]
    values: npt.NDArray[np.float32]


@dataclass(frozen=True)
class Activations(CutTensor):
    """Client -> server: the cut-layer activations of one batch ("smashed data").

    ``example_ids`` (int64, one per row) when the server holds the labels (vanilla); ``labels``
    (int64) only when the user chose to send labels with the batch.
    """

    KIND: ClassVar[str] = "split/activations"

    example_ids: npt.NDArray[np.int64] | None
    labels: npt.NDArray[np.int64] | None


@dataclass(frozen=True)
class ServerOutputs(CutTensor):
    """Server -> client (U-shaped): the output of the server's middle part for the batch."""

    KIND: ClassVar[str] = "split/server-outputs"


@dataclass(frozen=True)
class OutputGradients(CutTensor):
    """Client -> server (U-shaped): dLoss/d(server outputs), computed by the client's head."""

    KIND: ClassVar[str] = "split/output-gradients"


@dataclass(frozen=True)
class CutGradients(CutTensor):
    """Server -> client: dLoss/d(activations), the gradient at the cut."""

    KIND: ClassVar[str] = "split/cut-gradients"
