"""Normalise the caller's updates and weights before a round is driven.

Invariant: what comes out is ``num_clients`` lists of C-contiguous, read-only floating-point numpy
arrays (float32 stays float32; integers become float64), views of the caller's data where
possible so that big models are not copied, with the same tensor count and shapes for every
client. Anything else raises :class:`~secureagg.errors.InvalidInputError` naming the client and
the tensor. Torch tensors are accepted duck-typed (``.detach().cpu().numpy()``): this module never
imports torch. NaN/Inf are *not* rejected here: that is the client party's job
(:class:`~secureagg.errors.NonFiniteInputError`, raised on the client before anything is sent).

>>> import numpy as np
>>> ups = normalize_updates([[np.ones(2)], [np.zeros(2, dtype=np.float32)]], num_clients=2)
>>> [u[0].dtype.name for u in ups]
['float64', 'float32']
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.errors import ConfigurationError, InvalidInputError

__all__ = ["normalize_updates", "normalize_weights"]

_MAX_LISTED = 10  # problems listed in one error message


def _to_numpy(tensor: Any, where: str) -> npt.NDArray[np.float64]:
    value = tensor
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, duck-typed
        try:
            value = value.detach().cpu().numpy()
        except (TypeError, RuntimeError, AttributeError, ValueError) as exc:
            raise InvalidInputError(
                f"{where}: cannot convert the tensor to numpy ({exc}); convert it to float32 "
                "or float64 first"
            ) from None
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{where}: not array-like ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise InvalidInputError(
            f"{where}: dtype {arr.dtype} is not a real number type; pass float or integer arrays"
        )
    if arr.dtype.kind != "f" or not arr.flags.c_contiguous:
        arr = np.array(arr, dtype=np.float64 if arr.dtype.kind != "f" else arr.dtype, order="C")
    # A read-only view, not a copy: a model of 10^6 values times n clients must not be doubled.
    view = arr.view()
    view.flags.writeable = False
    return view


def _is_single_tensor(value: Any) -> bool:
    return isinstance(value, np.ndarray) or (hasattr(value, "detach") and hasattr(value, "cpu"))


def normalize_updates(
    updates: Sequence[Any], *, num_clients: int
) -> list[list[npt.NDArray[np.float64]]]:
    """Return ``updates`` as ``num_clients`` lists of read-only float arrays (views if possible).

    ``updates[i]`` is client ``i``'s list (or tuple) of numpy arrays / torch tensors; a single
    array or tensor is taken as a list of one. Every client must have the same number of tensors
    with the same shapes.
    """
    if isinstance(updates, str | bytes) or not isinstance(updates, Sequence):
        raise InvalidInputError(
            f"updates must be a list with one entry per client, got {type(updates).__name__}"
        )
    if len(updates) != num_clients:
        raise InvalidInputError(
            f"got updates for {len(updates)} clients but the aggregator was built for "
            f"num_clients={num_clients}"
        )
    out: list[list[npt.NDArray[np.float64]]] = []
    for cid, update in enumerate(updates):
        tensors = [update] if _is_single_tensor(update) else update
        if isinstance(tensors, str | bytes) or not isinstance(tensors, Sequence):
            raise InvalidInputError(
                f"client {cid}: expected a list of arrays or tensors, got {type(update).__name__}"
            )
        if len(tensors) == 0:
            raise InvalidInputError(f"client {cid}: the update holds no tensors")
        out.append([_to_numpy(t, f"client {cid}, tensor {j}") for j, t in enumerate(tensors)])
    reference = [a.shape for a in out[0]] if out else []
    problems: list[str] = []
    for cid, arrays in enumerate(out[1:], start=1):
        if len(arrays) != len(reference):
            problems.append(
                f"client {cid} has {len(arrays)} tensors, client 0 has {len(reference)}"
            )
            continue
        for j, (arr, shape) in enumerate(zip(arrays, reference, strict=True)):
            if arr.shape != shape:
                problems.append(
                    f"client {cid}, tensor {j}: shape {arr.shape} differs from client 0's {shape}"
                )
    if problems:
        listed = problems[:_MAX_LISTED]
        more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise InvalidInputError(
            "updates must have the same tensor count and shapes for every client: "
            + "; ".join(listed)
            + more
        )
    return out


def normalize_weights(
    weights: Sequence[Any] | None, *, num_clients: int
) -> tuple[float, ...] | None:
    """``None``, or one positive finite number per client as floats; else ConfigurationError."""
    if weights is None:
        return None
    if hasattr(weights, "detach") and hasattr(weights, "cpu"):
        weights = weights.detach().cpu().numpy()
    if isinstance(weights, np.ndarray):
        weights = weights.tolist()
    if isinstance(weights, str | bytes) or not isinstance(weights, Sequence):
        raise ConfigurationError(
            f"weights must be None or a list of numbers, got {type(weights).__name__}"
        )
    problems: list[str] = []
    if len(weights) != num_clients:
        problems.append(f"got {len(weights)} weights for {num_clients} clients")
    out: list[float] = []
    for cid, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, numbers.Real):
            problems.append(f"weight of client {cid} is not a number: {w!r}")
            continue
        value = float(w)
        if not math.isfinite(value) or value <= 0:
            problems.append(f"weight of client {cid} must be positive and finite, got {w!r}")
        out.append(value)
    if problems:
        raise ConfigurationError(problems)
    return tuple(out)
