"""Client-side protections of what crosses the cut: DP on activations and NoPeek.

**DP on activations** (:class:`ActivationDP`). Each example's cut-layer activation is clipped to
L2 norm ``clip`` and released with ``N(0, (noise_multiplier * clip)^2)`` noise on every
coordinate. A release depends on one record only, so it is a Gaussian mechanism on that record
with L2 sensitivity ``2 * clip`` (replace-one adjacency: any two records' clipped activations are
at most ``2 * clip`` apart). One epoch releases each record once (the sampler is checked: no
replacement, no weighting), so after ``e`` epochs a record has been through ``e`` Gaussian
mechanisms of noise multiplier ``noise_multiplier / 2`` relative to the sensitivity; the
:class:`~secureagg.dp.PrivacyAccountant` composes them (``GaussianSteps`` with ``sample_rate=1``,
``mechanism="split-activations"``) and gives ε at δ.

*What the ε covers* - and what it does not - is part of :meth:`ActivationDP.report`
(``"privacy_scope"``, see :mod:`secureagg.split.scope`). It bounds what the activations channel
reveals about each record *given the client's model parameters at the time of release*; it does
**not** cover: the labels (the vanilla server holds them), the output gradients (U-shaped: sent to
the server in the clear), the client model itself (trained on every record with exact gradients,
so later activations of *other* records carry information about a record), and the client parts
that SplitFed averages (or sequential split learning hands on). :class:`~secureagg.split.
SplitLearning` tells the object which of these exist in the run (:attr:`ActivationDP.setting`); a
bare ``ActivationDP`` lists every one that may. To cover the client model too, train it with
DP-SGD (:func:`secureagg.dp.make_private`) and add both ε's, or freeze it.

**NoPeek** (:class:`NoPeek`, Vepakomma et al. 2020, arXiv 2008.09161). Adds ``weight * dCor(x,
a)``, the distance correlation between the raw inputs and the activations of the batch, to the
client's loss, so that training pushes the activations to carry less of the input's geometry.
It has no formal guarantee; its effect is measured by the inversion probe in
:mod:`secureagg.split.attacks`.

Noise comes from :class:`secureagg.dp.CsprngGaussian` (AES-CTR keystream, Holohan-Braghin
mitigation), never from ``torch.randn``.

>>> dp = ActivationDP(clip=1.0, noise_multiplier=2.0)
>>> round(dp.epsilon_after(epochs=1), 2) > 0
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from secureagg.dp.accounting import PrivacyAccountant
from secureagg.dp.events import GaussianSteps
from secureagg.dp.noise import CsprngGaussian
from secureagg.dp.torch_import import require_torch
from secureagg.errors import ConfigurationError
from secureagg.split.scope import SplitSetting, privacy_scope

__all__ = ["ActivationDP", "NoPeek", "clip_rows", "distance_correlation"]

MECHANISM = "split-activations"


def _positive(value: object, name: str, problems: list[str]) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
        math.isfinite(value) and value > 0
    ):
        problems.append(f"{name} must be a finite number > 0, got {value!r}")


class ActivationDP:
    """Per-example L2 clipping plus Gaussian noise on the cut-layer activations.

    Give either ``noise_multiplier`` (noise std divided by ``clip``) or ``epsilon`` together with
    ``epochs`` (the number of times each record will be released); the latter calibrates the
    smallest noise whose accounted ε after ``epochs`` is at most ``epsilon`` (bisection on the
    accountant itself). ``accountant`` receives one event per epoch and enforces its budget
    (``max_epsilon``) *before* an epoch's first release; by default a private RDP accountant at
    ``delta``. ``seed`` is for tests only (needs ``test_mode=True`` and warns).
    """

    def __init__(
        self,
        *,
        clip: float,
        noise_multiplier: float | None = None,
        epsilon: float | None = None,
        epochs: int | None = None,
        delta: float = 1e-5,
        accountant: PrivacyAccountant | None = None,
        party: int = 0,
        seed: bytes | None = None,
        test_mode: bool = False,
    ) -> None:
        problems: list[str] = []
        _positive(clip, "clip", problems)
        if (noise_multiplier is None) == (epsilon is None):
            problems.append("give exactly one of noise_multiplier= or epsilon= (with epochs=)")
        if noise_multiplier is not None:
            _positive(noise_multiplier, "noise_multiplier", problems)
        if epsilon is not None:
            _positive(epsilon, "epsilon", problems)
            if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
                problems.append(f"epsilon= needs epochs= (an integer >= 1), got {epochs!r}")
        if not (isinstance(delta, float | int) and 0 < delta < 1):
            problems.append(f"delta must be in (0, 1), got {delta!r}")
        if problems:
            raise ConfigurationError(problems)
        self.clip = float(clip)
        self.delta = float(delta)
        self.party = party
        self.accountant = accountant or PrivacyAccountant(accountant="rdp", delta=self.delta)
        if epsilon is not None and epochs is not None:
            noise_multiplier = self.calibrate(float(epsilon), epochs=epochs, delta=self.delta)
        if noise_multiplier is None:  # unreachable: validated above
            raise ConfigurationError("noise_multiplier could not be determined")
        self.noise_multiplier = float(noise_multiplier)
        self.noise = CsprngGaussian(seed=seed, test_mode=test_mode)
        self.epochs_released = 0
        self.clipped = 0
        self.released = 0
        #: The set-up this object's releases happen in (set by SplitLearning / SplitClient);
        #: ``None`` = unknown, and the report then lists every channel that may exist.
        self.setting: SplitSetting | None = None

    # ----------------------------------------------------------------------------- accounting

    def _event(self, noise_multiplier: float, steps: int) -> GaussianSteps:
        return GaussianSteps(
            scope="sample",
            party=self.party,
            noise_multiplier=noise_multiplier / 2.0,  # relative to the sensitivity 2 * clip
            sample_rate=1.0,
            clip=2.0 * self.clip,
            steps=steps,
            mechanism=MECHANISM,
        )

    def epsilon_after(self, *, epochs: int, delta: float | None = None) -> float:
        """ε at ``delta`` (default: this object's) after ``epochs`` releases of every record."""
        return self._epsilon(self.noise_multiplier, epochs, delta or self.delta)

    def _epsilon(self, noise_multiplier: float, epochs: int, delta: float) -> float:
        acc = PrivacyAccountant(accountant=self.accountant.accountant, delta=delta)
        acc.emit(self._event(noise_multiplier, epochs))
        return acc.epsilon(scope="sample", party=self.party)

    def calibrate(self, epsilon: float, *, epochs: int, delta: float) -> float:
        """The smallest noise multiplier (to 0.1%) with ε(epochs) <= ``epsilon``."""
        lo, hi = 1e-3, 1.0
        while self._epsilon(hi, epochs, delta) > epsilon:
            lo, hi = hi, hi * 2
            if hi > 1e6:
                raise ConfigurationError(f"no noise level reaches ε={epsilon} in {epochs} epochs")
        while hi - lo > 1e-3 * hi:
            mid = (lo + hi) / 2
            if self._epsilon(mid, epochs, delta) > epsilon:
                lo = mid
            else:
                hi = mid
        return hi

    def begin_epoch(self) -> None:
        """Account one release of every record; raises ``PrivacyBudgetExceeded`` beforehand."""
        event = self._event(self.noise_multiplier, 1)
        self.accountant.check(event)
        self.accountant.emit(event)
        self.epochs_released += 1

    @property
    def epsilon(self) -> float:
        """ε spent so far (0.0 before the first epoch)."""
        if self.epochs_released == 0:
            return 0.0
        return self.accountant.epsilon(scope="sample", party=self.party)

    # -------------------------------------------------------------------------------- release

    def apply(self, activations: Any) -> Any:
        """Clipped and noised activations (a differentiable function of ``activations``)."""
        torch = require_torch()
        if self.epochs_released == 0:
            raise ConfigurationError(
                "ActivationDP.begin_epoch() was not called: every release must be accounted"
            )
        flat = activations.reshape(activations.shape[0], -1)
        self.clipped += int((flat.detach().norm(dim=1) > self.clip).sum())
        self.released += int(flat.shape[0])
        noise = self.noise.sample(flat.numel(), self.noise_multiplier * self.clip, dtype=np.float32)
        noisy = clip_rows(flat, self.clip) + torch.from_numpy(noise.reshape(flat.shape)).to(
            flat.dtype
        )
        return noisy.reshape(activations.shape)

    def privacy_scope(self, setting: SplitSetting | None = None) -> dict[str, Any]:
        """What this ε covers and what it does not, in ``setting`` (default :attr:`setting`)."""
        epsilon = self.epsilon
        return privacy_scope(
            setting if setting is not None else self.setting,
            covered="activations",
            unit=f"one training record of client {self.party}",
            mechanism=(
                f"Gaussian mechanism on each record's cut-layer activation, clipped to L2 norm "
                f"{self.clip:g} (sensitivity {2 * self.clip:g} under replace-one), noise std "
                f"{self.noise_multiplier * self.clip:.4g} per coordinate; one release per record "
                f"per epoch, {self.epochs_released} epoch(s) so far"
            ),
            accountant=(
                f"{self.accountant.accountant}: "
                f"{self.accountant.method(scope='sample', party=self.party)}"
            ),
            epsilon=epsilon,
            delta=self.delta,
            public=[
                f"clip {self.clip:g}, noise multiplier {self.noise_multiplier:.4g}, "
                f"δ {self.delta:g}"
            ],
        )

    def report(self) -> dict[str, Any]:
        """JSON-ready: the mechanism's parameters, ε so far and its scope (``privacy_scope``)."""
        return {
            "mechanism": MECHANISM,
            "clip": self.clip,
            "noise_multiplier": self.noise_multiplier,
            "sensitivity": 2.0 * self.clip,
            "adjacency": "replace-one record",
            "epochs_released": self.epochs_released,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "clipped": self.clipped,
            "released": self.released,
            "seeded": self.noise.seeded,
            "privacy_scope": self.privacy_scope(),
        }


def clip_rows(activations: Any, clip: float) -> Any:
    """Each row (example) scaled to L2 norm at most ``clip`` (differentiable; the norm is not)."""
    torch = require_torch()
    flat = activations.reshape(activations.shape[0], -1)
    norms = flat.detach().norm(dim=1, keepdim=True)
    return (flat * torch.clamp(clip / (norms + 1e-12), max=1.0)).reshape(activations.shape)


def distance_correlation(x: Any, y: Any) -> Any:
    """Sample distance correlation (Székely et al. 2007) of two batches, in [0, 1].

    Rows are examples; each batch is flattened per row. Differentiable (the zero distances on
    the diagonal are clamped before the square root).
    """
    torch = require_torch()

    def centered(z: Any) -> Any:
        z = z.reshape(z.shape[0], -1)
        sq = (z.unsqueeze(0) - z.unsqueeze(1)).pow(2).sum(-1)
        d = torch.sqrt(torch.clamp(sq, min=1e-12))
        return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()

    a, b = centered(x), centered(y)
    dcov = (a * b).mean()
    dvar = torch.sqrt(torch.clamp((a * a).mean() * (b * b).mean(), min=1e-24))
    return torch.sqrt(torch.clamp(dcov / dvar, min=0.0))


class NoPeek:
    """Adds ``weight * dCor(inputs, activations)`` to the client's loss (NoPeek)."""

    def __init__(self, weight: float) -> None:
        problems: list[str] = []
        _positive(weight, "weight", problems)
        if problems:
            raise ConfigurationError(problems)
        self.weight = float(weight)
        self.last = math.nan

    def loss(self, inputs: Any, activations: Any) -> Any:
        term = distance_correlation(inputs.detach(), activations)
        self.last = float(term.detach())
        return self.weight * term
