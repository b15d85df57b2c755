"""The public round spec (issue 12.1): canonical bytes, strict decoding, parties built from it.

Every protocol is run with each party built *from the spec's bytes alone* (by an aggregator
rebuilt from the spec, one per party) plus only what that party holds, and must give what
``sa.simulate`` gives, with a dropout at every stage.
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
from secureagg.errors import ConfigurationError, InvalidInputError, MalformedMessage
from secureagg.protocols.base import (
    KEY_HOLDER,
    ClientParty,
    Party,
    Provision,
    RoundFactory,
    RoundSetup,
    ServerParty,
)
from secureagg.protocols.spec import RoundSpec
from secureagg.transport import codec
from secureagg.transport.round_spec import spec_from_bytes
from tests.he.keys import ckks_key, paillier_key

SESSION = b"S" * 16


def _spec(**changes: Any) -> RoundSpec:
    kwargs: dict[str, Any] = {
        "protocol": "plain", "options": {"clip": 1.0, "min_clients": 1}, "session_id": SESSION,
        "round_id": 3, "num_clients": 4, "shapes": [(2, 3), (5,)], "weighted": True,
    }
    kwargs.update(changes)
    return RoundSpec.build(**kwargs)


# ------------------------------------------------------------------------------ the bytes


def test_the_spec_is_canonical_and_immutable() -> None:
    spec = _spec()
    data = codec.encode(spec)
    back = spec_from_bytes(data, session_id=SESSION)
    assert back == spec and codec.encode(back) == data
    assert back.shapes == ((2, 3), (5,)) and back.dimension == 11
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.round_id = 4  # type: ignore[misc]
    # the same options in another order are the same spec, byte for byte
    same = _spec(options={"min_clients": 1, "clip": 1.0})
    assert codec.encode(same) == data


def test_every_flipped_bit_and_every_truncation_is_refused() -> None:
    data = codec.encode(_spec(public_keys={KEY_HOLDER: b"k" * 40}))
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            flipped = bytearray(data)
            flipped[i] ^= bit
            with pytest.raises(MalformedMessage):
                spec_from_bytes(bytes(flipped))
    for cut in range(len(data)):
        with pytest.raises(MalformedMessage):
            spec_from_bytes(data[:cut])


def test_a_spec_from_another_session_or_of_another_kind_is_refused() -> None:
    data = codec.encode(_spec())
    with pytest.raises(MalformedMessage, match="another session"):
        spec_from_bytes(data, session_id=b"T" * 16)
    from secureagg.protocols.plain.messages import PlainRequest

    other = codec.encode(PlainRequest(round_id=3, session_id=SESSION))
    with pytest.raises(MalformedMessage, match="expected a round spec"):
        spec_from_bytes(other)


def test_a_forged_field_with_a_recomputed_digest_is_still_checked() -> None:
    spec = _spec()
    for bad in (
        dataclasses.replace(spec, shape_dims=(2**62 + 1, 4, 5)),
        dataclasses.replace(spec, options='{"min_clients":1, "clip":1.0}'),
        dataclasses.replace(spec, num_clients=0),
        dataclasses.replace(spec, shape_ranks=(2, 2)),
        dataclasses.replace(spec, round_id=10**5000),  # str() of it would raise
        dataclasses.replace(spec, shape_ranks=(2, 1), shape_dims=(0, 10**100, 5)),
    ):
        if not bad._structure_problems():  # pragma: no cover - each case is malformed
            bad = dataclasses.replace(bad, digest=bad.compute_digest())
        with pytest.raises(MalformedMessage, match="round spec refused"):
            spec_from_bytes(codec.encode(bad))


def test_build_reports_every_problem() -> None:
    with pytest.raises(ConfigurationError) as info:
        RoundSpec.build(protocol="", options={"x": float("nan")}, session_id=b"",
                        round_id=-1, num_clients=0, shapes=[(-1,)], weighted=False)
    assert len(info.value.problems) >= 4


# ------------------------------------------------------------------------------ party by party


class PartyByParty(RoundFactory):
    """``agg``'s rounds, but every party is built by its own aggregator, rebuilt from the spec's
    bytes: nothing but the spec and the party's own inputs reaches it."""

    def __init__(self, agg: RoundFactory) -> None:
        self.agg = agg
        self.name = agg.name
        self.num_clients = agg.num_clients
        self.dropout_stages = agg.dropout_stages
        self.seen: list[bytes] = []

    def parameters(self) -> dict[str, Any]:
        return self.agg.parameters()

    def spec_options(self) -> dict[str, Any]:
        return self.agg.spec_options()

    def provision(self, **kwargs: Any) -> Provision:
        return self.agg.provision(**kwargs)

    def round_spec(self, **kwargs: Any) -> RoundSpec:
        return self.agg.round_spec(**kwargs)

    def _fresh(self, spec: RoundSpec) -> tuple[RoundSpec, RoundFactory]:
        data = codec.encode(spec)
        self.seen.append(data)
        own = spec_from_bytes(data, session_id=spec.session_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return own, aggregator_for(own)

    def server_from_spec(self, spec: RoundSpec, **kwargs: Any) -> ServerParty:
        own, agg = self._fresh(spec)
        return agg.server_from_spec(own, **kwargs)

    def client_from_spec(self, spec: RoundSpec, client_id: int, update: Any,
                         **kwargs: Any) -> ClientParty:
        own, agg = self._fresh(spec)
        return agg.client_from_spec(own, client_id, update, **kwargs)

    def helpers_from_spec(self, spec: RoundSpec, secrets: Any, **kwargs: Any) -> dict[int, Party]:
        own, agg = self._fresh(spec)
        only_its_own = {KEY_HOLDER: secrets[KEY_HOLDER]} if KEY_HOLDER in secrets else {}
        return agg.helpers_from_spec(own, only_its_own, **kwargs)


def _dp_secagg() -> RoundFactory:
    return sa.make_aggregator(
        "secagg+", num_clients=6,
        distributed_dp=DistributedDP(l2_clip=1.0, noise_multiplier=0.5, dimension=7),
    )


CASES: dict[str, tuple[Any, str]] = {
    # name: (factory, how the aggregates compare)
    "plain": (lambda: sa.make_aggregator("plain", num_clients=6, clip=1.0), "exact"),
    "secagg": (lambda: sa.make_aggregator("secagg", num_clients=6, clip=1.0), "exact"),
    "secagg+": (lambda: sa.make_aggregator("secagg+", num_clients=6, clip=1.0), "exact"),
    "secagg+malicious": (
        lambda: sa.make_aggregator("secagg+", num_clients=6, clip=1.0, threat="malicious"),
        "exact",
    ),
    "secagg+distributed-dp": (_dp_secagg, "exact"),
    "plain+central-dp": (
        lambda: sa.make_aggregator(
            "plain", num_clients=6, clip=1.0,
            central_dp=CentralDP(l2_clip=1.0, noise_multiplier=1e-9),
        ),
        "close",
    ),
    "ckks-float": (
        lambda: sa.make_aggregator("ckks", num_clients=6, clip=1.0, key=ckks_key()), "bound"
    ),
    "ckks-fixed": (
        lambda: sa.make_aggregator("ckks", num_clients=6, clip=1.0, encoding="fixed",
                                   key=ckks_key()),
        "exact",
    ),
    "paillier": (
        lambda: sa.make_aggregator("paillier", num_clients=6, clip=1.0, key=paillier_key(),
                                   key_bits=2048),
        "exact",
    ),
}


def _stage_cases() -> list[Any]:
    out = []
    stages = {
        "plain": ("upload",), "secagg": ("advertise", "share", "masked", "unmask"),
        "secagg+": ("advertise", "share", "masked", "unmask"),
        "secagg+malicious": ("advertise", "share", "masked", "consistency", "unmask"),
        "secagg+distributed-dp": ("advertise", "masked", "unmask"),
        "plain+central-dp": ("upload",), "ckks-float": ("upload",), "ckks-fixed": ("upload",),
        "paillier": ("upload",),
    }
    for name, names in stages.items():
        for stage in names:
            out.append(pytest.param(name, stage, id=f"{name}-{stage}"))
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("case", "stage"), _stage_cases())
def test_every_protocol_built_party_by_party_from_the_spec_bytes_matches_simulate(
    case: str, stage: str
) -> None:
    make, compare = CASES[case]
    rng = np.random.default_rng(7)
    ups = [[rng.uniform(-1, 1, size=(3,)), rng.uniform(-1, 1, size=(2, 2))] for _ in range(6)]
    dropouts = {4: stage}
    reference = sa.simulate(make(), ups, dropouts=dropouts, seed=11)
    apart = PartyByParty(make())
    res = sa.simulate(apart, ups, dropouts=dropouts, seed=11)
    assert res.survivors == reference.survivors
    assert len(apart.seen) >= 1 + 6  # the server and every client read the spec from bytes
    for mine, theirs in zip(res.aggregate, reference.aggregate, strict=True):
        if compare == "exact":
            np.testing.assert_array_equal(mine, theirs)
        else:
            bound = 2 * getattr(apart.agg, "error_bound", lambda **_: 1e-6)(
                survivors=len(res.survivors)
            ) if compare == "bound" else 1e-6
            np.testing.assert_allclose(mine, theirs, atol=bound)


