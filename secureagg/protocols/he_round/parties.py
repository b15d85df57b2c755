"""The parties of an HE aggregation round: client, server (streaming sum) and key holder.

See :mod:`secureagg.protocols.he_round` for the roles, what each learns and the collusion caveat.
Each party keeps an explicit stage; anything out of stage, from the wrong sender, from another
round, session or key, or a duplicate raises :class:`~secureagg.errors.ProtocolError` naming the
stage and the sender.

>>> HEServer.stages, default_min_clients(20), default_min_clients(3)
(('upload', 'release'), 10, 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.crypto import labels, prg
from secureagg.crypto.encoding import require_finite
from secureagg.errors import (
    ConfigurationError,
    InsufficientSurvivors,
    InvalidInputError,
    MalformedMessage,
    ProtocolError,
)
from secureagg.he.backend import Accumulator, Decryptor, Encryptor
from secureagg.protocols.base import (
    KEY_HOLDER,
    SERVER,
    AggregateOutcome,
    ClientParty,
    Envelope,
    Message,
    Party,
    ServerParty,
)
from secureagg.protocols.he_round.scheme import HEScheme

__all__ = [
    "RELEASE",
    "STAGES",
    "UPLOAD",
    "HEClient",
    "HEKeyHolder",
    "HEServer",
    "default_min_clients",
    "seeded_stream",
]

UPLOAD = "upload"
RELEASE = "release"
STAGES = (UPLOAD, RELEASE)


def seeded_stream(
    seed: bytes | None, session_id: bytes, round_id: int, party: int, purpose: bytes
) -> prg.Keystream | None:
    """The keystream of one party and purpose in a seeded (test/benchmark) run, else None.

    Label ``secureagg/v1/he/seeded-party``; context ``session || round || party || purpose``.
    """
    return prg.seeded_party_stream(
        seed, label=labels.HE_SEEDED_PARTY, session_id=session_id, round_id=round_id,
        party=party, purpose=purpose,
    )


def default_min_clients(num_clients: int) -> int:
    """The default release threshold: half the clients, and never fewer than two."""
    return max(2, math.ceil(num_clients / 2))


# ------------------------------------------------------------------------------ helpers


def _bad(message: str, *, stage: str, sender: int) -> ProtocolError:
    return ProtocolError(message, stage=stage, node_ids=[sender])


def _check_round(msg: Any, *, session_id: bytes, round_id: int, fp: bytes, stage: str,
                 sender: int) -> None:
    if msg.session_id != session_id or msg.round_id != round_id:
        raise _bad("message from another session or round (replay?) refused", stage=stage,
                   sender=sender)
    if msg.key_fingerprint != fp:
        raise _bad(
            "message under another key (mismatched context or public key) refused",
            stage=stage,
            sender=sender,
        )


def _check_ids(session_id: bytes, round_id: int, problems: list[str]) -> None:
    if not isinstance(session_id, bytes) or not session_id:
        problems.append("session_id must be non-empty bytes")
    if isinstance(round_id, bool) or not isinstance(round_id, int) or round_id < 0:
        problems.append(f"round_id must be a non-negative integer, got {round_id!r}")


def _check_counts(num_clients: int, min_clients: int, problems: list[str]) -> None:
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 2:
        problems.append(
            f"num_clients must be an integer >= 2 (HE aggregation never decrypts one client's "
            f"update alone), got {num_clients!r}"
        )
    elif (
        isinstance(min_clients, bool)
        or not isinstance(min_clients, int)
        or not 2 <= min_clients <= num_clients
    ):
        problems.append(
            f"min_clients must be an integer in [2, num_clients={num_clients}] (a single "
            f"client's update is never decrypted alone), got {min_clients!r}"
        )


# ------------------------------------------------------------------------------ client


class HEClient(ClientParty):
    """Encrypts its update when the server asks, once.

    NaN/Inf raise :class:`~secureagg.errors.NonFiniteInputError` at construction, before anything
    is sent.

    With ``precompute=True``, :meth:`precompute` - called by the driver *before* the round, and
    timed apart from it (``metrics["offline"]`` of :func:`secureagg.simulate`) - fills the
    encryptor's pool with what this round's upload needs (Paillier blinding factors, CKKS
    encryptions of zero); the upload then only encodes and combines. Without it, or for whatever
    the pool lacks, encryption draws fresh randomness online.
    """

    def __init__(
        self,
        client_id: int,
        update: Sequence[npt.NDArray[np.floating[Any]]],
        *,
        scheme: HEScheme,
        encryptor: Encryptor,
        session_id: bytes,
        round_id: int,
        weight: float = 1.0,
        rng: Any = None,
        precompute: bool = False,
    ) -> None:
        problems: list[str] = []
        _check_ids(session_id, round_id, problems)
        if isinstance(client_id, bool) or not isinstance(client_id, int) or client_id < 0:
            problems.append(f"client_id must be a non-negative integer, got {client_id!r}")
        if problems:
            raise ConfigurationError(problems)
        arrays = [np.asarray(a) for a in update]
        if not arrays:
            raise InvalidInputError(f"client {client_id}: the update holds no tensors")
        for index, arr in enumerate(arrays):
            if arr.dtype.kind != "f":
                arrays[index] = arr = arr.astype(np.float64)
            require_finite(arr, where=f"client {client_id}, tensor {index}")
        if sum(int(a.size) for a in arrays) != scheme.dimension:
            raise InvalidInputError(
                f"client {client_id}: the update has {sum(int(a.size) for a in arrays)} values, "
                f"the round expects {scheme.dimension}"
            )
        self.party_id = client_id
        self.scheme = scheme
        self.encryptor = encryptor
        self.session_id = session_id
        self.round_id = round_id
        self.weight = weight
        self._arrays = arrays
        self._rng = rng
        self.precompute_enabled = bool(precompute)
        self.precomputed = 0
        self._stage = "await-request"

    @property
    def stage(self) -> str:
        return self._stage

    def precompute(self) -> int:
        """Offline, before the upload request: fill the encryptor's pool for this round's upload.

        Returns how many ciphertexts' worth were precomputed (0 when ``precompute`` is off, when
        the pool already held enough, or after the upload). Sends nothing.
        """
        if not self.precompute_enabled or self._stage != "await-request":
            return 0
        made = self.encryptor.prefill(self.scheme.payload_length)
        self.precomputed += made
        return made

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        stage = self._stage
        if sender != SERVER:
            raise _bad(f"message from party {sender}, expected the server", stage=stage,
                       sender=sender)
        if not isinstance(message, self.scheme.request_type):
            raise _bad(f"expected {self.scheme.request_type.KIND}, got {message.KIND}",
                       stage=stage, sender=sender)
        if stage != "await-request":
            raise _bad("second upload request refused", stage=stage, sender=self.party_id)
        _check_round(message, session_id=self.session_id, round_id=self.round_id,
                     fp=self.encryptor.key_fingerprint, stage=stage, sender=self.party_id)
        self._stage = "done"
        chunks, clipped = self.scheme.client_chunks(
            self._arrays,
            weight=self.weight,
            chunk_size=self.encryptor.values_per_ciphertext,
            rng=self._rng,
        )
        ciphertexts = tuple(
            ct for chunk in chunks for ct in self.encryptor.encrypt(chunk)
        )
        self.clipped = clipped()
        upload = self.scheme.upload_type(
            session_id=self.session_id,
            round_id=self.round_id,
            key_fingerprint=self.encryptor.key_fingerprint,
            ciphertexts=ciphertexts,
        )
        return [Envelope(self.party_id, SERVER, upload)]


# ------------------------------------------------------------------------------ server


class HEServer(ServerParty):
    """Adds uploads into running ciphertexts; asks the key holder for the release."""

    stages: Sequence[str] = STAGES

    def __init__(
        self,
        *,
        scheme: HEScheme,
        accumulator: Accumulator,
        key_fingerprint: bytes,
        num_clients: int,
        min_clients: int,
        shapes: Sequence[tuple[int, ...]],
        session_id: bytes,
        round_id: int,
    ) -> None:
        problems: list[str] = []
        _check_ids(session_id, round_id, problems)
        _check_counts(num_clients, min_clients, problems)
        if problems:
            raise ConfigurationError(problems)
        self.scheme = scheme
        self.num_clients = num_clients
        self.min_clients = min_clients
        self.session_id = session_id
        self.round_id = round_id
        self.key_fingerprint = key_fingerprint
        self._shapes = [tuple(int(d) for d in s) for s in shapes]
        self._accumulator: Accumulator | None = accumulator
        self._accepted: set[int] = set()
        self._refused: dict[int, str] = {}
        self._contributors: tuple[int, ...] = ()
        self._stage = "init"
        self._result: AggregateOutcome | None = None
        self._noise_std = 0.0

    @property
    def stage(self) -> str:
        return self._stage

    @property
    def finished(self) -> bool:
        return self._result is not None

    @property
    def accumulator(self) -> Accumulator | None:
        """The running sums while uploads are collected (None once they left for the key holder)."""
        return self._accumulator

    @property
    def held_ciphertexts(self) -> int:
        """Ciphertexts the server holds now: one per chunk position, whatever the client count."""
        return 0 if self._accumulator is None else self._accumulator.held_ciphertexts

    def start(self) -> list[Envelope]:
        if self._stage != "init":
            raise ProtocolError("start() called twice", stage=self._stage)
        self._stage = UPLOAD
        request = self.scheme.request_type(
            session_id=self.session_id, round_id=self.round_id,
            key_fingerprint=self.key_fingerprint,
        )
        return [Envelope(SERVER, cid, request) for cid in range(self.num_clients)]

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        stage = self._stage
        if stage == UPLOAD:
            self._on_upload(sender, message)
        elif stage == RELEASE:
            self._on_release(sender, message)
        else:
            raise _bad(f"{message.KIND} arrived outside a collection stage", stage=stage,
                       sender=sender)
        return []

    def _on_upload(self, sender: int, message: Message) -> None:
        stage = UPLOAD
        if isinstance(sender, bool) or not isinstance(sender, int) or not (
            0 <= sender < self.num_clients
        ):
            raise _bad("uploads come from clients only", stage=stage, sender=sender)
        if not isinstance(message, self.scheme.upload_type):
            raise _bad(f"expected {self.scheme.upload_type.KIND}, got {message.KIND}",
                       stage=stage, sender=sender)
        _check_round(message, session_id=self.session_id, round_id=self.round_id,
                     fp=self.key_fingerprint, stage=stage, sender=sender)
        if sender in self._accepted:
            raise _bad("duplicate upload refused", stage=stage, sender=sender)
        if sender in self._refused:
            raise _bad("upload from a client already refused this round", stage=stage,
                       sender=sender)
        if self._accumulator is None:  # pragma: no cover - the accumulator lives until upload ends
            raise _bad("no accumulator", stage=stage, sender=sender)
        try:
            self._accumulator.add(message.ciphertexts)
        except MalformedMessage as exc:
            self._refused[sender] = str(exc)
            raise _bad(f"{exc}; the client is treated as dropped", stage=stage,
                       sender=sender) from None
        self._accepted.add(sender)

    def _on_release(self, sender: int, message: Message) -> None:
        stage = RELEASE
        if sender != KEY_HOLDER:
            raise _bad("only the key holder releases the aggregate", stage=stage, sender=sender)
        if not isinstance(message, self.scheme.release_type):
            raise _bad(f"expected {self.scheme.release_type.KIND}, got {message.KIND}",
                       stage=stage, sender=sender)
        _check_round(message, session_id=self.session_id, round_id=self.round_id,
                     fp=self.key_fingerprint, stage=stage, sender=sender)
        if self._result is not None:
            raise _bad("duplicate release refused", stage=stage, sender=sender)
        if tuple(message.contributors) != self._contributors:
            raise _bad("the release names other contributors than the aggregate sent",
                       stage=stage, sender=sender)
        noise = message.noise_std
        if not (math.isfinite(noise) and noise >= 0):
            raise _bad("noise_std must be finite and >= 0", stage=stage, sender=sender)
        flat, total_weight = self.scheme.decode(
            message.values, contributors=len(self._contributors)
        )
        aggregate: list[npt.NDArray[np.float64]] = []
        offset = 0
        for shape in self._shapes:
            size = math.prod(shape)
            aggregate.append(flat[offset : offset + size].reshape(shape).copy())
            offset += size
        self._noise_std = float(noise)
        self._result = AggregateOutcome(
            aggregate=aggregate,
            survivor_ids=self._contributors,
            total_weight=total_weight,
            details={
                "secure": True,
                "scheme": self.scheme.name,
                "flooding_noise_std": float(noise),
                "refused": {str(k): v for k, v in sorted(self._refused.items())},
            },
        )

    def end_stage(self) -> list[Envelope]:
        stage = self._stage
        if stage == UPLOAD:
            if len(self._accepted) < self.min_clients:
                self._stage = "aborted"
                self._accumulator = None
                missing = sorted(set(range(self.num_clients)) - self._accepted)
                raise InsufficientSurvivors(
                    stage=UPLOAD, survivors=len(self._accepted), threshold=self.min_clients,
                    node_ids=missing,
                )
            if self._accumulator is None:  # pragma: no cover
                raise ProtocolError("no accumulator", stage=stage)
            self._contributors = tuple(sorted(self._accepted))
            ciphertexts = self._accumulator.export()
            self._accumulator = None  # the running sums leave with the aggregate
            self._stage = RELEASE
            aggregate = self.scheme.aggregate_type(
                session_id=self.session_id,
                round_id=self.round_id,
                key_fingerprint=self.key_fingerprint,
                contributors=self._contributors,
                ciphertexts=ciphertexts,
            )
            return [Envelope(SERVER, KEY_HOLDER, aggregate)]
        if stage == RELEASE:
            if self._result is None:
                self._stage = "aborted"
                raise ProtocolError(
                    "the key holder released no aggregate (it refused or is unreachable); "
                    "nothing is released", stage=RELEASE, node_ids=[KEY_HOLDER],
                )
            self._stage = "done"
            return []
        raise ProtocolError("end_stage() outside a collection stage", stage=stage)

    def result(self) -> AggregateOutcome:
        if self._result is None or self._stage != "done":
            raise ProtocolError("the round has not finished", stage=self._stage)
        return self._result


# ------------------------------------------------------------------------------ key holder


class HEKeyHolder(Party):
    """Decrypts one aggregate per round and releases it under the scheme's rule."""

    party_id = KEY_HOLDER

    def __init__(
        self,
        *,
        scheme: HEScheme,
        decryptor: Decryptor,
        num_clients: int,
        min_clients: int,
        session_id: bytes,
        round_id: int,
        rng: Any = None,
    ) -> None:
        problems: list[str] = []
        _check_ids(session_id, round_id, problems)
        _check_counts(num_clients, min_clients, problems)
        if problems:
            raise ConfigurationError(problems)
        self.scheme = scheme
        self.decryptor = decryptor
        self.num_clients = num_clients
        self.min_clients = min_clients
        self.session_id = session_id
        self.round_id = round_id
        self._rng = rng
        self.released = False

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        stage = RELEASE
        if sender != SERVER:
            raise _bad("the key holder decrypts only what the server sends", stage=stage,
                       sender=sender)
        if not isinstance(message, self.scheme.aggregate_type):
            raise _bad(f"expected {self.scheme.aggregate_type.KIND}, got {message.KIND}",
                       stage=stage, sender=sender)
        _check_round(message, session_id=self.session_id, round_id=self.round_id,
                     fp=self.decryptor.key_fingerprint, stage=stage, sender=sender)
        if self.released:
            raise _bad("one decryption per round: a second aggregate is refused", stage=stage,
                       sender=sender)
        ids = tuple(message.contributors)
        if (
            len(set(ids)) != len(ids)
            or list(ids) != sorted(ids)
            or any(not 0 <= i < self.num_clients for i in ids)
        ):
            raise _bad("contributors must be distinct, sorted client ids", stage=stage,
                       sender=sender)
        if len(ids) < self.min_clients:
            raise InsufficientSurvivors(
                stage=stage, survivors=len(ids), threshold=self.min_clients, node_ids=ids
            )
        self.released = True  # a refused or failed decryption still uses up the round
        try:
            decrypted = self.decryptor.decrypt(message.ciphertexts, self.scheme.payload_length)
        except MalformedMessage as exc:
            raise _bad(f"aggregate refused: {exc}", stage=stage, sender=sender) from None
        values, noise_std = self.scheme.release(decrypted, contributors=len(ids), rng=self._rng)
        release = self.scheme.release_type(
            session_id=self.session_id,
            round_id=self.round_id,
            key_fingerprint=self.decryptor.key_fingerprint,
            contributors=ids,
            values=values,
            noise_std=float(noise_std),
        )
        return [Envelope(KEY_HOLDER, SERVER, release)]

