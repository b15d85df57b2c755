"""One codec between a model's ``state_dict`` and the flat vector that secure aggregation sums.

Invariant: :meth:`StateCodec.flatten` and :meth:`StateCodec.unflatten` are inverse on the
*aggregated* entries and keep every name, shape and dtype; entries that are not aggregated are
never touched by the aggregate (they are copied from the reference state). Which entries are
aggregated is decided once, from the global model, and stated in :meth:`StateCodec.describe`:

* parameters (``model.named_parameters()``) with a floating dtype: always aggregated;
* floating-point buffers (e.g. BatchNorm ``running_mean``/``running_var``): aggregated with
  ``buffers="aggregate"`` (the default: FedAvg of the statistics, like the parameters), kept at the
  server's value with ``buffers="exclude"``;
* integer and boolean buffers (e.g. BatchNorm ``num_batches_tracked``): never aggregated (a
  weighted mean of counters is meaningless); the global model keeps its own value;
* non-persistent buffers are not in the ``state_dict`` and play no part.

The flat vector is float32 when every aggregated entry is float32 or narrower (half, bfloat16),
float64 when any is float64; values are cast back to each entry's dtype on the way out.

A state whose names, shapes or dtypes differ from the codec's (a client that changed the
architecture) raises :class:`~secureagg.errors.InvalidInputError` listing every difference; it is
never reshaped or broadcast.

>>> import torch
>>> from secureagg.fl.model_state import StateCodec
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
>>> codec = StateCodec.from_model(model)
>>> codec.size          # 3*2 + 2 weights and biases, 2 + 2 BatchNorm affine, 2 + 2 statistics
16
>>> flat = codec.flatten(model.state_dict())
>>> restored = codec.unflatten(flat, reference=model.state_dict())
>>> all(torch.equal(restored[k], v) for k, v in model.state_dict().items())
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from secureagg.dp.torch_import import require_torch
from secureagg.errors import ConfigurationError, InvalidInputError
from secureagg.validation import is_real

if TYPE_CHECKING:
    import torch
else:
    torch = require_torch()

__all__ = ["BufferPolicy", "StateCodec", "TensorSpec"]

BufferPolicy = Literal["aggregate", "exclude"]

_MAX_LISTED = 10


@dataclass(frozen=True)
class TensorSpec:
    """One ``state_dict`` entry: where it lives in the flat vector (``offset``, ``size``)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: Literal["parameter", "buffer"]
    aggregated: bool
    offset: int
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "kind": self.kind,
            "aggregated": self.aggregated,
            "offset": self.offset,
            "size": self.size,
        }


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class StateCodec:
    """``state_dict`` <-> flat vector of the aggregated entries (see the module docstring)."""

    def __init__(self, specs: tuple[TensorSpec, ...], *, buffers: BufferPolicy) -> None:
        self.specs = specs
        self.buffers: BufferPolicy = buffers
        self.size = sum(s.size for s in specs if s.aggregated)
        wide = any(s.aggregated and s.dtype == "float64" for s in specs)
        self.dtype: np.dtype[Any] = np.dtype(np.float64 if wide else np.float32)
        self._by_name = {s.name: s for s in specs}

    @classmethod
    def from_model(
        cls, model: torch.nn.Module, *, buffers: BufferPolicy = "aggregate"
    ) -> StateCodec:
        """Build the codec from the global model (its parameters and persistent buffers)."""
        if not isinstance(model, torch.nn.Module):
            raise ConfigurationError(
                f"model must be a torch.nn.Module, got {type(model).__name__}"
            )
        if buffers not in ("aggregate", "exclude"):
            raise ConfigurationError(f"buffers must be 'aggregate' or 'exclude', got {buffers!r}")
        parameter_names = {name for name, _ in model.named_parameters()}
        state = model.state_dict()
        specs: list[TensorSpec] = []
        offset = 0
        problems: list[str] = []
        for name, tensor in state.items():
            if not isinstance(tensor, torch.Tensor):
                problems.append(f"state entry {name!r} is not a tensor ({type(tensor).__name__})")
                continue
            kind: Literal["parameter", "buffer"] = (
                "parameter" if name in parameter_names else "buffer"
            )
            floating = tensor.is_floating_point()
            if kind == "parameter" and not floating:
                problems.append(
                    f"parameter {name!r} has dtype {tensor.dtype}; only floating-point "
                    "parameters can be averaged"
                )
                continue
            if tensor.is_complex():
                problems.append(f"entry {name!r} is complex; not supported")
                continue
            aggregated = floating and (kind == "parameter" or buffers == "aggregate")
            size = int(tensor.numel())
            specs.append(
                TensorSpec(
                    name=name,
                    shape=tuple(int(d) for d in tensor.shape),
                    dtype=_dtype_name(tensor.dtype),
                    kind=kind,
                    aggregated=aggregated,
                    offset=offset if aggregated else -1,
                    size=size,
                )
            )
            if aggregated:
                offset += size
        if problems:
            raise ConfigurationError(problems)
        if offset == 0:
            raise ConfigurationError("the model has no floating-point parameters to train")
        return cls(tuple(specs), buffers=buffers)

    # ----------------------------------------------------------------------------------- checks

    def check(self, state: Mapping[str, Any], *, who: str = "state") -> None:
        """Raise :class:`InvalidInputError` listing every name/shape/dtype difference."""
        problems: list[str] = []
        names = list(state.keys())
        missing = [s.name for s in self.specs if s.name not in state]
        extra = [n for n in names if n not in self._by_name]
        if missing:
            problems.append(f"missing entries {missing[:_MAX_LISTED]}")
        if extra:
            problems.append(f"unexpected entries {extra[:_MAX_LISTED]}")
        for spec in self.specs:
            tensor = state.get(spec.name)
            if tensor is None:
                continue
            if not isinstance(tensor, torch.Tensor):
                problems.append(f"{spec.name!r} is a {type(tensor).__name__}, not a tensor")
                continue
            shape = tuple(int(d) for d in tensor.shape)
            if shape != spec.shape:
                problems.append(f"{spec.name!r} has shape {shape}, expected {spec.shape}")
            if _dtype_name(tensor.dtype) != spec.dtype:
                problems.append(
                    f"{spec.name!r} has dtype {_dtype_name(tensor.dtype)}, expected {spec.dtype}"
                )
        if problems:
            listed = problems[:_MAX_LISTED]
            raise InvalidInputError(
                f"{who} does not match the global model's architecture: " + "; ".join(listed)
            )

    # ------------------------------------------------------------------------------ conversion

    def flatten(self, state: Mapping[str, Any]) -> npt.NDArray[np.floating[Any]]:
        """The aggregated entries of ``state`` as one new flat array (``self.dtype``)."""
        self.check(state)
        out = np.empty(self.size, dtype=self.dtype)
        for spec in self.specs:
            if not spec.aggregated:
                continue
            wide = self.dtype == np.float64
            tensor = state[spec.name].detach().to("cpu")
            values = tensor.reshape(-1).to(torch.float64 if wide else torch.float32)
            out[spec.offset : spec.offset + spec.size] = values.numpy()
        return out

    def delta(
        self, local: Mapping[str, Any], reference: Mapping[str, Any]
    ) -> npt.NDArray[np.floating[Any]]:
        """``flatten(local) - flatten(reference)``: a client's model update."""
        self.check(local, who="the client's trained model")
        diff = self.flatten(local)
        diff -= self.flatten(reference)
        return diff

    def unflatten(
        self, flat: npt.ArrayLike, *, reference: Mapping[str, Any]
    ) -> dict[str, torch.Tensor]:
        """A new ``state_dict``: aggregated entries from ``flat``, the others copied from
        ``reference``; every entry keeps its shape and dtype."""
        self.check(reference, who="the reference state")
        values = self._flat_vector(flat, "flat vector")
        out: dict[str, torch.Tensor] = {}
        for spec in self.specs:
            ref = reference[spec.name]
            if not spec.aggregated:
                out[spec.name] = ref.detach().clone()
                continue
            part = np.ascontiguousarray(values[spec.offset : spec.offset + spec.size])
            tensor = torch.from_numpy(part.copy()).reshape(spec.shape)
            out[spec.name] = tensor.to(dtype=ref.dtype, device=ref.device)
        return out

    def apply_delta(
        self, reference: Mapping[str, Any], delta: npt.ArrayLike, *, scale: float = 1.0
    ) -> dict[str, torch.Tensor]:
        """A new ``state_dict``: ``reference + scale * delta`` on the aggregated entries (computed
        in float64, then cast to each entry's dtype); other entries copied from ``reference``."""
        step = self._flat_vector(delta, "flat update").astype(np.float64, copy=False)
        if not np.all(np.isfinite(step)):
            raise InvalidInputError("the update holds NaN or Inf; nothing was applied")
        if not is_real(scale):
            raise InvalidInputError(f"scale must be a finite number, got {scale!r}")
        base = self.flatten(reference).astype(np.float64)
        base += scale * step
        return self.unflatten(base, reference=reference)

    def _flat_vector(self, value: object, what: str) -> npt.NDArray[Any]:
        """``value`` as a 1-D real array of :attr:`size` elements, else InvalidInputError (never
        numpy's own ValueError for a ragged or non-numeric input)."""
        try:
            values = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"the {what} is not a numeric array ({exc})") from None
        if values.dtype.kind not in "iuf":
            raise InvalidInputError(
                f"the {what} must hold real numbers, got dtype {values.dtype}"
            )
        if values.ndim != 1 or values.shape[0] != self.size:
            raise InvalidInputError(
                f"expected a {what} of {self.size} values, got shape {values.shape}"
            )
        return values

    # ---------------------------------------------------------------------------- description

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description (for ``config.json``)."""
        return {
            "size": self.size,
            "dtype": str(self.dtype),
            "buffers": self.buffers,
            "entries": [s.to_dict() for s in self.specs],
        }