def test_a_client_refuses_an_update_of_other_shapes_than_the_spec() -> None:
    agg = sa.make_aggregator("secagg+", num_clients=4, clip=1.0)
    spec = agg.round_spec(shapes=[(3,)], weighted=False, session_id=SESSION, round_id=0)
    with pytest.raises(InvalidInputError, match="differ from the round's"):
        agg.client_from_spec(spec, 0, [np.zeros(4)])


def test_the_key_holder_refuses_a_spec_naming_another_key() -> None:
    agg = sa.make_aggregator("ckks", num_clients=4, clip=1.0, key=ckks_key())
    other = sa.make_aggregator("ckks", num_clients=4, clip=1.0)
    theirs = other.provision(session_id=SESSION, round_id=0, seed=None)
    spec = other.round_spec(shapes=[(3,)], weighted=False, session_id=SESSION, round_id=0,
                            public_keys=theirs.public)
    mine = agg.provision(session_id=SESSION, round_id=0, seed=None)
    with pytest.raises(ConfigurationError, match="names another key"):
        agg.helpers_from_spec(spec, mine.secrets)


def test_a_malicious_mode_client_needs_its_own_registered_identity() -> None:
    agg = sa.make_aggregator("secagg+", num_clients=4, clip=1.0, threat="malicious")
    provision = agg.provision(session_id=SESSION, round_id=0, seed=None)
    spec = agg.round_spec(shapes=[(3,)], weighted=False, session_id=SESSION, round_id=0,
                          public_keys=provision.public)
    with pytest.raises(ConfigurationError, match="identity"):
        agg.client_from_spec(spec, 0, [np.zeros(3)])
    with pytest.raises(ConfigurationError, match="not the one the spec registers"):
        agg.client_from_spec(spec, 0, [np.zeros(3)], secret=provision.secrets[1])


