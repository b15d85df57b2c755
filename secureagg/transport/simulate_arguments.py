"""Argument checks and seed derivation for the simulator (every problem reported at once)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from secureagg.crypto import kdf, labels
from secureagg.errors import (
    ConfigurationError,
)
from secureagg.transport.faults import Delay, Drop, Reorder, Replay, Tamper
from secureagg.validation import is_int, shown

# ----------------------------------------------------------------------------------- seeding

SESSION_ID_BYTES = 16


def _seed_material(seed: bytes | int) -> bytes:
    if isinstance(seed, bool) or not isinstance(seed, int | bytes | bytearray):
        raise ConfigurationError(f"seed must be bytes or a non-negative int, got {shown(seed)}")
    if isinstance(seed, int):
        if seed < 0 or seed.bit_length() > 256:
            raise ConfigurationError("an integer seed must be in [0, 2^256)")
        raw = b"i" + seed.to_bytes(32, "big")
    else:
        if not seed:
            raise ConfigurationError("a bytes seed must not be empty")
        raw = b"b" + len(seed).to_bytes(4, "big") + bytes(seed)
    return raw.ljust(32, b"\x00")  # unambiguous: fixed-size or length-prefixed before padding


def derive_sim_seed(seed: bytes | int, *, context: bytes, length: int = 32) -> bytes:
    """Derive ``length`` bytes for ``context`` from a user's simulation seed (tests/benchmarks).

    Uses HKDF under the registered label ``secureagg/v1/sim/seed``.
    """
    return kdf.derive(_seed_material(seed), label=labels.SIM_SEED, context=context, length=length)


def seeded_round(seed: bytes | int, round_id: int) -> tuple[bytes, bytes]:
    """``(round_seed, session_id)`` of round ``round_id`` of a seeded run, as :func:`simulate`
    derives them: what a deployed engine must use for a seeded run to give the simulated run's
    bytes. Seeded runs are NOT secret (tests and benchmarks only)."""
    round_seed = derive_sim_seed(seed, context=b"round-seed" + int(round_id).to_bytes(8, "big"))
    return round_seed, derive_sim_seed(seed, context=b"session-id", length=SESSION_ID_BYTES)


# -------------------------------------------------------------------------------- validation


def _validate_dropouts(
    dropouts: Mapping[int, str] | None,
    faults: Sequence[object],
    *,
    num_clients: int,
    dropout_stages: tuple[str, ...],
    problems: list[str],
) -> dict[int, str]:
    merged: dict[int, str] = {}
    given: object = dropouts
    requested: list[tuple[object, object, str]] = []
    if isinstance(given, Mapping):
        requested += [(k, v, "dropouts") for k, v in given.items()]
    elif given is not None:
        problems.append(
            f"dropouts must be a mapping client id -> stage, got {type(given).__name__}"
        )
    requested += [(f.client, f.stage, "Drop fault") for f in faults if isinstance(f, Drop)]
    for cid, stage, source in requested:
        ok = True
        if not isinstance(cid, int) or isinstance(cid, bool) or not 0 <= cid < num_clients:
            problems.append(f"{source}: client id {shown(cid)} is not in 0..{num_clients - 1}")
            ok = False
        if stage not in dropout_stages:
            problems.append(
                f"{source}: stage {shown(stage)} for client {shown(cid)} is not one of the "
                f"aggregator's dropout stages {list(dropout_stages)}"
            )
            ok = False
        if ok and isinstance(cid, int) and isinstance(stage, str):
            if cid in merged and merged[cid] != stage:
                problems.append(
                    f"client {cid} is dropped at two stages ({shown(merged[cid])} and "
                    f"{shown(stage)})"
                )
            merged[cid] = stage
    return merged


def _validate_faults(faults: Iterable[object], *, num_clients: int, problems: list[str]) -> None:
    for fault in faults:
        if not isinstance(fault, Drop | Delay | Reorder | Tamper | Replay):
            problems.append(
                f"faults: {shown(fault)} is not a fault (use Drop, Delay, Reorder, Tamper or "
                "Replay from secureagg.transport.faults)"
            )
            continue
        if not isinstance(fault, Reorder) and (
            not is_int(fault.client) or not 0 <= fault.client < num_clients
        ):
            problems.append(f"{shown(fault)}: client id is not in 0..{num_clients - 1}")
        if isinstance(fault, Tamper):
            if not is_int(fault.offset):
                problems.append(f"{shown(fault)}: offset must be an integer")
            if not is_int(fault.xor) or not 1 <= fault.xor <= 255:
                problems.append(f"{shown(fault)}: xor must be an integer in 1..255")
        if isinstance(fault, Replay):
            if (fault.from_stage is None) == (fault.captured is None):
                problems.append(f"{shown(fault)}: give exactly one of from_stage and captured")
            elif fault.captured is not None and (
                not isinstance(fault.captured, bytes) or not fault.captured
            ):
                problems.append(f"{shown(fault)}: captured must be non-empty bytes")


def _validate_fault_stages(
    faults: Sequence[object], *, stages: Sequence[str], problems: list[str]
) -> None:
    order = list(stages)
    for fault in faults:
        if isinstance(fault, Drop):
            continue  # checked against dropout_stages
        stage = getattr(fault, "stage", None)
        if stage not in order:
            problems.append(
                f"{shown(fault)}: stage {shown(stage)} is not one of the server's stages {order}"
            )
            continue
        if isinstance(fault, Replay) and fault.from_stage is not None:
            if fault.from_stage not in order:
                problems.append(
                    f"{shown(fault)}: from_stage is not one of the server's stages {order}"
                )
            elif order.index(fault.from_stage) > order.index(stage):
                problems.append(
                    f"{shown(fault)}: from_stage comes after stage; nothing to replay yet"
                )
