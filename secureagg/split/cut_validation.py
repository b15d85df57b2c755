"""Validation of what arrives across the cut, before any model is touched.

Threat model: the other party is buggy or adversarial. A tensor from it may hold NaN/Inf, have the
wrong shape or batch size, belong to another session or step (a replay), or reorder the batch.
Each of these raises before the receiving party runs a forward or backward pass or an optimizer
step, so a rejected message never changes a model ("the step is not applied").

>>> import numpy as np
>>> from secureagg.split.messages import CutGradients
>>> m = CutGradients(session_id=b"s" * 16, step=3, shape=(2, 2),
...                  values=np.ones(4, dtype=np.float32))
>>> receive_tensor(m, session_id=b"s" * 16, step=3, shape=(2, 2), what="gradient").shape
(2, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.crypto.encoding import require_finite
from secureagg.errors import InvalidInputError, NonFiniteInputError, ProtocolError
from secureagg.split.messages import CutTensor, checked_shape, shape_size, shape_text
from secureagg.validation import int_text

__all__ = ["check_class_labels", "check_example_ids", "receive_tensor"]


def receive_tensor(
    message: CutTensor,
    *,
    session_id: bytes,
    step: int,
    shape: Sequence[int | None],
    what: str,
) -> npt.NDArray[np.float32]:
    """The message's tensor, reshaped, after checking session, step, shape and finiteness.

    ``shape`` is the expected shape; ``None`` in it accepts any size on that axis (the feature
    width of the first batch a server sees, for example). Raises :class:`ProtocolError` for a
    message of another session or step, :class:`InvalidInputError` for a wrong shape, dtype or
    size and :class:`NonFiniteInputError` for NaN/Inf. The declared shape is checked again here
    (the message constructor checks it too, but a party does not rely on how a message was
    built): integer axes only, no bool, none negative or empty, at most ``MAX_DIMS``, and an
    element count computed exactly on Python ints - never ``np.prod``, which wraps in int64.
    """
    if message.session_id != session_id:
        raise ProtocolError(
            f"{what} from another session (a replay or a mix-up); refused", stage=f"step {step}"
        )
    got_step = message.step
    if isinstance(got_step, bool) or not isinstance(got_step, int) or got_step != step:
        shown = int_text(got_step) if isinstance(got_step, int) else type(got_step).__name__
        raise ProtocolError(
            f"{what} for step {shown}, but step {step} is in progress: replayed, "
            "reordered or stale; refused",
            stage=f"step {step}",
        )
    got = checked_shape(message.shape, what=what)
    mismatch = len(got) != len(shape) or any(
        e is not None and g != e for g, e in zip(got, shape, strict=True)
    )
    if mismatch:
        want = "(" + ", ".join("*" if e is None else str(e) for e in shape) + ")"
        raise InvalidInputError(f"{what} has shape {shape_text(got)}, expected {want}")
    if any(g < 1 for g in got):
        raise InvalidInputError(f"{what} has an empty axis: shape {shape_text(got)}")
    values: Any = message.values
    if not isinstance(values, np.ndarray) or values.ndim != 1:
        raise InvalidInputError(f"{what} must carry a 1-D array of values")
    if values.dtype != np.float32:
        raise InvalidInputError(f"{what} must be float32, got {values.dtype}")
    needed = shape_size(got)
    if values.size != needed:
        raise InvalidInputError(
            f"{what} carries {values.size} values, but its shape {shape_text(got)} needs "
            f"{int_text(needed)}"
        )
    try:
        require_finite(values, where=what)
    except NonFiniteInputError as exc:
        raise NonFiniteInputError(
            f"{what} from the other party holds NaN or Inf; refused, nothing applied ({exc})"
        ) from None
    return values.reshape(got)


def check_example_ids(
    ids: npt.NDArray[np.int64] | None, *, batch: int, table_size: int, what: str
) -> npt.NDArray[np.int64]:
    """Check the example ids of a batch against the server's label table."""
    if ids is None:
        raise InvalidInputError(f"{what}: the server holds the labels, so example_ids are needed")
    if not isinstance(ids, np.ndarray) or ids.dtype.kind not in "iu" or ids.ndim != 1:
        raise InvalidInputError(f"{what}: example_ids must be a 1-D integer array")
    if ids.size != batch:
        raise InvalidInputError(
            f"{what}: {ids.size} example ids for a batch of {int_text(batch)}"
        )
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= table_size):
        raise InvalidInputError(f"{what}: example ids outside the label table [0, {table_size})")
    if np.unique(ids).size != ids.size:
        raise InvalidInputError(f"{what}: an example id appears twice in one batch")
    return ids.astype(np.int64, copy=False)


def check_class_labels(
    labels: npt.NDArray[Any] | None, *, batch: int, what: str
) -> npt.NDArray[np.int64]:
    """Labels sent with a batch (``send_labels=True``): one non-negative integer per row.

    Whether a label is below the number of classes is the loss function's to say; the server
    turns its refusal into an :class:`InvalidInputError` (see ``SplitServer.receive``).
    """
    if labels is None:
        raise InvalidInputError(
            f"{what}: the server has no label table: the batch must carry one label per row"
        )
    if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise InvalidInputError(f"{what}: labels must be a 1-D integer array")
    if labels.size != batch:
        raise InvalidInputError(f"{what}: {labels.size} labels for a batch of {int_text(batch)}")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > np.iinfo(np.int64).max):
        raise InvalidInputError(f"{what}: labels must be class indices >= 0")
    return labels.astype(np.int64, copy=False)