def test_the_spec_carries_no_secret() -> None:
    """What a spec holds is public: no update, no HE secret key, no identity private key."""
    agg = sa.make_aggregator("secagg+", num_clients=4, clip=1.0, threat="malicious")
    provision = agg.provision(session_id=SESSION, round_id=0, seed=None)
    spec = agg.round_spec(shapes=[(3,)], weighted=False, session_id=SESSION, round_id=0,
                          public_keys=provision.public)
    data = codec.encode(spec)
    for key in provision.secrets.values():
        assert key.private_key.private_bytes_raw() not in data
    ckks = sa.make_aggregator("ckks", num_clients=4, clip=1.0, key=ckks_key())
    hp = ckks.provision(session_id=SESSION, round_id=0, seed=None)
    spec = ckks.round_spec(shapes=[(3,)], weighted=False, session_id=SESSION, round_id=0,
                           public_keys=hp.public)
    from secureagg.he.ckks import CkksPublicContext

    CkksPublicContext(spec.public_keys[KEY_HOLDER])  # refuses a context holding a secret key


def test_setup_round_is_the_spec_path() -> None:
    agg = sa.make_aggregator("plain", num_clients=3, clip=1.0)
    setup = agg.setup_round([[np.ones(2)]] * 3, weights=None, session_id=SESSION, round_id=0,
                            seed=None)
    assert isinstance(setup, RoundSetup) and sorted(setup.clients) == [0, 1, 2]
    res = sa.simulate(agg, [[np.ones(2)]] * 3)
    assert res.metrics["spec_bytes"] > 0
