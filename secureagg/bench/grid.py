"""The benchmark's grid: which protocols, sizes, dropouts and DP modes, and their aggregators.

A :class:`BenchConfig` is one point of the grid: a protocol variant (``"secagg+:malicious"`` is
SecAgg+ under a malicious server; ``"ckks:pooled"`` and ``"paillier:pooled"`` compute their
encryption randomness before the round, reported apart as offline seconds), a DP mode
(``"none"``, ``"distributed"``, ``"central"``), the
number of clients ``n``, the values per client ``d`` and the fraction of clients that drop out.
:func:`build_grid` lists the points in a stable order; :func:`make_config_aggregator` builds the
aggregator a point describes, or says why the library refuses it (the benchmark then records
the point as skipped with that reason, it never measures something else in its place).

>>> [c.label for c in build_grid(["plain", "secagg+"], ns=[10], ds=[1000], dropouts=[0.1],
...                              dp_modes=["none"])]
['plain n=10 d=1000 drop=0.1', 'secagg+ n=10 d=1000 drop=0.1']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from secureagg.aggregators import make_aggregator
from secureagg.errors import ConfigurationError
from secureagg.protocols.base import RoundFactory

__all__ = [
    "CENTRAL_NOISE_MULTIPLIER",
    "DEFAULT_GRID",
    "DISTRIBUTED_NOISE_MULTIPLIER",
    "DP_L2_CLIP",
    "DP_MODES",
    "PROTOCOLS",
    "QUICK_GRID",
    "BenchConfig",
    "GridSpec",
    "build_grid",
    "make_config_aggregator",
    "scaling_grid",
]

#: every protocol variant the benchmark knows, in table order
PROTOCOLS: tuple[str, ...] = (
    "plain",
    "secagg",
    "secagg:malicious",
    "secagg+",
    "secagg+:malicious",
    "ckks",
    "ckks:pooled",
    "paillier",
    "paillier:pooled",
)
#: the variants' constructor options (``:pooled``: the encryption randomness - CKKS encryptions
#: of zero, Paillier blinding factors - computed before the round, timed apart as offline)
_VARIANT_OPTIONS: dict[str, dict[str, Any]] = {
    "ckks:pooled": {"precompute_encryption": True},
    "paillier:pooled": {"precompute_blinding": True},
}
#: DP modes: none, distributed DP inside SecAgg/SecAgg+, central DP added by the server
DP_MODES: tuple[str, ...] = ("none", "distributed", "central")
#: L2 clip of each client's update in the DP configurations (update units)
DP_L2_CLIP = 1.0
#: noise multipliers of the DP configurations (cost barely depends on them)
DISTRIBUTED_NOISE_MULTIPLIER = 1.0
CENTRAL_NOISE_MULTIPLIER = 1.0
#: per-value clip bound of the configurations without distributed DP
VALUE_CLIP = 1.0


@dataclass(frozen=True)
class GridSpec:
    """The axes of a grid (see :func:`build_grid`)."""

    ns: tuple[int, ...]
    ds: tuple[int, ...]
    dropouts: tuple[float, ...]
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        return {"n": list(self.ns), "d": list(self.ds), "dropout": list(self.dropouts),
                "repeats": self.repeats}


#: the default grid (documented in docs/benchmarks.md)
DEFAULT_GRID = GridSpec(ns=(10, 100), ds=(1_000, 100_000), dropouts=(0.0, 0.1), repeats=3)
#: ``--quick``: within a minute on a 2-core machine, every protocol
QUICK_GRID = GridSpec(ns=(5, 10), ds=(256,), dropouts=(0.1,), repeats=1)


@dataclass(frozen=True)
class BenchConfig:
    """One point of the grid."""

    protocol: str  #: a name of :data:`PROTOCOLS`
    dp: str  #: a name of :data:`DP_MODES`
    n: int
    d: int
    dropout: float

    @property
    def base(self) -> str:
        """The aggregator's registered name (``"secagg+"`` for ``"secagg+:malicious"``)."""
        return self.protocol.split(":", 1)[0]

    @property
    def threat(self) -> str | None:
        """``"curious"``/``"malicious"`` for SecAgg and SecAgg+, None for the others."""
        if self.base not in ("secagg", "secagg+"):
            return None
        return "malicious" if self.protocol.endswith(":malicious") else "curious"

    @property
    def dropped(self) -> int:
        """How many clients drop out (``round(dropout * n)``, as ``secureagg simulate``)."""
        return round(self.dropout * self.n)

    @property
    def label(self) -> str:
        dp = "" if self.dp == "none" else f" +{self.dp}-dp"
        return f"{self.protocol}{dp} n={self.n} d={self.d} drop={self.dropout:g}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "aggregator": self.base,
            "threat": self.threat,
            "dp": self.dp,
            "n": self.n,
            "d": self.d,
            "dropout": self.dropout,
            "dropped": self.dropped,
        }


