"""Key checks: an upload made under another key is refused as its sender's fault (issue 11.14).

A CKKS ciphertext under another key *with the round's parameters* parses like any other, and a
client can claim the round's key fingerprint. Before key checks, such an upload turned the
decrypted sum into noise and the key holder refused the whole round. Now the key holder decrypts
each upload's masked probe first, names the sender, and the round goes on with the others.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest

import secureagg as sa
from secureagg.errors import ConfigurationError, InsufficientSurvivors, ProtocolError
from secureagg.he.ckks import CkksParameters, CkksPublicContext, CkksSecretKey
from secureagg.protocols.base import KEY_HOLDER, SERVER, Envelope
from secureagg.protocols.ckks import CkksBlame, CkksProbedAggregate, CkksRetry, CkksUpload
from secureagg.protocols.he_round import MAX_ATTEMPTS, REUPLOAD, make_probe_plan
from tests.he.driver import drive, make_setup
from tests.he.keys import ckks_key

SMALL = CkksParameters(coeff_mod_bit_sizes=(60, 60))


def _agg(n=4, **kw):
    kw.setdefault("clip", 1.0)
    kw.setdefault("key", ckks_key(kw.get("_params")))
    kw.pop("_params", None)
    return sa.make_aggregator("ckks", num_clients=n, **kw)


def _updates(n, d=50, seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.uniform(-1, 1, size=d)] for _ in range(n)]


def _forged(agg, senders=(1,), length=51):
    """Hook: re-encrypt the uploads of ``senders`` under another key of the *same* parameters,
    keeping the round's fingerprint (what a lying client sends)."""
    other = CkksPublicContext(CkksSecretKey(agg.params).public_material()).encryptor(
        scale=agg.scheme.scale
    )

    def hook(stage, env):
        if isinstance(env.message, CkksUpload) and env.sender in senders:
            cts = tuple(other.encrypt(np.ones(length)))
            msg = dataclasses.replace(env.message, ciphertexts=cts)
            return dataclasses.replace(env, message=msg)
        return env

    return hook


def _reference(updates, ids):
    return sum(np.clip(updates[i][0], -1, 1) for i in ids)


@pytest.mark.parametrize("encoding", ["float", "fixed"])
def test_an_upload_under_another_key_drops_only_its_sender(encoding) -> None:
    agg = _agg(encoding=encoding)
    ups = _updates(4)
    setup = make_setup(agg, ups)
    run = drive(setup, hook=_forged(agg))
    outcome = setup.server.result()
    assert outcome.survivor_ids == (0, 2, 3)
    assert "does not decrypt under the round's key" in outcome.details["refused"]["1"]
    assert outcome.details["upload_attempts"] == 2
    err = float(np.max(np.abs(outcome.aggregate[0] - _reference(ups, (0, 2, 3)))))
    assert err <= agg.error_bound(survivors=3)
    blames = run.messages("ckks/blame")
    assert [m.refused for _, _, m in blames] == [(1,)]
    # the key holder decrypted the sums once, after the blamed sender was left out
    assert [m.contributors for _, _, m in run.messages("ckks/release")] == [(0, 2, 3)]
    assert sorted(r for _, r, _ in run.messages("ckks/retry")) == [0, 2, 3]


def test_without_key_checks_the_same_upload_stops_the_whole_round() -> None:
    """The flaw as it was: attribution off (or no room) makes the key holder refuse the round."""
    agg = _agg(attribution=False)
    setup = make_setup(agg, _updates(4))
    with pytest.raises(ProtocolError, match="released no aggregate"):
        drive(setup, hook=_forged(agg))


def test_an_upload_under_another_key_through_simulate() -> None:
    """The real driver: a client whose encryptor uses another key but claims the round's."""
    agg = _agg(n=5)
    ups = _updates(5, d=5000)  # two chunks: a full one and a partial one

    class Liar:
        def __init__(self, honest, other):
            self._honest, self._other = honest, other
            self.key_fingerprint = honest.key_fingerprint
            self.values_per_ciphertext = honest.values_per_ciphertext

        def prefill(self, length):
            return 0

        def encrypt(self, values) -> Iterator[bytes]:
            return self._other.encrypt(values)

    honest_client = agg.client_from_spec

    def client_from_spec(spec, client_id, update, **kw):
        client = honest_client(spec, client_id, update, **kw)
        if client_id == 3:  # client 3 lies; everything else is the real round
            other = CkksPublicContext(CkksSecretKey(agg.params).public_material()).encryptor(
                scale=agg.scheme.scale
            )
            client.encryptor = Liar(client.encryptor, other)
        return client

    agg.client_from_spec = client_from_spec
    res = sa.simulate(agg, ups, dropouts={0: "upload"})
    assert res.survivors == (1, 2, 4)
    assert "3" in res.details["refused"]
    assert REUPLOAD in res.metrics["stages"]
    err = float(np.max(np.abs(res.aggregate[0] - _reference(ups, (1, 2, 4)))))
    assert err <= agg.error_bound(survivors=3)


def test_a_forger_in_the_full_chunks_only_is_caught() -> None:
    """Another key for the first (full) chunk only, the round's key for the partial last chunk."""
    agg = _agg()
    ups = _updates(4, d=5000)
    other = CkksPublicContext(CkksSecretKey(agg.params).public_material()).encryptor(
        scale=agg.scheme.scale
    )

    def hook(stage, env):
        if isinstance(env.message, CkksUpload) and env.sender == 2:
            first = next(iter(other.encrypt(np.zeros(agg.params.slots))))
            cts = (first, *env.message.ciphertexts[1:])
            msg = dataclasses.replace(env.message, ciphertexts=cts)
            return dataclasses.replace(env, message=msg)
        return env

    setup = make_setup(agg, ups)
    drive(setup, hook=hook)
    assert setup.server.result().survivor_ids == (0, 1, 3)


