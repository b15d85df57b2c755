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

import numpy as np
import numpy.typing as npt

from secureagg.crypto.encoding import require_finite
from secureagg.errors import InvalidInputError, NonFiniteInputError, ProtocolError
from secureagg.split.messages import CutTensor

__all__ = ["check_example_ids", "receive_tensor"]


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
    size and :class:`NonFiniteInputError` for NaN/Inf.
    """
    if message.session_id != session_id:
        raise ProtocolError(
            f"{what} from another session (a replay or a mix-up); refused", stage=f"step {step}"
        )
    if message.step != step:
        raise ProtocolError(
            f"{what} for step {message.step}, but step {step} is in progress: replayed, "
            "reordered or stale; refused",
            stage=f"step {step}",
        )
    got = tuple(int(s) for s in message.shape)
    mismatch = len(got) != len(shape) or any(
        e is not None and g != e for g, e in zip(got, shape, strict=True)
    )
    if mismatch:
        want = tuple("*" if e is None else e for e in shape)
        raise InvalidInputError(f"{what} has shape {got}, expected {want}")
    if any(g < 1 for g in got):
        raise InvalidInputError(f"{what} has an empty axis: shape {got}")
    values = message.values
    if values.dtype != np.float32:
        raise InvalidInputError(f"{what} must be float32, got {values.dtype}")
    if values.size != int(np.prod(got)):
        raise InvalidInputError(
            f"{what} carries {values.size} values, but its shape {got} needs {int(np.prod(got))}"
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
    if ids.dtype.kind not in "iu" or ids.ndim != 1:
        raise InvalidInputError(f"{what}: example_ids must be a 1-D integer array")
    if ids.size != batch:
        raise InvalidInputError(f"{what}: {ids.size} example ids for a batch of {batch}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= table_size):
        raise InvalidInputError(f"{what}: example ids outside the label table [0, {table_size})")
    if np.unique(ids).size != ids.size:
        raise InvalidInputError(f"{what}: an example id appears twice in one batch")
    return ids.astype(np.int64, copy=False)
