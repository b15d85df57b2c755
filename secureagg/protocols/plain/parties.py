"""Server and client of the plain baseline: each client uploads its update in the clear.

**This protocol is insecure on purpose.** The server sees every client's update. It is the
baseline that benchmarks compare secure protocols against, and a reference implementation of the
sans-I/O contract in :mod:`secureagg.protocols.base`.

Invariants the server keeps even so (they are what a secure protocol must keep too):

* streaming: uploads are added into one running sum as they arrive; the server never holds ``n``
  vectors;
* one upload per client per round; a message from another round or session, a second upload, an
  upload after the stage closed, or from an unknown sender is refused with
  :class:`~secureagg.errors.ProtocolError` and changes nothing;
* an upload of the wrong dtype or length, or with NaN/Inf values or a bad weight, is refused and
  its sender treated as dropped for the round - numpy never broadcasts a wrong shape into the sum;
* fewer than ``min_clients`` accepted uploads at the deadline raises
  :class:`~secureagg.errors.InsufficientSurvivors` and no aggregate is released.

>>> import numpy as np
>>> from secureagg.protocols.base import SERVER
>>> server = PlainServer(num_clients=2, shapes=[(2,)], session_id=b"s" * 16, round_id=0)
>>> clients = [PlainClient(i, [np.ones(2)], session_id=b"s" * 16, round_id=0) for i in range(2)]
>>> for env in server.start():
...     for reply in clients[env.recipient].receive(SERVER, env.message):
...         _ = server.receive(reply.sender, reply.message)
>>> _ = server.end_stage()
>>> server.result().aggregate
[array([2., 2.])]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.crypto.encoding import require_finite
from secureagg.errors import (
    ConfigurationError,
    InsufficientSurvivors,
    InvalidInputError,
    ProtocolError,
)
from secureagg.protocols.base import (
    SERVER,
    AggregateOutcome,
    ClientParty,
    Envelope,
    Message,
    ServerParty,
)
from secureagg.protocols.plain.messages import PlainRequest, PlainUpload
from secureagg.protocols.plain.state import PlainClientState, check_fields
from secureagg.protocols.spec import RoundSpec
from secureagg.protocols.state import STATE_VERSION
from secureagg.validation import is_positive_real

__all__ = ["UPLOAD", "PlainClient", "PlainServer"]

UPLOAD = "upload"


def _check_common(
    *, session_id: bytes, round_id: int, problems: list[str]
) -> None:
    if not isinstance(session_id, bytes) or not session_id:
        problems.append("session_id must be non-empty bytes")
    if isinstance(round_id, bool) or not isinstance(round_id, int) or round_id < 0:
        problems.append(f"round_id must be a non-negative integer, got {round_id!r}")


class PlainServer(ServerParty):
    """Collects plaintext uploads into a running sum. Stages: ``("upload",)``.

    ``shapes`` are the shapes of one client's tensors (all clients share them).
    """

    stages: Sequence[str] = (UPLOAD,)

    def __init__(
        self,
        *,
        num_clients: int,
        shapes: Sequence[tuple[int, ...]],
        session_id: bytes,
        round_id: int,
        min_clients: int = 1,
    ) -> None:
        problems: list[str] = []
        _check_common(session_id=session_id, round_id=round_id, problems=problems)
        if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
            problems.append(f"num_clients must be a positive integer, got {num_clients!r}")
        elif (
            isinstance(min_clients, bool)
            or not isinstance(min_clients, int)
            or not 1 <= min_clients <= num_clients
        ):
            problems.append(f"min_clients must be in [1, {num_clients}], got {min_clients!r}")
        if problems:
            raise ConfigurationError(problems)
        self.num_clients = num_clients
        self.min_clients = min_clients
        self.session_id = session_id
        self.round_id = round_id
        self._shapes = [tuple(int(d) for d in s) for s in shapes]
        self._dim = sum(math.prod(s) for s in self._shapes)
        self._sum = np.zeros(self._dim, dtype=np.float64)
        self._total_weight = 0.0
        self._accepted: set[int] = set()
        self._dropped: dict[int, str] = {}
        self._stage = "init"

    # -- ServerParty --------------------------------------------------------------------------

    @property
    def stage(self) -> str:
        return self._stage

    @property
    def finished(self) -> bool:
        return self._stage == "done"

    def start(self) -> list[Envelope]:
        if self._stage != "init":
            raise ProtocolError("start() called twice", stage=self._stage)
        self._stage = UPLOAD
        request = PlainRequest(round_id=self.round_id, session_id=self.session_id)
        return [Envelope(SERVER, cid, request) for cid in range(self.num_clients)]

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        stage = self._stage
        if stage != UPLOAD:
            raise ProtocolError(
                f"{type(message).__name__} arrived while the server is not collecting uploads",
                stage=stage,
                node_ids=[sender],
            )
        if isinstance(sender, bool) or not isinstance(sender, int) or not (
            0 <= sender < self.num_clients
        ):
            raise ProtocolError(f"unknown sender {sender!r}", stage=stage)
        if not isinstance(message, PlainUpload):
            raise ProtocolError(
                f"expected a {PlainUpload.KIND} message, got {type(message).__name__}",
                stage=stage,
                node_ids=[sender],
            )
        if message.round_id != self.round_id or message.session_id != self.session_id:
            raise ProtocolError(
                "upload from another round or session (replay?) refused",
                stage=stage,
                node_ids=[sender],
            )
        if sender in self._accepted:
            raise ProtocolError("duplicate upload refused", stage=stage, node_ids=[sender])
        if sender in self._dropped:
            raise ProtocolError(
                "upload from a client already treated as dropped refused",
                stage=stage,
                node_ids=[sender],
            )
        problem = self._check_upload(message)
        if problem:
            self._dropped[sender] = problem
            raise ProtocolError(
                f"{problem}; the client is treated as dropped", stage=stage, node_ids=[sender]
            )
        np.add(self._sum, message.values, out=self._sum)
        self._total_weight += float(message.weight)
        self._accepted.add(sender)
        return []

    def end_stage(self) -> list[Envelope]:
        if self._stage != UPLOAD:
            raise ProtocolError("end_stage() outside the upload stage", stage=self._stage)
        if len(self._accepted) < self.min_clients:
            self._stage = "aborted"
            missing = sorted(set(range(self.num_clients)) - self._accepted)
            self._sum.fill(0.0)
            raise InsufficientSurvivors(
                stage=UPLOAD,
                survivors=len(self._accepted),
                threshold=self.min_clients,
                node_ids=missing,
            )
        self._stage = "done"
        return []

    def result(self) -> AggregateOutcome:
        if not self.finished:
            raise ProtocolError("the round has not finished", stage=self._stage)
        aggregate: list[npt.NDArray[np.float64]] = []
        offset = 0
        for shape in self._shapes:
            size = math.prod(shape)
            aggregate.append(self._sum[offset : offset + size].reshape(shape).copy())
            offset += size
        details: dict[str, Any] = {
            "secure": False,
            "refused": {str(k): v for k, v in sorted(self._dropped.items())},
        }
        return AggregateOutcome(
            aggregate=aggregate,
            survivor_ids=tuple(sorted(self._accepted)),
            total_weight=self._total_weight,
            details=details,
        )

    # -- helpers ------------------------------------------------------------------------------

    def _check_upload(self, message: PlainUpload) -> str:
        values = message.values
        if not isinstance(values, np.ndarray) or values.dtype != np.float64 or values.ndim != 1:
            got = (
                f"{values.dtype} array of shape {values.shape}"
                if isinstance(values, np.ndarray)
                else type(values).__name__
            )
            return f"values must be a 1-D float64 array, got {got}"
        if values.size != self._dim:
            return f"values hold {values.size} numbers, expected {self._dim}"
        if not bool(np.isfinite(values).all()):
            return "values contain NaN or Inf"
        weight = message.weight
        if not isinstance(weight, float) or not math.isfinite(weight) or weight <= 0:
            return f"weight must be a positive finite float, got {weight!r}"
        return ""


class PlainClient(ClientParty):
    """Answers the server's request with its flattened, clipped, weighted update.

    NaN/Inf in the update raises :class:`~secureagg.errors.NonFiniteInputError` here, at
    construction, before anything is sent. With ``clip`` set, values are clipped to
    ``[-clip, clip]`` and :attr:`clipped` counts how many were.
    """

    def __init__(
        self,
        client_id: int,
        update: Sequence[npt.ArrayLike],
        *,
        session_id: bytes,
        round_id: int,
        weight: float = 1.0,
        clip: float | None = None,
    ) -> None:
        problems: list[str] = []
        _check_common(session_id=session_id, round_id=round_id, problems=problems)
        if isinstance(client_id, bool) or not isinstance(client_id, int) or client_id < 0:
            problems.append(f"client_id must be a non-negative integer, got {client_id!r}")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not (
            math.isfinite(weight) and weight > 0
        ):
            problems.append(f"weight must be a positive finite number, got {weight!r}")
        if clip is not None and not is_positive_real(clip):
            problems.append(f"clip must be None or a positive finite number, got {clip!r}")
        if problems:
            raise ConfigurationError(problems)
        self.party_id = client_id
        self.session_id = session_id
        self.round_id = round_id
        self.weight = float(weight)
        parts = []
        for index, tensor in enumerate(update):
            arr = np.asarray(tensor, dtype=np.float64).ravel()
            require_finite(arr, where=f"client {client_id}, tensor {index}")
            parts.append(arr)
        if not parts:
            raise InvalidInputError(f"client {client_id}: the update holds no tensors")
        flat = np.concatenate(parts)
        if clip is not None:
            self.clipped = int(np.count_nonzero(np.abs(flat) > clip))
            np.clip(flat, -clip, clip, out=flat)
        flat *= self.weight
        flat.flags.writeable = False
        self._values = flat
        self._stage = "await-request"

    @property
    def stage(self) -> str:
        """``"await-request"`` until the upload is sent, then ``"done"``."""
        return self._stage

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        if sender != SERVER:
            raise ProtocolError(
                f"message from party {sender}, expected the server",
                stage=self._stage,
                node_ids=[sender],
            )
        if not isinstance(message, PlainRequest):
            raise ProtocolError(
                f"expected a {PlainRequest.KIND} message, got {type(message).__name__}",
                stage=self._stage,
                node_ids=[self.party_id],
            )
        if self._stage != "await-request":
            raise ProtocolError(
                "second upload request refused", stage=self._stage, node_ids=[self.party_id]
            )
        if message.round_id != self.round_id or message.session_id != self.session_id:
            raise ProtocolError(
                "request for another round or session refused",
                stage=self._stage,
                node_ids=[self.party_id],
            )
        self._stage = "done"
        upload = PlainUpload(
            round_id=self.round_id,
            session_id=self.session_id,
            values=self._values,
            weight=self.weight,
        )
        return [Envelope(self.party_id, SERVER, upload)]

    # ------------------------------------------------------------------------------ state

    def export_state(self) -> PlainClientState:
        """This client's state now (secret fields: ``SECRET_FIELDS``)."""
        return PlainClientState(
            version=STATE_VERSION, spec_digest=self.spec_digest, party_id=self.party_id,
            stage=self.stage, values=np.asarray(self._values, dtype=np.float64),
            weight=float(self.weight), clipped=int(self.clipped),
        )

    @classmethod
    def restore(cls, spec: RoundSpec, state: object) -> PlainClient:
        """The client ``state`` describes, checked like a message from another party."""
        checked = check_fields(spec, state)
        # The values are already clipped and weighted: rebuild with weight 1, then set it.
        client = cls(
            checked.party_id, [np.array(checked.values)], session_id=spec.session_id,
            round_id=spec.round_id,
        )
        client.spec_digest = spec.digest
        client.weight, client.clipped = checked.weight, checked.clipped
        client._stage = checked.stage
        return client
