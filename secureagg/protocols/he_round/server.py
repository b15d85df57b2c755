"""The server of an HE aggregation round: adds uploads into running ciphertexts as they arrive,
folds them into key-check probes, and asks the key holder for the release
(:mod:`~secureagg.protocols.he_round.stages`).

>>> HEServer.stages
('upload', 'release')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.crypto import labels, prg
from secureagg.errors import (
    ConfigurationError,
    InsufficientSurvivors,
    MalformedMessage,
    ProtocolError,
)
from secureagg.he.backend import Accumulator
from secureagg.protocols.base import (
    KEY_HOLDER,
    SERVER,
    AggregateOutcome,
    Envelope,
    Message,
    ServerParty,
)
from secureagg.protocols.he_round.scheme import HEScheme, ProbePlan
from secureagg.protocols.he_round.stages import (
    BLAMED,
    MAX_ATTEMPTS,
    RELEASE,
    REUPLOAD,
    STAGES,
    UPLOAD,
    check_counts,
    check_ids,
    check_round,
    refusal,
)

__all__ = ["HEServer"]


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
        check_ids(session_id, round_id, problems)
        check_counts(num_clients, min_clients, problems)
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

    def precompute(self) -> int:
        """Offline, before the uploads: the input-independent work of the export (Paillier: the
        re-randomisation factors of the aggregate, each used once), for a driver to call before
        the round and time apart from it; anything not precomputed is computed at the export.

        Returns how many items were precomputed (0 once the uploads are over, or when the
        backend has nothing to precompute). Sends nothing.
        """
        if self._stage not in ("init", UPLOAD, REUPLOAD) or self._accumulator is None:
            return 0
        return self._accumulator.prefill()

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
            raise refusal(f"{message.KIND} arrived outside a collection stage", stage=stage,
                       sender=sender)
        return []

    def _on_upload(self, sender: int, message: Message) -> None:
        stage = self._stage
        if isinstance(sender, bool) or not isinstance(sender, int) or not (
            0 <= sender < self.num_clients
        ):
            raise refusal("uploads come from clients only", stage=stage, sender=sender)
        if not isinstance(message, self.scheme.upload_type):
            raise refusal(f"expected {self.scheme.upload_type.KIND}, got {message.KIND}",
                       stage=stage, sender=sender)
        check_round(message, session_id=self.session_id, round_id=self.round_id,
                     fp=self.key_fingerprint, stage=stage, sender=sender)
        if sender in self._accepted:
            raise refusal("duplicate upload refused", stage=stage, sender=sender)
        if sender in self._refused:
            raise refusal("upload from a client already refused this round", stage=stage,
                       sender=sender)
        if sender not in self._asked:
            raise refusal("upload from a client not asked to upload again", stage=stage,
                       sender=sender)
        if self._accumulator is None:  # pragma: no cover - the accumulator lives until upload ends
            raise refusal("no accumulator", stage=stage, sender=sender)
        plan = self.probe_plan
        draw = None if plan is None else plan.draw(self._probe_rng())
        try:
            probes = self._accumulator.add(message.ciphertexts, probe=draw)
        except MalformedMessage as exc:
            self._refused[sender] = str(exc)
            raise refusal(f"{exc}; the client is treated as dropped", stage=stage,
                       sender=sender) from None
        self._accepted.add(sender)
        if plan is not None:
            self._probes[sender] = probes

    def _on_release(self, sender: int, message: Message) -> None:
        stage = RELEASE
        if sender != KEY_HOLDER:
            raise refusal("only the key holder releases the aggregate", stage=stage, sender=sender)
        blame_type = self.scheme.blame_type
        if self.probe_plan is not None and blame_type is not None and isinstance(
            message, blame_type
        ):
            self._on_blame(message)
            return
        if not isinstance(message, self.scheme.release_type):
            raise refusal(f"expected {self.scheme.release_type.KIND}, got {message.KIND}",
                       stage=stage, sender=sender)
        check_round(message, session_id=self.session_id, round_id=self.round_id,
                     fp=self.key_fingerprint, stage=stage, sender=sender)
        if self._result is not None or self._blamed:
            raise refusal("duplicate release refused", stage=stage, sender=sender)
        if tuple(message.contributors) != self._contributors:
            raise refusal("the release names other contributors than the aggregate sent",
                       stage=stage, sender=sender)
        noise = message.noise_std
        if not (math.isfinite(noise) and noise >= 0):
            raise refusal("noise_std must be finite and >= 0", stage=stage, sender=sender)
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
        check_round(message, session_id=self.session_id, round_id=self.round_id,
                     fp=self.key_fingerprint, stage=stage, sender=KEY_HOLDER)
        if self._result is not None or self._blamed:
            raise refusal("a second answer from the key holder refused", stage=stage,
                       sender=KEY_HOLDER)
        refused = tuple(message.refused)
        if (
            message.attempt != self._attempt
            or tuple(message.contributors) != self._contributors
            or not refused
            or list(refused) != sorted(set(refused))
            or not set(refused) <= set(self._contributors)
        ):
            raise refusal("the blame does not match the aggregate sent (attempt, contributors, or "
                       "refused ids that are not distinct, sorted contributors)",
                       stage=stage, sender=KEY_HOLDER)
        self._blamed = refused
        for cid in refused:
            self._refused[cid] = BLAMED

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
