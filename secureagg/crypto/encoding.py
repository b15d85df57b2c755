"""Fixed-point encoding: real vectors to integers modulo ``2^bits`` with a proven no-overflow bound.

Threat model and invariants. Secure aggregation sums integers modulo ``2^bits``; the server decodes
the sum. The encoder guarantees, *before a round starts*, that the true (signed) sum of ``n``
weighted encodings can never wrap around the modulus, so the decoded sum is always the sum of the
inputs up to a stated rounding error:

* ``encode`` clips every value to ``[-clip, clip]`` (and counts what it clipped, never silently),
  multiplies by ``scale`` and rounds *stochastically*: ``q = floor(y + u)`` with ``u`` uniform on
  ``[0, 1)`` drawn from a CSPRNG keystream, so ``E[q] = y`` (to within ``2^-21``, see below) and
  ``|q| <= Q = ceil(clip * scale)``.
  The integer weight ``w <= max_weight`` multiplies ``q``; the result is stored modulo ``2^bits``
  (two's complement: ``-1`` becomes ``2^bits - 1``).
* **Headroom proof**: ``num_summands * max_weight * Q + noise_headroom <= 2^(bits-1) - 1``. Then
  any sum of at most ``num_summands`` encodings, each with weight at most ``max_weight``, plus a
  noise term of magnitude at most ``noise_headroom``, lies in the signed range and decodes exactly.
  The constructor refuses any configuration that breaks this
  (:class:`~secureagg.errors.HeadroomError` names the largest safe ``num_summands`` and ``clip``).
* NaN or Inf anywhere raises :class:`~secureagg.errors.NonFiniteInputError` (a ``ValueError``)
  before any randomness is drawn or anything is returned, so a client never sends a broken update.

Error bound (:meth:`FixedPointEncoder.error_bound`): each rounding error ``q - y`` lies in
``(-1, 1)``, so a sum with total weight ``W = sum(w_i)`` decodes to within ``W / scale`` of
``sum(w_i * clip(x_i))`` per coordinate (a relative ``2^-18`` slack for float64 rounding in scaling
and decoding is included).

Randomness and precision. Element ``i`` uses keystream bytes ``[4i, 4i + 4)`` as a little-endian
``uint32`` ``w``; ``u = (w >> 10) * 2^-22``. The encoder computes ``V = 2^30 + u`` exactly (by bit
pattern) and ``q = trunc(fl(y + V)) - 2^30`` with ``|y| <= Q <= 2^30 - 1``. Proof that
``|q| <= Q`` and ``|q - y| < 1`` always hold: ``y + V`` lies in ``[1, 2^31)``, where the float64
grid is at most ``2^-22``; so ``2^30 + Q + 1 - 2^-22`` (an upper bound of ``y + V``) and every
integer are representable, round-to-nearest is monotone, and ``trunc`` equals ``floor`` on positive
numbers. The rounding is unbiased up to ``2^-21`` scaled units (the ``2^-22`` grid of ``u`` plus
the rounding of the sum). This is why ``Q`` is capped at :data:`MAX_QUANTIZED` ``= 2^30 - 1`` for
every width (it binds only for 32 bits with one summand, and for 64 bits).

>>> import numpy as np
>>> from secureagg.crypto.encoding import FixedPointEncoder
>>> enc = FixedPointEncoder(clip=1.0, num_summands=3)
>>> parts = [enc.encode(np.array([0.5, -0.25, 2.0])) for _ in range(3)]
>>> parts[0].clipped
1
>>> total = sum(p.values for p in parts)   # uint32 arithmetic wraps modulo 2^32
>>> decoded = enc.decode(total)
>>> bool(np.all(np.abs(decoded - [1.5, -0.75, 3.0]) <= enc.error_bound()))
True
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.crypto import labels, prg
from secureagg.errors import (
    ConfigurationError,
    HeadroomError,
    InvalidInputError,
    NonFiniteInputError,
)
from secureagg.validation import is_integer_scalar

__all__ = ["MAX_QUANTIZED", "EncodedVector", "FixedPointEncoder", "require_finite"]

MAX_QUANTIZED = 2**30 - 1
"""Largest ``Q`` (magnitude of one encoded value) for any width; see the module docstring."""

_CHUNK = 1 << 15  # elements per pass; the working set (~1 MiB) stays in the L2 cache
_OFFSET = 2**30
_OFFSET_BITS = np.uint64(0x41D0000000000000)  # IEEE 754 binary64 of 2^30
_ERROR_SLACK = 1.0 + 2.0**-18  # covers float64 rounding in scaling and decoding (relative)

_SIGNED: dict[int, type[np.signedinteger[Any]]] = {
    8: np.int8,
    16: np.int16,
    32: np.int32,
    64: np.int64,
}


@dataclass(frozen=True)
class EncodedVector:
    """One encoded vector.

    ``values`` is a 1-D ``uint{bits}`` array: the encoded, weight-multiplied input modulo
    ``2^bits`` (owned by the caller; mask it in place if you like). ``clipped`` counts the input
    values that were outside ``[-clip, clip]``.
    """

    values: npt.NDArray[np.unsignedinteger[npt.NBitBase]]
    clipped: int


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class FixedPointEncoder:
    """Clip, scale and stochastically round real vectors into ``uint{bits}`` (see module doc).

    Parameters: ``clip`` (> 0, finite) bounds every value; ``num_summands`` (>= 1) is how many
    encodings will be summed; ``bits`` is the modulus width (8, 16, 32 or 64); ``max_weight`` is
    the largest integer weight a vector may carry; ``scale`` is the fixed-point scale (``None``:
    the largest that fits); ``noise_headroom`` is the integer magnitude per coordinate reserved for
    noise added to the sum later (for example distributed DP noise tails).

    Every problem is collected and raised once (:class:`~secureagg.errors.ConfigurationError`;
    :class:`~secureagg.errors.HeadroomError` when the sum could overflow).
    """

    clip: float
    num_summands: int
    bits: int = 32
    max_weight: int = 1
    scale: float | None = None
    noise_headroom: int = 0
    _scale: float = field(init=False, repr=False, compare=False, default=0.0)
    _q: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        problems: list[str] = []
        clip_ok = _is_real(self.clip) and math.isfinite(self.clip) and self.clip > 0
        if not clip_ok:
            problems.append(f"clip must be a finite number > 0, got {self.clip!r}")
        if not is_integer_scalar(self.num_summands) or self.num_summands < 1:
            problems.append(f"num_summands must be an integer >= 1, got {self.num_summands!r}")
        if not is_integer_scalar(self.bits) or self.bits not in prg.SUPPORTED_BITS:
            problems.append(f"bits must be one of {prg.SUPPORTED_BITS}, got {self.bits!r}")
        if not is_integer_scalar(self.max_weight) or self.max_weight < 1:
            problems.append(f"max_weight must be an integer >= 1, got {self.max_weight!r}")
        if self.scale is not None and not (
            _is_real(self.scale) and math.isfinite(self.scale) and self.scale > 0
        ):
            problems.append(f"scale must be None or a finite number > 0, got {self.scale!r}")
        if not is_integer_scalar(self.noise_headroom) or self.noise_headroom < 0:
            problems.append(
                f"noise_headroom must be an integer >= 0, got {self.noise_headroom!r}"
            )
        if problems:
            raise ConfigurationError(problems)
        scale, q = self._prove_headroom()
        object.__setattr__(self, "_scale", scale)
        object.__setattr__(self, "_q", q)

    # ------------------------------------------------------------------------------ headroom

    def _prove_headroom(self) -> tuple[float, int]:
        clip = float(self.clip)
        n, w, h = int(self.num_summands), int(self.max_weight), int(self.noise_headroom)
        limit = 2 ** (self.bits - 1) - 1
        capacity = limit - h  # room left for the sum of n*w encoded values
        if self.scale is None:
            q_max = min(capacity // (n * w), MAX_QUANTIZED) if capacity > 0 else 0
            if q_max < 1:
                safe_n = capacity // w if capacity > 0 else 0
                raise HeadroomError(
                    [
                        f"no scale fits: num_summands * max_weight + noise_headroom = "
                        f"{n} * {w} + {h} exceeds 2^{self.bits - 1} - 1 = {limit} even with one "
                        f"quantisation level; the largest safe num_summands is "
                        f"{safe_n if safe_n >= 1 else 'none'} for these bits, max_weight and "
                        "noise_headroom (any clip works once num_summands fits). Use more bits, a "
                        "smaller max_weight or noise_headroom, or fewer summands."
                    ],
                    max_safe_summands=safe_n if safe_n >= 1 else None,
                    max_safe_clip=None,
                )
            scale = q_max / clip
            while clip * scale > q_max:  # float rounding may overshoot by an ulp
                scale = math.nextafter(scale, 0.0)
            return scale, math.ceil(clip * scale)
        scale = float(self.scale)
        product = clip * scale
        if product == 0.0 or not math.isfinite(product):
            raise ConfigurationError(
                f"clip * scale = {clip!r} * {scale!r} is not a usable positive finite number; "
                "choose a scale such that clip * scale >= 1"
            )
        q = math.ceil(product)
        problems: list[str] = []
        if n * w * q + h > limit:
            per_n = capacity // (w * q) if capacity > 0 else 0
            q_allowed = capacity // (n * w) if capacity > 0 else 0
            safe_clip = _largest_clip(q_allowed, scale)
            raise HeadroomError(
                [
                    f"the sum can overflow: num_summands * max_weight * Q + noise_headroom = "
                    f"{n} * {w} * {q} + {h} > 2^{self.bits - 1} - 1 = {limit} "
                    f"(Q = ceil(clip * scale) = ceil({clip!r} * {scale!r})). "
                    f"At this scale the largest safe num_summands is "
                    f"{per_n if per_n >= 1 else 'none'} (with clip={clip!r}) and the largest safe "
                    f"clip is {safe_clip if safe_clip is not None else 'none'} "
                    f"(with num_summands={n}); or pass scale=None to pick the largest scale that "
                    "fits, or use more bits."
                ],
                max_safe_summands=per_n if per_n >= 1 else None,
                max_safe_clip=safe_clip,
            )
        if q > MAX_QUANTIZED:
            problems.append(
                f"clip * scale = {product!r} exceeds {MAX_QUANTIZED} (2^30 - 1), the largest "
                "magnitude the float64 stochastic rounding handles exactly; use a scale <= "
                f"{MAX_QUANTIZED / clip!r} or scale=None"
            )
        if problems:
            raise ConfigurationError(problems)
        return scale, q

    # ---------------------------------------------------------------------------- properties

    @property
    def effective_scale(self) -> float:
        """The scale in use: encoded value = round(clip(x) * effective_scale)."""
        return self._scale

    @property
    def max_quantized(self) -> int:
        """``Q = ceil(clip * scale)``: the largest ``|q|`` of one value before the weight."""
        return self._q

    @property
    def dtype(self) -> np.dtype[np.unsignedinteger[npt.NBitBase]]:
        """The unsigned dtype of encoded values and of their sums (``uint{bits}``)."""
        return prg.dtype_for_bits(self.bits)

    # ------------------------------------------------------------------------------- encode

    def encode(
        self,
        x: npt.ArrayLike,
        *,
        weight: int = 1,
        rng: prg.Keystream | None = None,
    ) -> EncodedVector:
        """Encode ``x`` (any shape, flattened in C order) times ``weight`` modulo ``2^bits``.

        ``rng`` supplies the stochastic-rounding keystream (for reproducible tests); by default a
        fresh one is seeded from ``os.urandom``. Raises :class:`NonFiniteInputError` for NaN/Inf
        (before drawing any randomness), :class:`ConfigurationError` for a weight outside
        ``1..max_weight`` and :class:`InvalidInputError` for non-numeric input.
        """
        if not is_integer_scalar(weight) or not 1 <= weight <= self.max_weight:
            raise ConfigurationError(
                f"weight must be an integer in 1..max_weight={self.max_weight}, got {weight!r}; "
                "raise max_weight when constructing the encoder if you need larger weights"
            )
        if rng is not None and not isinstance(rng, prg.Keystream):
            raise InvalidInputError(
                f"rng must be a prg.Keystream or None, got {type(rng).__name__}"
            )
        flat = _as_flat_real(x)
        if flat.size == 0:
            return EncodedVector(values=np.empty(0, dtype=self.dtype), clipped=0)
        require_finite(flat)
        clip = float(self.clip)
        if rng is None:
            rng = prg.Keystream(prg.random_seed(), label=labels.STOCHASTIC_ROUNDING)
        values, clipped = _quantize(
            flat,
            clip=clip,
            scale=self._scale,
            weight=int(weight),
            rng=rng,
            bits=self.bits,
        )
        return EncodedVector(values=values, clipped=clipped)

    # ------------------------------------------------------------------------------- decode

    def decode(
        self, total: npt.NDArray[np.unsignedinteger[npt.NBitBase]], *, divide_by: float = 1.0
    ) -> npt.NDArray[np.float64]:
        """Map a (summed) ``uint{bits}`` array back to reals: ``signed(total) / scale / divide_by``.

        Values ``>= 2^(bits-1)`` are negative (two's complement). ``divide_by`` is for example the
        total weight of a weighted sum. The result is a new float64 array of the same shape.
        """
        if not isinstance(total, np.ndarray):
            raise InvalidInputError(
                f"decode expects a numpy array of {self.dtype}, got {type(total).__name__}"
            )
        if total.dtype != self.dtype:
            raise InvalidInputError(
                f"decode expects dtype {self.dtype} (bits={self.bits}), got {total.dtype}; "
                "sum encodings in their own unsigned dtype so that wraparound is modular"
            )
        if not (_is_real(divide_by) and math.isfinite(divide_by) and divide_by > 0):
            raise ConfigurationError(f"divide_by must be a finite number > 0, got {divide_by!r}")
        out = total.view(_SIGNED[self.bits]).astype(np.float64)
        out /= self._scale * float(divide_by)
        return out

    def error_bound(self, *, summands: int | None = None, total_weight: int | None = None) -> float:
        """Worst-case ``|decode(sum) - sum(w_i * clip(x_i))|`` per coordinate, before ``divide_by``.

        Each stochastic rounding error lies in ``(-1, 1)`` scaled units, so a sum of encodings with
        total weight ``W`` is off by less than ``W / scale``; a relative ``2^-18`` covers float64
        rounding in scaling and decoding. ``total_weight`` defaults to ``summands * max_weight``
        and ``summands`` to ``num_summands`` (the worst case). Divide by ``divide_by`` if you
        decoded with one. Noise added later (``noise_headroom``) is not included.
        """
        problems: list[str] = []
        if summands is not None and (
            not is_integer_scalar(summands) or not 0 <= summands <= self.num_summands
        ):
            problems.append(
                f"summands must be an integer in 0..num_summands={self.num_summands}, "
                f"got {summands!r}"
            )
        max_total = int(self.num_summands) * int(self.max_weight)
        if total_weight is not None and (
            not is_integer_scalar(total_weight) or not 0 <= total_weight <= max_total
        ):
            problems.append(
                f"total_weight must be an integer in 0..num_summands*max_weight={max_total}, "
                f"got {total_weight!r}"
            )
        if problems:
            raise ConfigurationError(problems)
        if total_weight is None:
            count = int(self.num_summands) if summands is None else int(summands)
            total_weight = count * int(self.max_weight)
        return float(total_weight) * _ERROR_SLACK / self._scale


# ----------------------------------------------------------------------------------- helpers


def _largest_clip(q_allowed: int, scale: float) -> float | None:
    """The largest float clip with ``ceil(clip * scale) <= q_allowed``; None if none is positive."""
    if q_allowed < 1:
        return None
    clip = q_allowed / scale
    while clip > 0 and math.ceil(clip * scale) > q_allowed:
        clip = math.nextafter(clip, 0.0)
    while math.ceil(math.nextafter(clip, math.inf) * scale) <= q_allowed:
        clip = math.nextafter(clip, math.inf)
    return clip if clip > 0 else None


def _as_flat_real(x: npt.ArrayLike) -> npt.NDArray[np.floating[npt.NBitBase]]:
    """``x`` as a 1-D float32 or float64 array (C order); other real dtypes become float64."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # torch tensors needing grad, ragged lists, ...
        raise InvalidInputError(f"cannot read the update as a numeric array: {exc}") from exc
    if arr.dtype.kind not in "iuf":
        raise InvalidInputError(
            f"the update must hold real numbers (float or int), got dtype {arr.dtype}"
        )
    if arr.dtype != np.float32 and arr.dtype != np.float64:
        arr = arr.astype(np.float64)
    return arr.reshape(-1)


def require_finite(values: npt.NDArray[Any], *, where: str = "the update") -> None:
    """Raise :class:`NonFiniteInputError` if ``values`` holds NaN or Inf; else return.

    The one finiteness check of every client, run before anything is sent or encoded. Fast
    path: the sum is finite iff every value is (NaN and Inf propagate), barring overflow of
    huge finite values, which the exact check then clears - one reduction instead of a full
    ``isfinite`` pass. ``np.sum``, not a BLAS dot: a multithreaded BLAS can stall badly on a
    loaded machine.
    """
    if values.dtype.kind != "f":
        return  # integers cannot be NaN or infinite
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(np.sum(values))
    if math.isfinite(total) or bool(np.isfinite(values).all()):
        return
    bad = ~np.isfinite(values.reshape(-1))
    nans = int(np.count_nonzero(np.isnan(values)))
    infs = int(np.count_nonzero(bad)) - nans
    first = int(np.argmax(bad))
    raise NonFiniteInputError(
        f"{where} contains {nans} NaN and {infs} infinite values (first at flat index "
        f"{first}); nothing was encoded or sent. Check the training step (learning rate, loss "
        "scaling) or drop this client's update"
    )


def _exact_threshold(
    clip: float, dtype: np.dtype[np.floating[npt.NBitBase]]
) -> np.floating[npt.NBitBase]:
    """The largest value ``t`` of ``dtype`` with ``t <= clip``: for ``v`` of that dtype,
    ``v > t`` exactly when ``v > clip`` (so clipping is counted exactly in float32 too)."""
    with np.errstate(over="ignore"):
        t = dtype.type(clip)
    if float(t) > clip:
        t = np.nextafter(t, dtype.type(0))
    return t


_SCRATCH = threading.local()
_Scratch = tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.uint64],
    npt.NDArray[np.uint32],
    npt.NDArray[np.floating[Any]],
    npt.NDArray[np.bool_],
    "npt.NDArray[np.int32] | None",
]


