"""The DP settings of a federated run, :class:`FederatedDP`: validated, described for the record.

What they mean - the two guarantees, record counts, buffers - is in :mod:`secureagg.fl.privacy`,
which builds the mechanisms and accountants from them.

>>> FederatedDP(epsilon=8.0, local_epochs=2).describe()["sample_level"]["epsilon"]
8.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from secureagg.dp.accounting import accountant_problems
from secureagg.errors import ConfigurationError
from secureagg.validation import is_int

__all__ = ["FederatedDP"]


def _positive(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


@dataclass(frozen=True)
class FederatedDP:
    """DP settings of a :class:`~secureagg.fl.FederatedRun` (what they mean:
    :mod:`secureagg.fl.privacy`)."""

    epsilon: float | None = None
    noise_multiplier: float | None = None
    max_grad_norm: float = 1.0
    local_epochs: int = 1
    distributed_noise_multiplier: float | None = None
    central_noise_multiplier: float | None = None
    update_clip: float = 1.0
    mechanism: Literal["skellam", "ddgauss"] = "skellam"
    delta: float = 1e-5
    accountant: Literal["rdp", "prv"] = "rdp"
    max_epsilon: float | None = None
    max_user_epsilon: float | None = None
    batches_per_epoch: int | None = None
    expected_batch_size: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.epsilon is not None and self.noise_multiplier is not None:
            problems.append("give epsilon (a target) or noise_multiplier for DP-SGD, not both")
        for name in ("epsilon", "noise_multiplier", "distributed_noise_multiplier",
                     "central_noise_multiplier", "max_epsilon", "max_user_epsilon"):
            value = getattr(self, name)
            if value is not None and not _positive(value):
                problems.append(f"{name} must be None or a finite number > 0, got {value!r}")
        for name in ("max_grad_norm", "update_clip"):
            if not _positive(getattr(self, name)):
                problems.append(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
        if (
            isinstance(self.local_epochs, bool)
            or not isinstance(self.local_epochs, int)
            or self.local_epochs < 1
        ):
            problems.append(f"local_epochs must be an integer >= 1, got {self.local_epochs!r}")
        if self.distributed_noise_multiplier is not None and self.central_noise_multiplier:
            problems.append("choose distributed or central noise on the sum, not both")
        if not (isinstance(self.delta, float) and 0.0 < self.delta < 1.0):
            problems.append(f"delta must be in (0, 1), got {self.delta!r}")
        problems.extend(accountant_problems(self.accountant))
        for name in ("batches_per_epoch", "expected_batch_size"):
            value = getattr(self, name)
            if value is not None and not (is_int(value) and value >= 1):
                problems.append(f"{name} must be None or an integer >= 1, got {value!r}")
        if self.expected_batch_size is not None and self.batches_per_epoch is None:
            problems.append(
                "expected_batch_size is the public gradient average of a public schedule: "
                "give batches_per_epoch too"
            )
        if not (self.dp_sgd or self.user_level):
            problems.append(
                "FederatedDP needs epsilon or noise_multiplier (DP-SGD on the clients), or "
                "distributed_noise_multiplier / central_noise_multiplier (noise on the sum)"
            )
        if problems:
            raise ConfigurationError(problems)

    @property
    def dp_sgd(self) -> bool:
        return self.epsilon is not None or self.noise_multiplier is not None

    @property
    def public_schedule(self) -> bool:
        """DP-SGD's q, step count and gradient average are public constants (not from N_i)."""
        return self.dp_sgd and self.batches_per_epoch is not None

    @property
    def user_level(self) -> bool:
        return (
            self.distributed_noise_multiplier is not None
            or self.central_noise_multiplier is not None
        )

    def describe(self) -> dict[str, Any]:
        return {
            "delta": self.delta,
            "accountant": self.accountant,
            "sample_level": None
            if not self.dp_sgd
            else {
                "mechanism": "dp-sgd",
                "epsilon": self.epsilon,
                "noise_multiplier": self.noise_multiplier,
                "max_grad_norm": self.max_grad_norm,
                "local_epochs": self.local_epochs,
                "max_epsilon": self.sample_budget,
                "batches_per_epoch": self.batches_per_epoch,
                "expected_batch_size": self.expected_batch_size,
                "record_counts": "not released" if self.public_schedule else "public",
            },
            "user_level": None
            if not self.user_level
            else {
                "mechanism": (
                    f"distributed-{self.mechanism}"
                    if self.distributed_noise_multiplier is not None
                    else "central-gaussian"
                ),
                "noise_multiplier": self.distributed_noise_multiplier
                or self.central_noise_multiplier,
                "update_clip": self.update_clip,
                "max_epsilon": self.max_user_epsilon,
                "client_sampling_rate": 1.0,
            },
        }

    @property
    def sample_budget(self) -> float | None:
        return self.max_epsilon if self.max_epsilon is not None else self.epsilon
