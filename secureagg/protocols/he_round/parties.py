"""The parties of an HE aggregation round: client, server (streaming sum) and key holder.

See :mod:`secureagg.protocols.he_round` for the roles, what each learns and the collusion caveat.
Each party keeps an explicit stage; anything out of stage, from the wrong sender, from another
round, session or key, or a duplicate raises :class:`~secureagg.errors.ProtocolError` naming the
stage and the sender.

**Key checks** (a scheme's :meth:`~secureagg.protocols.he_round.scheme.HEScheme.probe_plan`,
CKKS with room in its modulus): a ciphertext made under another key with the same parameters
parses like any other and would turn the decrypted sum into noise. So the server also folds each
upload into masked *probes* (a random signed sum of its chunks plus a mask from the server's
CSPRNG), the key holder decrypts every probe before the sums, and when a probe is out of range it
names those senders (``blame``) without decrypting the sums. The server drops them and asks the
others to upload again (stage ``"reupload"``; at most :data:`MAX_ATTEMPTS` uploads per round),
and the round goes on.

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
from secureagg.protocols.he_round.scheme import HEScheme, ProbePlan

__all__ = [
    "MAX_ATTEMPTS",
    "RELEASE",
    "REUPLOAD",
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
#: Entered only after the key holder blamed some uploads: the others upload again.
REUPLOAD = "reupload"
STAGES = (UPLOAD, RELEASE)
#: Uploads per round at most (the first and the retries after blames).
MAX_ATTEMPTS = 4

_BLAMED = (
    "the key holder found that its upload does not decrypt under the round's key to values an "
    "honest client sends (a ciphertext under another key, or values far outside the encoding); "
    "the client is treated as dropped"
)


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
        self._attempt = -1

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
        retry_type = self.scheme.retry_type
        if retry_type is not None and isinstance(message, retry_type):
            if stage != "done":
                raise _bad("a retry request before this client uploaded is refused",
                           stage=stage, sender=self.party_id)
            attempt = message.attempt
            if attempt != self._attempt + 1 or attempt >= MAX_ATTEMPTS:
                raise _bad(
                    f"retry request for attempt {attempt!r} refused (this client uploaded "
                    f"attempt {self._attempt}; at most {MAX_ATTEMPTS} uploads per round)",
                    stage=stage, sender=self.party_id,
                )
            _check_round(message, session_id=self.session_id, round_id=self.round_id,
                         fp=self.encryptor.key_fingerprint, stage=stage, sender=self.party_id)
            self._attempt = attempt
            return [self._upload()]
        if not isinstance(message, self.scheme.request_type):
            raise _bad(f"expected {self.scheme.request_type.KIND}, got {message.KIND}",
                       stage=stage, sender=sender)
        if stage != "await-request":
            raise _bad("second upload request refused", stage=stage, sender=self.party_id)
        _check_round(message, session_id=self.session_id, round_id=self.round_id,
                     fp=self.encryptor.key_fingerprint, stage=stage, sender=self.party_id)
        self._stage = "done"
        self._attempt = 0
        return [self._upload()]

    def _upload(self) -> Envelope:
        """Encode and encrypt the update afresh (fresh encryption randomness every time)."""
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
        return Envelope(self.party_id, SERVER, upload)


# ------------------------------------------------------------------------------ server


class HEServer(ServerParty):
    """Adds uploads into running ciphertexts; asks the key holder for the release.

    With a ``probe_plan``, it also folds every upload into masked key-check probes (signs and
    masks drawn from ``rng``, a CSPRNG keystream, after the upload arrived) and sends them with
    the sums; when the key holder blames some uploads, it drops those senders and asks the others
    to upload again.
    """

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
        probe_plan: ProbePlan | None = None,
        rng: Any = None,
    ) -> None:
        problems: list[str] = []
        _check_ids(session_id, round_id, problems)
        _check_counts(num_clients, min_clients, problems)
        if probe_plan is not None and (
            scheme.probed_aggregate_type is None or not accumulator.supports_probes
        ):
            problems.append(f"the {scheme.name} scheme or backend has no key-check probes")
        if problems:
            raise ConfigurationError(problems)
        self.scheme = scheme
        self.num_clients = num_clients
        self.min_clients = min_clients
        self.session_id = session_id
        self.round_id = round_id
        self.key_fingerprint = key_fingerprint
        self.probe_plan = probe_plan
        self._rng = rng
        self._shapes = [tuple(int(d) for d in s) for s in shapes]
        self._accumulator: Accumulator | None = accumulator
        self._blank = accumulator.empty()  # holds nothing: the template of a retry's sums
        self._accepted: set[int] = set()
        self._asked: set[int] = set(range(num_clients))
        self._probes: dict[int, tuple[bytes, ...]] = {}
        self._refused: dict[int, str] = {}
        self._blamed: tuple[int, ...] = ()
        self._attempt = 0
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
    def attempt(self) -> int:
        """The upload attempt of the round (0 unless the key holder blamed some uploads)."""
        return self._attempt

    @property
    def accumulator(self) -> Accumulator | None:
        """The running sums while uploads are collected (None once they left for the key holder)."""
        return self._accumulator

    @property
    def held_ciphertexts(self) -> int:
        """Running sums the server holds now: one per chunk position, whatever the client count."""
        return 0 if self._accumulator is None else self._accumulator.held_ciphertexts

    @property
    def held_probes(self) -> int:
        """Key-check probes held now: one per chunk-size group (one or two) per accepted client."""
        return sum(len(p) for p in self._probes.values())

    def _probe_rng(self) -> Any:
        if self._rng is None:
            self._rng = prg.Keystream(prg.random_seed(), label=labels.HE_KEY_CHECK)
        return self._rng

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
        if stage in (UPLOAD, REUPLOAD):
            self._on_upload(sender, message)
        elif stage == RELEASE:
            self._on_release(sender, message)
        else:
            raise _bad(f"{message.KIND} arrived outside a collection stage", stage=stage,
                       sender=sender)
        return []

    def _on_upload(self, sender: int, message: Message) -> None:
        stage = self._stage
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
        if sender not in self._asked:
            raise _bad("upload from a client not asked to upload again", stage=stage,
                       sender=sender)
        if self._accumulator is None:  # pragma: no cover - the accumulator lives until upload ends
            raise _bad("no accumulator", stage=stage, sender=sender)
        plan = self.probe_plan
        draw = None if plan is None else plan.draw(self._probe_rng())
        try:
            probes = self._accumulator.add(message.ciphertexts, probe=draw)
        except MalformedMessage as exc:
            self._refused[sender] = str(exc)
            raise _bad(f"{exc}; the client is treated as dropped", stage=stage,
                       sender=sender) from None
        self._accepted.add(sender)
        if plan is not None:
            self._probes[sender] = probes

    def _on_release(self, sender: int, message: Message) -> None:
        stage = RELEASE
        if sender != KEY_HOLDER:
            raise _bad("only the key holder releases the aggregate", stage=stage, sender=sender)
        blame_type = self.scheme.blame_type
        if self.probe_plan is not None and blame_type is not None and isinstance(
            message, blame_type
        ):
            self._on_blame(message)
            return
        if not isinstance(message, self.scheme.release_type):
            raise _bad(f"expected {self.scheme.release_type.KIND}, got {message.KIND}",
                       stage=stage, sender=sender)
        _check_round(message, session_id=self.session_id, round_id=self.round_id,
                     fp=self.key_fingerprint, stage=stage, sender=sender)
        if self._result is not None or self._blamed:
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
                "upload_attempts": self._attempt + 1,
            },
        )

    def _on_blame(self, message: Any) -> None:
        stage = RELEASE
        _check_round(message, session_id=self.session_id, round_id=self.round_id,
                     fp=self.key_fingerprint, stage=stage, sender=KEY_HOLDER)
        if self._result is not None or self._blamed:
            raise _bad("a second answer from the key holder refused", stage=stage,
                       sender=KEY_HOLDER)
        refused = tuple(message.refused)
        if (
            message.attempt != self._attempt
            or tuple(message.contributors) != self._contributors
            or not refused
            or list(refused) != sorted(set(refused))
            or not set(refused) <= set(self._contributors)
        ):
            raise _bad("the blame does not match the aggregate sent (attempt, contributors, or "
                       "refused ids that are not distinct, sorted contributors)",
                       stage=stage, sender=KEY_HOLDER)
        self._blamed = refused
        for cid in refused:
            self._refused[cid] = _BLAMED

    def end_stage(self) -> list[Envelope]:
        stage = self._stage
        if stage in (UPLOAD, REUPLOAD):
            if len(self._accepted) < self.min_clients:
                self._stage = "aborted"
                self._accumulator = None
                missing = sorted(set(range(self.num_clients)) - self._accepted)
                raise InsufficientSurvivors(
                    stage=stage, survivors=len(self._accepted), threshold=self.min_clients,
                    node_ids=missing,
                )
            if self._accumulator is None:  # pragma: no cover
                raise ProtocolError("no accumulator", stage=stage)
            self._contributors = tuple(sorted(self._accepted))
            ciphertexts = self._accumulator.export()
            self._accumulator = None  # the running sums leave with the aggregate
            self._stage = RELEASE
            fields: dict[str, Any] = {
                "session_id": self.session_id,
                "round_id": self.round_id,
                "key_fingerprint": self.key_fingerprint,
                "contributors": self._contributors,
                "ciphertexts": ciphertexts,
            }
            probed = self.scheme.probed_aggregate_type
            if self.probe_plan is None or probed is None:
                return [Envelope(SERVER, KEY_HOLDER, self.scheme.aggregate_type(**fields))]
            probes = tuple(p for cid in self._contributors for p in self._probes[cid])
            self._probes = {}  # the probes leave with the aggregate
            message = probed(attempt=self._attempt, probes=probes, **fields)
            return [Envelope(SERVER, KEY_HOLDER, message)]
        if stage == RELEASE:
            if self._result is not None:
                self._stage = "done"
                return []
            if self._blamed:
                return self._retry()
            self._stage = "aborted"
            raise ProtocolError(
                "the key holder released no aggregate (it refused or is unreachable); "
                "nothing is released", stage=RELEASE, node_ids=[KEY_HOLDER],
            )
        raise ProtocolError("end_stage() outside a collection stage", stage=stage)

    def _retry(self) -> list[Envelope]:
        """After a blame: drop the blamed senders and ask the other contributors to upload again."""
        remaining = sorted(set(self._contributors) - set(self._blamed))
        if len(remaining) < self.min_clients:
            self._stage = "aborted"
            raise InsufficientSurvivors(
                stage=RELEASE, survivors=len(remaining), threshold=self.min_clients,
                node_ids=list(self._blamed),
            )
        if self._attempt + 1 >= MAX_ATTEMPTS:
            self._stage = "aborted"
            raise ProtocolError(
                f"the key holder refused uploads in {MAX_ATTEMPTS} attempts; nothing is "
                "released", stage=RELEASE, node_ids=list(self._blamed),
            )
        retry_type = self.scheme.retry_type
        if retry_type is None:  # pragma: no cover - a probe plan needs a scheme with retries
            raise ProtocolError("the scheme has no retry message", stage=RELEASE)
        self._attempt += 1
        self._blamed = ()
        self._accepted = set()
        self._asked = set(remaining)
        self._contributors = ()
        self._accumulator = self._blank.empty()
        self._stage = REUPLOAD
        retry = retry_type(
            session_id=self.session_id, round_id=self.round_id,
            key_fingerprint=self.key_fingerprint, attempt=self._attempt,
        )
        return [Envelope(SERVER, cid, retry) for cid in remaining]

    def result(self) -> AggregateOutcome:
        if self._result is None or self._stage != "done":
            raise ProtocolError("the round has not finished", stage=self._stage)
        return self._result


# ------------------------------------------------------------------------------ key holder


class HEKeyHolder(Party):
    """Decrypts one aggregate per round and releases it under the scheme's rule.

    With a ``probe_plan`` it first decrypts every contributor's key-check probes and, if any lies
    outside the plan's thresholds, names those senders to the server (``blame``) *without*
    decrypting the sums; the next attempt must leave them out. Only magnitudes of probes are
    looked at, and nothing decrypted from a probe leaves the key holder.
    """

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
        probe_plan: ProbePlan | None = None,
    ) -> None:
        problems: list[str] = []
        _check_ids(session_id, round_id, problems)
        _check_counts(num_clients, min_clients, problems)
        if probe_plan is not None and scheme.probed_aggregate_type is None:
            problems.append(f"the {scheme.name} scheme has no key-check probes")
        if problems:
            raise ConfigurationError(problems)
        self.scheme = scheme
        self.decryptor = decryptor
        self.num_clients = num_clients
        self.min_clients = min_clients
        self.session_id = session_id
        self.round_id = round_id
        self.probe_plan = probe_plan
        self._rng = rng
        self.released = False
        self.blamed: set[int] = set()
        self._attempt = 0
        self._last: tuple[int, ...] | None = None

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        stage = RELEASE
        if sender != SERVER:
            raise _bad("the key holder decrypts only what the server sends", stage=stage,
                       sender=sender)
        plan = self.probe_plan
        expected = self.scheme.aggregate_type if plan is None else self.scheme.probed_aggregate_type
        if expected is None or not isinstance(message, expected):
            wanted = "an aggregate" if expected is None else expected.KIND
            raise _bad(
                f"expected {wanted}, got {message.KIND}"
                + ("" if plan is None else " (this round checks every upload's key-check probes)"),
                stage=stage, sender=sender,
            )
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
        if plan is not None:
            blamed = self._check_probes(message, ids, plan, sender=sender)
            if blamed:
                blame_type = self.scheme.blame_type
                if blame_type is None:  # pragma: no cover - probed schemes define it
                    raise _bad("the scheme has no blame message", stage=stage, sender=sender)
                blame = blame_type(
                    session_id=self.session_id,
                    round_id=self.round_id,
                    key_fingerprint=self.decryptor.key_fingerprint,
                    attempt=int(getattr(message, "attempt", 0)),
                    contributors=ids,
                    refused=blamed,
                )
                return [Envelope(KEY_HOLDER, SERVER, blame)]
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

    def _check_probes(
        self, message: Any, ids: tuple[int, ...], plan: ProbePlan, *, sender: int
    ) -> tuple[int, ...]:
        """Decrypt every contributor's probes; return the contributors whose probes fail."""
        stage = RELEASE
        if message.attempt != self._attempt or self._attempt >= MAX_ATTEMPTS:
            raise _bad(
                f"aggregate of attempt {message.attempt!r} refused (expected attempt "
                f"{self._attempt}; at most {MAX_ATTEMPTS} per round)",
                stage=stage, sender=sender,
            )
        if self.blamed & set(ids) or (
            self._last is not None and not set(ids) <= set(self._last)
        ):
            raise _bad(
                "a retried aggregate must leave out the blamed clients and add no new ones",
                stage=stage, sender=sender,
            )
        groups = plan.groups
        probes = message.probes
        if len(probes) != len(ids) * len(groups):
            raise _bad(
                f"expected {len(groups)} key-check probe(s) per contributor, got "
                f"{len(probes)} for {len(ids)}",
                stage=stage, sender=sender,
            )
        blamed: list[int] = []
        for index, cid in enumerate(ids):
            for g, (size, _) in enumerate(groups):
                data = probes[index * len(groups) + g]
                try:
                    values = self.decryptor.decrypt_probe(data, size)
                except MalformedMessage as exc:  # the server builds probes: its fault
                    raise _bad(f"aggregate refused: {exc}", stage=stage, sender=sender) from None
                # Only the largest magnitude is compared; no probe value is kept or echoed.
                if not bool(np.all(np.abs(values) <= plan.thresholds[g])):
                    blamed.append(cid)
                    break
        self._attempt += 1
        self._last = ids
        self.blamed.update(blamed)
        return tuple(blamed)
