"""CKKS bad inputs and misbehaving parties (ANCHORS.md, HE part), each as its own test."""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tenseal as ts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import secureagg as sa
from secureagg.errors import InsufficientSurvivors, ProtocolError
from secureagg.he.ckks import CkksParameters, CkksPublicContext, CkksSecretKey
from secureagg.protocols.base import KEY_HOLDER, SERVER, Envelope
from secureagg.protocols.ckks import (
    CkksProbedAggregate,
    CkksRelease,
    CkksRequest,
    CkksUpload,
)
from secureagg.protocols.he_round import HEAggregate
from secureagg.transport import codec
from tests.he.driver import drive, make_setup
from tests.he.keys import ckks_key

KINDS = {"ckks/request", "ckks/upload", "ckks/probed-aggregate", "ckks/release"}


def _agg(n=4, **kw):
    kw.setdefault("clip", 1.0)
    kw.setdefault("key", ckks_key())
    return sa.make_aggregator("ckks", num_clients=n, **kw)


def _updates(n, d=50, seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.uniform(-1, 1, size=d)] for _ in range(n)]


def _rejected(run, recipient, fragment):
    return [e for _, _, r, e in run.rejections if r == recipient and fragment in str(e)]


# ------------------------------------------------------------------------------ the secret key


def _secret_key_blobs(key: CkksSecretKey) -> list[bytes]:
    ctx = key._private_context()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sk"
        ctx.secret_key().data.save(str(path))
        raw = path.read_bytes()
    private = ctx.serialize(save_secret_key=True, save_galois_keys=False, save_relin_keys=False)
    return [raw[64:192], raw[-128:], private[-128:]]


def test_secret_key_never_crosses_the_wire() -> None:
    key = CkksSecretKey()
    agg = _agg(key=key)
    run = drive(make_setup(agg, _updates(4)))
    assert {codec.decode(data).KIND for *_, data in run.wire} == KINDS
    wire = b"".join(data for *_, data in run.wire)
    for blob in _secret_key_blobs(key):
        assert blob not in wire
    for *_, data in run.wire:  # no field of any message is a context, let alone a private one
        msg = codec.decode(data)
        for f in dataclasses.fields(msg):
            value = getattr(msg, f.name)
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, bytes) and len(item) > 1000:
                    with pytest.raises((ValueError, RuntimeError)):
                        ts.context_from(item)


def test_the_server_and_clients_hold_public_contexts_only() -> None:
    setup = make_setup(_agg(), _updates(4))
    server_ctx = setup.server._accumulator._context._ctx
    client_ctx = setup.clients[0].encryptor._context._ctx
    for ctx in (server_ctx, client_ctx):
        assert not ctx.is_private() and not ctx.has_secret_key()


# ------------------------------------------------------------------------------ uploads


def _foreign_upload(stage, env, key):
    """Re-encrypt client 1's upload under ``key`` (another context), same fingerprint claimed."""
    if isinstance(env.message, CkksUpload) and env.sender == 1:
        other = CkksPublicContext(key.public_material()).encryptor()
        cts = tuple(other.encrypt(np.ones(51)))
        return dataclasses.replace(env, message=dataclasses.replace(env.message, ciphertexts=cts))
    return env


def test_client_holding_another_context_does_not_upload() -> None:
    other = CkksSecretKey()
    setup = make_setup(_agg(), _updates(4))
    setup.clients[1].encryptor = CkksPublicContext(other.public_material()).encryptor()
    run = drive(setup)
    assert _rejected(run, 1, "another key")  # the request names a key the client does not hold
    assert not [m for s, _, m in run.messages("ckks/upload") if s == 1]
    assert setup.server.result().survivor_ids == (0, 2, 3)


def test_ciphertexts_of_a_mismatched_context_are_refused() -> None:
    flare = CkksSecretKey(CkksParameters(coeff_mod_bit_sizes=(60, 40, 60)))
    setup = make_setup(_agg(), _updates(4))
    run = drive(setup, hook=lambda stage, env: _foreign_upload(stage, env, flare))
    assert _rejected(run, SERVER, "treated as dropped")
    assert setup.server.result().survivor_ids == (0, 2, 3)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: dataclasses.replace(m, round_id=m.round_id + 1),
        lambda m: dataclasses.replace(m, session_id=b"X" * 16),
        lambda m: dataclasses.replace(m, key_fingerprint=bytes(32)),
        lambda m: dataclasses.replace(m, ciphertexts=m.ciphertexts[:0]),
        lambda m: dataclasses.replace(m, ciphertexts=(m.ciphertexts[0][:-1],)),
    ],
    ids=["other-round", "other-session", "other-key", "no-chunks", "truncated"],
)
def test_bad_uploads_are_refused(mutate) -> None:
    setup = make_setup(_agg(), _updates(4))

    def hook(stage, env):
        if isinstance(env.message, CkksUpload) and env.sender == 2:
            return dataclasses.replace(env, message=mutate(env.message))
        return env

    run = drive(setup, hook=hook)
    assert [s for _, s, r, _ in run.rejections if r == SERVER] == [2]
    assert setup.server.result().survivor_ids == (0, 1, 3)


