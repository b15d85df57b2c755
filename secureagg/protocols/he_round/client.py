"""The client of an HE aggregation round: encrypts its update when the server asks, once per
upload attempt (:mod:`~secureagg.protocols.he_round.stages`).

>>> HEClient.__mro__[1].__name__
'ClientParty'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.crypto import prg
from secureagg.crypto.encoding import require_finite
from secureagg.errors import ConfigurationError, InvalidInputError
from secureagg.he.backend import Encryptor
from secureagg.protocols.base import SERVER, ClientParty, Envelope, Message
from secureagg.protocols.he_round.scheme import HEScheme
from secureagg.protocols.he_round.stages import (
    MAX_ATTEMPTS,
    check_ids,
    check_round,
    refusal,
)
from secureagg.protocols.he_round.state import HEClientState, check_fields
from secureagg.protocols.spec import RoundSpec
from secureagg.protocols.state import STATE_VERSION

__all__ = ["HEClient"]


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
        check_ids(session_id, round_id, problems)
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
            raise refusal(f"message from party {sender}, expected the server", stage=stage,
                       sender=sender)
        retry_type = self.scheme.retry_type
        if retry_type is not None and isinstance(message, retry_type):
            if stage != "done":
                raise refusal("a retry request before this client uploaded is refused",
                           stage=stage, sender=self.party_id)
            attempt = message.attempt
            if attempt != self._attempt + 1 or attempt >= MAX_ATTEMPTS:
                raise refusal(
                    f"retry request for attempt {attempt!r} refused (this client uploaded "
                    f"attempt {self._attempt}; at most {MAX_ATTEMPTS} uploads per round)",
                    stage=stage, sender=self.party_id,
                )
            check_round(message, session_id=self.session_id, round_id=self.round_id,
                         fp=self.encryptor.key_fingerprint, stage=stage, sender=self.party_id)
            self._attempt = attempt
            return [self._upload()]
        if not isinstance(message, self.scheme.request_type):
            raise refusal(f"expected {self.scheme.request_type.KIND}, got {message.KIND}",
                       stage=stage, sender=sender)
        if stage != "await-request":
            raise refusal("second upload request refused", stage=stage, sender=self.party_id)
        check_round(message, session_id=self.session_id, round_id=self.round_id,
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

    # ------------------------------------------------------------------------------ state

    def export_state(self) -> HEClientState:
        """This client's state now, between two stages (secret fields: ``SECRET_FIELDS``)."""
        arrays = self._arrays
        dtype = np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64
        rng = self._rng
        return HEClientState(
            version=STATE_VERSION, spec_digest=self.spec_digest, party_id=self.party_id,
            stage=self.stage, attempt=self._attempt,
            update=np.concatenate([np.asarray(a, dtype=dtype).reshape(-1) for a in arrays]),
            weight=float(self.weight), clipped=int(self.clipped),
            randomness=rng.state() if isinstance(rng, prg.Keystream) else b"",
        )

    @classmethod
    def restore(
        cls,
        spec: RoundSpec,
        state: object,
        *,
        scheme: HEScheme,
        encryptor: Encryptor,
        precompute: bool = False,
    ) -> HEClient:
        """The client ``state`` describes, checked like a message from another party; its
        encryptor is built anew from the spec's public key (no pool is carried over)."""
        checked = check_fields(spec, state)
        arrays, start = [], 0
        for shape in spec.shapes:
            size = math.prod(shape)
            arrays.append(np.array(checked.update[start : start + size]).reshape(shape))
            start += size
        client = cls(
            checked.party_id, arrays, scheme=scheme, encryptor=encryptor,
            session_id=spec.session_id, round_id=spec.round_id, weight=checked.weight,
            rng=prg.Keystream.resume(checked.randomness) if checked.randomness else None,
            precompute=precompute,
        )
        client.spec_digest = spec.digest
        client._stage, client._attempt = checked.stage, checked.attempt
        client.clipped = checked.clipped
        return client
