"""The HE key holder rebuilt from bytes at every message, as on an engine that starts a fresh
process per message (helper_step), and its secret key stored on its node (to_bytes/from_bytes).

The tests' :class:`Nodes` link plays the engine: every party but the server lives on a "node"
that keeps only bytes between messages - the round spec, the party's exported state and, for the
key holder, its secret key's bytes - and every message rebuilds the party from them
(``client_step`` for a client, ``helper_step`` for the key holder, the key read back with
``from_bytes`` every time). The server runs in :class:`~secureagg.engine.server.EngineRound`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import secureagg as sa
from secureagg.crypto import prg
from secureagg.dp import CentralDP
from secureagg.engine import ClientStep, client_step, helper_step
from secureagg.engine.server import Answer, EngineRound
from secureagg.errors import ConfigurationError, MalformedMessage
from secureagg.he.ckks import CkksParameters, CkksPublicContext, CkksSecretKey
from secureagg.he.paillier import PaillierSecretKey
from secureagg.he.secret_key_bytes import seal
from secureagg.protocols.base import KEY_HOLDER, SERVER, AggregateOutcome
from secureagg.protocols.he_round.state import HEKeyHolderState
from secureagg.protocols.spec import RoundSpec
from secureagg.transport import codec
from secureagg.transport.party_state import state_from_bytes, state_to_bytes
from secureagg.transport.round_spec import spec_from_bytes, spec_to_bytes
from tests.he.keys import ckks_key, paillier_key

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SESSION = b"K" * 16
N = 4
SHAPES = [(4,), (3,)]

Rewrite = Callable[[int, bytes], bytes]


def _ckks(**kw: Any) -> Any:
    return sa.make_aggregator("ckks", num_clients=N, clip=1.0, key=ckks_key(), **kw)


def _paillier(**kw: Any) -> Any:
    return sa.make_aggregator("paillier", num_clients=N, clip=1.0, key=paillier_key(),
                              key_bits=2048, **kw)


def _updates(seed: int = 3) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.uniform(-1, 1, size=s) for s in SHAPES] for _ in range(N)]


def _spec(agg: Any, round_id: int = 0) -> tuple[RoundSpec, Any]:
    """The round's spec and the key holder's key (the aggregator's key service's)."""
    provision = agg.provision(session_id=SESSION, round_id=round_id, seed=None)
    spec = agg.round_spec(shapes=SHAPES, weighted=False, session_id=SESSION, round_id=round_id,
                          public_keys=provision.public)
    return spec, provision.secrets[KEY_HOLDER]


class Nodes:
    """Every party but the server on its own node, which keeps only bytes between messages.

    ``rewrite_reply(party, reply bytes)`` plays a party that sends something else;
    ``rewrite_to_key_holder(message bytes)`` a server that sends the key holder something else.
    """

    def __init__(self, spec: RoundSpec, updates: list[list[np.ndarray]], key: Any, *,
                 rewrite_reply: Rewrite | None = None) -> None:
        self.spec_bytes = spec_to_bytes(spec)
        self.updates = updates
        self.key_type = type(key)
        self.key_bytes = key.to_bytes()  # the key holder's node keeps its key as bytes
        self.rewrite_reply = rewrite_reply
        self.states: dict[int, bytes] = {}
        self.rebuilt: dict[int, int] = {}
        self.to_key_holder: list[bytes] = []
        self.key_holder_states: list[bytes] = []
        self.queue: list[Answer] = []
        self.tickets = 0
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def step(self, recipient: int, sender: int, data: bytes) -> ClientStep:
        state = self.states.get(recipient)
        if recipient == KEY_HOLDER:
            self.to_key_holder.append(data)
            key = self.key_type.from_bytes(self.key_bytes)  # a fresh process reads its key
            step = helper_step(self.spec_bytes, state, sender, data,
                               secrets={KEY_HOLDER: key}, session_id=SESSION)
            self.key_holder_states.append(step.state)
        else:
            step = client_step(self.spec_bytes, state, sender, data, client_id=recipient,
                               update=None if state else self.updates[recipient],
                               session_id=SESSION)
        self.rebuilt[recipient] = self.rebuilt.get(recipient, 0) + 1
        self.states[recipient] = step.state
        return step

    def send(self, recipient: int, sender: int, data: bytes) -> int:
        ticket = self.tickets
        self.tickets += 1
        step = self.step(recipient, sender, data)
        replies = step.replies
        if self.rewrite_reply is not None:
            replies = tuple((r, self.rewrite_reply(recipient, d)) for r, d in replies)
        self.queue.append(Answer(recipient, ticket, replies, step.error))
        return ticket

    def collect(self, *, until: float) -> list[Answer]:
        if self.queue:
            out, self.queue = self.queue, []
            return out
        self.now = until  # nothing more will come: the deadline passes
        return []


def _run(agg: Any, updates: list[list[np.ndarray]], *, round_id: int = 0,
         rewrite_reply: Rewrite | None = None) -> tuple[AggregateOutcome, Nodes, EngineRound]:
    spec, key = _spec(agg, round_id)
    nodes = Nodes(spec, updates, key, rewrite_reply=rewrite_reply)
    engine = EngineRound(agg.server_from_spec(spec), nodes, round_id=round_id,
                         default_deadline=5.0, clock=nodes.clock)
    return engine.run(), nodes, engine


def _flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a).reshape(-1) for a in arrays])


def _reference(updates: list[list[np.ndarray]], ids: tuple[int, ...]) -> np.ndarray:
    return sum(np.clip(_flat(updates[i]), -1.0, 1.0) for i in ids)  # type: ignore[return-value]


def _key_holder_state(data: bytes) -> HEKeyHolderState:
    state = state_from_bytes(data)
    assert isinstance(state, HEKeyHolderState)
    return state


# ------------------------------------------------------------------------------ whole rounds


@pytest.mark.parametrize(("make", "encoding"), [(_ckks, "float"), (_ckks, "fixed"),
                                                (_paillier, None)], ids=["ckks-float",
                                                                         "ckks-fixed", "paillier"])
def test_a_whole_round_with_every_party_rebuilt_from_bytes_at_every_message(
    make: Callable[..., Any], encoding: str | None
) -> None:
    kw = {} if encoding is None else {"encoding": encoding}
    ups = _updates()
    outcome, nodes, engine = _run(make(**kw), ups)
    reference = sa.simulate(make(**kw), ups, seed=5)
    agg = make(**kw)
    bound = agg.error_bound(survivors=N)
    assert outcome.survivor_ids == reference.survivors == tuple(range(N))
    got = _flat(outcome.aggregate)
    assert float(np.max(np.abs(got - _reference(ups, outcome.survivor_ids)))) <= bound
    assert float(np.max(np.abs(got - _flat(reference.aggregate)))) <= 2 * bound
    assert all(nodes.rebuilt[c] >= 1 for c in range(N)) and nodes.rebuilt[KEY_HOLDER] == 1
    assert not engine.record.failed and not engine.record.rejected
    final = _key_holder_state(nodes.states[KEY_HOLDER])
    assert final.released and final.stage == "done" and final.randomness == b""


def _forge_upload_of(agg: Any, liar: int, length: int) -> Rewrite:
    """Client ``liar`` re-encrypts its upload under another key of the round's parameters,
    keeping the round's fingerprint (what a lying client sends)."""
    other = CkksPublicContext(CkksSecretKey(agg.params).public_material()).encryptor(
        scale=agg.scheme.scale
    )

    def rewrite(party: int, data: bytes) -> bytes:
        message = codec.decode(data)
        if party != liar or message.KIND != "ckks/upload":
            return data
        forged = tuple(other.encrypt(np.ones(length)))
        return codec.encode(dataclasses.replace(message, ciphertexts=forged))

    return rewrite


