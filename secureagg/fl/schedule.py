"""Who takes part in a round and who fails: client sampling, dropouts, stragglers, seeds.

Every choice of round ``r`` is derived from the run's schedule seed and ``r`` alone, through a
CSPRNG keystream (label ``secureagg/v1/fl/schedule``): no state is carried from one round to the
next, so a run resumed from its directory draws exactly what an uninterrupted run would. The
schedule seed is stored in ``config.json``; it decides *who* is sampled and *who* drops, which
the server knows anyway (it talks to the clients), and nothing about keys, masks or noise.

A seeded run (``seed=`` for tests and benchmarks) also derives the protocol's randomness (keys,
masks, rounding) and the torch seeds of local training from the seed: reproducible and therefore
**not secret**; the run warns once with :class:`~secureagg.transport.SeededRunWarning` and is
flagged ``"seeded": true`` in its outputs. An unseeded run passes no seed to the protocol (fresh
CSPRNG randomness every round) and leaves torch's RNG alone.

Failure stages. ``"train"`` means the client never trains and never speaks; the other stages are
the aggregator's ``dropout_stages`` (``"upload"`` for plain/CKKS/Paillier; ``"advertise"``,
``"share"``, ``"masked"``, ``"unmask"`` for SecAgg/SecAgg+, plus ``"consistency"`` in malicious
mode): the client is silent from that stage on. A straggler (simulated training time above the
deadline) is silent from the upload stage (``"masked"`` for SecAgg, ``"upload"`` otherwise).

>>> s = RoundSchedule.draw(bytes(32), round_number=1, num_clients=5, per_round=3,
...                        dropout_rate=0.0, stages=("train", "upload"), explicit={})
>>> len(s.sampled), s.dropouts
(3, {})
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from secureagg.crypto import kdf, labels, prg
from secureagg.errors import ConfigurationError
from secureagg.transport import derive_sim_seed

__all__ = [
    "TRAIN_STAGE",
    "Failures",
    "RoundSchedule",
    "simulation_seed",
    "torch_seed",
    "upload_stage",
]

TRAIN_STAGE = "train"

TrainingTime = Any  # Callable[[int, int, float], float]: (round, client, measured s) -> seconds


@dataclass(frozen=True)
class Failures:
    """How clients fail during a run (all optional; the default is no failure).

    * ``dropout_rate``: each sampled client independently drops with this probability, at a stage
      drawn uniformly from ``("train", *aggregator.dropout_stages)``;
    * ``schedule``: explicit failures, ``{round: {client: stage}}`` (rounds count from 1; client
      ids are indices into ``client_loaders``); they override the random ones;
    * ``deadline``: seconds of local training allowed; slower clients are stragglers, silent from
      the upload stage;
    * ``training_time``: ``(round, client, measured_seconds) -> seconds``, the simulated training
      time compared with the deadline (default: the measured wall time). Use it to simulate slow
      devices deterministically.
    """

    dropout_rate: float = 0.0
    schedule: Mapping[int, Mapping[int, str]] = field(default_factory=dict)
    deadline: float | None = None
    training_time: TrainingTime | None = None

    def problems(self, *, num_clients: int, stages: Sequence[str]) -> list[str]:
        """Every problem with these settings (empty when valid)."""
        out: list[str] = []
        rate = self.dropout_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            out.append(f"dropout_rate must be in [0, 1], got {rate!r}")
        given: object = self.schedule
        if not isinstance(given, Mapping):
            out.append("schedule must map round -> {client: stage}")
        else:
            allowed = (TRAIN_STAGE, *stages)
            for rnd, drops in given.items():
                if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 1:
                    out.append(f"schedule: round {rnd!r} must be an integer >= 1")
                if not isinstance(drops, Mapping):
                    out.append(f"schedule[{rnd!r}] must map client -> stage")
                    continue
                for cid, stage in drops.items():
                    if isinstance(cid, bool) or not isinstance(cid, int) or not (
                        0 <= cid < num_clients
                    ):
                        out.append(
                            f"schedule[{rnd}]: client {cid!r} is not in 0..{num_clients - 1}"
                        )
                    if stage not in allowed:
                        out.append(
                            f"schedule[{rnd}][{cid}]: stage {stage!r} is not one of {list(allowed)}"
                        )
        if self.deadline is not None and (
            isinstance(self.deadline, bool)
            or not isinstance(self.deadline, int | float)
            or not (math.isfinite(self.deadline) and self.deadline > 0)
        ):
            out.append(f"deadline must be None or positive seconds, got {self.deadline!r}")
        if self.training_time is not None and not callable(self.training_time):
            out.append("training_time must be None or a function (round, client, seconds) -> s")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "dropout_rate": float(self.dropout_rate),
            "schedule": {
                str(r): {str(c): s for c, s in sorted(d.items())}
                for r, d in sorted(self.schedule.items())
            },
            "deadline": self.deadline,
            "training_time": None if self.training_time is None else repr(self.training_time),
        }


def upload_stage(stages: Sequence[str]) -> str:
    """The stage at which a client sends its (masked, encrypted or plain) update."""
    for name in ("masked", "upload"):
        if name in stages:
            return name
    return stages[0]


def earliest(stages: Sequence[str], *candidates: str | None) -> str | None:
    """The earliest of ``candidates`` in protocol order (``"train"`` before everything)."""
    order = (TRAIN_STAGE, *stages)
    present = [c for c in candidates if c is not None]
    return min(present, key=order.index) if present else None


@dataclass(frozen=True)
class RoundSchedule:
    """The sampled clients (global ids, in slot order) and who drops at which stage."""

    round_number: int
    sampled: tuple[int, ...]
    dropouts: dict[int, str]

    @classmethod
    def draw(
        cls,
        schedule_seed: bytes,
        *,
        round_number: int,
        num_clients: int,
        per_round: int,
        dropout_rate: float,
        stages: Sequence[str],
        explicit: Mapping[int, str],
    ) -> RoundSchedule:
        stream = prg.Keystream(
            schedule_seed,
            label=labels.FL_SCHEDULE,
            context=b"round" + round_number.to_bytes(8, "big"),
        )
        if per_round >= num_clients:
            sampled = list(range(num_clients))
        else:  # partial Fisher-Yates: a uniform subset, then sorted for a stable slot order
            pool = list(range(num_clients))
            for i in range(per_round):
                j = i + stream.below(num_clients - i)
                pool[i], pool[j] = pool[j], pool[i]
            sampled = sorted(pool[:per_round])
        options = (TRAIN_STAGE, *stages)
        dropouts: dict[int, str] = {}
        if dropout_rate > 0:
            for cid in sampled:
                draw = float(stream.uniform(1)[0])
                stage = options[stream.below(len(options))]
                if draw < dropout_rate:
                    dropouts[cid] = stage
        for cid, stage in explicit.items():
            if cid in sampled:
                dropouts[cid] = stage
        return cls(round_number=round_number, sampled=tuple(sampled), dropouts=dropouts)


def simulation_seed(seed: bytes | int, round_number: int) -> bytes:
    """The ``simulate(seed=...)`` of round ``round_number`` in a seeded run."""
    return derive_sim_seed(seed, context=b"fl/simulate" + round_number.to_bytes(8, "big"))


def schedule_seed_from(seed: bytes | int, *, training_only: bool = False) -> bytes:
    """The schedule seed of a seeded run (or of a run with only ``training_seed``)."""
    return derive_sim_seed(
        seed, context=b"fl/schedule/training" if training_only else b"fl/schedule"
    )


def torch_seed(seed: bytes | int, round_number: int, client: int) -> int:
    """The torch seed of ``client``'s local training in round ``round_number`` (seeded runs)."""
    material = derive_sim_seed(seed, context=b"fl/torch")
    raw = kdf.derive(
        material,
        label=labels.FL_SEEDED_TRAINING,
        context=round_number.to_bytes(8, "big") + client.to_bytes(8, "big"),
        length=8,
    )
    return int.from_bytes(raw, "big") & ((1 << 63) - 1)


def check_clients_per_round(value: object, num_clients: int) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= num_clients:
        return [
            f"clients_per_round must be None or an integer in [1, {num_clients}], got {value!r}"
        ]
    return []


def validate(problems: list[str]) -> None:
    if problems:
        raise ConfigurationError(problems)
