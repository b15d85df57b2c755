"""Messages of the split-learning exchange (see ``protocols/split/spec.md``).

Threat model: every message crosses the cut between the client (which holds the raw inputs) and
the server. The plaintext messages carry exactly what split learning reveals by design - the
cut-layer activations forward and gradients back - and nothing else: no raw input, no label
(except :attr:`Activations.labels` in the *vanilla-with-shared-labels* set-up, which the user
chooses explicitly). The receiving party validates every field (session, step, shape, batch,
finiteness) before it touches its model, see :mod:`secureagg.split.cut_validation`.

Each tensor travels as a 1-D ``float32`` array plus its ``shape``; the first axis is the batch.
``step`` numbers the exchanges of one client, so that a gradient for another step, a replayed
message or a reordered batch is refused. ``example_ids`` (vanilla topology, labels at the server)
tell the server which records of its label table the batch holds, in order.

The constructor checks the structure, so that :func:`secureagg.transport.decode` refuses a
malformed tensor message (:class:`~secureagg.errors.MalformedMessage`) and a driver cannot build
one (:class:`~secureagg.errors.InvalidInputError`): ``shape`` is 1 to :data:`MAX_DIMS` integer
axes, each at least 1, none ``bool`` (numpy integers are normalised to ``int``); ``values`` is a
1-D numpy array holding exactly ``prod(shape)`` elements, the product computed on Python ints
(:func:`shape_size`), so a shape such as ``(2**62 + 1, 4)`` - 4 values under an int64
``np.prod`` - is refused instead of reaching ``reshape``. The receiving party checks all of this
again, and the expected sizes, in :func:`secureagg.split.cut_validation.receive_tensor`.

>>> import numpy as np
>>> m = Activations(session_id=b"s" * 16, step=0, shape=(2, 3),
...                 values=np.zeros(6, dtype=np.float32), example_ids=None, labels=None)
>>> m.KIND
'split/activations'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from secureagg.errors import InvalidInputError
from secureagg.protocols.base import Message
from secureagg.validation import int_text

__all__ = [
    "MAX_DIMS",
    "Activations",
    "CutGradients",
    "CutTensor",
    "OutputGradients",
    "ServerOutputs",
    "checked_shape",
    "shape_size",
    "shape_text",
]

#: The most axes a tensor crossing the cut may have (numpy's own limit is 64; 32 is numpy 1's).
MAX_DIMS = 32

def shape_text(shape: tuple[int, ...]) -> str:
    """A checked shape for an error message (see :func:`int_text`), at most 8 axes shown."""
    shown = [int_text(d) for d in shape[:8]]
    if len(shape) > 8:
        shown.append(f"... {len(shape)} axes")
    return "(" + ", ".join(shown) + ("," if len(shape) == 1 else "") + ")"


def checked_shape(shape: object, *, what: str) -> tuple[int, ...]:
    """``shape`` as a tuple of Python ints, or :class:`InvalidInputError` naming every problem.

    Accepts a tuple or list of 1 to :data:`MAX_DIMS` integers (``int`` or numpy integers, never
    ``bool``), each at least 1: no empty batch or feature axis ever crosses the cut. Sizes are
    checked against the values with :func:`shape_size`.
    """
    if not isinstance(shape, tuple | list):
        raise InvalidInputError(
            f"{what}: shape must be a tuple of integers, got {type(shape).__name__}"
        )
    if not 1 <= len(shape) <= MAX_DIMS:
        raise InvalidInputError(
            f"{what}: shape has {len(shape)} axes; a tensor crossing the cut has 1 to {MAX_DIMS}"
        )
    problems: list[str] = []
    dims: list[int] = []
    for axis, dim in enumerate(shape):
        if isinstance(dim, bool | np.bool_) or not isinstance(dim, int | np.integer):
            problems.append(f"axis {axis} is a {type(dim).__name__}, not an integer")
            continue
        value = int(dim)
        if value < 1:
            problems.append(f"axis {axis} is {int_text(value)}; every axis must be at least 1")
        dims.append(value)
    if problems:
        raise InvalidInputError(f"{what}: bad shape: " + "; ".join(problems))
    return tuple(dims)


def shape_size(shape: tuple[int, ...]) -> int:
    """The element count of a checked shape, exact (Python ints: no int64 wrap-around)."""
    return math.prod(shape)


def _check_tensor(message: CutTensor) -> None:
    what = type(message).__name__
    shape = checked_shape(message.shape, what=what)
    object.__setattr__(message, "shape", shape)  # normalised: a tuple of Python ints
    problems: list[str] = []
    session: object = message.session_id
    step: object = message.step
    if not isinstance(session, bytes):
        problems.append(f"session_id must be bytes, got {type(session).__name__}")
    if isinstance(step, bool) or not isinstance(step, int):
        problems.append(f"step must be an int, got {type(step).__name__}")
    values: Any = message.values
    if not isinstance(values, np.ndarray) or values.ndim != 1:
        problems.append("values must be a 1-D numpy array (the tensor, flattened)")
    elif values.size != shape_size(shape):
        problems.append(
            f"values holds {values.size} elements, but the shape {shape_text(shape)} needs "
            f"{int_text(shape_size(shape))}"
        )
    if problems:
        raise InvalidInputError(f"{what}: " + "; ".join(problems))


def _optional_array(value: object, name: str, what: str) -> None:
    if value is not None and (not isinstance(value, np.ndarray) or value.ndim != 1):
        raise InvalidInputError(f"{what}: {name} must be a 1-D numpy array or None")


@dataclass(frozen=True)
class CutTensor(Message):
    """Base of every plaintext tensor crossing the cut (no ``KIND``: never sent as such)."""

    session_id: bytes
    step: int
    shape: tuple[int, ...]
    values: npt.NDArray[np.float32]

    def __post_init__(self) -> None:
        _check_tensor(self)


@dataclass(frozen=True)
class Activations(CutTensor):
    """Client -> server: the cut-layer activations of one batch ("smashed data").

    ``example_ids`` (int64, one per row) when the server holds the labels (vanilla); ``labels``
    (int64) only when the user chose to send labels with the batch.
    """

    KIND: ClassVar[str] = "split/activations"

    example_ids: npt.NDArray[np.int64] | None
    labels: npt.NDArray[np.int64] | None

    def __post_init__(self) -> None:
        super().__post_init__()
        _optional_array(self.example_ids, "example_ids", "Activations")
        _optional_array(self.labels, "labels", "Activations")


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