def test_ckks_key_checks_blame_and_reupload_with_the_key_holder_restored_between() -> None:
    """An upload under another key: the key holder (rebuilt from bytes) blames its sender, the
    others upload again, and the key holder - rebuilt again, remembering whom it blamed and its
    attempt - releases the sum over the others."""
    agg = _ckks()
    ups = _updates(7)
    dimension = sum(int(np.prod(s)) for s in SHAPES)
    outcome, nodes, _ = _run(agg, ups, rewrite_reply=_forge_upload_of(agg, 1, dimension + 1))
    assert outcome.survivor_ids == (0, 2, 3)
    assert "does not decrypt under the round's key" in outcome.details["refused"]["1"]
    got = _flat(outcome.aggregate)
    assert float(np.max(np.abs(got - _reference(ups, (0, 2, 3))))) <= agg.error_bound(survivors=3)
    first, second = (_key_holder_state(s) for s in nodes.key_holder_states)
    assert (first.released, first.blamed, first.attempt, first.last) == (
        False, (1,), 1, (0, 1, 2, 3))
    assert (second.released, second.blamed, second.attempt, second.last) == (
        True, (1,), 2, (0, 2, 3))
    assert nodes.rebuilt[KEY_HOLDER] == 2


def test_a_dp_wrapped_he_round_through_helper_step() -> None:
    def make() -> Any:
        return _ckks(central_dp=CentralDP(l2_clip=1.0, noise_multiplier=1e-9))

    agg = make()
    ups = [[np.full(4, 0.1), np.full(3, -0.05)] for _ in range(N)]  # inside the L2 clip
    outcome, nodes, _ = _run(agg, ups)
    assert outcome.survivor_ids == tuple(range(N))
    assert "central_dp" in outcome.details
    bound = agg.inner.error_bound(survivors=N) + 1e-6
    got = _flat(outcome.aggregate)
    assert float(np.max(np.abs(got - _reference(ups, tuple(range(N)))))) <= bound
    reference = sa.simulate(make(), ups, seed=5)
    assert float(np.max(np.abs(got - _flat(reference.aggregate)))) <= 2 * bound
    assert _key_holder_state(nodes.states[KEY_HOLDER]).released