def test_too_many_forgers_leave_too_few_clients() -> None:
    agg = _agg(n=4)  # min_clients 2
    setup = make_setup(agg, _updates(4))
    with pytest.raises(InsufficientSurvivors):
        drive(setup, hook=_forged(agg, senders=(0, 1, 2)))


def test_the_probe_hides_the_update_from_the_key_holder() -> None:
    """A decrypted probe looks like its mask: spread over [-M, M], not near the update's values."""
    agg = _agg()
    setup = make_setup(agg, [[np.full(4000, 0.9)] for _ in range(4)])
    captured = []

    def hook(stage, env):
        if isinstance(env.message, CkksProbedAggregate):
            captured.append(env.message)
        return env

    drive(setup, hook=hook)
    plan = setup.server.probe_plan
    holder = setup.helpers[KEY_HOLDER]
    values = holder.decryptor.decrypt_probe(captured[0].probes[0], plan.groups[0][0])
    m = plan.mask_bound
    assert float(np.max(np.abs(values))) <= plan.thresholds[0]
    counts, _ = np.histogram(values, bins=4, range=(-m, m))
    assert np.all(np.abs(counts / values.size - 0.25) < 0.04), counts  # uniform, not 0.9


def test_the_key_holder_refuses_a_retry_that_keeps_a_blamed_client() -> None:
    agg = _agg()
    setup = make_setup(agg, _updates(4))
    seen = []

    def hook(stage, env):
        env = _forged(agg)(stage, env)
        if isinstance(env.message, CkksProbedAggregate):
            seen.append(env.message)
        return env

    drive(setup, hook=hook)
    holder = setup.helpers[KEY_HOLDER]
    first, second = seen
    holder.released = False
    replay = dataclasses.replace(first, attempt=2)
    with pytest.raises(ProtocolError, match="leave out the blamed clients"):
        holder.receive(SERVER, replay)
    with pytest.raises(ProtocolError, match="attempt"):
        holder.receive(SERVER, dataclasses.replace(second, attempt=0))


def test_the_server_checks_the_blame() -> None:
    agg = _agg()
    setup = make_setup(agg, _updates(4))
    server = setup.server

    def hook(stage, env):
        if isinstance(env.message, CkksBlame):
            return dataclasses.replace(env, message=dataclasses.replace(env.message, refused=(7,)))
        return env

    with pytest.raises(ProtocolError, match="released no aggregate"):
        drive(setup, hook=_chain(_forged(agg), hook))
    assert server.stage == "aborted"


def _chain(*hooks):
    def hook(stage, env):
        for h in hooks:
            env = h(stage, env)
        return env

    return hook


def test_a_client_answers_a_retry_only_after_uploading_and_once_per_attempt() -> None:
    agg = _agg()
    setup = make_setup(agg, _updates(4))
    client = setup.clients[0]
    fp = client.encryptor.key_fingerprint
    retry = CkksRetry(session_id=b"S" * 16, round_id=0, key_fingerprint=fp, attempt=1)
    with pytest.raises(ProtocolError, match="before this client uploaded"):
        client.receive(SERVER, retry)
    for env in setup.server.start()[:1]:
        client.receive(SERVER, env.message)
    sent = client.receive(SERVER, retry)
    assert isinstance(sent[0], Envelope) and isinstance(sent[0].message, CkksUpload)
    with pytest.raises(ProtocolError, match="attempt 1"):
        client.receive(SERVER, retry)
    late = dataclasses.replace(retry, attempt=MAX_ATTEMPTS)
    with pytest.raises(ProtocolError, match="at most"):
        client.receive(SERVER, late)


def test_attribution_needs_room_in_the_modulus() -> None:
    agg = sa.make_aggregator("ckks", num_clients=4, clip=1.0, attribution=True,
                             coeff_mod_bit_sizes=(60, 60), key=ckks_key(SMALL))
    with pytest.raises(ConfigurationError, match=r"coeff_mod_bit_sizes=\(60, 60, 60\)"):
        agg.setup_round(_updates(4), weights=None, session_id=b"S" * 16, round_id=0, seed=None)
    small = sa.make_aggregator("ckks", num_clients=4, clip=1.0, coeff_mod_bit_sizes=(60, 60),
                               key=ckks_key(SMALL))
    assert small.parameters()["key_checks"]["on"] is False
    unclipped = sa.make_aggregator("ckks", num_clients=4, key=ckks_key())
    assert unclipped.parameters()["key_checks"]["on"] is False
    checked = _agg()
    figures = checked.parameters()["key_checks"]
    assert figures["on"] is True and figures["max_values_at_40_bits"] > 10**8
    with pytest.raises(ConfigurationError, match="attribution must be"):
        sa.make_aggregator("ckks", num_clients=4, clip=1.0, attribution="yes")


def test_probe_plan_figures() -> None:
    plan = make_probe_plan(
        groups=((4096, 3), (10, 1)), data_modulus_bits=120, scale=2.0**40, value_bound=2.0,
        noise_per_chunk=1e-8, smoothing_std=2.0**-29, guard_bits=10,
    )
    assert plan.mask_bound == 2.0**69
    values = 4096 * 3 + 10
    assert plan.hiding_bits == pytest.approx(-np.log2(values * 2.0 / 2.0**70))
    assert plan.thresholds[0] == pytest.approx(2.0**69 * (1 + 2.0**-20) + 3 * (2.0 + 1e-8))
    assert plan.mask_step <= 2.0**-29 * 2.0**-8  # the finest layer lies below the noise
    assert plan.layers == 3  # 2^69 down to 2^-37 is 106 bits: three 52-bit layers