def test_duplicate_upload_is_refused() -> None:
    setup = make_setup(_agg(), _updates(4))

    def hook(stage, env):
        if isinstance(env.message, CkksUpload) and env.sender == 0:
            setup.server.receive(0, env.message)  # the first copy goes straight in
        return env

    run = drive(setup, hook=hook)
    assert _rejected(run, SERVER, "duplicate upload")
    assert setup.server.result().survivor_ids == (0, 1, 2, 3)


def test_upload_from_a_non_client_is_refused() -> None:
    setup = make_setup(_agg(), _updates(4))
    setup.server.start()
    upload = CkksUpload(session_id=b"S" * 16, round_id=0,
                        key_fingerprint=setup.server.key_fingerprint, ciphertexts=())
    for sender in (KEY_HOLDER, 4, -7):
        with pytest.raises(ProtocolError, match="clients only"):
            setup.server.receive(sender, upload)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(cut=st.integers(0, 40_000), flips=st.lists(st.tuples(st.integers(0, 10**6),
                                                           st.integers(1, 255)), max_size=3),
       junk=st.binary(max_size=300))
def test_fuzzed_upload_bytes_through_the_codec(cut, flips, junk) -> None:
    setup = make_setup(_agg(n=2, key=ckks_key()), _updates(2, d=20))
    server = setup.server
    request = server.start()[0].message
    upload = setup.clients[0].receive(SERVER, request)[0].message
    data = bytearray(codec.encode(upload))
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    wire = bytes(data[: max(1, len(data) - cut % 200)]) + junk
    try:
        msg = codec.decode(wire)
        server.receive(0, msg)
    except (sa.errors.MalformedMessage, ProtocolError):
        assert server.held_ciphertexts in (0, 1)
    else:
        assert server.held_ciphertexts == 1


# ------------------------------------------------------------------------------ release rule


def _aggregate_hook(mutate):
    def hook(stage, env):
        if isinstance(env.message, HEAggregate):
            return dataclasses.replace(env, message=mutate(env.message))
        return env

    return hook


def _single_upload_hook(setup):
    """A server that forwards client 0's ciphertext as if it were the aggregate of everyone."""
    captured = {}

    def hook(stage, env):
        if isinstance(env.message, CkksUpload) and env.sender == 0:
            captured["cts"] = env.message.ciphertexts
        if isinstance(env.message, HEAggregate):
            msg = dataclasses.replace(env.message, ciphertexts=captured["cts"])
            return dataclasses.replace(env, message=msg)
        return env

    return hook


def test_a_single_upload_passed_off_as_the_aggregate_is_not_released() -> None:
    setup = make_setup(_agg(), _updates(4))
    with pytest.raises(ProtocolError, match="released no aggregate") as info:
        drive(setup, hook=_single_upload_hook(setup))
    assert _rejected(info.value.run, KEY_HOLDER, "count slot does not match the 4 contributors")


def test_key_holder_refuses_aggregates_naming_too_few_clients() -> None:
    setup = make_setup(_agg(n=6), _updates(6))  # min_clients 3
    hook = _aggregate_hook(lambda m: dataclasses.replace(m, contributors=(0, 1)))
    with pytest.raises(ProtocolError, match="released no aggregate") as info:
        drive(setup, hook=hook)
    assert _rejected(info.value.run, KEY_HOLDER, "fewer than the threshold 3")
    holder = setup.helpers[KEY_HOLDER]
    agg_msg = CkksProbedAggregate(session_id=b"S" * 16, round_id=0,
                                  key_fingerprint=holder.decryptor.key_fingerprint,
                                  contributors=(0, 1), ciphertexts=(), attempt=1, probes=())
    holder.released = False
    with pytest.raises(InsufficientSurvivors):
        holder.receive(SERVER, agg_msg)