# ------------------------------------------------------------------------------ one decryption


@pytest.mark.parametrize("make", [_ckks, _paillier], ids=["ckks", "paillier"])
def test_a_restored_key_holder_refuses_a_second_decryption(make: Callable[..., Any]) -> None:
    agg = make()
    _, nodes, _ = _run(agg, _updates())
    (aggregate,) = nodes.to_key_holder
    again = nodes.step(KEY_HOLDER, SERVER, aggregate)  # the same aggregate, once more
    assert again.replies == ()
    assert "one decryption per round" in again.error
    assert _key_holder_state(again.state).released


def test_a_failed_decryption_uses_up_the_round_across_processes() -> None:
    """The server names fewer contributors than it summed: the key holder decrypts, refuses to
    release - and its stored state says so, so the honest aggregate is refused afterwards."""
    agg = _paillier()
    _, nodes, _ = _run(agg, _updates())
    (honest,) = nodes.to_key_holder
    message = codec.decode(honest)
    lying = codec.encode(dataclasses.replace(message, contributors=message.contributors[:-1]))
    nodes.states.pop(KEY_HOLDER)  # a key holder that has seen nothing of this round yet
    refused = nodes.step(KEY_HOLDER, SERVER, lying)
    assert refused.replies == () and "count slot does not match" in refused.error
    assert _key_holder_state(refused.state).released
    second = nodes.step(KEY_HOLDER, SERVER, honest)
    assert "one decryption per round" in second.error


def test_a_seeded_key_holder_resumes_its_keystream() -> None:
    """In a seeded run the flooding keystream is in the state (secret): a restored key holder
    releases exactly what the uninterrupted one does."""
    agg = _ckks()
    _, nodes, _ = _run(agg, _updates())
    (aggregate,) = nodes.to_key_holder
    spec = spec_from_bytes(nodes.spec_bytes)
    secrets = {KEY_HOLDER: CkksSecretKey.from_bytes(nodes.key_bytes)}
    holder = agg.helpers_from_spec(spec, secrets, seed=b"seeded")[KEY_HOLDER]
    state = _key_holder_state(state_to_bytes(holder))
    assert len(state.randomness) == prg.Keystream.STATE_BYTES
    assert "randomness" in HEKeyHolderState.SECRET_FIELDS
    restored = agg.restore_helper(spec, state, secrets)
    assert state_to_bytes(restored) == state_to_bytes(holder)
    (mine,) = holder.receive(SERVER, codec.decode(aggregate))
    (theirs,) = restored.receive(SERVER, codec.decode(aggregate))
    np.testing.assert_array_equal(mine.message.values, theirs.message.values)


# ------------------------------------------------------------------------------ refusals


def _state_after_round(agg: Any) -> tuple[RoundSpec, Any, bytes, bytes]:
    _, nodes, _ = _run(agg, _updates())
    spec = spec_from_bytes(nodes.spec_bytes)
    return spec, nodes.key_type.from_bytes(nodes.key_bytes), nodes.states[KEY_HOLDER], \
        nodes.states[0]


def _sealed(message: Any) -> bytes:
    from secureagg.transport import party_state

    body = codec.encode(message)
    return body + party_state._digest(body)


