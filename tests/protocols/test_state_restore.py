"""A client's state survives a process restart (issue 12.3).

Every protocol is run with every client exported to bytes and restored - by an aggregator
rebuilt from the spec's bytes, as a fresh process would - before *every* message it receives,
i.e. between every pair of stages. The aggregate must be bit-identical to the uninterrupted run
(within the stated bound for CKKS's float encoding, whose SEAL encryption noise differs between
any two runs). A flipped, truncated or other-round state is refused with a named error.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import pytest

import secureagg as sa
from secureagg.aggregators import aggregator_for
from secureagg.dp import CentralDP, DistributedDP
from secureagg.errors import ConfigurationError, MalformedMessage
from secureagg.protocols.base import ClientParty, Envelope, Message, RoundSetup
from secureagg.protocols.secagg.state import SecAggClientState
from secureagg.transport import codec
from secureagg.transport.party_state import state_from_bytes, state_to_bytes
from secureagg.transport.round_spec import spec_from_bytes, spec_to_bytes
from tests.he.keys import ckks_key, paillier_key
from tests.protocols.adversary import Tampered

N = 6


class Reborn(ClientParty):
    """A client that is exported to bytes and restored from them before every message."""

    def __init__(self, inner: ClientParty, spec_bytes: bytes, secret: Any, log: list[str]) -> None:
        self.inner = inner
        self.party_id = inner.party_id
        self._spec_bytes = spec_bytes
        self._secret = secret
        self._log = log

    @property
    def clipped(self) -> int:  # type: ignore[override]
        return int(self.inner.clipped)

    def precompute(self) -> int:
        return self.inner.precompute()

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        data = state_to_bytes(self.inner)
        spec = spec_from_bytes(self._spec_bytes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fresh_agg = aggregator_for(spec)  # a fresh process knows only the spec's bytes
        self.inner = fresh_agg.restore_client(spec, state_from_bytes(data), secret=self._secret)
        self._log.append(f"{self.party_id}:{getattr(self.inner, 'stage', '?')}")
        return self.inner.receive(sender, message)


class Rebirths(Tampered):
    """``agg``'s rounds with every client a :class:`Reborn`."""

    def __init__(self, agg: Any, log: list[str]) -> None:
        super().__init__(agg, lambda setup: None)
        self.log = log

    def parties_from_spec(self, spec: Any, updates: Any, **kwargs: Any) -> RoundSetup:
        setup = self.inner.parties_from_spec(spec, updates, **kwargs)
        spec_bytes = spec_to_bytes(spec)
        secrets = kwargs.get("secrets") or {}
        for cid, client in list(setup.clients.items()):
            setup.clients[cid] = Reborn(client, spec_bytes, secrets.get(cid), self.log)
        return setup


CASES: dict[str, tuple[Any, str, tuple[str, ...]]] = {
    "plain": (lambda: sa.make_aggregator("plain", num_clients=N, clip=1.0), "exact", ("upload",)),
    "secagg": (lambda: sa.make_aggregator("secagg", num_clients=N, clip=1.0), "exact",
               ("advertise", "share", "masked", "unmask")),
    "secagg+": (lambda: sa.make_aggregator("secagg+", num_clients=N, clip=1.0), "exact",
                ("share", "masked", "unmask")),
    "secagg+malicious": (
        lambda: sa.make_aggregator("secagg+", num_clients=N, clip=1.0, threat="malicious"),
        "exact", ("advertise", "masked", "consistency", "unmask"),
    ),
    "secagg+distributed-dp": (
        lambda: sa.make_aggregator(
            "secagg+", num_clients=N,
            distributed_dp=DistributedDP(l2_clip=1.0, noise_multiplier=0.5, dimension=7),
        ),
        "exact", ("masked", "unmask"),
    ),
    "secagg+central-dp": (
        lambda: sa.make_aggregator(
            "secagg+", num_clients=N, clip=1.0,
            central_dp=CentralDP(l2_clip=1.0, noise_multiplier=1e-9),
        ),
        "close", ("masked",),
    ),
    "ckks-fixed": (
        lambda: sa.make_aggregator("ckks", num_clients=N, clip=1.0, encoding="fixed",
                                   key=ckks_key()),
        "exact", ("upload",),
    ),
    "ckks-float": (
        lambda: sa.make_aggregator("ckks", num_clients=N, clip=1.0, key=ckks_key()),
        "bound", ("upload",),
    ),
    "paillier": (
        lambda: sa.make_aggregator("paillier", num_clients=N, clip=1.0, key=paillier_key(),
                                   key_bits=2048),
        "exact", ("upload",),
    ),
}


def _params() -> list[Any]:
    return [pytest.param(name, stage, id=f"{name}-drop-{stage}")
            for name, (_, _, stages) in CASES.items() for stage in stages]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("case", "stage"), _params())
