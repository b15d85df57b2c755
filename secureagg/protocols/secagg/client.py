"""The SecAgg / SecAgg+ client: a sans-I/O state machine (Bonawitz et al. 2017, Bell et al. 2020).

Stages (what the client waits for): ``advertise`` (AdvertiseRequest) -> ``share`` (KeyBroadcast)
-> ``masked`` (ShareDelivery) -> [``consistency`` (ConsistencyRequest), malicious mode] ->
``unmask`` (UnmaskRequest) -> ``done``. Any other message raises :class:`ProtocolError` naming the
stage and sender; any violation aborts the client for good (``aborted``), and an aborted client
sends nothing more.

The update is first used at ``masked``: a client built without it (``update=None``; its state
then carries no update) is given it by :meth:`SecAggClient.supply_update` before it answers
``masked``, or refuses there (aborts, sends nothing: a dropout after sharing).

Invariant (what the server can learn): the masked input is ``x_u + PRG(b_u) + sum_v
+-PRG(s_uv)``; a client reveals, for each neighbour, either the share of its self-mask seed b_v
(v survived) or the share of its mask key (v dropped), never both; of its own secrets it keeps one
share of each (x = its id + 1) and reveals only its own b_u share, only as a survivor. Before
revealing anything the client checks that the request names no peer as both survivor and dropped,
does not name itself as dropped, uses only known ids once each, and (malicious mode) carries valid
signatures of at least ``t`` clients over the very survivor list this client signed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.crypto import aead, keyagree, labels, prg, shamir, signing
from secureagg.crypto.encoding import require_finite
from secureagg.errors import (
    ConsistencyError,
    InsufficientSurvivors,
    InvalidCiphertext,
    InvalidKeyError,
    InvalidShareError,
    InvalidSignature,
    ProtocolError,
)
from secureagg.protocols.base import SERVER, ClientParty, Envelope, Message
from secureagg.protocols.secagg import messages as m
from secureagg.protocols.secagg.context import Randomness, RoundContext
from secureagg.protocols.secagg.state import SecAggClientState, check_fields
from secureagg.protocols.spec import RoundSpec
from secureagg.protocols.state import STATE_VERSION, check_state

__all__ = ["IntegerNoise", "SecAggClient"]

#: ``noise(count, keystream_or_None) -> int64 array``: a client's share of distributed DP noise in
#: the integer (encoded) domain. ``None`` as keystream means "use the OS CSPRNG".
IntegerNoise = Callable[[int, "prg.Keystream | None"], npt.NDArray[np.signedinteger[Any]]]


@dataclass(frozen=True)
class _PeerKeys:
    cipher_public_key: bytes
    mask_public_key: bytes


class SecAggClient(ClientParty):
    """One client's side of one round.

    ``update`` is the flattened float vector (validated finite here, before anything is sent),
    or ``None``: given later by :meth:`supply_update` (see the module docstring); ``weight`` an
    integer FedAvg weight; ``identity`` the Ed25519 key registered for this client (malicious
    mode).
    """

    def __init__(
        self,
        client_id: int,
        context: RoundContext,
        update: npt.NDArray[Any] | None,
        *,
        weight: int = 1,
        identity: signing.SigningKey | None = None,
        randomness: Randomness | None = None,
        noise: IntegerNoise | None = None,
    ) -> None:
        self.party_id = client_id
        self._noise = noise
        self.ctx = context
        self.stage = context.stages[0]
        if update is not None:  # else: absent until supply_update (or, restored, already sent)
            self._update = self._checked(update, stage="advertise")
        if context.malicious and identity is None:
            raise ProtocolError(
                "malicious mode needs an identity key", stage="advertise", node_ids=[client_id]
            )
        self._weight = weight
        self._identity = identity
        self._rand = randomness or Randomness()
        self.clipped = 0
        self.aborted = False
        self._model_digest = b""
        self._cipher_keys: keyagree.KeyPair | None = None
        self._mask_keys: keyagree.KeyPair | None = None
        self._peers: dict[int, _PeerKeys] = {}
        self._share_view: frozenset[int] = frozenset()  # neighbours the server says sent shares
        self._held_self_mask: dict[int, bytes] = {}  # owner -> our share of its b
        self._held_mask_key: dict[int, bytes] = {}  # owner -> our share of its mask key
        self._signed_survivors: tuple[int, ...] | None = None
        self._self_mask_seed = b""
        self._share_keys: dict[int, bytes] = {}  # AEAD key with each peer
        self._pair_seeds: dict[int, bytes] = {}  # s_uv with each peer

    def _checked(self, update: npt.NDArray[Any], *, stage: str) -> npt.NDArray[Any]:
        """The update as a flat float vector, refused unless finite and of the round's size."""
        flat = np.asarray(update).reshape(-1)  # a view when possible: no copy of big vectors
        if not np.issubdtype(flat.dtype, np.floating):
            flat = flat.astype(np.float64)
        require_finite(flat, where=f"client {self.party_id}'s update")
        expected = self.ctx.dimension - (1 if self.ctx.weighted else 0)
        if flat.size != expected:
            raise ProtocolError(f"update has {flat.size} values, the round expects {expected}",
                                stage=stage, node_ids=[self.party_id])
        return flat

    @property
    def awaiting_update(self) -> bool:
        """Built without its update and not given it yet (it is needed at ``masked``)."""
        stages = self.ctx.stages
        return not hasattr(self, "_update") and self.stage in stages[: stages.index("masked") + 1]

    def supply_update(self, update: npt.NDArray[Any], *, weight: int = 1) -> None:
        """Give a client built without its update its flat update and integer weight, before it
        answers ``masked``; refused (``ProtocolError``, nothing changes) otherwise."""
        if not self.awaiting_update:
            raise ProtocolError("the client is not awaiting its update (it has one, has sent its "
                                "masked input or has aborted)", stage=self.stage,
                                node_ids=[self.party_id])
        self._update = self._checked(update, stage=self.stage)
        self._weight = weight

    # ----------------------------------------------------------------------------- state

    def export_state(self) -> SecAggClientState:
        """This client's state now, between two stages (secret fields: ``SECRET_FIELDS``)."""
        peers = sorted(self._peers.items())
        cipher, mask = self._cipher_keys, self._mask_keys
        return SecAggClientState(
            version=STATE_VERSION, spec_digest=self.spec_digest, party_id=self.party_id,
            stage=self.stage, aborted=self.aborted,
            # its own dtype, encoded as it was; empty before it is supplied (a client built
            # without it) and once the masked input has been sent
            update=np.ascontiguousarray(getattr(self, "_update", np.zeros(0))),
            weight=int(self._weight), clipped=int(self.clipped), model_digest=self._model_digest,
            cipher_private_key=b"" if cipher is None else cipher.private_bytes(),
            mask_private_key=b"" if mask is None else mask.private_bytes(),
            peer_ids=tuple(v for v, _ in peers),
            peer_cipher_keys=tuple(k.cipher_public_key for _, k in peers),
            peer_mask_keys=tuple(k.mask_public_key for _, k in peers),
            share_view=tuple(sorted(self._share_view)),
            held_self_mask=dict(sorted(self._held_self_mask.items())),
            held_mask_key=dict(sorted(self._held_mask_key.items())),
            signed_survivors=self._signed_survivors, self_mask_seed=self._self_mask_seed,
            share_keys=dict(sorted(self._share_keys.items())),
            pair_seeds=dict(sorted(self._pair_seeds.items())),
            randomness=self._rand.export(),
        )

    @classmethod
    def restore(
        cls,
        spec: RoundSpec,
        context: RoundContext,
        state: object,
        *,
        identity: signing.SigningKey | None = None,
        noise: IntegerNoise | None = None,
    ) -> SecAggClient:
        """The client ``state`` describes, checked like a message from another party."""
        check_state(state, spec, SecAggClientState, stages=(*context.stages, "done", "aborted"))
        if not isinstance(state, SecAggClientState):  # pragma: no cover - check_state refuses
            raise ProtocolError("not a SecAgg client state", stage="restore")
        check_fields(state, context)
        # An empty update: not supplied yet (before ``masked``), or dropped with the masked input.
        update = np.array(state.update) if state.update.size else None
        client = cls(
            state.party_id, context, update, weight=state.weight,
            identity=identity, randomness=Randomness.resume(state.randomness), noise=noise,
        )
        client.spec_digest = spec.digest
        client.stage, client.aborted, client.clipped = state.stage, state.aborted, state.clipped
        client._model_digest = state.model_digest
        if state.cipher_private_key:
            client._cipher_keys = keyagree.KeyPair.from_private_bytes(state.cipher_private_key)
            client._mask_keys = keyagree.KeyPair.from_private_bytes(state.mask_private_key)
        client._peers = {
            v: _PeerKeys(c, k) for v, c, k in zip(
                state.peer_ids, state.peer_cipher_keys, state.peer_mask_keys, strict=True
            )
        }
        client._share_view = frozenset(state.share_view)
        client._held_self_mask = dict(state.held_self_mask)
        client._held_mask_key = dict(state.held_mask_key)
        client._signed_survivors = state.signed_survivors
        client._self_mask_seed = state.self_mask_seed
        client._share_keys, client._pair_seeds = dict(state.share_keys), dict(state.pair_seeds)
        return client

    # ----------------------------------------------------------------------------- plumbing

    @property
    def neighbours(self) -> frozenset[int]:
        return self.ctx.neighbours[self.party_id]

    def _fail(self, error: ProtocolError) -> ProtocolError:
        self.aborted = True
        self.stage = "aborted"
        return error

    def _error(
        self, message: str, nodes: Iterable[int] = (), *, cls: type[ProtocolError] = ProtocolError
    ) -> ProtocolError:
        return self._fail(cls(message, stage=self.stage, node_ids=[self.party_id, *nodes]))

    def _reply(self, message: Message) -> list[Envelope]:
        return [Envelope(self.party_id, SERVER, message)]

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        if self.aborted:
            raise ProtocolError(
                "client has aborted this round", stage="aborted", node_ids=[self.party_id]
            )
        if sender != SERVER:
            raise self._error(f"message from party {sender}, not the server", [sender])
        session = getattr(message, "session_id", None)
        round_id = getattr(message, "round_id", None)
        if session != self.ctx.session_id or round_id != self.ctx.round_id:
            raise self._error("message from another session or round (replay)")
        handlers = {
            ("advertise", m.AdvertiseRequest): self._on_advertise,
            ("share", m.KeyBroadcast): self._on_keys,
            ("masked", m.ShareDelivery): self._on_shares,
            ("consistency", m.ConsistencyRequest): self._on_consistency,
            ("unmask", m.UnmaskRequest): self._on_unmask,
        }
        handler = handlers.get((self.stage, type(message)))
        if handler is None:
            raise self._error(f"unexpected {message.KIND} while waiting in stage {self.stage}")
        return handler(message)

    # ------------------------------------------------------------------------------- stages

    def _on_advertise(self, msg: Message) -> list[Envelope]:
        if not isinstance(msg, m.AdvertiseRequest):  # pragma: no cover - dispatch guarantees it
            raise self._error("bad message")
        self._model_digest = msg.model_digest
        self._cipher_keys = keyagree.KeyPair.from_private_bytes(self._rand.bytes(32))
        self._mask_keys = keyagree.KeyPair.from_private_bytes(self._rand.bytes(32))
        signature = b""
        if self._identity is not None and self.ctx.malicious:
            signature = self._identity.sign(
                m.advertisement_signed_bytes(
                    session_id=self.ctx.session_id,
                    round_id=self.ctx.round_id,
                    client_id=self.party_id,
                    cipher_public_key=self._cipher_keys.public_bytes,
                    mask_public_key=self._mask_keys.public_bytes,
                    model_digest=msg.model_digest,
                )
            )
        self.stage = self.ctx.stage_after("advertise")
        return self._reply(m.KeyAdvertisement(
            session_id=self.ctx.session_id, round_id=self.ctx.round_id,
            cipher_public_key=self._cipher_keys.public_bytes,
            mask_public_key=self._mask_keys.public_bytes, signature=signature,
        ))

    def _on_keys(self, msg: Message) -> list[Envelope]:
        if (
            not isinstance(msg, m.KeyBroadcast)
            or self._cipher_keys is None
            or self._mask_keys is None
        ):
            raise self._error("bad message")  # pragma: no cover
        t = self.ctx.params.threshold
        ids = set(msg.keys)
        if self.party_id in ids or not ids <= self.neighbours:
            raise self._error(
                "key broadcast lists non-neighbours or this client", sorted(ids - self.neighbours)
            )
        seen = {self._cipher_keys.public_bytes, self._mask_keys.public_bytes}
        peers: dict[int, _PeerKeys] = {}
        for v in sorted(ids):
            parts = m.unpack_keys(msg.keys[v])
            if parts is None:
                raise self._error("malformed key advertisement", [v])
            c_pk, s_pk, sig = parts
            try:
                keyagree.check_public_key(c_pk)
                keyagree.check_public_key(s_pk)
            except InvalidKeyError:
                raise self._error("low-order or malformed public key", [v]) from None
            if c_pk in seen or s_pk in seen or c_pk == s_pk:
                raise self._error("duplicate public key in the key broadcast", [v])
            seen.update((c_pk, s_pk))
            if self.ctx.malicious:
                self._verify_advertisement(v, c_pk, s_pk, sig)
            peers[v] = _PeerKeys(c_pk, s_pk)
        if len(peers) + 1 < t:
            raise self._error(
                f"only {len(peers)} live neighbours: with this client, fewer than t={t} "
                "shareholders",
                cls=ProtocolError,
            )
        # Shamir-share b_u and the mask private key among the live neighbours and this client
        # itself (x = id + 1; Bonawitz et al. 2017 share among all of U1, the sharer included):
        # t surviving clients then hold t shares of every surviving client's b_u. The own share
        # of b_u is revealed only while this client is a survivor (when b_u is meant to be
        # reconstructed); the own share of the mask key is discarded, never revealed.
        self_mask_seed = self._rand.bytes(prg.SEED_BYTES)
        self._self_mask_seed = self_mask_seed
        order = sorted(peers)
        indices = [v + 1 for v in order] + [self.party_id + 1]
        b_shares = shamir.split(
            self_mask_seed,
            threshold=t,
            indices=indices,
            rng=self._rand.keystream(labels.SHAMIR_COEFFICIENTS),
        )
        k_shares = shamir.split(
            self._mask_keys.private_bytes(),
            threshold=t,
            indices=indices,
            rng=self._rand.keystream(labels.SHAMIR_COEFFICIENTS),
        )
        self._held_self_mask[self.party_id] = b_shares[-1].to_bytes()
        ciphertexts: dict[int, bytes] = {}
        for v, b_share, k_share in zip(order, b_shares[:-1], k_shares[:-1], strict=True):
            try:
                key = self.ctx.share_key(
                    self._cipher_keys, self.party_id, peers[v].cipher_public_key, v
                )
                # The pairwise seed now, too, so that a low-order key aborts before any share
                # is sent; both are kept for the next stage (two agreements per neighbour).
                self._pair_seeds[v] = self.ctx.pairwise_seed(
                    self._mask_keys, self.party_id, peers[v].mask_public_key, v
                )
                self._share_keys[v] = key
            except InvalidKeyError:
                raise self._error("low-order or malformed public key", [v]) from None
            plaintext = m.pack_share_plaintext(
                self.party_id, v, b_share.to_bytes(), k_share.to_bytes()
            )
            nonce = self._rand.bytes(aead.NONCE_BYTES) if self._rand.seeded else None
            ciphertexts[v] = aead.encrypt(
                key,
                plaintext,
                nonce=nonce,
                associated_data=m.share_associated_data(
                    session_id=self.ctx.session_id,
                    round_id=self.ctx.round_id,
                    sender=self.party_id,
                    recipient=v,
                ),
            )
        self._peers = peers
        self.stage = self.ctx.stage_after("share")
        return self._reply(
            m.EncryptedShares(
                session_id=self.ctx.session_id, round_id=self.ctx.round_id, ciphertexts=ciphertexts
            )
        )

    def _verify_advertisement(self, v: int, c_pk: bytes, s_pk: bytes, sig: bytes) -> None:
        registry = self.ctx.registry or {}
        if v not in registry or not sig:
            raise self._error(
                "unsigned keys or a client missing from the registry", [v], cls=ConsistencyError
            )
        try:
            signing.verify(
                registry[v],
                m.advertisement_signed_bytes(
                    session_id=self.ctx.session_id,
                    round_id=self.ctx.round_id,
                    client_id=v,
                    cipher_public_key=c_pk,
                    mask_public_key=s_pk,
                    model_digest=self._model_digest,
                ),
                sig,
            )
        except InvalidSignature:
            raise self._error(
                "a neighbour's key signature does not verify over this client's model digest "
                "(forged keys, or clients were sent different models)",
                [v],
                cls=ConsistencyError,
            ) from None

    def _on_shares(self, msg: Message) -> list[Envelope]:
        if (
            not isinstance(msg, m.ShareDelivery)
            or self._cipher_keys is None
            or self._mask_keys is None
        ):
            raise self._error("bad message")  # pragma: no cover
        if not hasattr(self, "_update"):
            raise self._error("no update was supplied before the masked input (supply_update)")
        t = self.ctx.params.threshold
        senders = set(msg.ciphertexts)
        if not senders <= set(self._peers):
            raise self._error(
                "shares from clients that were not live neighbours",
                sorted(senders - set(self._peers)),
            )
        if len(senders) + 1 < t:
            raise self._error(
                f"only {len(senders)} neighbours sent shares: with this client, fewer than t={t}"
            )
        for u in sorted(senders):
            self._open_share(u, msg.ciphertexts[u])
        self._share_view = frozenset(senders)
        values = self._masked_input()
        self.stage = self.ctx.stage_after("masked")
        return self._reply(
            m.MaskedInput(session_id=self.ctx.session_id, round_id=self.ctx.round_id, values=values)
        )

    def _open_share(self, u: int, ciphertext: bytes) -> None:
        """Decrypt u's share for us; a tampered or misaddressed one is dropped, never used."""
        if self._cipher_keys is None:  # pragma: no cover
            return
        key = self._share_keys[u]
        try:
            plaintext = aead.decrypt(
                key,
                ciphertext,
                associated_data=m.share_associated_data(
                    session_id=self.ctx.session_id,
                    round_id=self.ctx.round_id,
                    sender=u,
                    recipient=self.party_id,
                ),
            )
        except InvalidCiphertext:
            return
        parts = m.unpack_share_plaintext(plaintext)
        if parts is None or parts[0] != u or parts[1] != self.party_id:
            return
        try:
            b_share = shamir.Share.from_bytes(parts[2])
            k_share = shamir.Share.from_bytes(parts[3])
        except InvalidShareError:
            return
        t = self.ctx.params.threshold
        if any(s.index != self.party_id + 1 or s.threshold != t for s in (b_share, k_share)):
            return
        self._held_self_mask[u] = parts[2]
        self._held_mask_key[u] = parts[3]

    def _masked_input(self) -> npt.NDArray[np.unsignedinteger[npt.NBitBase]]:
        if self._mask_keys is None:  # pragma: no cover
            raise self._error("no keys")
        rounding = self._rand.keystream(labels.STOCHASTIC_ROUNDING)
        encoded = self.ctx.encoder.encode(self._update, weight=self._weight, rng=rounding)
        self.clipped = encoded.clipped
        values = encoded.values
        if self._noise is not None:
            # Distributed DP: this client's share of integer noise, added before masking so the
            # server only ever sees the noised sum. Wraps modulo 2^bits like the encoding; the
            # aggregator reserved its tail in the encoder's noise_headroom.
            noise = self._noise(values.shape[0], self._rand.keystream(labels.NOISE))
            if noise.shape != values.shape or noise.dtype.kind != "i":
                raise self._error("the noise sampler returned a wrong shape or dtype")
            np.add(values, noise.astype(values.dtype), out=values, casting="unsafe")
        if self.ctx.weighted:
            values = np.concatenate([values, np.array([self._weight], dtype=values.dtype)])
        values = np.ascontiguousarray(values)
        prg.add_mask(
            values,
            self._self_mask_seed,
            label=labels.SELF_MASK,
            context=self.ctx.self_mask_context(self.party_id),
        )
        for v in sorted(self._share_view):
            prg.add_mask(
                values,
                self._pair_seeds[v],
                label=labels.PAIRWISE_MASK,
                context=self.ctx.mask_context(),
                subtract=self.party_id > v,
            )
        del self._update  # the plaintext is no longer needed
        self._pair_seeds.clear()
        return values

    def _check_ids(self, ids: tuple[int, ...], what: str) -> None:
        n = self.ctx.params.num_clients
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise self._error(f"{what} names unknown client ids", bad)
        if len(set(ids)) != len(ids):
            raise self._error(
                f"{what} names a client twice", sorted({i for i in ids if ids.count(i) > 1})
            )

    def _on_consistency(self, msg: Message) -> list[Envelope]:
        if not isinstance(msg, m.ConsistencyRequest) or self._identity is None:
            raise self._error("bad message")  # pragma: no cover
        self._check_ids(msg.survivors, "the survivor list")
        if self.party_id not in msg.survivors:
            raise self._error("this client is missing from the survivor list", cls=ConsistencyError)
        survivors = tuple(sorted(msg.survivors))
        self._signed_survivors = survivors
        self.stage = self.ctx.stage_after("consistency")
        sig = self._identity.sign(
            m.consistency_signed_bytes(
                session_id=self.ctx.session_id, round_id=self.ctx.round_id, survivors=survivors
            )
        )
        return self._reply(m.ConsistencySignature(
            session_id=self.ctx.session_id, round_id=self.ctx.round_id, signature=sig))

    def _on_unmask(self, msg: Message) -> list[Envelope]:
        if not isinstance(msg, m.UnmaskRequest):
            raise self._error("bad message")  # pragma: no cover
        self._check_ids(msg.survivors, "the survivor list")
        self._check_ids(msg.dropped, "the dropped list")
        survivors, dropped = set(msg.survivors), set(msg.dropped)
        both = survivors & dropped
        if both:
            raise self._error(
                "peers named both survivor and dropped", sorted(both), cls=ConsistencyError
            )
        if self.party_id in dropped or self.party_id not in survivors:
            raise self._error("this client is listed as dropped", cls=ConsistencyError)
        view = self._share_view
        inconsistent = ((survivors | dropped) & self.neighbours) - view
        if inconsistent:
            raise self._error(
                "survivor/dropped lists disagree with the shares delivered",
                sorted(inconsistent),
                cls=ConsistencyError,
            )
        if len(survivors) < self.ctx.params.min_survivors:
            raise self._fail(
                InsufficientSurvivors(
                    stage=self.stage,
                    survivors=len(survivors),
                    threshold=self.ctx.params.min_survivors,
                    node_ids=[self.party_id],
                )
            )
        if self.ctx.malicious:
            self._verify_consistency(msg)
        b_out = {  # this client's own share of its b_u included: it is a survivor
            u: self._held_self_mask[u]
            for u in sorted((survivors & view) | {self.party_id})
            if u in self._held_self_mask
        }
        k_out = {
            u: self._held_mask_key[u] for u in sorted(dropped & view) if u in self._held_mask_key
        }
        self.stage = self.ctx.stage_after("unmask")
        self._held_self_mask.clear()
        self._held_mask_key.clear()
        return self._reply(m.UnmaskShares(
            session_id=self.ctx.session_id, round_id=self.ctx.round_id,
            self_mask_shares=b_out, mask_key_shares=k_out,
        ))

    def _verify_consistency(self, msg: m.UnmaskRequest) -> None:
        survivors = tuple(sorted(msg.survivors))
        if survivors != self._signed_survivors:
            raise self._error(
                "the survivor list differs from the one this client signed", cls=ConsistencyError
            )
        registry = self.ctx.registry or {}
        signed = m.consistency_signed_bytes(
            session_id=self.ctx.session_id, round_id=self.ctx.round_id, survivors=survivors
        )
        valid = 0
        for v, sig in sorted(msg.signatures.items()):
            if v not in msg.survivors or v not in registry:
                raise self._error(
                    "a consistency signature from a non-survivor", [v], cls=ConsistencyError
                )
            try:
                signing.verify(registry[v], signed, sig)
            except InvalidSignature:
                raise self._error(
                    "clients saw different survivor lists", [v], cls=ConsistencyError
                ) from None
            valid += 1
        if valid < self.ctx.params.threshold:
            raise self._error(
                f"only {valid} consistency signatures, fewer than t={self.ctx.params.threshold}",
                cls=ConsistencyError,
            )
