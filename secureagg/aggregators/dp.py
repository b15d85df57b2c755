"""Aggregators with differential privacy: distributed DP inside SecAgg, central DP around any.

Composition by wrapping, not new protocols: :func:`with_distributed_dp`, :func:`with_central_dp`
and :func:`with_malicious_server` each take an aggregator and return one, and
:func:`~secureagg.aggregators.make_aggregator` applies the same wrappers for its
``distributed_dp=``, ``central_dp=`` and ``privacy=`` keywords. :class:`DistributedDPAggregator`
wraps a
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
>>> base = sa.make_aggregator("secagg", num_clients=4, clip=1.0, dropout_rate=0.0,
...                           corrupt_rate=0.0)
>>> agg = with_distributed_dp(base, DistributedDP(l2_clip=1.0, noise_multiplier=1e-6, dimension=3))
>>> agg.name, agg.inner.encoder.effective_scale
('secagg', 1.0)
>>> res = sa.simulate(agg, [[np.full(3, 0.1)] for _ in range(4)], seed=1)    # doctest: +SKIP
>>> np.round(res.aggregate[0], 3).tolist()                                      # doctest: +SKIP
[0.4, 0.4, 0.4]
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.aggregators.secagg import SecAggAggregator
from secureagg.crypto import labels, prg
from secureagg.crypto.signing import SigningKey
from secureagg.dp.accounting import PrivacyAccountant
from secureagg.dp.central import CentralDP, CentralGaussian, GaussianSource
from secureagg.dp.distributed import DistributedDP, DistributedPlan, rotation_seed
from secureagg.dp.events import EventSink, MechanismConfigured, PrivacyEvent, SeededNoise
from secureagg.errors import ConfigurationError
from secureagg.protocols.base import (
    SERVER,
    AggregateOutcome,
    ClientParty,
    Envelope,
    Message,
    Party,
    Provision,
    RoundFactory,
    ServerParty,
    check_update,
)
from secureagg.protocols.spec import RoundSpec, SpecCache

__all__ = [
    "CentralDPAggregator",
    "DistributedDPAggregator",
    "with_central_dp",
    "with_distributed_dp",
    "with_malicious_server",
]

FloatArray = npt.NDArray[np.float64]
_RESERVED = ("bits", "scale", "noise_headroom", "client_noise", "integer_noise", "max_weight")


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


def _sampled(
    rate: float, client: int, *, seed: bytes | None, session_id: bytes, round_id: int
) -> bool:
    """The client's own coin: ``True`` with probability ``rate`` (CSPRNG; a seeded run derives
    one keystream per client from the seed, others draw a fresh key from the OS)."""
    if rate >= 1.0:
        return True
    stream = prg.seeded_party_stream(
        seed, label=labels.DP_CLIENT_SAMPLING, session_id=session_id, round_id=round_id,
        party=client,
    ) or prg.Keystream(prg.random_seed(), label=labels.DP_CLIENT_SAMPLING)
    return bool(stream.uniform(1)[0] < rate)


def _unit_weight(client: int, weight: float | None) -> None:
    if weight is not None and float(weight) != 1.0:
        _unweighted([weight])


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


class _DPWrapper(RoundFactory):
    """What both DP wrappers share: the inner aggregator's protocol, model digest and key
    material; unweighted round specs; the inner round's spec derived once per spec; and the
    inner parties for everything the wrapper does not change."""

    def __init__(self, inner: RoundFactory, *, privacy: EventSink) -> None:
        self.inner = inner
        self.privacy = privacy
        self.num_clients = inner.num_clients
        self.dropout_stages = inner.dropout_stages
        self.update_stage = inner.update_stage
        self._inner_specs: SpecCache[RoundSpec] = SpecCache()

    @property
    def protocol(self) -> str:
        return self.inner.protocol

    def model_digest(self) -> bytes:
        return self.inner.model_digest()

    def provision(
        self, *, session_id: bytes, round_id: int, seed: bytes | None
    ) -> Provision:
        return self.inner.provision(session_id=session_id, round_id=round_id, seed=seed)

    def round_spec(
        self,
        *,
        shapes: Sequence[Sequence[int]],
        weighted: bool,
        session_id: bytes,
        round_id: int,
        public_keys: Mapping[int, bytes] | None = None,
    ) -> RoundSpec:
        # Unweighted sums only: a client refuses a weight other than 1 (client_from_spec).
        return super().round_spec(
            shapes=shapes, weighted=False, session_id=session_id, round_id=round_id,
            public_keys=public_keys,
        )

    def _inner_shapes(self, spec: RoundSpec) -> Sequence[Sequence[int]]:
        """The shapes of what the wrapper's clients hand the inner round."""
        return spec.shapes

    def _inner_spec(self, spec: RoundSpec) -> RoundSpec:
        """The inner round's spec: the inner aggregator's options, this round's ids and keys."""
        return self._inner_specs.get(spec, lambda: RoundSpec.build(
            protocol=self.inner.protocol, options=self.inner.spec_options(),
            session_id=spec.session_id, round_id=spec.round_id, num_clients=spec.num_clients,
            shapes=self._inner_shapes(spec), weighted=False, public_keys=spec.public_keys,
            model_digest=spec.model_digest,
        ))

    def restore_client(self, spec: RoundSpec, state: Message, *, secret: Any = None) -> ClientParty:
        """The inner client, restored: its state holds what the wrapper's client prepared."""
        return self.inner.restore_client(self._inner_spec(spec), state, secret=secret)

    @abc.abstractmethod
    def _prepare(
        self, spec: RoundSpec, client_id: int, update: Sequence[npt.NDArray[np.floating[Any]]],
        *, weight: float | None, seed: bytes | None,
    ) -> list[npt.NDArray[Any]]:
        """What the wrapper's client hands the inner round instead of ``update``."""

    def client_from_spec(
        self,
        spec: RoundSpec,
        client_id: int,
        update: Sequence[npt.NDArray[np.floating[Any]]],
        *,
        weight: float | None = None,
        secret: Any = None,
        seed: bytes | None = None,
    ) -> ClientParty:
        """The inner client of what :meth:`_prepare` made of the update."""
        prepared = self._prepare(spec, client_id, update, weight=weight, seed=seed)
        return self.inner.client_from_spec(
            self._inner_spec(spec), client_id, prepared, secret=secret, seed=seed
        )

    def client_awaiting_update(
        self, spec: RoundSpec, client_id: int, *, secret: Any = None, seed: bytes | None = None
    ) -> ClientParty:
        """The inner client, built without its update."""
        return self.inner.client_awaiting_update(
            self._inner_spec(spec), client_id, secret=secret, seed=seed)

    def supply_update(
        self,
        spec: RoundSpec,
        client: Any,
        update: Sequence[npt.NDArray[np.floating[Any]]],
        *,
        weight: float | None = None,
        seed: bytes | None = None,
    ) -> None:
        """The inner client is given what :meth:`_prepare` makes of the update (the same as
        :meth:`client_from_spec` would have: the same seed, the same coin and rounding)."""
        party = int(getattr(client, "party_id", -1))
        prepared = self._prepare(spec, party, update, weight=weight, seed=seed)
        self.inner.supply_update(self._inner_spec(spec), client, prepared, seed=seed)

    def helpers_from_spec(
        self, spec: RoundSpec, secrets: Mapping[int, Any], *, seed: bytes | None = None
    ) -> dict[int, Party]:
        return self.inner.helpers_from_spec(self._inner_spec(spec), secrets, seed=seed)

    def restore_helper(self, spec: RoundSpec, state: Message, secrets: Mapping[int, Any]) -> Party:
        """The inner helper, restored (it was built from, and its state is bound to, the inner
        round's spec)."""
        return self.inner.restore_helper(self._inner_spec(spec), state, secrets)