def build_grid(
    protocols: Sequence[str],
    *,
    ns: Sequence[int],
    ds: Sequence[int],
    dropouts: Sequence[float],
    dp_modes: Sequence[str],
) -> list[BenchConfig]:
    """Every combination, ordered by protocol, DP mode, n, d, dropout.

    Raises :class:`~secureagg.errors.ConfigurationError` listing every bad axis value."""
    problems = []
    for p in protocols:
        if p not in PROTOCOLS:
            problems.append(f"unknown protocol {p!r}; known: {', '.join(PROTOCOLS)}")
    for m in dp_modes:
        if m not in DP_MODES:
            problems.append(f"unknown DP mode {m!r}; known: {', '.join(DP_MODES)}")
    for n in ns:
        if n < 2:
            problems.append(f"n (clients) must be >= 2, got {n}")
    for d in ds:
        if d < 1:
            problems.append(f"d (values per client) must be >= 1, got {d}")
    for f in dropouts:
        if not (math.isfinite(f) and 0.0 <= f < 1.0):
            problems.append(f"a dropout fraction must be in [0, 1), got {f}")
    if not (protocols and ns and ds and dropouts and dp_modes):
        problems.append("every axis of the grid needs at least one value")
    if problems:
        raise ConfigurationError(problems)
    return [
        BenchConfig(protocol=p, dp=m, n=int(n), d=int(d), dropout=float(f))
        for p in _unique(protocols)
        for m in _unique(dp_modes)
        for n in _unique(ns)
        for d in _unique(ds)
        for f in _unique(dropouts)
    ]


def scaling_grid(protocols: Sequence[str] = PROTOCOLS) -> list[BenchConfig]:
    """``--full``: the scaling curves and the targets' points, without a full product.

    For every protocol variant without DP: n in {10, 100, 1000} at d = 10^5 and d in {10^3, 10^5,
    10^6, 10^7} at n = 10 (10 % dropout); SecAgg+ also at n = 5000 (d = 10^5), over d at
    n = 100, at n = 20, d = 10^6, and with distributed and central DP at n = 100, d = 10^5;
    Paillier also over n at d = 10^3 and at d = 10^4; CKKS (d = 10^5) and Paillier (d = 10^3) with
    central DP at n = 10. What does not fit the limits is skipped with its estimate."""
    configs: list[BenchConfig] = []

    def add(protocol: str, n: int, d: int, dp: str = "none") -> None:
        config = BenchConfig(protocol=protocol, dp=dp, n=n, d=d, dropout=0.1)
        if protocol in protocols and config not in configs:
            configs.append(config)

    for protocol in PROTOCOLS:
        for n in (10, 100, 1000):
            add(protocol, n, 100_000)
        if protocol == "secagg+":
            add(protocol, 5000, 100_000)
            add(protocol, 20, 1_000_000)  # the n = 20 point against Flower
        for d in (1_000, 100_000, 1_000_000, 10_000_000):
            add(protocol, 10, d)
        if protocol == "secagg+":
            for d in (1_000, 100_000, 1_000_000, 10_000_000):
                add(protocol, 100, d)
            add(protocol, 100, 100_000, "distributed")
            add(protocol, 100, 100_000, "central")
        if protocol.startswith("paillier"):  # at 10^5 values a round takes minutes
            for n in (10, 100, 1000):
                add(protocol, n, 1_000)
            add(protocol, 10, 10_000)
        if protocol in ("ckks", "paillier"):
            add(protocol, 10, 100_000 if protocol == "ckks" else 1_000, "central")
    return configs


def _unique(values: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def make_config_aggregator(config: BenchConfig) -> tuple[RoundFactory | None, str | None]:
    """The aggregator of ``config``, or ``(None, why)`` when the library refuses it.

    SecAgg/SecAgg+ are provisioned for the configuration's dropout (at least the default 10 %),
    as a user expecting that dropout would configure them. Distributed DP wraps only SecAgg and
    SecAgg+ (the library refuses it elsewhere, and says why); central DP wraps any protocol."""
    from secureagg.dp.central import CentralDP
    from secureagg.dp.distributed import DistributedDP

    kwargs: dict[str, Any] = {"num_clients": config.n, **_VARIANT_OPTIONS.get(config.protocol, {})}
    if config.threat is not None:
        kwargs["threat"] = config.threat
        kwargs["dropout_rate"] = max(0.1, config.dropout)
    try:
        if config.dp == "distributed":
            kwargs["distributed_dp"] = DistributedDP(
                l2_clip=DP_L2_CLIP,
                noise_multiplier=DISTRIBUTED_NOISE_MULTIPLIER,
                dimension=config.d,
                expected_dropout=config.dropout,
            )
        else:
            kwargs["clip"] = VALUE_CLIP
            if config.dp == "central":
                kwargs["central_dp"] = CentralDP(
                    l2_clip=DP_L2_CLIP, noise_multiplier=CENTRAL_NOISE_MULTIPLIER
                )
        return make_aggregator(config.base, **kwargs), None
    except ConfigurationError as exc:
        return None, "the library refuses this configuration: " + "; ".join(exc.problems)
    except ImportError as exc:
        return None, f"a dependency is missing ({' '.join(str(exc).split())})"
