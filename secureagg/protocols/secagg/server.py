"""The SecAgg / SecAgg+ server: routes keys and shares, sums masked inputs as they arrive, unmasks.

Memory invariant: masked inputs are added into one running sum (``uint{bits}``, length ``d``) the
moment they arrive; the server never holds more than one full vector besides the scratch of one
mask chunk. Shares and keys are small (O(n k) of them).

What the server learns: the sum over the survivors U3 (weighted, with the total weight) - and,
for every dropped client, its pairwise masks, which reveal nothing because its self-mask b_u is
never reconstructed. A message out of stage, from another session or round, from an unexpected
sender, a duplicate, or malformed (wrong length, dtype, ids) raises :class:`ProtocolError`; the
driver records it and the sender is simply not counted for that stage (treated as dropped).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.crypto import keyagree, labels, prg, shamir, signing
from secureagg.errors import (
    InsufficientSurvivors,
    InvalidKeyError,
    InvalidShareError,
    InvalidSignature,
    ProtocolError,
    TamperedShareError,
)
from secureagg.protocols.base import AggregateOutcome, Envelope, Message, ServerParty
from secureagg.protocols.secagg import messages as m
from secureagg.protocols.secagg.context import RoundContext

__all__ = ["SecAggServer"]

_EXPECTED: dict[str, type[Message]] = {
    "advertise": m.KeyAdvertisement,
    "share": m.EncryptedShares,
    "masked": m.MaskedInput,
    "consistency": m.ConsistencySignature,
    "unmask": m.UnmaskShares,
}


#: Length of both shared secrets: the self-mask seed b_u (``prg.SEED_BYTES``) and the X25519
#: mask private key (``keyagree.KEY_BYTES``), as the client shares them.
_SECRET_BYTES = 32


class SecAggServer(ServerParty):
    """The server's side of one round. ``model_digest`` is sent to every client in stage 1.

    ``stages`` is this round's stage list, read from the context (it depends on the threat mode).
    """

    def __init__(self, context: RoundContext, *, model_digest: bytes = b"") -> None:
        self.ctx = context
        self.stages: tuple[str, ...] = context.stages
        self.model_digest = model_digest
        self._stage_index = 0
        self._expected: set[int] = set(range(context.params.num_clients))
        self._received: set[int] = set()
        self._keys: dict[int, tuple[bytes, bytes, bytes]] = {}
        self._used_keys: set[bytes] = set()  # every public key advertised so far
        self._outbox: dict[int, dict[int, bytes]] = {}  # recipient -> sender -> ciphertext
        self.u1: frozenset[int] = frozenset()
        self.u2: frozenset[int] = frozenset()
        self.u3: frozenset[int] = frozenset()
        self._sum: npt.NDArray[np.unsignedinteger[npt.NBitBase]] | None = None
        self._dtype, self._dimension = context.dtype, context.dimension  # read per masked input
        self._signatures: dict[int, bytes] = {}
        # Shares are kept parsed and validated as they arrive (owner -> shareholders' indices and
        # values): the server's only per-client state, O(n k) of them.
        self._b_shares: dict[int, tuple[list[int], list[tuple[int, ...]]]] = {}
        self._k_shares: dict[int, tuple[list[int], list[tuple[int, ...]]]] = {}
        self._check: shamir.RandomCheck | None = None  # drawn at the end of unmask
        self._result: AggregateOutcome | None = None

    # ------------------------------------------------------------------------------ contract

    @property
    def stage(self) -> str:
        stages = self.stages
        return stages[self._stage_index] if self._stage_index < len(stages) else "done"

    @property
    def finished(self) -> bool:
        return self._result is not None

    def result(self) -> AggregateOutcome:
        if self._result is None:
            raise ProtocolError("the round has not finished", stage=self.stage)
        return self._result

    def start(self) -> list[Envelope]:
        request = m.AdvertiseRequest(
            session_id=self.ctx.session_id,
            round_id=self.ctx.round_id,
            model_digest=self.model_digest,
        )
        return [Envelope(self.party_id, u, request) for u in sorted(self._expected)]

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        stage = self.stage
        if (
            getattr(message, "session_id", None) != self.ctx.session_id
            or getattr(message, "round_id", None) != self.ctx.round_id
        ):
            raise ProtocolError(
                "message from another session or round (replay)", stage=stage, node_ids=[sender]
            )
        expected = _EXPECTED.get(stage)
        if expected is None or not isinstance(message, expected):
            raise ProtocolError(
                f"unexpected {message.KIND} in stage {stage}", stage=stage, node_ids=[sender]
            )
        if sender not in self._expected:
            raise ProtocolError(
                "sender is not a live participant of this stage", stage=stage, node_ids=[sender]
            )
        if sender in self._received:
            raise ProtocolError("duplicate message", stage=stage, node_ids=[sender])
        getattr(self, f"_on_{stage}")(sender, message)
        self._received.add(sender)
        return []

    def end_stage(self) -> list[Envelope]:
        stage = self.stage
        out: list[Envelope] = getattr(self, f"_end_{stage}")()
        return out

    # -------------------------------------------------------------------------------- helpers

    def _advance(self, live: set[int] | frozenset[int], minimum: int) -> None:
        if len(live) < minimum:
            raise InsufficientSurvivors(
                stage=self.stage, survivors=len(live), threshold=minimum, node_ids=sorted(live)
            )
        self._stage_index += 1
        self._expected = set(live)
        self._received = set()

    def _bad(self, sender: int, why: str) -> ProtocolError:
        return ProtocolError(why, stage=self.stage, node_ids=[sender])

    # ------------------------------------------------------------------------------- stage 1

    def _on_advertise(self, sender: int, msg: m.KeyAdvertisement) -> None:
        c_pk, s_pk, sig = msg.cipher_public_key, msg.mask_public_key, msg.signature
        if len(c_pk) != 32 or len(s_pk) != 32 or c_pk == s_pk:
            raise self._bad(sender, "public keys must be two distinct 32-byte X25519 keys")
        # Refused here, as this sender's fault: relayed, a low-order key would make every honest
        # neighbour abort and the round would die for one bad client.
        for what, key in (("cipher", c_pk), ("mask", s_pk)):
            try:
                keyagree.check_public_key(key)
            except InvalidKeyError as exc:
                raise self._bad(sender, f"{what} public key refused: {exc}") from None
        if self.ctx.malicious:
            registry = self.ctx.registry or {}
            if sender not in registry or len(sig) != signing.SIGNATURE_BYTES:
                raise self._bad(sender, "unsigned key advertisement")
            try:
                signing.verify(
                    registry[sender],
                    m.advertisement_signed_bytes(
                        session_id=self.ctx.session_id,
                        round_id=self.ctx.round_id,
                        client_id=sender,
                        cipher_public_key=c_pk,
                        mask_public_key=s_pk,
                        model_digest=self.model_digest,
                    ),
                    sig,
                )
            except InvalidSignature:
                raise self._bad(sender, "key advertisement signature does not verify") from None
        elif sig:
            raise self._bad(sender, "unexpected signature in curious mode")
        if c_pk in self._used_keys or s_pk in self._used_keys:
            raise self._bad(sender, "public key already advertised by another client")
        self._keys[sender] = (c_pk, s_pk, sig)
        self._used_keys.update((c_pk, s_pk))

    def _end_advertise(self) -> list[Envelope]:
        t = self.ctx.params.threshold
        live = set(self._received)
        if len(live) < self.ctx.params.min_survivors:  # report the advertisers, before pruning
            self._advance(live, self.ctx.params.min_survivors)
        # A client shares its secrets among its live neighbours and itself: with fewer than t
        # such shareholders its secrets could never be recovered, so it is excluded.
        changed = True
        while changed:
            weak = {u for u in live if len(self.ctx.neighbours[u] & live) + 1 < t}
            changed = bool(weak)
            live -= weak
        self.u1 = frozenset(live)
        self._advance(live, self.ctx.params.min_survivors)
        out = []
        packed = {v: m.pack_keys(*self._keys[v]) for v in live}
        for u in sorted(live):
            keys = {v: packed[v] for v in sorted(self.ctx.neighbours[u] & live)}
            out.append(
                Envelope(
                    self.party_id,
                    u,
                    m.KeyBroadcast(
                        session_id=self.ctx.session_id, round_id=self.ctx.round_id, keys=keys
                    ),
                )
            )
        return out

    # ------------------------------------------------------------------------------- stage 2

    def _on_share(self, sender: int, msg: m.EncryptedShares) -> None:
        allowed = self.ctx.neighbours[sender] & self.u1
        recipients = set(msg.ciphertexts)
        if recipients != allowed:
            raise self._bad(sender, "encrypted shares must go to exactly the live neighbours")
        for v, ct in msg.ciphertexts.items():
            if not 28 <= len(ct) <= 4096:
                raise self._bad(sender, f"encrypted share for {v} has an invalid length")
        for v, ct in msg.ciphertexts.items():
            self._outbox.setdefault(v, {})[sender] = ct

    def _end_share(self) -> list[Envelope]:
        live = frozenset(self._received)
        self.u2 = live
        self._advance(live, self.ctx.params.min_survivors)
        out = []
        for v in sorted(live):
            inbox = {u: ct for u, ct in sorted(self._outbox.get(v, {}).items()) if u in live}
            out.append(
                Envelope(
                    self.party_id,
                    v,
                    m.ShareDelivery(
                        session_id=self.ctx.session_id,
                        round_id=self.ctx.round_id,
                        ciphertexts=inbox,
                    ),
                )
            )
        self._outbox.clear()
        return out

    # ------------------------------------------------------------------------------- stage 3

    def _on_masked(self, sender: int, msg: m.MaskedInput) -> None:
        values, dtype, dimension = msg.values, self._dtype, self._dimension
        if not isinstance(values, np.ndarray) or values.dtype != dtype or values.ndim != 1:
            raise self._bad(sender, f"masked input must be a 1-D {dtype} array")
        if values.shape[0] != dimension:
            raise self._bad(
                sender, f"masked input has {values.shape[0]} values, expected {dimension}"
            )
        if self._sum is None:
            self._sum = np.zeros(dimension, dtype=dtype)
        np.add(self._sum, values, out=self._sum)

    def _end_masked(self) -> list[Envelope]:
        live = frozenset(self._received)
        self.u3 = live
        self._advance(live, self.ctx.params.min_survivors)
        survivors = tuple(sorted(live))
        if self.ctx.malicious:
            request: Message = m.ConsistencyRequest(
                session_id=self.ctx.session_id, round_id=self.ctx.round_id, survivors=survivors
            )
        else:
            request = self._unmask_request()
        return [Envelope(self.party_id, u, request) for u in survivors]

    def _unmask_request(self) -> m.UnmaskRequest:
        return m.UnmaskRequest(
            session_id=self.ctx.session_id,
            round_id=self.ctx.round_id,
            survivors=tuple(sorted(self.u3)),
            dropped=tuple(sorted(self.u2 - self.u3)),
            signatures=dict(sorted(self._signatures.items())),
        )

    # ------------------------------------------------------------------- stage 4 (malicious)

    def _on_consistency(self, sender: int, msg: m.ConsistencySignature) -> None:
        registry = self.ctx.registry or {}
        signed = m.consistency_signed_bytes(
            session_id=self.ctx.session_id, round_id=self.ctx.round_id, survivors=self.u3
        )
        try:
            signing.verify(registry[sender], signed, msg.signature)
        except InvalidSignature:
            raise self._bad(sender, "consistency signature does not verify") from None
        self._signatures[sender] = msg.signature

    def _end_consistency(self) -> list[Envelope]:
        signers = frozenset(self._received)
        self._advance(signers, self.ctx.params.threshold)
        request = self._unmask_request()
        return [Envelope(self.party_id, u, request) for u in sorted(signers)]

    # ------------------------------------------------------------------------------ unmask

    def _on_unmask(self, sender: int, msg: m.UnmaskShares) -> None:
        nbrs = self.ctx.neighbours[sender]
        dropped = self.u2 - self.u3
        if not set(msg.self_mask_shares) <= (self.u3 & (nbrs | {sender})):
            raise self._bad(
                sender, "self-mask shares for clients that are not surviving neighbours"
            )
        if not set(msg.mask_key_shares) <= (dropped & nbrs):
            raise self._bad(sender, "mask-key shares for clients that are not dropped neighbours")
        # Each share must be a version-1 share at x = sender + 1 of a 32-byte secret shared with
        # this round's threshold; parsed once here, all of this message's or none of them kept.
        index, t = sender + 1, self.ctx.params.threshold
        try:
            b_shares = zip(msg.self_mask_shares, shamir.share_values_many(
                msg.self_mask_shares.values(), index=index, threshold=t,
                secret_length=_SECRET_BYTES), strict=True)
            k_shares = zip(msg.mask_key_shares, shamir.share_values_many(
                msg.mask_key_shares.values(), index=index, threshold=t,
                secret_length=_SECRET_BYTES), strict=True)
        except InvalidShareError:
            raise self._bad(
                sender,
                "malformed share (not a version-1 share at x = sender + 1 of a 32-byte secret "
                "with this round's threshold)",
            ) from None
        for store, shares in ((self._b_shares, b_shares), (self._k_shares, k_shares)):
            for u, values in shares:
                points = store.get(u)
                if points is None:
                    store[u] = ([index], [values])
                else:
                    points[0].append(index)
                    points[1].append(values)

    def _recover(
        self, owner: int, points: tuple[list[int], list[tuple[int, ...]]] | None, what: str
    ) -> bytes:
        t = self.ctx.params.threshold
        indices, values = points if points is not None else ([], [])
        if len(indices) < t:
            raise InsufficientSurvivors(
                stage="unmask", survivors=len(indices), threshold=t, node_ids=[owner]
            )
        try:
            return shamir.reconstruct_points(
                indices, values, threshold=t, secret_length=_SECRET_BYTES, check=self._check
            )
        except (TamperedShareError, InvalidShareError):
            raise ProtocolError(
                f"inconsistent shares of {what}; aborting the round",
                stage="unmask",
                node_ids=[owner],
            ) from None

    def _end_unmask(self) -> list[Envelope]:
        if self._sum is None:  # pragma: no cover - min_survivors >= 1 guarantees a sum
            raise ProtocolError("no masked input", stage="unmask")
        responders = frozenset(self._received)
        if len(responders) < self.ctx.params.threshold:
            # Every secret needs t shares and each responder holds at most one of each.
            raise InsufficientSurvivors(
                stage="unmask",
                survivors=len(responders),
                threshold=self.ctx.params.threshold,
                node_ids=sorted(responders),
            )
        total = self._sum
        # one random check polynomial for every reconstruction of the round, drawn now that
        # every share is in (see shamir.RandomCheck)
        self._check = shamir.RandomCheck()
        for u in sorted(self.u3):
            b_seed = self._recover(u, self._b_shares.get(u), f"client {u}'s self-mask")
            prg.add_mask(
                total,
                b_seed,
                label=labels.SELF_MASK,
                context=self.ctx.self_mask_context(u),
                subtract=True,
            )
        for u in sorted(self.u2 - self.u3):
            secret = self._recover(u, self._k_shares.get(u), f"client {u}'s mask key")
            try:
                key = keyagree.KeyPair.from_private_bytes(secret)
            except InvalidKeyError:
                raise ProtocolError(
                    "recovered mask key is malformed", stage="unmask", node_ids=[u]
                ) from None
            if key.public_bytes != self._keys[u][1]:
                raise ProtocolError(
                    "recovered mask key does not match the advertised key",
                    stage="unmask",
                    node_ids=[u],
                )
            for v in sorted(self.ctx.neighbours[u] & self.u3):
                seed = self.ctx.pairwise_seed(key, u, self._keys[v][1], v)
                # v applied +PRG if v < u and -PRG if v > u: undo it.
                prg.add_mask(
                    total,
                    seed,
                    label=labels.PAIRWISE_MASK,
                    context=self.ctx.mask_context(),
                    subtract=v < u,
                )
        self._b_shares.clear()
        self._k_shares.clear()
        self._finish(total)
        self._stage_index = len(self.stages)
        return []

    def _finish(self, total: npt.NDArray[np.unsignedinteger[npt.NBitBase]]) -> None:
        weighted = self.ctx.weighted
        vector = total[:-1] if weighted else total
        total_weight = float(int(total[-1])) if weighted else float(len(self.u3))
        flat = self.ctx.encoder.decode(vector)
        arrays, pos = [], 0
        for shape in self.ctx.shapes:
            size = math.prod(int(d) for d in shape)
            arrays.append(flat[pos : pos + size].reshape(shape))
            pos += size
        details: dict[str, Any] = {
            "u1": sorted(self.u1),
            "u2": sorted(self.u2),
            "u3": sorted(self.u3),
            "signers": sorted(self._signatures),
        }
        self._result = AggregateOutcome(
            aggregate=arrays,
            survivor_ids=tuple(sorted(self.u3)),
            total_weight=total_weight,
            details=details,
        )
        self._sum = None
