"""Differential privacy: DP-SGD (Opacus), distributed DP inside SecAgg, central DP, accounting.

Three placements of the noise, each with its own threat model (see ``docs/dp.md``):

* **sample level** - :func:`make_private` wraps the user's model, optimizer and data loader for
  DP-SGD (Opacus), with noise and Poisson sampling from our AES-CTR keystream;
* **distributed** - :class:`DistributedDP` makes every SecAgg client add a share of Skellam or
  discrete Gaussian noise before masking: ``make_aggregator("secagg+", num_clients=n,
  distributed_dp=DistributedDP(...))``;
* **central** - :class:`CentralDP`: a trusted server adds Gaussian noise to the aggregate
  (:func:`secureagg.aggregators.dp.with_central_dp`).

Every mechanism emits immutable :mod:`~secureagg.dp.events` to an injected sink; a
:class:`PrivacyAccountant` turns them into ε(δ), enforces ``max_epsilon`` before a step or round
would exceed it, and writes a JSON ledger. Importing this package needs neither torch nor Opacus;
:func:`make_private` and Gaussian accounting import them when called (a missing one raises
:class:`~secureagg.errors.MissingDependencyError` naming the ``dp`` extra).

>>> from secureagg.dp import DistributedDP
>>> DistributedDP(l2_clip=1.0, noise_multiplier=1.0, dimension=10).plan(num_clients=5).bits
32
"""

from __future__ import annotations

from secureagg.dp.accounting import PrivacyAccountant
from secureagg.dp.central import CentralDP, CentralGaussian
from secureagg.dp.distributed import DistributedDP, DistributedPlan
from secureagg.dp.dpsgd import PrivateTraining, make_private
from secureagg.dp.events import (
    BudgetStop,
    DistributedNoiseRound,
    EventSink,
    FanOut,
    GaussianSteps,
    JsonLinesSink,
    MechanismConfigured,
    MemorySink,
    PrivacyEvent,
    SeededNoise,
)
from secureagg.dp.ledger import read_ledger
from secureagg.dp.noise import CsprngGaussian, SeededNoiseWarning

__all__ = [
    "BudgetStop",
    "CentralDP",
    "CentralGaussian",
    "CsprngGaussian",
    "DistributedDP",
    "DistributedNoiseRound",
    "DistributedPlan",
    "EventSink",
    "FanOut",
    "GaussianSteps",
    "JsonLinesSink",
    "MechanismConfigured",
    "MemorySink",
    "PrivacyAccountant",
    "PrivacyEvent",
    "PrivateTraining",
    "SeededNoise",
    "SeededNoiseWarning",
    "make_private",
    "read_ledger",
]
