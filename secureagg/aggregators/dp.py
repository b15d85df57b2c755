"""Aggregators with differential privacy: distributed DP inside SecAgg, central DP around any.

Composition, not new protocols: :class:`DistributedDPAggregator` wraps a
:class:`~secureagg.aggregators.secagg.SecAggAggregator` whose encoder (scale 1, per-value clip and
noise headroom from the :class:`~secureagg.dp.distributed.DistributedPlan`) and ``client_noise``
hook carry the clients' integer noise shares; :class:`CentralDPAggregator` wraps any aggregator
and has the (trusted) server add Gaussian noise to the result. Both

* transform each client's update on the client side before the inner round is built (L2 clip;
  for distributed DP also rotation, scaling and rounding to integers),
* wrap the inner server so that its result is decoded (distributed) or noised (central) before
  anyone sees it,
* check the privacy budget *before* a round (``PrivacyBudgetExceeded``, nothing runs) and emit
  the round's privacy event once the survivors are known (``aggregator.privacy``),
* carry out the declared client sampling: with ``client_sampling_rate=q < 1`` each client flips
  its own coin (probability ``q``, from a CSPRNG keystream) and, unless it comes up, takes part
  with a zero update - it still runs the protocol (and, for distributed DP, adds its noise
  share), so the cohort is not visible in the traffic. The sum is then exactly the sum over a
  Poisson sample of the clients, which is what the accountant's amplification assumes.

Unweighted sums only: a FedAvg weight would multiply a client's sensitivity.

>>> import numpy as np, secureagg as sa
>>> from secureagg.dp import DistributedDP
>>> agg = sa.make_aggregator("secagg", num_clients=4, dropout_rate=0.0, corrupt_rate=0.0,
...     distributed_dp=DistributedDP(l2_clip=1.0, noise_multiplier=1e-6, dimension=3))
>>> res = sa.simulate(agg, [[np.full(3, 0.1)] for _ in range(4)], seed=1)    # doctest: +SKIP
>>> np.round(res.aggregate[0], 3).tolist()                                      # doctest: +SKIP
[0.4, 0.4, 0.4]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.aggregators.secagg import SecAggAggregator
from secureagg.crypto import labels, prg
from secureagg.dp.accounting import PrivacyAccountant
from secureagg.dp.central import CentralDP, CentralGaussian, GaussianSource
from secureagg.dp.distributed import DistributedDP, DistributedPlan, rotation_seed
from secureagg.dp.events import EventSink, MechanismConfigured, PrivacyEvent, SeededNoise
from secureagg.errors import ConfigurationError
from secureagg.protocols.base import (
    SERVER,
    AggregateOutcome,
    Envelope,
    Message,
    RoundFactory,
    RoundSetup,
    ServerParty,
)

__all__ = [
    "CentralDPAggregator",
    "DistributedDPAggregator",
    "distributed_dp_aggregator",
    "with_central_dp",
]

FloatArray = npt.NDArray[np.float64]
_RESERVED = ("bits", "scale", "noise_headroom", "client_noise", "max_weight")


class _PostProcessedServer(ServerParty):
    """Delegates the protocol to ``inner``; transforms the outcome once, on first ``result()``.
    Its ``stages`` are the inner server's (so faults can be injected at any of them)."""

    def __init__(
        self, inner: ServerParty, finish: Callable[[AggregateOutcome], AggregateOutcome]
    ) -> None:
        self.party_id = SERVER
        self.stages = tuple(inner.stages)
        self._inner = inner
        self._finish = finish
        self._outcome: AggregateOutcome | None = None

    @property
    def stage(self) -> str:
        return self._inner.stage

    def start(self) -> list[Envelope]:
        return self._inner.start()

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        return self._inner.receive(sender, message)

    def end_stage(self) -> list[Envelope]:
        return self._inner.end_stage()

    @property
    def finished(self) -> bool:
        return self._inner.finished

    def result(self) -> AggregateOutcome:
        if self._outcome is None:
            self._outcome = self._finish(self._inner.result())
        return self._outcome


def _wrap_server(
    inner: ServerParty, finish: Callable[[AggregateOutcome], AggregateOutcome]
) -> ServerParty:
    return _PostProcessedServer(inner, finish)


def _client_stream(
    seed: bytes | None, session_id: bytes, round_id: int, client: int
) -> prg.Keystream | None:
    return prg.seeded_party_stream(
        seed, label=labels.DP_ROUNDING, session_id=session_id, round_id=round_id, party=client
    )


