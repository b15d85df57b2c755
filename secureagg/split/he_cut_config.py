"""What both parties of the encrypted cut layer agree on: :class:`HeCutConfig`.

The setup message carries :meth:`HeCutConfig.summary_json`, and the server compares it byte for
byte with its own: a mismatch aborts before any data moves. The constructor collects every
problem and raises one :class:`~secureagg.errors.ConfigurationError`; its refusals are the threat
model's (:mod:`secureagg.split.he_cut`): without noise the server receives the exact weight
gradient, from which it can solve for the activations, so ``noise_multiplier=0`` needs
``allow_exact_weight_gradient=True`` *and* ``batch_size > out_features``; and ``sample_rate``
must be 1.0, since the layer does not sample records and so claims no amplification.

>>> cfg = HeCutConfig(in_features=4, out_features=3, batch_size=2)
>>> cfg.noise_multiplier, cfg.clip, cfg.encrypt_gradient
(1.0, 1.0, True)
>>> try:
...     HeCutConfig(in_features=4, out_features=3, batch_size=2, noise_multiplier=0)
... except ConfigurationError as exc:
...     print(len(exc.problems))
2
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from secureagg.errors import ConfigurationError
from secureagg.he.ckks import CUT_LAYER_PARAMETERS, CkksParameters
from secureagg.split.he_cut_validation import finite_number

__all__ = ["HeCutConfig"]


@dataclass(frozen=True)
class HeCutConfig:
    """Parameters both parties agree on (the setup message carries them; mismatches abort).

    ``clip``: per-example L2 bound on the gradient of ``[W; b]`` (``None`` only without noise).
    ``noise_multiplier``: Gaussian std / clip on the weight gradient (0 needs
    ``allow_exact_weight_gradient=True`` and ``batch_size > out_features``).
    ``loss_reduction``: ``"mean"`` (torch's default: G is the gradient of the batch mean) or
    ``"sum"``. ``activation_bound``: every activation and gradient entry must lie within it.
    ``sample_rate``: must be 1.0 - the layer does not sample records (its batch size is fixed,
    which Poisson sampling cannot give), so it claims no amplification by sampling; kept so that
    a configuration that asked for amplification is refused rather than silently believed.
    """

    in_features: int
    out_features: int
    batch_size: int
    clip: float | None = 1.0
    noise_multiplier: float = 1.0
    allow_exact_weight_gradient: bool = False
    encrypt_gradient: bool = True
    loss_reduction: Literal["mean", "sum"] = "mean"
    activation_bound: float = 16.0
    sample_rate: float = 1.0
    params: CkksParameters = field(default=CUT_LAYER_PARAMETERS)

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in ("in_features", "out_features", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        sigma = self.noise_multiplier
        if not finite_number(sigma) or sigma < 0:
            problems.append(f"noise_multiplier must be a finite number >= 0, got {sigma!r}")
        if self.clip is None:
            if sigma != 0:
                problems.append("clip=None (no clipping) is only possible without noise")
        elif not finite_number(self.clip) or self.clip <= 0:
            problems.append(f"clip must be a finite number > 0 or None, got {self.clip!r}")
        if sigma == 0 and not self.allow_exact_weight_gradient:
            problems.append(
                "noise_multiplier=0 sends the exact weight gradient A^T G, from which the server "
                "can solve for the activations; set allow_exact_weight_gradient=True to accept "
                "that, or keep noise_multiplier > 0"
            )
        if (
            sigma == 0
            and isinstance(self.batch_size, int)
            and isinstance(self.out_features, int)
            and self.batch_size <= self.out_features
        ):
            problems.append(
                f"without noise, batch_size ({self.batch_size}) must exceed out_features "
                f"({self.out_features}): otherwise the exact gradient determines every activation"
            )
        if self.loss_reduction not in ("mean", "sum"):
            problems.append(f"loss_reduction must be 'mean' or 'sum', got {self.loss_reduction!r}")
        bound = self.activation_bound
        if not finite_number(bound) or bound <= 0:
            problems.append(f"activation_bound must be a finite number > 0, got {bound!r}")
        rate = self.sample_rate
        if not finite_number(rate) or not 0 < rate <= 1:
            problems.append(f"sample_rate must be in (0, 1], got {rate!r}")
        elif rate != 1:
            problems.append(
                f"sample_rate={rate!r} would claim amplification by sampling, but the encrypted "
                "cut layer does not sample records (fixed batches from your loader); only 1.0 is "
                "accepted, and every step is accounted as touching every record"
            )
        if problems:
            raise ConfigurationError(problems)

    def summary(self) -> dict[str, Any]:
        """What the setup message binds: everything both sides must agree on."""
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "batch_size": self.batch_size,
            "encrypt_gradient": self.encrypt_gradient,
            "activation_bound": float(self.activation_bound),
            "params": self.params.to_dict(),
        }

    def summary_json(self) -> str:
        """:meth:`summary` as canonical JSON: what :class:`CutSetup` carries."""
        return json.dumps(self.summary(), sort_keys=True, separators=(",", ":"))
