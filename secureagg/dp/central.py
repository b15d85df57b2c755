"""Central DP: a trusted server adds Gaussian noise to the aggregate - the baseline.

Threat model. The server sees the exact sum (or, under SecAgg, the key holder of the result
does) and is *trusted* to add ``N(0, (noise_multiplier * l2_clip)²)`` to every coordinate before
releasing it. Clients clip their updates to L2 norm ``l2_clip`` first, so one client's whole
contribution moves the sum by at most ``l2_clip`` (user-level DP, zero-out adjacency). Each
release is one step of the sampled Gaussian mechanism with the client sampling rate; it is
accounted by Opacus's accountants (:mod:`secureagg.dp.accounting`).

The noise comes from :class:`~secureagg.dp.noise.CsprngGaussian` (AES-CTR keystream with the
Holohan-Braghin mitigation) unless another source with the same ``sample(count, std)`` method is
passed. Dropouts change nothing here: the server adds the full noise whatever the cohort.

>>> import numpy as np
>>> mech = CentralGaussian(CentralDP(l2_clip=1.0, noise_multiplier=1.0))
>>> clipped = mech.clip(np.array([3.0, 4.0]))
>>> float(np.linalg.norm(clipped)) <= 1.0
True
>>> mech.release(np.zeros(4)).shape
(4,)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from secureagg.dp.events import GaussianSteps
from secureagg.dp.noise import CsprngGaussian
from secureagg.errors import ConfigurationError, InvalidInputError, NonFiniteInputError

__all__ = ["CentralDP", "CentralGaussian", "GaussianSource", "l2_clip"]

FloatArray = npt.NDArray[np.float64]


class GaussianSource(Protocol):
    """Anything that draws ``count`` values of ``N(0, std²)``."""

    seeded: bool

    def sample(self, count: int, std: float) -> npt.NDArray[np.floating[Any]]:
        """``count`` float64 draws."""


@dataclass(frozen=True)
class CentralDP:
    """Central Gaussian DP: clip to ``l2_clip``, add ``noise_multiplier * l2_clip`` noise."""

    l2_clip: float
    noise_multiplier: float
    client_sampling_rate: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        for name in ("l2_clip", "noise_multiplier"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                math.isfinite(value) and value > 0
            ):
                problems.append(f"{name} must be a finite number > 0, got {value!r}")
        q = self.client_sampling_rate
        if isinstance(q, bool) or not isinstance(q, int | float) or not 0 < q <= 1:
            problems.append(f"client_sampling_rate must be in (0, 1], got {q!r}")
        if problems:
            raise ConfigurationError(problems)

    @property
    def noise_std(self) -> float:
        """Standard deviation of the noise added to each coordinate of the sum."""
        return self.noise_multiplier * self.l2_clip


def l2_clip(update: npt.ArrayLike, bound: float) -> FloatArray:
    """``update`` (flattened, float64) scaled down to L2 norm at most ``bound``."""
    x = np.array(update, dtype=np.float64).reshape(-1)
    if not np.isfinite(x).all():
        raise NonFiniteInputError("the update contains NaN or Inf; nothing was sent")
    norm = float(np.sqrt(np.dot(x, x)))
    if norm > bound:
        x *= bound / norm * (1.0 - 2.0**-40)
    return x


class CentralGaussian:
    """The server-side mechanism: ``clip`` on clients, ``release`` on the trusted server."""

    def __init__(self, config: CentralDP, *, noise: GaussianSource | None = None) -> None:
        if not isinstance(config, CentralDP):
            raise ConfigurationError(f"config must be a CentralDP, got {type(config).__name__}")
        self.config = config
        self.noise: GaussianSource = noise if noise is not None else CsprngGaussian()

    def clip(self, update: npt.ArrayLike) -> FloatArray:
        """Client side: the update clipped to ``l2_clip`` (flattened float64)."""
        return l2_clip(update, self.config.l2_clip)

    def release(self, total: npt.ArrayLike) -> FloatArray:
        """Server side: ``total`` plus fresh Gaussian noise (float64, same shape)."""
        arr = np.asarray(total, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise InvalidInputError("the aggregate contains NaN or Inf")
        noisy = arr.reshape(-1) + self.noise.sample(arr.size, self.config.noise_std)
        return noisy.reshape(arr.shape)

    def round_event(self) -> GaussianSteps:
        """The privacy event of one release (user level)."""
        return GaussianSteps(
            scope="user",
            party=None,
            noise_multiplier=self.config.noise_multiplier,
            sample_rate=self.config.client_sampling_rate,
            clip=self.config.l2_clip,
            steps=1,
            mechanism="central-gaussian",
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready parameters."""
        return {
            "mechanism": "central-gaussian",
            "l2_clip": self.config.l2_clip,
            "noise_multiplier": self.config.noise_multiplier,
            "noise_std": self.config.noise_std,
            "client_sampling_rate": self.config.client_sampling_rate,
            "noise_source": type(self.noise).__name__,
            "seeded": bool(getattr(self.noise, "seeded", False)),
        }
