"""Distributed DP: every client adds a share of integer noise before SecAgg masks its input.

Threat model. The server (and anyone who sees the released sum) learns only a noised sum: no
party has to be trusted to add the noise, because each client adds its own share of Skellam
(Agarwal et al. 2021) or discrete Gaussian (Kairouz et al. 2021) noise in the integer domain,
after clipping and rounding and before masking. SecAgg hides each noised input; the noises of
the clients whose inputs reach the sum add up to the target noise.

Pipeline of one client (``DistributedPlan.prepare`` then the SecAgg client):

1. clip the flattened update to L2 norm ``l2_clip`` (floats);
2. optionally rotate it: pad to ``d' = 2^ceil(log2 d)``, multiply by public random signs and the
   normalised Walsh-Hadamard matrix (the randomized Hadamard transform; signs derived from the
   session and round, so every party knows them) - this spreads mass over coordinates so that
   the per-coordinate bound ``linf_clip`` can be far below the L2 bound;
3. scale by ``scale`` and round to integers: *conditional* randomized rounding (retry until the
   rounded norm is at most ``l2_sensitivity``; Kairouz et al. 2021, Thm 2), or plain randomized
   rounding with the worst-case bound ``scale * l2_clip + √d'``;
4. SecAgg's encoder (scale 1, per-value clip ``linf_clip``) stores the integers modulo ``2^bits``
   and the client adds its noise share (:meth:`DistributedPlan.noise_share`) before masking.

The server decodes the signed integer sum, divides by ``scale`` and undoes the rotation.

**Noise and dropouts.** The target is total noise of standard deviation
``noise_multiplier * l2_sensitivity`` (integer units) in the sum - the same noise multiplier a
central Gaussian would use, applied to the post-rounding sensitivity. It is provisioned for
``provisioned = ceil(n (1 - expected_dropout))`` survivors: each client adds variance
``target / provisioned``. When ``m`` clients' inputs reach the sum, its noise variance is
``m / provisioned * target``: more survivors give more noise; fewer give less, i.e. an effective
noise multiplier ``noise_multiplier * sqrt(m / provisioned)``. Every round records its actual
survivor count (:class:`~secureagg.dp.events.DistributedNoiseRound`) and is accounted with it;
the budget check before a round assumes the fewest survivors SecAgg lets finish
(``min_survivors``), so the budget holds whatever happens. Colluding clients know their own
shares: count them as dropped (raise ``expected_dropout`` by the colluding fraction).

**Wrap-around.** The encoder proves ``n * linf_clip + noise_headroom <= 2^(bits-1) - 1``; the
headroom is the noise sum's tail bound at probability ``2^-tail_bits`` per coordinate (Chernoff
bound of the Skellam moment generating function; sub-Gaussian bound of the discrete Gaussian),
so a sum wraps around with probability at most ``d' * 2^-tail_bits`` per round.

>>> cfg = DistributedDP(l2_clip=1.0, noise_multiplier=1.0, dimension=100)
>>> plan = cfg.plan(num_clients=10)
>>> plan.bits, plan.l2_sensitivity / (plan.scale * cfg.l2_clip) < 1.01
(32, True)
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from secureagg.crypto import labels, prg
from secureagg.crypto.encoding import MAX_QUANTIZED
from secureagg.dp import noise, rdp
from secureagg.dp.events import DistributedNoiseRound
from secureagg.errors import ConfigurationError, InvalidInputError, NonFiniteInputError
from secureagg.validation import is_int

__all__ = ["DistributedDP", "DistributedPlan", "hadamard", "rotation_seed"]

Mechanism = Literal["skellam", "ddgauss"]
FloatArray = npt.NDArray[np.float64]

_MAX_CLIENT_VARIANCE = 2.0**50  # Poisson means stay exact float64 integers (noise.py)
_MAX_ROUNDING_TRIES = 1000
_MAX_INFLATION = 1.5  # rounding may not add more than half the clip to the sensitivity


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class DistributedDP:
    """Parameters of distributed DP inside SecAgg (see the module docstring).

    ``l2_clip`` bounds each client's update (L2, update units); ``noise_multiplier`` is the noise
    standard deviation of the sum over the sensitivity; ``dimension`` the flattened update length.
    ``expected_dropout`` over-provisions the noise for that fraction of silent (or colluding)
    clients; ``client_sampling_rate`` is the Poisson rate the cohort was sampled with (1.0: no
    sampling). ``rotation`` turns on the randomized Hadamard transform, ``conditional_rounding``
    the conditional rounding with failure probability ``rounding_beta`` per try. ``bits`` is the
    SecAgg modulus width (32 or 64); ``tail_bits`` sets the per-coordinate wrap-around probability
    ``2^-tail_bits``.
    """

    l2_clip: float
    noise_multiplier: float
    dimension: int
    mechanism: Mechanism = "skellam"
    expected_dropout: float = 0.0
    client_sampling_rate: float = 1.0
    rotation: bool = False
    conditional_rounding: bool = True
    rounding_beta: float = math.exp(-0.5)
    bits: int = 32
    tail_bits: int = 40

    def __post_init__(self) -> None:
        problems = []
        if not (_is_real(self.l2_clip) and math.isfinite(self.l2_clip) and self.l2_clip > 0):
            problems.append(f"l2_clip must be a finite number > 0, got {self.l2_clip!r}")
        z = self.noise_multiplier
        if not (_is_real(z) and math.isfinite(z) and z > 0):
            problems.append(
                f"noise_multiplier must be a finite number > 0 (0 releases the sum without "
                f"privacy), got {z!r}"
            )
        if not is_int(self.dimension) or self.dimension < 1:
            problems.append(f"dimension must be an integer >= 1, got {self.dimension!r}")
        if self.mechanism not in ("skellam", "ddgauss"):
            problems.append(f"mechanism must be 'skellam' or 'ddgauss', got {self.mechanism!r}")
        if not (_is_real(self.expected_dropout) and 0.0 <= self.expected_dropout < 1.0):
            problems.append(f"expected_dropout must be in [0, 1), got {self.expected_dropout!r}")
        q = self.client_sampling_rate
        if not (_is_real(q) and 0.0 < q <= 1.0):
            problems.append(f"client_sampling_rate must be in (0, 1], got {q!r}")
        if not (_is_real(self.rounding_beta) and 0.0 < self.rounding_beta < 1.0):
            problems.append(f"rounding_beta must be in (0, 1), got {self.rounding_beta!r}")
        if self.bits not in (32, 64):
            problems.append(f"bits must be 32 or 64 (the SecAgg modulus width), got {self.bits!r}")
        if not is_int(self.tail_bits) or not 20 <= self.tail_bits <= 128:
            problems.append(f"tail_bits must be an integer in [20, 128], got {self.tail_bits!r}")
        if problems:
            raise ConfigurationError(problems)

    def plan(self, *, num_clients: int) -> DistributedPlan:
        """Choose the scale, per-client noise and headroom for ``num_clients`` clients."""
        if not is_int(num_clients) or num_clients < 1:
            raise ConfigurationError(f"num_clients must be an integer >= 1, got {num_clients!r}")
        return _calibrate(self, num_clients)


@dataclass(frozen=True)
class DistributedPlan:
    """The calibrated mechanism for one cohort size. Integer units unless stated otherwise."""

    config: DistributedDP
    num_clients: int
    provisioned: int  #: survivors the noise is provisioned for
    padded_dimension: int  #: d' (a power of two with rotation, else d)
    scale: float  #: integer units per update unit
    client_variance: float  #: per-coordinate noise variance of one client's share
    l2_sensitivity: float  #: bound on one client's rounded L2 norm (Δ2)
    l1_sensitivity: float  #: bound on its L1 norm (Δ1)
    linf_clip: int  #: per-value bound handed to SecAgg's encoder
    noise_headroom: int  #: tail bound of the summed noise (reserved by the encoder)

    @property
    def bits(self) -> int:
        return self.config.bits

    # --------------------------------------------------------------------------- client side

    def noise_share(self, count: int, stream: prg.Keystream | None) -> npt.NDArray[np.int64]:
        """One client's integer noise share for ``count`` values (SecAgg's ``client_noise``)."""
        if self.config.mechanism == "skellam":
            return noise.skellam(self.client_variance, count, stream)
        return noise.discrete_gaussian(math.sqrt(self.client_variance), count, stream)

    def prepare(
        self,
        update: npt.ArrayLike,
        *,
        rotation_seed: bytes | None = None,
        stream: prg.Keystream | None = None,
    ) -> FloatArray:
        """Clip, rotate, scale and round one client's update: integer-valued float64, length d'."""
        x = np.array(update, dtype=np.float64).reshape(-1)
        d = self.config.dimension
        if x.size != d:
            raise InvalidInputError(f"the update has {x.size} values, distributed_dp expects {d}")
        if not np.isfinite(x).all():
            raise NonFiniteInputError("the update contains NaN or Inf; nothing was sent")
        norm = float(np.sqrt(np.dot(x, x)))
        if norm > self.config.l2_clip:
            x *= self.config.l2_clip / norm * (1.0 - 2.0**-40)
        if self.config.rotation:
            x = self._rotate(x, rotation_seed)
        x *= self.scale
        bound = self.l2_sensitivity if self.config.conditional_rounding else None
        return _round(x, bound=bound, stream=stream)

    # --------------------------------------------------------------------------- server side

    def decode(self, total: npt.ArrayLike, *, rotation_seed: bytes | None = None) -> FloatArray:
        """The integer sum (signed, length d') back in update units, length d."""
        y = np.array(total, dtype=np.float64).reshape(-1)
        if y.size != self.padded_dimension:
            raise InvalidInputError(f"expected {self.padded_dimension} values, got {y.size}")
        y /= self.scale
        if self.config.rotation:
            if rotation_seed is None:
                raise ConfigurationError("rotation is on: decode needs the round's rotation_seed")
            y = hadamard(y) * _signs(rotation_seed, y.size)
        return y[: self.config.dimension]

    def _rotate(self, x: FloatArray, seed: bytes | None) -> FloatArray:
        if seed is None:
            raise ConfigurationError("rotation is on: prepare needs the round's rotation_seed")
        padded = np.zeros(self.padded_dimension, dtype=np.float64)
        padded[: x.size] = x
        padded *= _signs(seed, padded.size)
        return hadamard(padded)

    # ----------------------------------------------------------------------------- reporting

    def noise_std(self, survivors: int | None = None) -> float:
        """Standard deviation of the summed noise per coordinate, in update units."""
        m = self.provisioned if survivors is None else survivors
        return math.sqrt(m * self.client_variance) / self.scale

    def round_event(
        self, *, round_id: int, survivors: int, seeded: bool = False, worst_case: bool = False
    ) -> DistributedNoiseRound:
        """The privacy event of one round in which ``survivors`` shares reached the sum."""
        return DistributedNoiseRound(
            scope="user",
            party=None,
            mechanism=self.config.mechanism,
            round_id=round_id,
            clients=self.num_clients,
            survivors=survivors,
            provisioned=self.provisioned,
            client_variance=self.client_variance,
            l2_sensitivity=self.l2_sensitivity,
            l1_sensitivity=self.l1_sensitivity,
            dimension=self.padded_dimension,
            sample_rate=self.config.client_sampling_rate,
            seeded=seeded,
            worst_case=worst_case,
        )

    def epsilon(
        self, *, rounds: int = 1, delta: float = 1e-5, survivors: int | None = None
    ) -> float:
        """ε after ``rounds`` rounds with ``survivors`` shares each (default: as provisioned)."""
        event = self.round_event(round_id=0, survivors=survivors or self.provisioned)
        from secureagg.dp.accounting import _round_rdp  # local: accounting imports this module

        curve = _round_rdp(event, rdp.ORDERS) * rounds
        return rdp.rdp_to_epsilon(rdp.ORDERS, curve, delta)[0]

    def describe(self) -> dict[str, Any]:
        """JSON-ready parameters, for ``aggregator.parameters()`` and reports."""
        c = self.config
        return {
            "mechanism": c.mechanism,
            "l2_clip": c.l2_clip,
            "noise_multiplier": c.noise_multiplier,
            "dimension": c.dimension,
            "padded_dimension": self.padded_dimension,
            "rotation": c.rotation,
            "conditional_rounding": c.conditional_rounding,
            "rounding_beta": c.rounding_beta,
            "expected_dropout": c.expected_dropout,
            "provisioned_survivors": self.provisioned,
            "client_sampling_rate": c.client_sampling_rate,
            "bits": c.bits,
            "scale": self.scale,
            "client_variance": self.client_variance,
            "l2_sensitivity": self.l2_sensitivity,
            "l1_sensitivity": self.l1_sensitivity,
            "sensitivity_inflation": self.l2_sensitivity / (self.scale * c.l2_clip),
            "linf_clip": self.linf_clip,
            "noise_headroom": self.noise_headroom,
            "wraparound_probability_per_coordinate": 2.0**-c.tail_bits,
            "noise_std_update_units": self.noise_std(),
        }


# ------------------------------------------------------------------------------- calibration


def _calibrate(cfg: DistributedDP, n: int) -> DistributedPlan:
    d = cfg.dimension
    d_pad = 1 << (d - 1).bit_length() if cfg.rotation else d
    provisioned = max(1, math.ceil(n * (1.0 - cfg.expected_dropout) - 1e-9))
    beta = cfg.rounding_beta if cfg.conditional_rounding else 0.0
    tail = 2.0**-cfg.tail_bits
    limit = 2 ** (cfg.bits - 1) - 1
    spread = (
        math.sqrt(2.0 * math.log(2.0 * d_pad / tail) / d_pad) if cfg.rotation else math.inf
    )

    def plan_at(scale: float) -> DistributedPlan | None:
        c_scaled = cfg.l2_clip * scale
        l2 = rdp.rounded_l2_bound(c_scaled, d_pad, beta)
        l1 = rdp.rounded_l1_bound(l2, d_pad)
        std = cfg.noise_multiplier * l2
        variance = std * std / provisioned  # inf (not an OverflowError) for absurd noise
        linf = math.ceil(c_scaled)
        if cfg.rotation:
            linf = min(linf, math.ceil(c_scaled * spread) + 1)
        if variance > _MAX_CLIENT_VARIANCE or linf > MAX_QUANTIZED:
            return None
        if cfg.mechanism == "skellam":
            headroom = rdp.skellam_tail_bound(n * variance, tail)
        else:
            headroom = rdp.subgaussian_tail_bound(n * variance, tail)
        if n * linf + headroom > limit:
            return None
        return DistributedPlan(
            config=cfg,
            num_clients=n,
            provisioned=provisioned,
            padded_dimension=d_pad,
            scale=scale,
            client_variance=variance,
            l2_sensitivity=l2,
            l1_sensitivity=l1,
            linf_clip=linf,
            noise_headroom=headroom,
        )

    lo, hi = -60.0, 120.0  # log2 of the scale
    best = plan_at(2.0**lo)
    if best is None:
        raise ConfigurationError(
            f"no scale fits {n} clients in {cfg.bits} bits with noise_multiplier="
            f"{cfg.noise_multiplier}; use bits=64 or fewer clients per round"
        )
    for _ in range(90):
        mid = 0.5 * (lo + hi)
        found = plan_at(2.0**mid)
        if found is None:
            hi = mid
        else:
            lo, best = mid, found
    inflation = best.l2_sensitivity / (best.scale * cfg.l2_clip)
    if inflation > _MAX_INFLATION:
        raise ConfigurationError(
            f"{cfg.bits}-bit sums of {n} clients leave too coarse a grid: rounding inflates the "
            f"sensitivity {inflation:.2f}x (dimension {d}). Use bits=64, rotation=True, fewer "
            "clients per round or a smaller model"
        )
    return best


# --------------------------------------------------------------------------------- helpers


def rotation_seed(session_id: bytes, round_id: int) -> bytes:
    """The public seed of a round's rotation signs (every party derives the same one)."""
    return hashlib.sha256(
        b"secureagg/dp/rotation" + struct.pack(">H", len(session_id)) + session_id
        + struct.pack(">Q", round_id)
    ).digest()


def _signs(seed: bytes, count: int) -> FloatArray:
    bits = prg.Keystream(seed, label=labels.DP_ROTATION).words(count, 8) & np.uint8(1)
    return 1.0 - 2.0 * bits.astype(np.float64)


def hadamard(x: FloatArray) -> FloatArray:
    """The normalised Walsh-Hadamard transform ``H x / √d`` (``d`` a power of two); ``H`` is its
    own inverse once normalised."""
    d = x.size
    if d & (d - 1):
        raise ConfigurationError(f"the Hadamard transform needs a power-of-two length, got {d}")
    y = np.array(x, dtype=np.float64)
    h = 1
    while h < d:
        view = y.reshape(-1, 2, h)
        top = view[:, 0, :] + view[:, 1, :]
        view[:, 1, :] = view[:, 0, :] - view[:, 1, :]
        view[:, 0, :] = top
        h *= 2
    y *= 1.0 / math.sqrt(d)
    return y


def _round(y: FloatArray, *, bound: float | None, stream: prg.Keystream | None) -> FloatArray:
    """Randomized rounding of ``y``; with ``bound``, retried until ``||q||_2 <= bound``."""
    ks = stream or prg.Keystream(prg.random_seed(), label=labels.DP_ROUNDING)
    floor = np.floor(y)
    frac = y - floor
    limit = None if bound is None else bound * bound * (1.0 - 1e-12)
    for _ in range(_MAX_ROUNDING_TRIES):
        q = floor + (ks.uniform(y.size) < frac)
        if limit is None or float(np.dot(q, q)) <= limit:
            return q
    raise InvalidInputError(  # pragma: no cover - probability below 0.61^1000
        "conditional rounding failed 1000 times; the sensitivity bound is inconsistent"
    )