def test_a_key_holder_state_from_another_round_or_party_is_refused_by_name() -> None:
    agg = _paillier()
    spec, key, data, client_data = _state_after_round(agg)
    secrets = {KEY_HOLDER: key}
    state = state_from_bytes(data)
    for round_id, session in ((1, SESSION), (0, b"L" * 16)):
        other = agg.round_spec(shapes=SHAPES, weighted=False, session_id=session,
                               round_id=round_id, public_keys=dict(spec.public_keys))
        with pytest.raises(MalformedMessage, match="another round spec"):
            agg.restore_helper(other, state, secrets)
    with pytest.raises(MalformedMessage, match="expected a 'he/key-holder-state' state"):
        agg.restore_helper(spec, state_from_bytes(client_data), secrets)
    with pytest.raises(MalformedMessage, match="expected a 'he/client-state' state"):
        agg.restore_client(spec, state)
    with pytest.raises(MalformedMessage, match="names party 0"):
        agg.restore_helper(spec, state_from_bytes(_sealed(
            dataclasses.replace(state, party_id=0))), secrets)
    # helper_step: the stored state of another round is refused before anything is delivered
    later = agg.round_spec(shapes=SHAPES, weighted=False, session_id=SESSION, round_id=1,
                           public_keys=dict(spec.public_keys))
    with pytest.raises(MalformedMessage, match="another round spec"):
        helper_step(spec_to_bytes(later), data, SERVER, b"", secrets=secrets)


def test_a_forged_key_holder_state_field_is_refused() -> None:
    agg = _ckks()
    spec, key, data, _ = _state_after_round(agg)
    secrets = {KEY_HOLDER: key}
    state = _key_holder_state(data)
    for bad in (
        dataclasses.replace(state, stage="await-aggregate"),  # released, but not done
        dataclasses.replace(state, released=False),
        dataclasses.replace(state, stage="nowhere"),
        dataclasses.replace(state, attempt=0),
        dataclasses.replace(state, attempt=99),
        dataclasses.replace(state, blamed=(2, 1)),
        dataclasses.replace(state, blamed=(9,)),
        dataclasses.replace(state, last=None),
        dataclasses.replace(state, last=(0,)),  # fewer than min_clients
        dataclasses.replace(state, randomness=b"x" * 5),
        dataclasses.replace(state, version=2),
    ):
        with pytest.raises(MalformedMessage):
            agg.restore_helper(spec, state_from_bytes(_sealed(bad)), secrets)
    fresh = dataclasses.replace(state, stage="await-aggregate", released=False, attempt=0,
                                last=None, blamed=())
    restored = agg.restore_helper(spec, state_from_bytes(_sealed(fresh)), secrets)
    assert not restored.released


def test_restoring_needs_the_key_the_spec_names_and_a_fresh_key_holder() -> None:
    agg = _paillier()
    spec, key, data, _ = _state_after_round(agg)
    state = state_from_bytes(data)
    with pytest.raises(ConfigurationError, match="needs its PaillierSecretKey"):
        agg.restore_helper(spec, state, {})
    with pytest.raises(ConfigurationError, match="another key"):
        agg.restore_helper(spec, state, {KEY_HOLDER: paillier_key(tag=b"other")})
    holder = agg.restore_helper(spec, state, {KEY_HOLDER: key})
    with pytest.raises(ConfigurationError, match="freshly built"):
        holder.load_state(spec, state)
    plain = sa.make_aggregator("plain", num_clients=N)
    with pytest.raises(ConfigurationError, match="no helper party"):
        plain.restore_helper(spec, state, {})
    pspec = plain.round_spec(shapes=SHAPES, weighted=False, session_id=SESSION, round_id=0)
    with pytest.raises(ConfigurationError, match="0 helper parties"):
        helper_step(spec_to_bytes(pspec), None, SERVER, b"", secrets={})
    with pytest.raises(MalformedMessage):
        helper_step(spec_to_bytes(spec), None, SERVER, b"", secrets={KEY_HOLDER: key},
                    session_id=b"L" * 16)