@pytest.mark.parametrize(
    "contributors", [(0, 0, 1), (2, 1, 0), (0, 1, 9)], ids=["dup", "unsorted", "unknown"]
)
def test_key_holder_checks_the_contributor_list(contributors) -> None:
    setup = make_setup(_agg(), _updates(4))
    holder = setup.helpers[KEY_HOLDER]
    msg = CkksProbedAggregate(session_id=b"S" * 16, round_id=0,
                              key_fingerprint=holder.decryptor.key_fingerprint,
                              contributors=contributors, ciphertexts=(), attempt=0, probes=())
    with pytest.raises(ProtocolError, match="distinct, sorted client ids"):
        holder.receive(SERVER, msg)


def test_key_holder_decrypts_only_for_the_server_and_only_once() -> None:
    setup = make_setup(_agg(), _updates(4))
    captured = []

    def hook(stage, env):
        if isinstance(env.message, HEAggregate):
            captured.append(env.message)
        return env

    drive(setup, hook=hook)
    holder = setup.helpers[KEY_HOLDER]
    with pytest.raises(ProtocolError, match="one decryption per round"):
        holder.receive(SERVER, captured[0])
    with pytest.raises(ProtocolError, match="decrypts only what the server sends"):
        holder.receive(0, captured[0])


def test_values_beyond_the_clip_are_not_released() -> None:
    """A client that skips the clip and scales its values by 100 makes the key holder refuse."""
    setup = make_setup(_agg(), _updates(4))
    rogue = copy.copy(setup.clients[3].scheme)
    rogue.clip = None  # this client ignores the clip
    setup.clients[3].scheme = rogue
    setup.clients[3]._arrays = [a * 100 for a in setup.clients[3]._arrays]
    with pytest.raises(ProtocolError, match="released no aggregate") as info:
        drive(setup)
    assert _rejected(info.value.run, KEY_HOLDER, "outside the clipped range")


def test_release_comes_only_from_the_key_holder() -> None:
    setup = make_setup(_agg(), _updates(4))
    release = CkksRelease(session_id=b"S" * 16, round_id=0,
                          key_fingerprint=setup.server.key_fingerprint, contributors=(0, 1),
                          values=np.zeros(51), noise_std=0.0)
    seen = []

    def hook(stage, env):
        if stage == "release" and env.recipient == KEY_HOLDER:
            with pytest.raises(ProtocolError, match="only the key holder"):
                setup.server.receive(1, release)
            seen.append(stage)
        return env

    drive(setup, hook=hook)
    assert seen == ["release"]
    assert setup.server.result().survivor_ids == (0, 1, 2, 3)


def test_out_of_stage_messages_are_refused() -> None:
    setup = make_setup(_agg(), _updates(4))
    server = setup.server
    release = CkksRelease(session_id=b"S" * 16, round_id=0, key_fingerprint=b"",
                          contributors=(), values=np.zeros(1), noise_std=0.0)
    with pytest.raises(ProtocolError, match="outside a collection stage"):
        server.receive(KEY_HOLDER, release)
    server.start()
    with pytest.raises(ProtocolError, match="expected ckks/upload"):
        server.receive(0, release)
    with pytest.raises(ProtocolError, match="start"):
        server.start()
    client = setup.clients[0]
    request = CkksRequest(session_id=b"S" * 16, round_id=0,
                          key_fingerprint=server.key_fingerprint)
    client.receive(SERVER, request)
    with pytest.raises(ProtocolError, match="second upload request"):
        client.receive(SERVER, request)
    with pytest.raises(ProtocolError, match="expected the server"):
        setup.clients[1].receive(KEY_HOLDER, request)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda m: dataclasses.replace(m, values=m.values[:-1]), "released 49 values, expected 50"),
        (lambda m: dataclasses.replace(m, values=m.values.astype(np.float32)), "1-D float64"),
        (lambda m: dataclasses.replace(m, contributors=(0, 1, 2)), "other contributors"),
        (lambda m: dataclasses.replace(m, noise_std=-1.0), "noise_std"),
        (lambda m: dataclasses.replace(m, round_id=9), "another session or round"),
    ],
    ids=["short", "dtype", "contributors", "noise", "round"],
)
def test_bad_releases_are_refused(mutate, fragment) -> None:
    setup = make_setup(_agg(), _updates(4))

    def hook(stage, env):
        if isinstance(env.message, CkksRelease):
            return Envelope(env.sender, env.recipient, mutate(env.message))
        return env

    with pytest.raises(ProtocolError, match="released no aggregate") as info:
        drive(setup, hook=hook)
    assert _rejected(info.value.run, SERVER, fragment)
