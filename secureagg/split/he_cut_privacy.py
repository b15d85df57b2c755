"""What the encrypted cut layer's ε is (:func:`weight_gradient_event`) and what it covers
(:func:`weight_gradient_scope`): the noised weight gradient, and nothing else."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from secureagg.dp.events import GaussianSteps
from secureagg.errors import ConfigurationError
from secureagg.split.scope import SplitSetting, privacy_scope

if TYPE_CHECKING:
    from secureagg.split.he_cut_config import HeCutConfig

__all__ = ["WEIGHT_GRADIENT_MECHANISM", "weight_gradient_event", "weight_gradient_scope"]


WEIGHT_GRADIENT_MECHANISM = "split-he-cut-weight-gradient"


def weight_gradient_event(config: HeCutConfig, *, party: int | None, steps: int) -> GaussianSteps:
    """``steps`` releases of the noised weight gradient, as one accountant event.

    Replace-one adjacency (like :class:`~secureagg.split.ActivationDP`): one record's clipped
    contribution moves the batch sum by at most ``2 * clip``, so each release is a Gaussian
    mechanism of multiplier ``noise_multiplier / 2`` relative to that sensitivity. The layer does
    not sample, so ``sample_rate`` is 1: each event charges every record, whether or not it was in
    the batch (an upper bound). Needs ``noise_multiplier > 0`` and a ``clip``.
    """
    if config.clip is None or config.noise_multiplier <= 0:
        raise ConfigurationError("no DP release: the weight gradient is exact (no noise)")
    return GaussianSteps(
        scope="sample",
        party=party,
        noise_multiplier=float(config.noise_multiplier) / 2.0,
        sample_rate=1.0,
        clip=2.0 * float(config.clip),
        steps=steps,
        mechanism=WEIGHT_GRADIENT_MECHANISM,
    )


def weight_gradient_scope(
    config: HeCutConfig,
    *,
    epsilon: float | None = None,
    delta: float | None = None,
    accountant: str | None = None,
) -> dict[str, Any]:
    """The scope record (:func:`secureagg.split.scope.privacy_scope`) of the cut layer's ε.

    Covered: the noised weight gradient the server receives. Protected otherwise (encryption,
    not ε): Enc(A') and Enc(G). Not covered: the client's bottom and head, trained on every record
    with exact gradients; G in the clear with ``encrypt_gradient=False``; and, without noise, the
    weight gradient itself (then no ε is claimed).
    """
    noised = config.noise_multiplier > 0 and config.clip is not None
    setting = SplitSetting(
        topology="u-shaped-encrypted", sharing="none", clients=1,
        encrypt_gradient=config.encrypt_gradient,
    )
    clip = config.clip
    return privacy_scope(
        setting,
        covered="weight_gradient" if noised else None,
        unit="one training record of the client",
        mechanism=(
            f"Gaussian mechanism on the batch sum of per-record gradients of [W; b], each clipped "
            f"to L2 norm {clip:g} (sensitivity {2 * clip:g} under replace-one), noise std "
            f"{config.noise_multiplier * clip:.4g} per entry"
            if noised and clip is not None
            else None
        ),
        accountant=accountant,
        epsilon=epsilon,
        delta=delta,
        public=[
            f"the layer's shape ({config.in_features} x {config.out_features}), the batch size "
            f"{config.batch_size}, clip and noise multiplier, the CKKS parameters"
        ],
    )