def test_the_secret_key_is_never_in_a_state_or_a_reply() -> None:
    agg = _paillier()
    _, nodes, _ = _run(agg, _updates())
    key = paillier_key()
    _, private = key.phe_keypair()
    for secret in (private.p, private.q):
        raw = int(secret).to_bytes((int(secret).bit_length() + 7) // 8, "big")
        assert all(raw not in state for state in nodes.states.values())
    assert not {"key", "secret_key", "p", "q"} & set(HEKeyHolderState.__dataclass_fields__)


# ------------------------------------------------------------------------------ secret key bytes


def test_paillier_secret_key_bytes_round_trip() -> None:
    key = paillier_key()
    data = key.to_bytes()
    again = PaillierSecretKey.from_bytes(data)
    assert again.public_material() == key.public_material()
    assert again.key_fingerprint == key.key_fingerprint
    assert again.to_bytes() == data
    assert PaillierSecretKey.from_bytes(bytearray(data)).key_fingerprint == key.key_fingerprint


def test_corrupted_or_foreign_paillier_key_bytes_are_refused() -> None:
    data = paillier_key().to_bytes()
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x40
        with pytest.raises(MalformedMessage, match="Paillier secret key refused"):
            PaillierSecretKey.from_bytes(bytes(flipped))
    for cut in range(len(data)):
        with pytest.raises(MalformedMessage):
            PaillierSecretKey.from_bytes(data[:cut])
    with pytest.raises(MalformedMessage):
        PaillierSecretKey.from_bytes(data + b"\x00")
    with pytest.raises(MalformedMessage, match="expected bytes"):
        PaillierSecretKey.from_bytes("not bytes")  # type: ignore[arg-type]


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _paillier_body(*values: bytes) -> bytes:
    return seal(b"secureagg/paillier-secret-key\x00",
                b"".join(len(v).to_bytes(4, "big") + v for v in values))


def test_well_sealed_but_invalid_paillier_keys_are_refused_by_the_usual_checks() -> None:
    """What a forger who knows the format can write: every key check still runs."""
    _, private = paillier_key().phe_keypair()
    p = int(private.p).to_bytes(128, "big")
    q = int(private.q).to_bytes(128, "big")
    small = (2**61 - 1).to_bytes(8, "big")  # a prime, far too small
    for body, match in (
        (_paillier_body(q, p), "p < q"),
        (_paillier_body(p, p), "p < q"),
        (_paillier_body(p, (int(private.q) + 2).to_bytes(128, "big")), "primes"),
        (_paillier_body(small, (2**89 - 1).to_bytes(12, "big")), "below 2048 bits"),
        (_paillier_body(b"\x00" + p, q), "leading zero"),
        (_paillier_body(p, q, b"x"), "bytes after q"),
        (_paillier_body(p), "length is missing"),
        (_paillier_body(p, b""), "1..2048 bytes"),
        (_flip_last(_paillier_body(p, q)), "checksum"),
    ):
        with pytest.raises(MalformedMessage, match=match):
            PaillierSecretKey.from_bytes(body)
    assert PaillierSecretKey.from_bytes(_paillier_body(p, q)).key_fingerprint == (
        paillier_key().key_fingerprint
    )


def test_ckks_secret_key_bytes_round_trip() -> None:
    key = CkksSecretKey(CkksParameters(coeff_mod_bit_sizes=(60, 60)))
    data = key.to_bytes()
    again = CkksSecretKey.from_bytes(data)
    assert again.public_material() == key.public_material()
    assert again.key_fingerprint == key.key_fingerprint
    assert again.params == key.params
    assert again.to_bytes() == data
    # it decrypts what was encrypted under the original's public context
    context = CkksPublicContext(key.public_material())
    (ct,) = context.encryptor().encrypt(np.array([0.5, -0.25]))
    values = again.decryptor().decrypt([ct], 2)
    np.testing.assert_allclose(values, [0.5, -0.25], atol=1e-6)


def test_corrupted_or_foreign_ckks_key_bytes_are_refused() -> None:
    data = ckks_key().to_bytes()
    positions = sorted({*range(64), *range(len(data) - 64, len(data)),
                        *np.random.default_rng(0).integers(0, len(data), 100).tolist()})
    for i in positions:
        flipped = bytearray(data)
        flipped[i] ^= 0x40
        with pytest.raises(MalformedMessage, match="CKKS secret key refused"):
            CkksSecretKey.from_bytes(bytes(flipped))
    for cut in (0, 10, 27, 40, len(data) // 2, len(data) - 1):
        with pytest.raises(MalformedMessage):
            CkksSecretKey.from_bytes(data[:cut])
    with pytest.raises(MalformedMessage, match="do not start with"):
        CkksSecretKey.from_bytes(paillier_key().to_bytes())
    with pytest.raises(MalformedMessage, match="do not start with"):
        PaillierSecretKey.from_bytes(data)


def test_well_sealed_but_invalid_ckks_contexts_are_refused() -> None:
    import tenseal as ts

    magic = b"secureagg/ckks-secret-key\x00"
    public_only = ckks_key().public_material()
    symmetric = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192,
                           coeff_mod_bit_sizes=[60, 60],
                           encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC)
    symmetric.global_scale = 2.0**40
    for body, match in (
        (b"not a context", "not a TenSEAL context"),
        (public_only, "no secret key"),
        (bytes(symmetric.serialize(save_secret_key=True)), "no public key"),
    ):
        with pytest.raises(MalformedMessage, match=match):
            CkksSecretKey.from_bytes(seal(magic, body))