def test_every_client_restored_from_bytes_between_every_stage_gives_the_same_aggregate(
    case: str, stage: str
) -> None:
    make, compare, _ = CASES[case]
    rng = np.random.default_rng(3)
    ups = [[rng.uniform(-1, 1, size=(4,)), rng.uniform(-1, 1, size=(3,))] for _ in range(N)]
    dropouts = {2: stage}
    reference = sa.simulate(make(), ups, dropouts=dropouts, seed=5)
    log: list[str] = []
    agg = make()
    res = sa.simulate(Rebirths(agg, log), ups, dropouts=dropouts, seed=5)
    assert res.survivors == reference.survivors
    restored_clients = {entry.split(":")[0] for entry in log}
    assert len(restored_clients) >= N - 1  # every client that heard from the server
    for mine, theirs in zip(res.aggregate, reference.aggregate, strict=True):
        if compare == "exact":
            np.testing.assert_array_equal(mine, theirs)
        elif compare == "bound":
            np.testing.assert_allclose(
                mine, theirs, atol=2 * agg.error_bound(survivors=len(res.survivors))
            )
        else:
            np.testing.assert_allclose(mine, theirs, atol=1e-6)


# ------------------------------------------------------------------------------ refusals


def _sealed(body: bytes) -> bytes:
    """Bytes with a valid checksum: what a forger who knows the format can write."""
    from secureagg.transport import party_state

    return body + party_state._digest(body)


def _secagg_state() -> tuple[Any, Any, bytes]:
    agg = sa.make_aggregator("secagg+", num_clients=4, clip=1.0)
    spec = agg.round_spec(shapes=[(3,)], weighted=False, session_id=b"S" * 16, round_id=0)
    client = agg.client_from_spec(spec, 1, [np.ones(3)])
    server = agg.server_from_spec(spec)
    (request,) = [e for e in server.start() if e.recipient == 1]
    client.receive(request.sender, request.message)  # past advertise: keys in the state
    return agg, spec, state_to_bytes(client)


def test_a_flipped_or_truncated_state_is_refused() -> None:
    agg, spec, data = _secagg_state()
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x40
        with pytest.raises(MalformedMessage, match="checksum"):
            state_from_bytes(bytes(flipped))
    for cut in range(len(data)):
        with pytest.raises(MalformedMessage):
            agg.restore_client(spec, state_from_bytes(data[:cut]))


def test_a_state_from_another_round_or_session_is_refused_by_name() -> None:
    agg, spec, data = _secagg_state()
    other = agg.round_spec(shapes=[(3,)], weighted=False, session_id=b"T" * 16, round_id=0)
    with pytest.raises(MalformedMessage, match="another round spec"):
        agg.restore_client(other, state_from_bytes(data))
    later = agg.round_spec(shapes=[(3,)], weighted=False, session_id=b"S" * 16, round_id=1)
    with pytest.raises(MalformedMessage, match="another round spec"):
        agg.restore_client(later, state_from_bytes(data))
    plain = sa.make_aggregator("plain", num_clients=4)
    with pytest.raises(MalformedMessage, match="expected a 'plain/client-state' state"):
        plain.restore_client(spec, state_from_bytes(data))
    from secureagg.protocols.plain.messages import PlainRequest

    with pytest.raises(MalformedMessage, match="expected a client state"):
        state_from_bytes(_sealed(codec.encode(PlainRequest(round_id=0, session_id=b"S" * 16))))


def test_a_forged_state_field_is_refused() -> None:
    agg, spec, data = _secagg_state()
    state = state_from_bytes(data)
    assert isinstance(state, SecAggClientState)
    for bad in (
        dataclasses.replace(state, stage="nowhere"),
        dataclasses.replace(state, party_id=9),
        dataclasses.replace(state, cipher_private_key=b"x" * 5),
        dataclasses.replace(state, update=np.ones(5)),
        dataclasses.replace(state, peer_ids=(0, 7)),
        dataclasses.replace(state, version=2),
    ):
        with pytest.raises(MalformedMessage):
            agg.restore_client(spec, state_from_bytes(_sealed(codec.encode(bad))))


def test_secrets_are_marked_and_the_identity_key_is_never_in_a_state() -> None:
    agg = sa.make_aggregator("secagg+", num_clients=4, clip=1.0, threat="malicious")
    provision = agg.provision(session_id=b"S" * 16, round_id=0, seed=None)
    spec = agg.round_spec(shapes=[(3,)], weighted=False, session_id=b"S" * 16, round_id=0,
                          public_keys=provision.public)
    client = agg.client_from_spec(spec, 1, [np.ones(3)], secret=provision.secrets[1])
    data = state_to_bytes(client)
    assert provision.secrets[1].private_key.private_bytes_raw() not in data
    assert {"cipher_private_key", "pair_seeds", "update"} <= set(SecAggClientState.SECRET_FIELDS)
    with pytest.raises(ConfigurationError, match="identity"):
        agg.restore_client(spec, state_from_bytes(data))  # the key must be passed again
    again = agg.restore_client(spec, state_from_bytes(data), secret=provision.secrets[1])
    assert state_to_bytes(again) == data
