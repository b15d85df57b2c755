"""The configuration of a federated run: its defaults, its aggregator and its ``config.json``.

:class:`RunConfiguration` is the base of :class:`~secureagg.fl.FederatedRun` that holds the
settings fixed at construction (the arguments, checked by :mod:`secureagg.fl.run_arguments`, and
what they resolve to), builds the run's aggregator (one per number of clients, cached) and states
the configuration as the JSON document of ``config.json``.

Invariants: the configuration is public (protocol and the aggregator's parameters, clip, clients,
weighting and weights, failures, DP settings, the model state's entries, versions, and the seeds
of the public schedule: a seeded run's seed is NOT secret). A run is resumed only with the
configuration it was created with: every field of :data:`RESUME_KEYS` must match
(:func:`resume_mismatches`), so a resumed run cannot silently change its protocol, its clipping,
its weights or its privacy. Seeds are stored so that they read back the same
(:func:`seed_json`, :func:`seed_from_json`); every other value is made JSON-safe by
:func:`jsonable` (a non-finite float becomes ``null``).

>>> jsonable({"a": (1, 2.0, float("nan"))})
{'a': [1, 2.0, None]}
>>> seed_from_json(seed_json(b"\\x01"))
b'\\x01'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import secureagg
from secureagg.aggregators import make_aggregator
from secureagg.dp.torch_import import require_torch
from secureagg.errors import ConfigurationError, InvalidInputError
from secureagg.fl.model_state import StateCodec
from secureagg.fl.pool import ClientPool
from secureagg.fl.privacy import FederatedDP, PrivacyController
from secureagg.fl.records import RoundRecord
from secureagg.fl.rundir import FederatedRunDirectory
from secureagg.fl.schedule import Failures
from secureagg.protocols.base import RoundFactory

if TYPE_CHECKING:
    import torch
else:
    torch = require_torch()

__all__ = [
    "DEFAULT_CLIP",
    "RESUME_KEYS",
    "AggregatorSpec",
    "RunConfiguration",
    "Weighting",
    "jsonable",
    "resume_mismatches",
    "seed_from_json",
    "seed_json",
]

DEFAULT_CLIP = 1.0

AggregatorSpec = str | Callable[[int, int], RoundFactory]
Weighting = Literal["auto", "examples", "uniform"]

#: Fields of config.json that must match when a run is resumed.
RESUME_KEYS = (
    "protocol",
    "aggregator_options",
    "clip",
    "num_clients",
    "clients_per_round",
    "weighting",
    "client_weights",
    "server_lr",
    "failures",
    "seeded",
    "seed",
    "training_seed",
    "codec",
    "privacy",
)


def seed_json(seed: bytes | int | None) -> Any:
    if seed is None:
        return None
    if isinstance(seed, int):
        return seed
    return {"hex": bytes(seed).hex()}


def seed_from_json(value: Any) -> bytes | int | None:
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, dict) and isinstance(value.get("hex"), str):
        return bytes.fromhex(value["hex"])
    raise InvalidInputError(f"config.json: cannot read the seed {value!r}")


def jsonable(value: Any) -> Any:
    """A JSON-safe copy: numbers, strings, lists, dicts; other objects by ``repr``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return repr(value)


