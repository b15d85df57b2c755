"""Every item of ANCHORS.md "Threats and bad inputs" (SecAgg part), each as its own test."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import secureagg as sa
from secureagg.errors import (
    ConfigurationError,
    ConsistencyError,
    HeadroomError,
    InsufficientSurvivors,
    NonFiniteInputError,
    ProtocolError,
)
from secureagg.protocols.base import SERVER
from secureagg.protocols.secagg import messages as m
from secureagg.transport import faults
from secureagg.transport.simulator import ClippingWarning
from tests.protocols.secagg.driver import drive, make_setup, plaintext_sum

CURIOUS = ("advertise", "share", "masked", "unmask")
MALICIOUS = ("advertise", "share", "masked", "consistency", "unmask")


def _agg(n=5, **kw):
    kw.setdefault("dropout_rate", 0.0)
    kw.setdefault("corrupt_rate", 0.0)
    return sa.make_aggregator("secagg", num_clients=n, clip=1.0, **kw)


def _updates(n, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.uniform(-1, 1, size=d)] for _ in range(n)]


def _uplink_of(run, stage, kind):
    return [(u, msg) for s, u, msg in run.uplink if s == stage and isinstance(msg, kind)]


# ------------------------------------------------------------------ unmask-request abort rules


def _run_with_bad_unmask(mutate):
    agg, ups = _agg(), _updates(5)
    setup = make_setup(agg, ups)

    def hook(stage, u, msg):
        if isinstance(msg, m.UnmaskRequest) and u == 0:
            return mutate(msg)
        return msg

    run = drive(setup, server_hook=hook, stages=CURIOUS)
    return run


def _assert_client0_aborted_silently(run, error=ConsistencyError):
    assert isinstance(run.client_errors[0], error)
    assert all(u != 0 for u, _ in _uplink_of(run, "unmask", m.UnmaskShares))
    # The others revealed, and the round still completed from their shares.
    assert len(_uplink_of(run, "unmask", m.UnmaskShares)) == 4


def test_client_listed_as_dropped_aborts():
    run = _run_with_bad_unmask(
        lambda msg: dataclasses.replace(
            msg, survivors=tuple(u for u in msg.survivors if u != 0), dropped=(*msg.dropped, 0)
        )
    )
    _assert_client0_aborted_silently(run)


def test_unknown_id_in_unmask_request_aborts():
    run = _run_with_bad_unmask(lambda msg: dataclasses.replace(msg, dropped=(*msg.dropped, 99)))
    _assert_client0_aborted_silently(run, ProtocolError)


def test_duplicate_id_in_unmask_request_aborts():
    run = _run_with_bad_unmask(
        lambda msg: dataclasses.replace(msg, survivors=(*msg.survivors, msg.survivors[-1]))
    )
    _assert_client0_aborted_silently(run, ProtocolError)


def test_peer_named_survivor_and_dropped_aborts_client():
    run = _run_with_bad_unmask(
        lambda msg: dataclasses.replace(msg, dropped=(*msg.dropped, msg.survivors[-1]))
    )
    _assert_client0_aborted_silently(run)
    assert "both survivor and dropped" in str(run.client_errors[0])


# --------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize("stage", ["advertise", "share", "masked", "unmask"])
def test_fewer_than_t_survivors_aborts_without_aggregate(stage):
    agg = _agg(5, threshold=3, degree=4)
    dropouts = {0: stage, 1: stage, 2: stage}
    with pytest.raises(InsufficientSurvivors) as info:
        sa.simulate(agg, _updates(5), dropouts=dropouts, seed=1)
    assert info.value.stage == stage or stage == "unmask"


def test_late_masked_input_of_dropped_client_is_rejected():
    agg = _agg(5)
    ups = _updates(5)
    res = sa.simulate(agg, ups, faults=[faults.Delay(client=2, stage="masked")], seed=4)
    assert 2 not in res.survivors
    assert any(r["sender"] == 2 for r in res.metrics["rejected"])
    np.testing.assert_allclose(
        res.aggregate[0], plaintext_sum(ups, res.survivors)[0], atol=agg.error_bound()
    )


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"threshold": 1}, "below 2"),
        ({"threshold": 6}, "exceeds the number of clients"),
        ({"threshold": 2, "corrupt_rate": 0.4}, "curious server"),
        ({"threshold": 3, "threat": "malicious", "corrupt_rate": 0.2}, "malicious server"),
        ({"degree": 3, "threshold": 2}, "complete graph"),
    ],
)
def test_unsafe_or_invalid_thresholds_raise_at_construction(kwargs, needle):
    kwargs.setdefault("corrupt_rate", 0.0)
    with pytest.raises(ConfigurationError, match=needle):
        sa.make_aggregator("secagg", num_clients=5, clip=1.0, dropout_rate=0.0, **kwargs)


def test_all_threshold_problems_reported_at_once():
    with pytest.raises(ConfigurationError) as info:
        sa.make_aggregator(
            "secagg+",
            num_clients=10,
            clip=1.0,
            degree=3,
            threshold=1,
            corrupt_rate=0.0,
            dropout_rate=0.0,
        )
    assert len(info.value.problems) >= 2


# ------------------------------------------------------------------- keys and shares


def test_duplicate_public_key_is_rejected_by_server():
    agg = _agg(5)
    setup = make_setup(agg, _updates(5))
    server = setup.server
    server.start()
    adv0 = (
        setup.clients[0]
        .receive(SERVER, m.AdvertiseRequest(session_id=b"S" * 16, round_id=0, model_digest=b""))[0]
        .message
    )
    server.receive(0, adv0)
    with pytest.raises(ProtocolError, match="already advertised"):
        server.receive(1, adv0)


def _key_broadcast_hook(mutate_keys, target=0):
    def hook(stage, u, msg):
        if isinstance(msg, m.KeyBroadcast) and u == target:
            return dataclasses.replace(msg, keys=mutate_keys(dict(msg.keys)))
        return msg

    return hook


def test_duplicate_keys_in_broadcast_abort_client():
    agg = _agg(5)
    setup = make_setup(agg, _updates(5))

    def dup(keys):
        keys[2] = keys[1]
        return keys

    run = drive(setup, server_hook=_key_broadcast_hook(dup), stages=CURIOUS)
    assert isinstance(run.client_errors[0], ProtocolError)
    assert "duplicate" in str(run.client_errors[0])
    assert 0 not in setup.server.result().survivor_ids


@pytest.mark.parametrize("bad", [bytes(32), (1).to_bytes(32, "little")])
def test_low_order_public_key_aborts_client(bad):
    agg = _agg(5)
    setup = make_setup(agg, _updates(5))

    def low(keys):
        keys[3] = bad + keys[3][32:]
        return keys

    run = drive(setup, server_hook=_key_broadcast_hook(low), stages=CURIOUS)
    assert "low-order" in str(run.client_errors[0])


def test_wrong_length_public_key_is_rejected():
    agg = _agg(5)
    setup = make_setup(agg, _updates(5))

    def short(keys):
        keys[3] = keys[3][:40]
        return keys

    run = drive(setup, server_hook=_key_broadcast_hook(short), stages=CURIOUS)
    assert "malformed key" in str(run.client_errors[0])
    server = make_setup(agg, _updates(5)).server
    with pytest.raises(ProtocolError, match="32-byte"):
        server.receive(
            0,
            m.KeyAdvertisement(
                session_id=b"S" * 16,
                round_id=0,
                cipher_public_key=b"x" * 31,
                mask_public_key=b"y" * 32,
                signature=b"",
            ),
        )


def test_tampered_and_misaddressed_shares_are_never_used():
    agg = _agg(5)
    ups = _updates(5)
    setup = make_setup(agg, ups)

    def hook(stage, u, msg):
        if isinstance(msg, m.ShareDelivery) and u == 0:
            cts = dict(msg.ciphertexts)
            body = bytearray(cts[1])
            body[-1] ^= 1
            cts[1] = bytes(body)  # tampered
            cts[2] = msg.ciphertexts[3]  # share meant for 0 from 3 relabelled as from 2
            return dataclasses.replace(msg, ciphertexts=cts)
        return msg

    run = drive(setup, server_hook=hook, stages=CURIOUS)
    client = setup.clients[0]
    assert not client.aborted
    revealed = [msg for s, u, msg in run.uplink if u == 0 and isinstance(msg, m.UnmaskShares)]
    # its own share and those of 3 and 4; the shares from 1 and 2 were rejected by the AEAD
    assert set(revealed[0].self_mask_shares) == {0, 3, 4}
    res = setup.server.result()
    np.testing.assert_allclose(
        res.aggregate[0], plaintext_sum(ups, res.survivor_ids)[0], atol=agg.error_bound()
    )


# -------------------------------------------------------------------------------- replays


def test_messages_from_another_round_or_session_are_rejected():
    agg = _agg(5)
    ups = _updates(5)
    old = sa.simulate(agg, ups, round_id=1, seed=9, keep_raw=True)
    adv = next(
        raw
        for entry, raw in zip(old.transcript, old.raw_uplink, strict=True)
        if entry.kind == m.KeyAdvertisement.KIND and entry.sender == 0
    )
    res = sa.simulate(
        agg,
        ups,
        round_id=2,
        seed=10,
        faults=[faults.Replay(client=0, stage="advertise", captured=adv)],
    )
    assert any(r["sender"] == 0 and "replay" in r["error"] for r in res.metrics["rejected"])
    # Across sessions too: same round id, different session.
    server = make_setup(agg, ups, session_id=b"T" * 16).server
    with pytest.raises(ProtocolError, match="another session or round"):
        server.receive(
            0,
            m.KeyAdvertisement(
                session_id=b"S" * 16,
                round_id=0,
                cipher_public_key=b"a" * 32,
                mask_public_key=b"b" * 32,
                signature=b"",
            ),
        )


def test_client_rejects_replayed_server_message():
    agg = _agg(5)
    setup = make_setup(agg, _updates(5))
    with pytest.raises(ProtocolError, match="another session or round"):
        setup.clients[0].receive(
            SERVER, m.AdvertiseRequest(session_id=b"S" * 16, round_id=7, model_digest=b"")
        )


# ------------------------------------------------------------------------ masked inputs


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: v[:-1],  # wrong length
        lambda v: np.concatenate([v, v[:1]]),  # too long
        lambda v: v.astype(np.uint64),  # wrong dtype
        lambda v: v.astype(np.float64),  # wrong dtype (float)
        lambda v: v[:1],  # would broadcast
    ],
)
def test_bad_masked_input_is_treated_as_dropped(mutate):
    agg = _agg(5)
    ups = _updates(5)
    setup = make_setup(agg, ups)
    server, clients = setup.server, setup.clients
    out = server.start()
    for _stage in ("advertise", "share"):
        for env in out:
            for reply in clients[env.recipient].receive(SERVER, env.message):
                server.receive(env.recipient, reply.message)
        out = server.end_stage()
    for env in out:
        reply = clients[env.recipient].receive(SERVER, env.message)[0]
        msg = reply.message
        if env.recipient == 1:
            msg = dataclasses.replace(msg, values=mutate(msg.values))
            with pytest.raises(ProtocolError, match="masked input"):
                server.receive(1, msg)
        else:
            server.receive(env.recipient, msg)
    out = server.end_stage()
    for env in out:
        for reply in clients[env.recipient].receive(SERVER, env.message):
            server.receive(env.recipient, reply.message)
    server.end_stage()
    res = server.result()
    assert 1 not in res.survivor_ids
    np.testing.assert_allclose(
        res.aggregate[0], plaintext_sum(ups, res.survivor_ids)[0], atol=agg.error_bound()
    )


def test_nan_or_inf_raises_on_the_client_before_sending():
    agg = _agg(5)
    for bad in (np.nan, np.inf, -np.inf):
        ups = _updates(5)
        ups[2][0][3] = bad
        with pytest.raises(NonFiniteInputError) as info:
            sa.simulate(agg, ups)
        assert isinstance(info.value, ValueError)


def test_values_beyond_clip_are_clipped_and_counted():
    agg = _agg(5)
    ups = _updates(5)
    ups[0][0][:3] = [5.0, -7.0, 1.5]
    with pytest.warns(ClippingWarning, match=r"3 values .* clipped to \[-1, 1\]"):
        res = sa.simulate(agg, ups, seed=5)
    assert (
        res.metrics["clipped"]["per_client"]["0"] == 3
        or res.metrics["clipped"]["per_client"][0] == 3
    )
    assert res.metrics["clipped"]["total"] == 3
    expected = plaintext_sum([[np.clip(a, -1, 1) for a in u] for u in ups], range(5))
    np.testing.assert_allclose(res.aggregate[0], expected[0], atol=agg.error_bound())


def test_overflowing_configuration_raises():
    with pytest.raises(HeadroomError):
        sa.make_aggregator(
            "secagg",
            num_clients=5,
            clip=1.0,
            bits=8,
            max_weight=100,
            dropout_rate=0.0,
            corrupt_rate=0.0,
        )


# ----------------------------------------------------------------- malicious server mode


def _magg(n=5, **kw):
    return sa.make_aggregator(
        "secagg",
        num_clients=n,
        clip=1.0,
        threat="malicious",
        dropout_rate=0.0,
        corrupt_rate=0.0,
        **kw,
    )


def test_malicious_mode_round_completes_with_dropouts():
    agg = _magg(9)
    assert agg.params.threshold == 5  # t > (n + c) / 2 with c = 0
    ups = _updates(9)
    res = sa.simulate(agg, ups, dropouts={1: "masked", 4: "unmask", 5: "consistency"}, seed=11)
    assert set(res.survivors) == {0, 2, 3, 4, 5, 6, 7, 8}
    np.testing.assert_allclose(
        res.aggregate[0], plaintext_sum(ups, res.survivors)[0], atol=agg.error_bound()
    )


def _drive_to_consistency(agg, ups):
    setup = make_setup(agg, ups)
    server, clients = setup.server, setup.clients
    out = server.start()
    while server.stage != "consistency":
        for env in out:
            for reply in clients[env.recipient].receive(SERVER, env.message):
                server.receive(env.recipient, reply.message)
        out = server.end_stage()
    return setup, out


def test_different_survivor_lists_abort_consistency():
    """A server shows list A to clients 0-2 and list B to 3-6, then forwards every signature."""
    agg = _magg(7)
    setup, out = _drive_to_consistency(agg, _updates(7))
    real = out[0].message
    list_b = real.survivors
    list_a = tuple(v for v in list_b if v != 6)
    sigs = {}
    for u, c in setup.clients.items():
        shown = list_a if u <= 2 else list_b
        reply = c.receive(SERVER, dataclasses.replace(real, survivors=shown))[0].message
        sigs[u] = reply.signature
    for u, c in setup.clients.items():
        shown = list_a if u <= 2 else list_b
        request = m.UnmaskRequest(
            session_id=real.session_id,
            round_id=real.round_id,
            survivors=shown,
            dropped=(6,) if u <= 2 else (),
            signatures=sigs if u != 6 else {v: sigs[v] for v in list_b},
        )
        if u <= 2:
            request = dataclasses.replace(request, dropped=())  # 6 vanished for them
        with pytest.raises(ConsistencyError):
            c.receive(SERVER, request)
        assert c.aborted
    # Restricting the signatures to the matching group leaves fewer than t valid ones.
    agg = _magg(7)
    setup, out = _drive_to_consistency(agg, _updates(7))
    real = out[0].message
    sigs = {
        u: c.receive(SERVER, dataclasses.replace(real, survivors=list_a if u <= 2 else list_b))[
            0
        ].message.signature
        for u, c in setup.clients.items()
    }
    request = m.UnmaskRequest(
        session_id=real.session_id,
        round_id=real.round_id,
        survivors=list_a,
        dropped=(),
        signatures={v: sigs[v] for v in (0, 1, 2)},
    )
    with pytest.raises(ConsistencyError, match="fewer than"):
        setup.clients[0].receive(SERVER, request)


def test_unsigned_keys_rejected():
    agg = _magg(5)
    setup = make_setup(agg, _updates(5))
    server = setup.server
    adv = (
        setup.clients[0]
        .receive(SERVER, m.AdvertiseRequest(session_id=b"S" * 16, round_id=0, model_digest=b""))[0]
        .message
    )
    with pytest.raises(ProtocolError, match="unsigned"):
        server.receive(0, dataclasses.replace(adv, signature=b""))
    with pytest.raises(ProtocolError, match="does not verify"):
        server.receive(0, dataclasses.replace(adv, signature=bytes(64)))

    # A server that forwards unsigned or forged keys: the client aborts.
    def hook(stage, u, msg):
        if isinstance(msg, m.KeyBroadcast) and u == 0:
            keys = dict(msg.keys)
            keys[1] = keys[1][:64] + bytes(64)
            return dataclasses.replace(msg, keys=keys)
        return msg

    run = drive(make_setup(agg, _updates(5)), server_hook=hook, stages=MALICIOUS)
    assert isinstance(run.client_errors[0], ConsistencyError)


def test_clients_sent_different_models_abort():
    """A server that sends client 0 another model and skips its own signature checks."""
    from secureagg.protocols.secagg.server import SecAggServer

    class LyingServer(SecAggServer):
        def _on_advertise(self, sender, msg):
            self._keys[sender] = (msg.cipher_public_key, msg.mask_public_key, msg.signature)

    agg = _magg(5)
    setup = make_setup(agg, _updates(5))
    setup.server.__class__ = LyingServer

    def hook(stage, u, msg):
        if isinstance(msg, m.AdvertiseRequest) and u == 0:
            return dataclasses.replace(msg, model_digest=b"a different model")
        return msg

    run = None
    with pytest.raises(InsufficientSurvivors):
        drive(setup, server_hook=hook, stages=MALICIOUS)
    # Every client aborted at the key broadcast: 0 cannot verify the others under its digest,
    # and they cannot verify 0. No share was sent.
    for c in setup.clients.values():
        assert c.aborted
    assert run is None


def test_unmask_request_with_too_few_signatures_aborts():
    agg = _magg(7)
    setup = make_setup(agg, _updates(7))

    def hook(stage, u, msg):
        if isinstance(msg, m.UnmaskRequest):
            return dataclasses.replace(msg, signatures=dict(list(msg.signatures.items())[:2]))
        return msg

    with pytest.raises((InsufficientSurvivors, ProtocolError)):
        drive(setup, server_hook=hook, stages=MALICIOUS)
    assert all(c.aborted for c in setup.clients.values())
