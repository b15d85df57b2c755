"""How a CKKS round encodes, releases and decodes: float (flooded) or fixed point (exact).

Two encodings, chosen per aggregator:

* ``"float"`` (default): each client encrypts ``w * clip(x)`` at the context's scale (2^40). The key
  holder decrypts, checks the count slot and the value range, and releases the values plus
  Gaussian flooding noise of standard deviation ``2^flooding_bits * B``
  (:mod:`secureagg.protocols.ckks.flooding`). Error bound of the released sum, per value:
  ``10 * (sqrt(S) * sigma_1 / scale + sigma_flood)`` for ``S`` contributors (ten standard
  deviations of the decryption noise plus ten of the flooding noise). ``flooding_bits=0`` turns
  flooding off; it needs ``allow_unsafe_release=True`` and logs a warning.
* ``"fixed"``: each client stochastically rounds ``w * clip(x) * 2^f`` to an integer (the
  fixed-point encoder of :mod:`secureagg.crypto.encoding`) and encrypts the integers at a small
  scale ``Delta >= 2 * 10 * sqrt(n) * sigma_1`` (a power of two). The key holder rounds the
  decryption to the nearest integer, which is the exact integer sum unless a noise exceeds ten
  standard deviations (probability ``< 2^-75.8`` per value), and releases those integers: no noise
  term at all, and the release is a function of the plaintext sum only (exact CKKS). The *precision
  budget* ``f`` is the largest number of fractional bits with ``n * W * ceil(clip * 2^f) * Delta``
  below ``2^50`` (the float64 FFT inside SEAL's encoder stays exact to far below ``Delta / 2``
  there) and below a quarter of the data modulus; error bound ``S * W / 2^f`` (stochastic
  rounding, below one unit per value) - at ``n = 20``, ``clip = 1``: ``f = 27``, about 1.5e-7.

Range checks at the key holder (it refuses to release, raising
:class:`~secureagg.errors.ProtocolError`): the decrypted count slot must equal the number of
contributors the server names; with a ``clip``, every decrypted value must lie within
``S * W * clip`` (plus the noise bound); a weighted sum's weight slot within ``[S, S * W]``.

>>> from secureagg.he.ckks_params import CkksParameters
>>> fixed = CkksScheme(params=CkksParameters(), dimension=10, weighted=False, num_clients=20,
...                    clip=1.0, encoding="fixed")
>>> fixed.precision_bits, fixed.scale == 2.0**18, fixed.payload_length
(27, True, 11)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from numbers import Real
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from secureagg.crypto import labels, prg
from secureagg.crypto.encoding import MAX_QUANTIZED, FixedPointEncoder
from secureagg.errors import ConfigurationError, HeadroomError, InvalidInputError, ProtocolError
from secureagg.he.backend import chunk_sizes, size_groups
from secureagg.he.ckks import FFT_SAFE_BITS, CkksParameters
from secureagg.protocols.ckks.flooding import (
    DEFAULT_FLOODING_BITS,
    TAIL_SIGMAS,
    decryption_noise_bound,
    exact_failure_log2,
    gaussian,
    statistical_security_bits,
)
from secureagg.protocols.ckks.messages import (
    CkksAggregate,
    CkksBlame,
    CkksProbedAggregate,
    CkksRelease,
    CkksRequest,
    CkksRetry,
    CkksUpload,
)
from secureagg.protocols.he_round import (
    RELEASE,
    HEScheme,
    ProbePlan,
    make_probe_plan,
    payload_chunks,
)

__all__ = ["PROBE_GUARD_BITS", "PROBE_HIDING_BITS", "CkksScheme", "Encoding"]

#: Bits between an honest key-check probe's largest value and the data modulus (a ciphertext
#: under another key decrypts to values of the modulus' size, 2^GUARD times above the threshold).
PROBE_GUARD_BITS = 10
#: Key-check probes run only when a probe's decryption is within 2^-40 (statistical distance) of
#: its mask alone: the key holder learns nothing of the client's update from it.
PROBE_HIDING_BITS = 40

Encoding = Literal["float", "fixed"]
logger = logging.getLogger("secureagg.he")


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


class CkksScheme(HEScheme):
    """The CKKS encoding of one round (public: every party builds the same one).

    ``num_clients`` bounds the number of summands (flooding and capacity are computed for it);
    ``clip`` bounds |value| (required for ``"fixed"``); ``max_weight`` bounds the FedAvg weight.
    All problems are reported at once (:class:`~secureagg.errors.ConfigurationError`; a fixed-point
    budget that cannot hold raises :class:`~secureagg.errors.HeadroomError`).
    """

    name: ClassVar[str] = "ckks"
    request_type = CkksRequest
    upload_type = CkksUpload
    aggregate_type = CkksAggregate
    release_type = CkksRelease
    probed_aggregate_type = CkksProbedAggregate
    blame_type = CkksBlame
    retry_type = CkksRetry

    def __init__(
        self,
        *,
        params: CkksParameters,
        dimension: int,
        weighted: bool,
        num_clients: int,
        clip: float | None = None,
        max_weight: float = 1.0,
        encoding: Encoding = "float",
        flooding_bits: int = DEFAULT_FLOODING_BITS,
        allow_unsafe_release: bool = False,
        precision_bits: int | None = None,
        attribution: bool | None = None,
    ) -> None:
        super().__init__(dimension=dimension, weighted=weighted)
        problems: list[str] = []
        flag: object = attribution
        if flag is not None and not isinstance(flag, bool):
            problems.append(f"attribution must be None, True or False, got {attribution!r}")
        if encoding not in ("float", "fixed"):
            problems.append(f"encoding must be 'float' or 'fixed', got {encoding!r}")
        if clip is not None and not (_is_real(clip) and math.isfinite(clip) and clip > 0):
            problems.append(f"clip must be None or a finite number > 0, got {clip!r}")
        if not (_is_real(max_weight) and math.isfinite(max_weight) and max_weight >= 1):
            problems.append(f"max_weight must be a finite number >= 1, got {max_weight!r}")
        if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
            problems.append(f"num_clients must be a positive integer, got {num_clients!r}")
        if (
            isinstance(flooding_bits, bool)
            or not isinstance(flooding_bits, int)
            or not 0 <= flooding_bits <= 40
        ):
            problems.append(f"flooding_bits must be an integer in 0..40, got {flooding_bits!r}")
        elif flooding_bits == 0 and encoding == "float" and allow_unsafe_release is not True:
            problems.append(
                "flooding_bits=0 releases raw CKKS decryptions, which leak the secret key "
                "(Li-Micciancio 2021); pass allow_unsafe_release=True to opt out explicitly, or "
                "use encoding='fixed' (exact decryption, no noise to leak)"
            )
        if encoding == "fixed":
            if clip is None:
                problems.append("encoding='fixed' needs a clip (the fixed-point range)")
            if _is_real(max_weight) and not float(max_weight).is_integer():
                problems.append("encoding='fixed' needs an integer max_weight")
        unsafe_flag: object = allow_unsafe_release
        if not isinstance(unsafe_flag, bool):
            problems.append(
                f"allow_unsafe_release must be True or False, got {allow_unsafe_release!r}"
            )
        if precision_bits is not None and encoding != "fixed":
            problems.append("precision_bits applies to encoding='fixed' only")
        if problems:
            raise ConfigurationError(problems)
        self.params = params
        self.num_clients = int(num_clients)
        self.clip = None if clip is None else float(clip)
        self.max_weight = float(max_weight)
        self.encoding: Encoding = encoding
        self.flooding_bits = int(flooding_bits) if encoding == "float" else 0
        self.allow_unsafe_release = bool(allow_unsafe_release)
        self.attribution = attribution
        self.fixed: FixedPointEncoder | None = None
        if encoding == "float":
            self.scale = float(params.scale)
            self._setup_float()
        else:
            self.scale = self._setup_fixed(precision_bits)

    # ------------------------------------------------------------------------------ setup

    def _setup_float(self) -> None:
        n, params = self.num_clients, self.params
        self.noise_bound = decryption_noise_bound(params, summands=n, scale=self.scale)
        self.flooding_std = (
            (2.0**self.flooding_bits) * self.noise_bound if self.flooding_bits else 0.0
        )
        capacity = params.max_magnitude(self.scale) - self.noise_bound
        self.per_client_limit = capacity / (n * self.max_weight)
        if self.clip is not None and self.clip > self.per_client_limit:
            raise ConfigurationError(
                f"a sum of {n} values up to max_weight * clip = {self.max_weight * self.clip} "
                f"can exceed the {params.data_modulus_bits}-bit data modulus at scale "
                f"2^{math.log2(self.scale):.0f} (largest safe clip: {self.per_client_limit:.4g}); "
                "lower the scale or the clip"
            )
        if self.flooding_bits == 0:
            logger.warning(
                "CKKS noise flooding is OFF (flooding_bits=0, allow_unsafe_release=True): "
                "released decryptions expose the decryption noise, which leaks the secret key "
                "to whoever sees them (Li-Micciancio 2021)"
            )

    def _setup_fixed(self, precision_bits: int | None) -> float:
        n, params = self.num_clients, self.params
        clip = float(self.clip or 0.0)
        weight = int(self.max_weight)
        noise_std = math.sqrt(n) * params.fresh_noise_std()
        delta = 2.0 ** math.ceil(math.log2(2.0 * TAIL_SIGMAS * noise_std))
        budget = 2.0 ** min(FFT_SAFE_BITS, params.data_modulus_bits - 2)
        k_cap = (budget - TAIL_SIGMAS * noise_std) / delta  # largest |integer sum| allowed
        q_cap = min(math.floor(k_cap / (n * weight)), MAX_QUANTIZED)  # per value, before weight

        def fits(bits: int) -> bool:
            return math.ceil(clip * 2.0**bits) <= q_cap

        if precision_bits is None:
            f = 1
            while f < 62 and fits(f + 1):
                f += 1
            if not fits(f):
                raise HeadroomError(
                    f"no fixed-point precision fits: n * max_weight * clip = {n * weight * clip} "
                    f"at scale {delta:.0f} exceeds the 2^{math.log2(budget):.0f} budget",
                    max_safe_summands=None,
                    max_safe_clip=None,
                )
        else:
            if isinstance(precision_bits, bool) or not isinstance(precision_bits, int) or not (
                1 <= precision_bits <= 62
            ):
                raise ConfigurationError(
                    f"precision_bits must be an integer in 1..62, got {precision_bits!r}"
                )
            f = precision_bits
            if not fits(f):
                largest = max((b for b in range(1, 63) if fits(b)), default=None)
                raise HeadroomError(
                    f"precision_bits={f} does not fit: n * max_weight * ceil(clip * 2^f) * scale "
                    f"must stay below 2^{math.log2(budget):.0f}; the largest safe precision_bits "
                    f"is {largest if largest is not None else 'none'} for n={n}, clip={clip}",
                    max_safe_summands=None,
                    max_safe_clip=None,
                )
        self.precision_bits = f
        self.fixed = FixedPointEncoder(
            clip=clip, num_summands=n, bits=64, max_weight=weight, scale=2.0**f
        )
        self.noise_bound = 0.0
        self.flooding_std = 0.0
        self.per_client_limit = clip * weight
        return delta

    # ------------------------------------------------------------------------------ key checks

    def value_bound(self) -> float:
        """The largest |slot| an honest client encrypts (values, weight, count), in slot units."""
        weight = self.max_weight
        if self.fixed is not None:
            return float(max(weight * self.fixed.max_quantized, weight, 1.0))
        per_value = self.clip if self.clip is not None else self.per_client_limit
        return float(max(weight * per_value, weight, 1.0))

    def probe_plan(self, chunk_size: int) -> ProbePlan | None:
        """The round's key-check probes: on when they hide the update (>= 40 bits), unless off.

        ``attribution=None`` (default) runs them whenever the parameters allow; ``True`` requires
        them (:class:`~secureagg.errors.ConfigurationError` when they cannot hide the update: no
        clip, or a data modulus without the room); ``False`` never runs them.
        """
        if self.attribution is False:
            return None
        params = self.params
        plan = make_probe_plan(
            groups=size_groups(chunk_sizes(self.payload_length, chunk_size)),
            data_modulus_bits=params.data_modulus_bits,
            scale=self.scale,
            value_bound=self.value_bound(),
            noise_per_chunk=decryption_noise_bound(params, summands=1, scale=self.scale),
            smoothing_std=params.fresh_noise_std() / self.scale,
            guard_bits=PROBE_GUARD_BITS,
        )
        if plan.hiding_bits >= PROBE_HIDING_BITS:
            return plan
        if self.attribution is True:
            raise ConfigurationError(
                f"attribution=True: the key-check probes would hide the update by only "
                f"{plan.hiding_bits:.1f} bits (need {PROBE_HIDING_BITS}); they need a clip and "
                f"room in the data modulus ({params.data_modulus_bits} bits here): use "
                "coeff_mod_bit_sizes=(60, 60, 60), a smaller clip * max_weight, or "
                "attribution=False"
            )
        return None

    # ------------------------------------------------------------------------------ client

    def client_chunks(
        self,
        arrays: Sequence[npt.NDArray[np.floating[Any]]],
        *,
        weight: float,
        chunk_size: int,
        rng: Any,
    ) -> tuple[Iterator[npt.NDArray[Any]], Callable[[], int]]:
        clipped = [0]
        if self.fixed is not None:
            encoder = self.fixed
            w = int(weight)
            if w != weight:
                raise ConfigurationError(f"encoding='fixed' needs integer weights, got {weight!r}")
            stream = rng if rng is not None else prg.Keystream(
                prg.random_seed(), label=labels.STOCHASTIC_ROUNDING
            )

            def fixed_transform(piece: npt.NDArray[np.floating[Any]]) -> npt.NDArray[Any]:
                encoded = encoder.encode(piece, weight=w, rng=stream)
                clipped[0] += encoded.clipped
                return encoded.values.view(np.int64).astype(np.float64)

            transform: Callable[[npt.NDArray[np.floating[Any]]], npt.NDArray[Any]] = (
                fixed_transform
            )
        else:
            w_float = float(weight)
            if not (math.isfinite(w_float) and 0 < w_float <= self.max_weight):
                raise ConfigurationError(
                    f"weight must be in (0, max_weight={self.max_weight}], got {weight!r}"
                )
            clip, limit = self.clip, self.per_client_limit

            def float_transform(piece: npt.NDArray[np.floating[Any]]) -> npt.NDArray[Any]:
                y = np.array(piece, dtype=np.float64)  # a chunk-sized copy
                if clip is not None:
                    clipped[0] += int(np.count_nonzero(np.abs(y) > clip))
                    np.clip(y, -clip, clip, out=y)
                if w_float != 1.0:
                    y *= w_float
                if clip is None and y.size and float(np.max(np.abs(y))) > limit * w_float:
                    raise InvalidInputError(
                        f"a value exceeds {limit:.4g}, beyond what a sum of {self.num_clients} "
                        "fits at this CKKS scale; set a clip or lower the scale"
                    )
                return y

            transform = float_transform
        tail = np.array(([float(weight)] if self.weighted else []) + [1.0], dtype=np.float64)
        chunks = payload_chunks(
            arrays, transform=transform, tail=tail, chunk_size=chunk_size,
            dtype=np.dtype(np.float64),
        )
        return chunks, lambda: clipped[0]

    # ------------------------------------------------------------------------------ key holder

    def _refuse(self, why: str) -> ProtocolError:
        return ProtocolError(f"release refused: {why}", stage=RELEASE)

    def release(
        self, decrypted: npt.NDArray[Any], *, contributors: int, rng: Any
    ) -> tuple[npt.NDArray[Any], float]:
        s = int(contributors)
        if not abs(float(decrypted[-1]) - s) < 0.5:
            # Never echo the decrypted count: nothing decrypted leaves the key holder but the
            # released aggregate (the text reaches the server and, in simulation, the caller).
            raise self._refuse(
                f"the decrypted count slot does not match the {s} contributors the server named"
            )
        values = decrypted[: self.released_length]
        d = self.dimension
        if self.fixed is not None:
            ints = np.rint(values).astype(np.int64)
            q_max = s * int(self.max_weight) * self.fixed.max_quantized
            if ints[:d].size and int(np.max(np.abs(ints[:d]))) > q_max:
                raise self._refuse("a decrypted value lies outside the clipped range")
            if self.weighted and not s <= int(ints[d]) <= s * int(self.max_weight):
                raise self._refuse("the decrypted weight sum is outside [S, S * max_weight]")
            return ints, 0.0
        noise = decryption_noise_bound(self.params, summands=s, scale=self.scale)
        if self.clip is not None and values[:d].size:
            limit = s * self.max_weight * self.clip + noise
            if float(np.max(np.abs(values[:d]))) > limit:
                raise self._refuse("a decrypted value lies outside the clipped range")
        if self.weighted and not 0 < float(values[d]) <= s * self.max_weight + noise:
            raise self._refuse("the decrypted weight sum is outside (0, S * max_weight]")
        out = np.array(values, dtype=np.float64)
        if self.flooding_std > 0:
            stream = rng if rng is not None else prg.Keystream(
                prg.random_seed(), label=labels.CKKS_FLOODING
            )
            out += self.flooding_std * gaussian(stream, out.size)
        return out, self.flooding_std

    # ------------------------------------------------------------------------------ server

    def decode(
        self, released: npt.NDArray[Any], *, contributors: int
    ) -> tuple[npt.NDArray[np.float64], float]:
        dtype = np.dtype(np.int64) if self.fixed is not None else np.dtype(np.float64)
        problem = self.check_released(released, dtype)
        if problem:
            raise ProtocolError(problem, stage=RELEASE)
        d = self.dimension
        flat = released[:d].astype(np.float64)
        if self.fixed is not None:
            flat /= self.fixed.effective_scale
        total = float(released[d]) if self.weighted else float(contributors)
        return flat, total

    # ------------------------------------------------------------------------------ bounds

    def error_bound(self, *, summands: int) -> float:
        """Worst-case per-value error of the decoded sum over ``summands`` contributors.

        Float: ten standard deviations of the decryption noise plus ten of the flooding noise,
        plus 2^-40 of the largest magnitude for float64 rounding. Fixed: the stochastic rounding
        (below one unit of ``2^-f`` per value and weight) - exact decryption adds nothing.
        """
        s = max(1, int(summands))
        if self.fixed is not None:
            return self.fixed.error_bound(
                summands=min(s, self.num_clients),
                total_weight=min(s, self.num_clients) * int(self.max_weight),
            )
        noise = decryption_noise_bound(self.params, summands=s, scale=self.scale)
        magnitude = s * self.max_weight * (self.clip if self.clip is not None else 1.0)
        return noise + TAIL_SIGMAS * self.flooding_std + magnitude * 2.0**-40

    def parameters(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "encoding": self.encoding,
            "context": self.params.to_dict(),
            "encode_scale": self.scale,
            "clip": self.clip,
            "max_weight": self.max_weight,
            "values_per_ciphertext": self.params.slots,
            "ciphertext_bytes": self.params.ciphertext_bytes(),
        }
        if self.fixed is not None:
            out.update(
                precision_bits=self.precision_bits,
                release_protection="exact rounding (exact CKKS): no decryption noise released",
                exact_failure_log2=exact_failure_log2(values=self.payload_length),
                flooding_bits=0,
                flooding_std=0.0,
            )
        else:
            out.update(
                flooding_bits=self.flooding_bits,
                flooding_std=self.flooding_std,
                decryption_noise_bound=self.noise_bound,
                release_protection=(
                    "gaussian noise flooding" if self.flooding_bits else "NONE (unsafe opt-out)"
                ),
                flooding_statistical_bits=statistical_security_bits(self.flooding_bits),
            )
        return out