def resume_mismatches(stored: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """The fields of :data:`RESUME_KEYS` on which a stored ``config.json`` and ``config`` differ."""
    return [
        f"{key}: the run directory has {stored.get(key)!r}, this run {config.get(key)!r}"
        for key in RESUME_KEYS
        if jsonable(stored.get(key)) != jsonable(config.get(key))
    ]


class RunConfiguration:
    """The settings of a federated run, its aggregator and its ``config.json`` (module docstring).

    :class:`~secureagg.fl.FederatedRun` sets every attribute below in its constructor.
    """

    model: torch.nn.Module
    train: Callable[..., Any]
    client_loaders: list[Any]
    evaluate: Callable[[torch.nn.Module], Mapping[str, Any]] | None
    aggregator_spec: AggregatorSpec
    aggregator_options: dict[str, Any]
    clip: float
    rounds: int
    num_clients: int
    per_round: int
    server_lr: float
    server_lr_schedule: Callable[[int], float] | None
    _server_steps: list[float]
    weighting: Literal["examples", "uniform"]
    optimizer_factory: Callable[[Any], Any] | None
    failures: Failures
    keep_raw: bool
    keep_messages: bool
    torch_threads: int | None
    show_progress: bool
    round_summary: Callable[[Mapping[str, Any], int], str]
    on_round: Callable[[RoundRecord], None] | None
    codec: StateCodec
    workers: int
    pool: ClientPool | None
    weights: list[int]
    max_weight: int
    run_dir: FederatedRunDirectory | None
    seed: bytes | int | None
    seeded: bool
    training_seed: int | None
    #: what torch's per-(round, client) seeds derive from (None: torch's RNG is left alone)
    _torch_seed_source: bytes | int | None
    schedule_seed: bytes
    dp: FederatedDP | None
    privacy: PrivacyController | None
    _aggregators: dict[int, RoundFactory]
    dropout_stages: tuple[str, ...]
    config: dict[str, Any]

    def _aggregator(self, num_clients: int) -> RoundFactory:
        agg = self._aggregators.get(num_clients)
        if agg is not None:
            return agg
        max_weight = self.max_weight if self.weighting == "examples" else 1
        spec = self.aggregator_spec
        if isinstance(spec, str) and self.privacy is not None and self.privacy.dp.user_level:
            options: dict[str, Any] = dict(self.aggregator_options)
            if self.privacy.dp.central_noise_multiplier is not None:
                options.setdefault("clip", self.clip)
            agg = self.privacy.aggregator(spec, num_clients=num_clients, options=options)
        elif isinstance(spec, str):
            options = {"num_clients": num_clients, "clip": self.clip}
            if spec != "plain" and max_weight > 1:
                options["max_weight"] = max_weight
            options.update(self.aggregator_options)
            agg = make_aggregator(spec, **options)
        else:
            agg = spec(num_clients, max_weight)
            if not isinstance(agg, RoundFactory):
                raise ConfigurationError(
                    f"the aggregator factory returned {type(agg).__name__}, not an aggregator"
                )
        if agg.num_clients != num_clients:
            raise ConfigurationError(
                f"the aggregator was built for {agg.num_clients} clients, {num_clients} needed"
            )
        self._aggregators[num_clients] = agg
        return agg

    @property
    def protocol(self) -> str:
        return self._aggregator(self.per_round).name

    def _config(self) -> dict[str, Any]:
        agg = self._aggregator(self.per_round)
        return {
            "format": "secureagg/fl-config/v1",
            "command": "federated",
            "protocol": agg.name,
            "aggregator_options": jsonable(self.aggregator_options),
            "parameters": jsonable(agg.parameters()),
            "clip": self.clip,
            "num_clients": self.num_clients,
            "clients": self.num_clients,
            "clients_per_round": self.per_round,
            "weighting": self.weighting,
            "client_weights": self.weights,
            "max_weight": self.max_weight,
            "server_lr": self.server_lr,
            "server_lr_per_round": (
                self._server_steps if self.server_lr_schedule is not None else None
            ),
            "rounds": self.rounds,
            "workers": self.workers,
            "failures": self.failures.to_dict(),
            "seeded": self.seeded,
            "seed": seed_json(self.seed),
            "training_seed": self.training_seed,
            "schedule_seed": (
                None if self.seeded or self.training_seed is not None else self.schedule_seed.hex()
            ),
            "privacy": None if self.dp is None else jsonable(self.dp.describe()),
            "codec": self.codec.describe(),
            "secureagg_version": secureagg.__version__,
            "torch_version": str(torch.__version__),
        }
