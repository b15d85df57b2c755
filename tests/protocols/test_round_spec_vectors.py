"""Known-answer vectors of the round spec and of party states (protocols/round_spec/spec.md).

The spec's digest and its encoded bytes, a plain and a seeded SecAgg client's exported state, and
an HE key holder's state, are pinned: a change of either format is a versioned, deliberate change
(regenerate with ``SECUREAGG_REGENERATE_VECTORS=1``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import secureagg as sa
from secureagg.protocols.base import KEY_HOLDER, Message
from secureagg.protocols.he_round.state import HEKeyHolderState
from secureagg.protocols.spec import RoundSpec
from secureagg.transport.party_state import state_from_bytes, state_to_bytes
from secureagg.transport.round_spec import spec_from_bytes, spec_to_bytes
from tests.vectors import h, load_vectors, regenerate, write_vectors

SESSION = bytes(range(16))


def _spec_case() -> RoundSpec:
    return RoundSpec.build(
        protocol="secagg+", options={"clip": 1.0, "threshold": None, "dropout_rate": 0.1},
        session_id=SESSION, round_id=7, num_clients=5, shapes=[(2, 3), (4,)], weighted=True,
        public_keys={KEY_HOLDER: b"\x01" * 40, 0: b"\x02" * 32}, model_digest=b"\x03" * 32,
    )


class _Exported:
    """A party whose state is ``state`` (the key holder's format, without building a key)."""

    def __init__(self, state: Message) -> None:
        self._state = state

    def export_state(self) -> Message:
        return self._state


def _key_holder_state() -> HEKeyHolderState:
    """After a blame of client 1 and the release over the others, in a seeded run."""
    return HEKeyHolderState(
        version=1, spec_digest=_spec_case().digest, party_id=KEY_HOLDER, stage="done",
        released=True, blamed=(1,), attempt=2, last=(0, 2, 3), randomness=bytes(range(24)),
    )


def _states() -> dict[str, bytes]:
    plain = sa.make_aggregator("plain", num_clients=3, clip=1.0)
    spec = plain.round_spec(shapes=[(3,)], weighted=False, session_id=SESSION, round_id=0)
    client = plain.client_from_spec(spec, 1, [np.array([0.5, -2.0, 0.25])])
    secagg = sa.make_aggregator("secagg+", num_clients=4, clip=1.0)
    sspec = secagg.round_spec(shapes=[(3,)], weighted=False, session_id=SESSION, round_id=0)
    seeded = secagg.client_from_spec(sspec, 2, [np.array([0.5, -0.5, 0.125])], seed=b"kat")
    server = secagg.server_from_spec(sspec)
    (request,) = [e for e in server.start() if e.recipient == 2]
    seeded.receive(request.sender, request.message)  # past advertise: its keys in the state
    return {"plain": state_to_bytes(client), "secagg": state_to_bytes(seeded),
            "key_holder": state_to_bytes(_Exported(_key_holder_state()))}


def _generated() -> dict[str, str]:
    spec = _spec_case()
    data = spec_to_bytes(spec)
    states = _states()
    return {
        "spec_digest": spec.digest.hex(),
        "spec_bytes_sha256": hashlib.sha256(data).hexdigest(),
        "spec_bytes_length": str(len(data)),
        "plain_state": states["plain"].hex(),
        "secagg_state_sha256": hashlib.sha256(states["secagg"]).hexdigest(),
        "key_holder_state": states["key_holder"].hex(),
    }


@pytest.mark.skipif(not regenerate(), reason="set SECUREAGG_REGENERATE_VECTORS=1 to rewrite")
def test_regenerate_vectors() -> None:
    write_vectors(
        "round_spec", "formats",
        description="a round spec's digest and encoded bytes; a plain client's state bytes; a "
        "seeded SecAgg+ client's state after advertise (sha256); an HE key holder's state bytes",
        generated_by="tests/protocols/test_round_spec_vectors.py::test_regenerate_vectors",
        vectors=[_generated()],
    )


def test_the_formats_match_their_known_answers() -> None:
    (vector,) = load_vectors("round_spec", "formats")
    got = _generated()
    assert got == vector
    spec = spec_from_bytes(spec_to_bytes(_spec_case()))
    assert spec.digest == h(vector["spec_digest"])
    plain = sa.make_aggregator("plain", num_clients=3, clip=1.0)
    pspec = plain.round_spec(shapes=[(3,)], weighted=False, session_id=SESSION, round_id=0)
    restored = plain.restore_client(pspec, state_from_bytes(h(vector["plain_state"])))
    assert restored.export_state().values.tolist() == [0.5, -1.0, 0.25]  # clipped to 1
    assert state_from_bytes(h(vector["key_holder_state"])) == _key_holder_state()
