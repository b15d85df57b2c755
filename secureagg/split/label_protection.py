"""Label protection: noise on the cut-layer gradients the label party sends back.

Threat model. In the vanilla topology the server holds the labels and returns to the client the
per-example gradient of the loss with respect to the client's activations. An honest-but-curious
client reads the labels off those gradients (Li et al. 2022, arXiv 2102.08504; the attacks are in
:mod:`secureagg.split.attacks`): on an imbalanced binary task the rare positives have larger
gradient norms (norm attack), and the two classes' gradients point in opposite directions
(cosine attack). The server applies a protection to the gradient batch *before* sending it; the
noise is zero-mean, so the client's parameter update stays unbiased, only noisier. The server's
own layers are trained on the exact gradients and are unaffected. The alternative that removes the
leak by construction is the U-shaped topology (labels never leave the client).

* :class:`MarvellNoise` (recommended) - Marvell (Li et al. 2022, section 4): the label party
  models each class's gradients as a Gaussian with mean ``m_k`` and isotropic variance ``v_k`` per
  coordinate (estimated on the batch) and adds class-dependent Gaussian noise whose covariance
  ``λ_k1 uuᵀ + λ_k2 (I - uuᵀ)`` (``u`` the unit vector along ``Δ = m_1 - m_0``) minimises the
  symmetrised KL divergence between the two noisy class distributions, under the power budget
  ``p tr Σ_1 + (1 - p) tr Σ_0 <= power_scale * |Δ|²`` (``p`` the positive fraction). The four
  ``λ`` are found by a grid search over the ways of spending the budget (along ``u`` for either
  class, and across ``u`` to equalise the class variances). ``power_scale`` is the strength: it
  is in units of ``|Δ|²``, so it does not depend on the loss scale. Measured on a synthetic
  binary task with 10% positives (20 features, client 20->32 ReLU, server 32->16->1, batch 128,
  SGD, the first 20 steps; ``tests/split/test_label_protection.py``), attack AUC (either
  orientation) norm / cosine: no protection 0.95 / 1.00; ``power_scale`` 1: 0.61 / 0.75;
  4: 0.55 / 0.64; 8: 0.54 / 0.60; **16 (default): 0.51-0.53 / 0.55-0.59** over four seeds;
  32: 0.51-0.53 / 0.53-0.57. Cost (test accuracy / ROC AUC, "always negative" scores 0.90):
  300 steps at lr 0.1, off 0.979 / 0.996, 16: 0.965 / 0.988, 32: 0.958 / 0.981; 150 steps at
  lr 0.3, off 0.986 / 0.998, 16: 0.955 / 0.980, 32: 0.925 / 0.930. Other tasks need their own
  measurement (:mod:`secureagg.split.attacks`); raise ``power_scale`` for more margin.
* :class:`MaxNormNoise` - Li et al.'s ``max_norm`` heuristic: each example gets isotropic
  Gaussian noise of variance ``(max_j |g_j|² - |g_i|²) / d`` per coordinate, so every expected
  squared norm equals the batch's largest. It defeats the norm attack but **not** the cosine
  attack (the largest, least-noised gradients keep their direction); kept as the paper's
  baseline.

Both draw their noise from :class:`secureagg.dp.noise.CsprngGaussian` (AES-CTR keystream, never
``torch.randn``). ``seed`` (bytes) makes the noise reproducible for tests only: it needs
``test_mode=True`` and warns with :class:`~secureagg.dp.noise.SeededNoiseWarning`; the report says
``seeded``. This is not differential privacy: no ε is claimed, only the measured attack AUC.

Inputs are a numpy array or a torch tensor of shape ``[batch, ...]`` and the 0/1 labels; the
output has the same type, shape, dtype and device (torch is not imported here).

>>> import numpy as np
>>> grads = np.array([[0.1, 0.0], [0.2, 0.1], [-3.0, -1.0], [0.1, 0.1]])
>>> protect = MarvellNoise()
>>> protect(grads, np.array([0, 0, 1, 0])).shape, protect.last_report.num_positive
((4, 2), 1)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import numpy.typing as npt

from secureagg.dp.noise import CsprngGaussian
from secureagg.errors import ConfigurationError, InvalidInputError
from secureagg.split.attacks import _binary_labels, _flat_batch

if TYPE_CHECKING:
    import torch

__all__ = ["MarvellNoise", "MaxNormNoise", "ProtectionReport"]

FloatArray = npt.NDArray[np.float64]

_GRID = np.linspace(0.0, 1.0, 121)


@dataclass(frozen=True)
class ProtectionReport:
    """What one protection call did (JSON-ready through :meth:`to_dict`).

    ``noise_power`` is the mean over the batch of the expected squared norm of the noise added to
    one example; ``signal_power`` the mean squared norm of the clean gradients (same units:
    gradient units squared). ``sum_kl`` is Marvell's objective at the chosen noise (under its
    Gaussian model; ``None`` for max-norm). ``fallback`` is true when the batch lacked a class and
    the noise parameters were reused from an earlier batch (or, before any, were isotropic with
    ``power_scale`` times the largest squared norm).
    """

    method: str
    num_examples: int
    num_positive: int
    noise_power: float
    signal_power: float
    sum_kl: float | None
    fallback: bool
    seeded: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


def _to_numpy(grads: object) -> FloatArray:
    return _flat_batch(grads, "grads")


def _like(grads: object, values: FloatArray) -> Any:
    """``values`` reshaped like ``grads``, as the same kind of object (tensor or array)."""
    shape = tuple(getattr(grads, "shape", values.shape))
    out = values.reshape(shape)
    new_tensor = getattr(grads, "new_tensor", None)
    if callable(new_tensor):  # torch: same dtype and device, no graph
        return new_tensor(out)
    dtype = np.asarray(grads).dtype
    return out.astype(dtype if np.issubdtype(dtype, np.floating) else np.float64)


class _Protection:
    method = ""

    def __init__(self, *, seed: bytes | None, test_mode: bool) -> None:
        self._noise = CsprngGaussian(seed=seed, test_mode=test_mode)
        self.seeded = self._noise.seeded
        self.last_report: ProtectionReport | None = None

    def _normals(self, rows: int, cols: int) -> FloatArray:
        draws = self._noise.sample(rows * cols, std=1.0, dtype=np.float64)
        return np.asarray(draws, dtype=np.float64).reshape(rows, cols)

    def _protect(self, flat: FloatArray, labels: object) -> FloatArray:
        raise NotImplementedError

    @overload
    def __call__(self, grads: torch.Tensor, labels: object) -> torch.Tensor: ...

    @overload
    def __call__(self, grads: npt.NDArray[Any], labels: object) -> npt.NDArray[Any]: ...

    def __call__(
        self, grads: torch.Tensor | npt.NDArray[Any], labels: object
    ) -> torch.Tensor | npt.NDArray[Any]:
        """The protected gradient batch: ``grads`` plus noise, same type, shape, dtype, device."""
        flat = _to_numpy(grads)
        noisy = self._protect(flat, labels)
        result: torch.Tensor | npt.NDArray[Any] = _like(grads, noisy)
        return result


class MaxNormNoise(_Protection):
    """Li et al.'s ``max_norm``: top every example up to the batch's largest expected norm.

    Label-independent (``labels`` may be ``None``). Defeats the norm attack only.
    """

    method = "max_norm"

    def __init__(self, *, seed: bytes | None = None, test_mode: bool = False) -> None:
        super().__init__(seed=seed, test_mode=test_mode)

    def _protect(self, flat: FloatArray, labels: object) -> FloatArray:
        batch, dim = flat.shape
        positive = None if labels is None else _binary_labels(labels, batch)
        sq = np.einsum("ij,ij->i", flat, flat)
        variance = (sq.max() - sq) / dim
        noise = self._normals(batch, dim) * np.sqrt(variance)[:, None]
        self.last_report = ProtectionReport(
            method=self.method,
            num_examples=batch,
            num_positive=-1 if positive is None else int(positive.sum()),
            noise_power=float(np.mean(variance) * dim),
            signal_power=float(np.mean(sq)),
            sum_kl=None,
            fallback=False,
            seeded=self.seeded,
        )
        noisy: FloatArray = flat + noise
        return noisy


@dataclass(frozen=True)
class _MarvellPlan:
    direction: FloatArray  # unit u
    along: tuple[float, float]  # λ_01, λ_11: variance along u for negatives, positives
    across: tuple[float, float]  # λ_02, λ_12: per-coordinate variance across u
    sum_kl: float


def _sum_kl(
    a0: FloatArray, a1: FloatArray, b0: FloatArray, b1: FloatArray, gap: float, dim: int
) -> FloatArray:
    """Symmetrised KL between N(m0, a0 uuᵀ + b0 (I - uuᵀ)) and N(m1, ...), |m1 - m0|² = gap."""
    along = a1 / a0 + a0 / a1 - 2.0 + gap * (1.0 / a0 + 1.0 / a1)
    across = (dim - 1) * (b1 / b0 + b0 / b1 - 2.0)
    result: FloatArray = 0.5 * (along + across)
    return result


def _plan(
    v0: float, v1: float, gap: float, fraction: float, budget: float, dim: int
) -> tuple[tuple[float, float], tuple[float, float], float]:
    """Grid search for Marvell's four variances under ``p tr Σ1 + (1-p) tr Σ0 <= budget``."""
    tiny = 1e-12 * max(gap, v0, v1, 1e-300)
    x, y = np.meshgrid(_GRID, _GRID, indexing="ij")
    lam01 = x * budget / (1.0 - fraction)  # along u, negatives
    lam11 = y * (budget - (1.0 - fraction) * lam01) / fraction  # along u, positives
    rest = np.maximum(budget - (1.0 - fraction) * lam01 - fraction * lam11, 0.0)
    # the rest goes across u to the class with the smaller variance, up to equal variances
    if v0 <= v1:
        lam02 = np.minimum(rest / ((1.0 - fraction) * max(dim - 1, 1)), v1 - v0)
        lam12 = np.zeros_like(lam02)
    else:
        lam12 = np.minimum(rest / (fraction * max(dim - 1, 1)), v0 - v1)
        lam02 = np.zeros_like(lam12)
    if dim == 1:
        lam02, lam12 = np.zeros_like(lam02), np.zeros_like(lam12)
    objective = _sum_kl(
        v0 + lam01 + tiny, v1 + lam11 + tiny, v0 + lam02 + tiny, v1 + lam12 + tiny, gap, dim
    )
    best = np.unravel_index(int(np.argmin(objective)), objective.shape)
    return (
        (float(lam01[best]), float(lam11[best])),
        (float(lam02[best]), float(lam12[best])),
        float(objective[best]),
    )