class DistributedDPAggregator(_DPWrapper):
    """SecAgg / SecAgg+ whose clients add integer noise shares (see the module docstring)."""

    def __init__(
        self,
        inner: SecAggAggregator,
        plan: DistributedPlan,
        *,
        privacy: EventSink,
        base_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(inner, privacy=privacy)
        self.inner: SecAggAggregator = inner
        self.plan = plan
        self.name = inner.name
        #: The options of the aggregator before the plan rebuilt it (what a spec carries).
        self.base_options: dict[str, Any] = dict(base_options or inner.spec_options())
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

    def spec_options(self) -> dict[str, Any]:
        return {**self.base_options, "distributed_dp": dataclasses.asdict(self.plan.config)}

    def _inner_shapes(self, spec: RoundSpec) -> Sequence[Sequence[int]]:
        """One integer vector of the plan's (padded) length."""
        if spec.dimension != self.plan.config.dimension:
            raise ConfigurationError(
                f"distributed_dp was planned for {self.plan.config.dimension} values, the round "
                f"has {spec.dimension}"
            )
        return [(self.plan.padded_dimension,)]

    def _rotation(self, spec: RoundSpec) -> bytes | None:
        return rotation_seed(spec.session_id, spec.round_id) if self.plan.config.rotation else None

    def server_from_spec(self, spec: RoundSpec, *, seed: bytes | None = None) -> ServerParty:
        """The inner server, its sum decoded; the budget is checked first (nothing runs past it)."""
        if isinstance(self.privacy, PrivacyAccountant):
            worst = self.plan.round_event(
                round_id=spec.round_id,
                survivors=self.inner.params.min_survivors,
                seeded=seed is not None,
                worst_case=True,
            )
            self.privacy.check(worst)  # raises before anything is sent
        inner = self.inner.server_from_spec(self._inner_spec(spec), seed=seed)
        rot, shapes, round_id = self._rotation(spec), spec.shapes, spec.round_id

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

        return _wrap_server(inner, finish)

    def _prepare(
        self, spec: RoundSpec, client_id: int, update: Sequence[npt.NDArray[np.floating[Any]]],
        *, weight: float | None, seed: bytes | None,
    ) -> list[npt.NDArray[Any]]:
        """The client flips its own sampling coin, then clips, rotates, scales and rounds its
        update (a zero update if the coin did not come up) before the inner round masks it."""
        _unit_weight(client_id, weight)
        arrays = check_update(spec, client_id, update)
        session_id, round_id = spec.session_id, spec.round_id
        sampled = _sampled(self.plan.config.client_sampling_rate, client_id, seed=seed,
                           session_id=session_id, round_id=round_id)
        return [self.plan.prepare(
            _flat(arrays) if sampled else np.zeros(self.plan.config.dimension),
            rotation_seed=self._rotation(spec),
            stream=_client_stream(seed, session_id, round_id, client_id),
        )]

    def _emit(self, event: PrivacyEvent, *, seeded: bool) -> None:
        if seeded:
            self.privacy.emit(
                SeededNoise(scope="user", party=None, source="seeded simulation: client noise")
            )
        self.privacy.emit(event)
        self._round_count += 1


def with_distributed_dp(
    agg: RoundFactory,
    config: DistributedDP,
    *,
    privacy: EventSink | None = None,
) -> DistributedDPAggregator:
    """``agg`` (a ``"secagg"``/``"secagg+"`` aggregator) with distributed DP inside the sum.

    The clients add integer noise shares before masking, so the server sees only the noised sum.
    ``agg`` is rebuilt with the plan's encoder (``scale=1``, the L-inf clip, bit width and noise
    headroom of the :class:`~secureagg.dp.distributed.DistributedPlan`); its ``clip`` must equal
    ``config.l2_clip`` (the L2 bound of each update), and it must not set ``bits``, ``scale``,
    ``noise_headroom``, ``client_noise`` or ``max_weight`` (the plan does). ``privacy`` receives
    the events (default: a new :class:`PrivacyAccountant`, delta = 1e-5).
    """
    problems = []
    given: object = config
    cfg = given if isinstance(given, DistributedDP) else None
    if cfg is None:
        problems.append(
            f"distributed_dp must be a secureagg.dp.DistributedDP, got {type(config).__name__}"
        )
    inner: SecAggAggregator | None = agg if isinstance(agg, SecAggAggregator) else None
    if inner is None:
        problems.append(
            "distributed DP adds the clients' integer noise shares inside masked secure "
            f"aggregation: it wraps a 'secagg' or 'secagg+' aggregator, got "
            f"{getattr(agg, 'name', type(agg).__name__)!r} (use central_dp for the others)"
        )
    else:
        options = inner.options
        if cfg is not None and float(options["clip"]) != float(cfg.l2_clip):
            problems.append(
                f"with distributed_dp, clip is the L2 bound of each update: clip="
                f"{options['clip']!r} differs from distributed_dp.l2_clip={cfg.l2_clip!r}; omit "
                "clip or make them equal"
            )
        defaults = {"bits": None, "scale": None, "noise_headroom": 0, "client_noise": None,
                    "integer_noise": None, "max_weight": 1}
        reserved = sorted(k for k in _RESERVED if options.get(k) != defaults[k])
        if reserved:
            problems.append(f"{reserved} are set by distributed_dp (its plan); do not pass them")
    sink: object = privacy
    if sink is not None and not isinstance(sink, EventSink):
        problems.append(f"privacy must be an event sink, got {type(sink).__name__}")
    if problems or cfg is None or inner is None:
        raise ConfigurationError(problems)
    plan = cfg.plan(num_clients=inner.num_clients)
    rebuilt = inner.with_options(
        clip=float(plan.linf_clip),
        bits=plan.bits,
        scale=1.0,
        noise_headroom=plan.noise_headroom,
        client_noise=plan.noise_share,
    )
    return DistributedDPAggregator(
        rebuilt, plan, privacy=privacy or PrivacyAccountant(), base_options=inner.spec_options()
    )


def with_malicious_server(
    agg: RoundFactory, *, identity_keys: Mapping[int, SigningKey] | None = None
) -> RoundFactory:
    """``agg`` (``"secagg"``/``"secagg+"``) against a malicious server: signed key adverts from a
    client registry (``identity_keys``, generated if omitted) and a consistency round.

    The same as ``make_aggregator(..., threat="malicious")``; the degree and threshold are chosen
    anew for that threat model unless ``agg`` was given explicit ones (validated for it).
    """
    if not isinstance(agg, SecAggAggregator):
        raise ConfigurationError(
            "malicious-server mode is a mode of masked secure aggregation: it wraps a 'secagg' "
            f"or 'secagg+' aggregator, got {getattr(agg, 'name', type(agg).__name__)!r}"
        )
    return agg.with_options(threat="malicious", identity_keys=identity_keys)


class CentralDPAggregator(_DPWrapper):
    """Any aggregator, with the server adding Gaussian noise to the (L2-clipped) sum."""

    def __init__(
        self, inner: RoundFactory, mechanism: CentralGaussian, *, privacy: EventSink
    ) -> None:
        super().__init__(inner, privacy=privacy)
        self.mechanism = mechanism
        self.name = f"{inner.name}+central-dp"
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

    def spec_options(self) -> dict[str, Any]:
        return {**self.inner.spec_options(),
                "central_dp": dataclasses.asdict(self.mechanism.config)}

    def server_from_spec(self, spec: RoundSpec, *, seed: bytes | None = None) -> ServerParty:
        """The inner server; the trusted server noises its sum (budget checked first)."""
        event = self.mechanism.round_event()
        if isinstance(self.privacy, PrivacyAccountant):
            self.privacy.check(event)
        inner = self.inner.server_from_spec(self._inner_spec(spec), seed=seed)
        shapes = spec.shapes

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

        return _wrap_server(inner, finish)

    def _prepare(
        self, spec: RoundSpec, client_id: int, update: Sequence[npt.NDArray[np.floating[Any]]],
        *, weight: float | None, seed: bytes | None,
    ) -> list[npt.NDArray[Any]]:
        """The client flips its own sampling coin and clips its update to the L2 bound (a zero
        update if the coin did not come up) before the inner round."""
        _unit_weight(client_id, weight)
        arrays = check_update(spec, client_id, update)
        sampled = _sampled(self.mechanism.config.client_sampling_rate, client_id, seed=seed,
                           session_id=spec.session_id, round_id=spec.round_id)
        return _unflat(
            self.mechanism.clip(_flat(arrays)) if sampled else np.zeros(spec.dimension),
            spec.shapes,
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