def _scratch(chunk: int, x_dtype: np.dtype[Any]) -> _Scratch:
    """Per-chunk work arrays: cached per thread for full-size chunks (about 1 MiB), so that a
    large encode does not map and fault in fresh pages on every call; fresh for small inputs.
    They hold only the last chunk's intermediate values (the output reveals as much)."""
    key = (chunk, x_dtype.str)
    cached = getattr(_SCRATCH, "buffers", None)
    if cached is not None and cached[0] == key:
        buffers: _Scratch = cached[1]
        return buffers
    buffers = (
        np.empty(chunk, dtype=np.float64),
        np.empty(chunk, dtype=np.uint64),
        np.empty(chunk, dtype=np.dtype("<u4")),
        np.empty(chunk, dtype=x_dtype),
        np.empty(chunk, dtype=np.bool_),
        np.empty(chunk, dtype=np.int32),
    )
    if chunk == _CHUNK:
        _SCRATCH.buffers = (key, buffers)
    return buffers


def _quantize(
    flat: npt.NDArray[np.floating[npt.NBitBase]],
    *,
    clip: float,
    scale: float,
    weight: int,
    rng: prg.Keystream,
    bits: int,
) -> tuple[npt.NDArray[np.unsignedinteger[npt.NBitBase]], int]:
    """Clip, scale, stochastically round and weight ``flat`` in cache-sized chunks.

    Rounding: ``v = trunc(y + V)`` with ``V = 2^30 + u`` built bit by bit (exponent of ``2^30``,
    the top 22 bits of the element's keystream word as mantissa, so ``u = k * 2^-22``). Since
    ``y + V`` lies in ``[1, 2^31)``, ``trunc`` is ``floor`` and ``v - 2^30 = floor(y + u) = q``.
    Element ``i`` consumes keystream bytes ``[4i, 4i + 4)`` whatever the chunk size.
    """
    n = flat.size
    dtype = prg.dtype_for_bits(bits)
    out = np.empty(n, dtype=dtype)
    out_signed = out.view(_SIGNED[bits])
    chunk = min(_CHUNK, n)
    # Scratch, reused for every chunk (full-size views are built once; only the tail re-slices).
    y_full, v_full, w_full, abs_full, over_full, v32_full = _scratch(chunk, flat.dtype)
    if bits >= 32:
        v32_full = None  # int32 staging only for widths below 32 (q + 2^30 needs 31 bits)
    widen = flat.dtype != np.float64
    threshold = _exact_threshold(clip, flat.dtype)
    scale64 = np.float64(scale)  # a float64 scalar: the product is computed in float64
    clip_scaled = clip * scale
    weight_scalar = dtype.type(weight)
    clipped = 0
    with np.errstate(over="ignore"):  # a huge finite x times scale is inf, then clipped
        for start in range(0, n, chunk):
            xs = flat[start : start + chunk]
            m = xs.size
            if m == chunk:
                y, v, w, absx, over, v32 = y_full, v_full, w_full, abs_full, over_full, v32_full
            else:
                y, v, w = y_full[:m], v_full[:m], w_full[:m]
                absx, over = abs_full[:m], over_full[:m]
                v32 = None if v32_full is None else v32_full[:m]
            if widen:  # float32: widen, then multiply in float64 (faster than a mixed ufunc)
                np.copyto(y, xs)
                np.multiply(y, scale64, out=y)
            else:
                np.multiply(xs, scale64, out=y)
            np.abs(xs, out=absx)
            np.greater(absx, threshold, out=over)
            count = int(np.count_nonzero(over))
            if count:
                # clip(x) * scale == clip(x * scale, -clip*scale, clip*scale) (monotone rounding);
                # only the flagged entries change, so touch only those (clipping is usually rare)
                idx = np.flatnonzero(over)
                y[idx] = np.clip(y[idx], -clip_scaled, clip_scaled)
                clipped += count
            rng.fill(w)
            np.right_shift(w, 10, out=w)
            np.copyto(v, w)
            np.bitwise_or(v, _OFFSET_BITS, out=v)
            np.add(y, v.view(np.float64), out=y)
            target = out_signed[start : start + m]
            if v32 is None:
                np.copyto(target, y, casting="unsafe")  # trunc == floor: y + V >= 1
                np.subtract(target, _OFFSET, out=target)  # a Python int keeps the int loop
            else:
                np.copyto(v32, y, casting="unsafe")
                np.copyto(target, v32, casting="unsafe")  # 2^30 vanishes modulo 2^8, 2^16
            if weight != 1:
                part = out[start : start + m]
                np.multiply(part, weight_scalar, out=part)
    return out, clipped