class MarvellNoise(_Protection):
    """Marvell: class-dependent Gaussian noise that minimises the symmetrised KL between classes.

    ``power_scale`` (> 0) is the noise budget in units of ``|m_1 - m_0|²`` (the squared distance
    between the class-mean gradients of the batch): larger is safer and noisier. ``seed`` is for
    tests only (needs ``test_mode=True``; warns). Stateful: a batch missing a class reuses the
    previous batch's noise parameters (see :class:`ProtectionReport`). Not thread-safe.
    """

    method = "marvell"

    def __init__(
        self, *, power_scale: float = 16.0, seed: bytes | None = None, test_mode: bool = False
    ) -> None:
        given: object = power_scale
        if (
            isinstance(given, bool)
            or not isinstance(given, int | float)
            or not math.isfinite(given)
            or given <= 0
        ):
            raise ConfigurationError(
                f"power_scale must be a finite number > 0 (units of |Δ|²), got {power_scale!r}"
            )
        super().__init__(seed=seed, test_mode=test_mode)
        self.power_scale = float(power_scale)
        self._previous: _MarvellPlan | None = None

    def _fresh_plan(self, flat: FloatArray, positive: npt.NDArray[np.bool_]) -> _MarvellPlan | None:
        dim = flat.shape[1]
        pos, neg = flat[positive], flat[~positive]
        if pos.shape[0] == 0 or neg.shape[0] == 0:
            return None
        m1, m0 = pos.mean(axis=0), neg.mean(axis=0)
        delta = m1 - m0
        gap = float(delta @ delta)
        if gap == 0.0:
            return None
        v1 = float(((pos - m1) ** 2).sum() / (pos.shape[0] * dim))
        v0 = float(((neg - m0) ** 2).sum() / (neg.shape[0] * dim))
        fraction = pos.shape[0] / flat.shape[0]
        along, across, kl = _plan(v0, v1, gap, fraction, self.power_scale * gap, dim)
        return _MarvellPlan(delta / math.sqrt(gap), along, across, kl)

    def _protect(self, flat: FloatArray, labels: object) -> FloatArray:
        batch, dim = flat.shape
        if labels is None:
            raise InvalidInputError("MarvellNoise needs the batch's 0/1 labels; pass labels=")
        positive = _binary_labels(labels, batch)
        plan = self._fresh_plan(flat, positive)
        fallback = plan is None
        if plan is None:
            previous = self._previous
            plan = previous if previous is not None and previous.direction.size == dim else None
        else:
            self._previous = plan
        sq = np.einsum("ij,ij->i", flat, flat)
        z = self._normals(batch, dim)
        if plan is None:  # no class contrast seen yet: isotropic, power_scale * max |g|²
            variance = self.power_scale * float(sq.max()) / dim
            noise = z * math.sqrt(variance)
            noise_power = variance * dim
            kl = None
        else:
            u = plan.direction
            cls = positive.astype(np.intp)
            along = np.sqrt(np.array(plan.along))[cls]
            across = np.sqrt(np.array(plan.across))[cls]
            zu = z @ u
            noise = across[:, None] * (z - np.outer(zu, u)) + (along * zu)[:, None] * u
            per_example = np.array(plan.along)[cls] + (dim - 1) * np.array(plan.across)[cls]
            noise_power = float(per_example.mean())
            kl = plan.sum_kl
        self.last_report = ProtectionReport(
            method=self.method,
            num_examples=batch,
            num_positive=int(positive.sum()),
            noise_power=noise_power,
            signal_power=float(np.mean(sq)),
            sum_kl=kl,
            fallback=fallback,
            seeded=self.seeded,
        )
        return flat + noise