def _poisson_cohort(
    rate: float, clients: int, *, seed: bytes | None, session_id: bytes, round_id: int
) -> list[bool]:
    """Each client's own coin: ``True`` with probability ``rate`` (CSPRNG; seeded runs derive
    one keystream per client from the seed, others draw fresh keys from the OS)."""
    if rate >= 1.0:
        return [True] * clients
    out = []
    for u in range(clients):
        stream = prg.seeded_party_stream(
            seed, label=labels.DP_CLIENT_SAMPLING, session_id=session_id, round_id=round_id,
            party=u,
        ) or prg.Keystream(prg.random_seed(), label=labels.DP_CLIENT_SAMPLING)
        out.append(bool(stream.uniform(1)[0] < rate))
    return out


def _unweighted(weights: Sequence[float] | None) -> None:
    if weights is not None and any(float(w) != 1.0 for w in weights):
        raise ConfigurationError(
            "DP aggregation sums unweighted updates: a FedAvg weight w multiplies a client's "
            "sensitivity by w. Pass weights=None and scale updates before clipping instead"
        )


def _flat(arrays: Sequence[npt.ArrayLike]) -> FloatArray:
    parts = [np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _unflat(flat: FloatArray, shapes: Sequence[tuple[int, ...]]) -> list[FloatArray]:
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(flat[start : start + size].reshape(shape).copy())
        start += size
    return out


class DistributedDPAggregator(RoundFactory):
    """SecAgg / SecAgg+ whose clients add integer noise shares (see the module docstring)."""

    def __init__(
        self, inner: SecAggAggregator, plan: DistributedPlan, *, privacy: EventSink
    ) -> None:
        self.inner = inner
        self.plan = plan
        self.privacy = privacy
        self.name = inner.name
        self.num_clients = inner.num_clients
        self.dropout_stages = inner.dropout_stages
        self._round_count = 0
        privacy.emit(
            MechanismConfigured(
                scope="user",
                party=None,
                mechanism=f"distributed-{plan.config.mechanism}",
                parameters={**plan.describe(), "protocol": inner.name,
                            "min_survivors": inner.params.min_survivors},
            )
        )

    def parameters(self) -> dict[str, Any]:
        return {**self.inner.parameters(), "distributed_dp": self.plan.describe()}

    def setup_round(
        self,
        updates: Sequence[Sequence[npt.NDArray[np.float64]]],
        *,
        weights: Sequence[float] | None,
        session_id: bytes,
        round_id: int,
        seed: bytes | None,
    ) -> RoundSetup:
        _unweighted(weights)
        if isinstance(self.privacy, PrivacyAccountant):
            worst = self.plan.round_event(
                round_id=round_id,
                survivors=self.inner.params.min_survivors,
                seeded=seed is not None,
                worst_case=True,
            )
            self.privacy.check(worst)  # raises before anything is sent
        shapes = [tuple(int(d) for d in np.shape(a)) for a in updates[0]]
        rot = rotation_seed(session_id, round_id) if self.plan.config.rotation else None
        cohort = _poisson_cohort(
            self.plan.config.client_sampling_rate, len(updates), seed=seed,
            session_id=session_id, round_id=round_id,
        )
        prepared = [
            [
                self.plan.prepare(
                    _flat(updates[u]) if cohort[u] else np.zeros(self.plan.config.dimension),
                    rotation_seed=rot,
                    stream=_client_stream(seed, session_id, round_id, u),
                )
            ]
            for u in range(len(updates))
        ]
        setup = self.inner.setup_round(
            prepared, weights=None, session_id=session_id, round_id=round_id, seed=seed
        )

        def finish(outcome: AggregateOutcome) -> AggregateOutcome:
            decoded = self.plan.decode(outcome.aggregate[0], rotation_seed=rot)
            event = self.plan.round_event(
                round_id=round_id, survivors=len(outcome.survivor_ids), seeded=seed is not None
            )
            self._emit(event, seeded=seed is not None)
            details = {
                **outcome.details,
                "distributed_dp": {
                    "survivors": len(outcome.survivor_ids),
                    "provisioned": self.plan.provisioned,
                    "noise_std": self.plan.noise_std(len(outcome.survivor_ids)),
                },
            }
            return AggregateOutcome(
                aggregate=_unflat(decoded, shapes),
                survivor_ids=outcome.survivor_ids,
                total_weight=outcome.total_weight,
                details=details,
            )

        return RoundSetup(
            server=_wrap_server(setup.server, finish),
            clients=setup.clients,
            helpers=setup.helpers,
        )

    def _emit(self, event: PrivacyEvent, *, seeded: bool) -> None:
        if seeded:
            self.privacy.emit(
                SeededNoise(scope="user", party=None, source="seeded simulation: client noise")
            )
        self.privacy.emit(event)
        self._round_count += 1


def distributed_dp_aggregator(
    *,
    distributed_dp: DistributedDP | None,
    privacy: EventSink | None = None,
    num_clients: int,
    clip: float | None = None,
    **secagg: Any,
) -> RoundFactory:
    """What ``make_aggregator("secagg"/"secagg+", ..., distributed_dp=...)`` builds.

    ``clip`` may be omitted; if given it must equal ``distributed_dp.l2_clip`` (the L2 bound).
    ``privacy`` receives the events (default: a new :class:`PrivacyAccountant`, δ = 1e-5).
    """
    problems = []
    cfg = distributed_dp if isinstance(distributed_dp, DistributedDP) else None
    if cfg is None:
        problems.append(
            "distributed_dp must be a secureagg.dp.DistributedDP, got "
            f"{type(distributed_dp).__name__}"
        )
    elif clip is not None and float(clip) != float(cfg.l2_clip):
        problems.append(
            f"with distributed_dp, clip is the L2 bound of each update: clip={clip!r} differs "
            f"from distributed_dp.l2_clip={cfg.l2_clip!r}; omit clip or make them equal"
        )
    reserved = sorted(k for k in _RESERVED if k in secagg)
    if reserved:
        problems.append(f"{reserved} are set by distributed_dp (its plan); do not pass them")
    sink: object = privacy
    if sink is not None and not isinstance(sink, EventSink):
        problems.append(f"privacy must be an event sink, got {type(sink).__name__}")
    if problems or cfg is None:
        raise ConfigurationError(problems)
    plan = cfg.plan(num_clients=num_clients)
    inner = SecAggAggregator(
        num_clients=num_clients,
        clip=float(plan.linf_clip),
        bits=plan.bits,
        scale=1.0,
        noise_headroom=plan.noise_headroom,
        client_noise=plan.noise_share,
        **secagg,
    )
    return DistributedDPAggregator(inner, plan, privacy=privacy or PrivacyAccountant())


class CentralDPAggregator(RoundFactory):
    """Any aggregator, with the server adding Gaussian noise to the (L2-clipped) sum."""

    def __init__(
        self, inner: RoundFactory, mechanism: CentralGaussian, *, privacy: EventSink
    ) -> None:
        self.inner = inner
        self.mechanism = mechanism
        self.privacy = privacy
        self.name = f"{inner.name}+central-dp"
        self.num_clients = inner.num_clients
        self.dropout_stages = inner.dropout_stages
        privacy.emit(
            MechanismConfigured(
                scope="user", party=None, mechanism="central-gaussian",
                parameters={**mechanism.describe(), "protocol": inner.name},
            )
        )
        if getattr(mechanism.noise, "seeded", False):
            privacy.emit(SeededNoise(scope="user", party=None, source="central Gaussian noise"))

    def parameters(self) -> dict[str, Any]:
        return {**self.inner.parameters(), "central_dp": self.mechanism.describe()}

    def setup_round(
        self,
        updates: Sequence[Sequence[npt.NDArray[np.float64]]],
        *,
        weights: Sequence[float] | None,
        session_id: bytes,
        round_id: int,
        seed: bytes | None,
    ) -> RoundSetup:
        _unweighted(weights)
        event = self.mechanism.round_event()
        if isinstance(self.privacy, PrivacyAccountant):
            self.privacy.check(event)
        shapes = [tuple(int(d) for d in np.shape(a)) for a in updates[0]]
        cohort = _poisson_cohort(
            self.mechanism.config.client_sampling_rate, len(updates), seed=seed,
            session_id=session_id, round_id=round_id,
        )
        size = sum(math.prod(shape) for shape in shapes)
        clipped = [  # a client whose coin did not come up takes part with a zero update
            _unflat(self.mechanism.clip(_flat(u)) if sampled else np.zeros(size), shapes)
            for u, sampled in zip(updates, cohort, strict=True)
        ]
        setup = self.inner.setup_round(
            clipped, weights=None, session_id=session_id, round_id=round_id, seed=seed
        )

        def finish(outcome: AggregateOutcome) -> AggregateOutcome:
            noisy = self.mechanism.release(_flat(outcome.aggregate))
            self.privacy.emit(event)
            return AggregateOutcome(
                aggregate=_unflat(noisy, shapes),
                survivor_ids=outcome.survivor_ids,
                total_weight=outcome.total_weight,
                details={
                    **outcome.details,
                    "central_dp": {"noise_std": self.mechanism.config.noise_std},
                },
            )

        return RoundSetup(
            server=_wrap_server(setup.server, finish), clients=setup.clients, helpers=setup.helpers
        )


def with_central_dp(
    agg: RoundFactory,
    config: CentralDP,
    *,
    privacy: EventSink | None = None,
    noise: GaussianSource | None = None,
) -> CentralDPAggregator:
    """``agg`` with central Gaussian DP (``noise``: default an OS-seeded CsprngGaussian)."""
    if not isinstance(agg, RoundFactory):
        raise ConfigurationError(f"agg must be an aggregator, got {type(agg).__name__}")
    return CentralDPAggregator(
        agg, CentralGaussian(config, noise=noise), privacy=privacy or PrivacyAccountant()
    )
