"""Encrypted cut layer: ciphertext-only server view, CKKS accuracy, training, bad input."""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import numpy as np
import pytest

from secureagg.dp.events import GaussianSteps, MemorySink
from secureagg.dp.noise import CsprngGaussian
from secureagg.errors import (
    ConfigurationError,
    InvalidInputError,
    InvalidKeyError,
    MalformedMessage,
    NonFiniteInputError,
    ProtocolError,
)
from secureagg.he.ckks import CUT_LAYER_PARAMETERS, CkksParameters, CutLayerSecretKey
from secureagg.split.he_cut import (
    BackwardRequest,
    CutSetup,
    ForwardRequest,
    ForwardResponse,
    HeCutClient,
    HeCutConfig,
    HeCutServer,
    choose_layout,
)

#: Stated tolerance of one cut-layer output (scale 2^25, unit-scale inputs and weights).
CKKS_TOL = 1e-3

IN, OUT, BATCH = 6, 3, 12


@functools.lru_cache(maxsize=2)
def _key() -> CutLayerSecretKey:
    return CutLayerSecretKey()


def _exact_config(**kw: Any) -> HeCutConfig:
    base: dict[str, Any] = dict(
        in_features=IN,
        out_features=OUT,
        batch_size=BATCH,
        clip=None,
        noise_multiplier=0.0,
        allow_exact_weight_gradient=True,
    )
    base.update(kw)
    return HeCutConfig(**base)


def _pair(cfg: HeCutConfig, seed: int = 0, **client_kw: Any) -> tuple[HeCutClient, HeCutServer]:
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.3, (cfg.in_features, cfg.out_features))
    b = rng.normal(0, 0.1, cfg.out_features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        client = HeCutClient(cfg, key=_key(), **client_kw)
    server = HeCutServer(cfg, weight=w, bias=b, learning_rate=0.5)
    server.accept_setup(client.setup())
    return client, server


def _data(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1.5, (OUT, IN))
    y = rng.integers(0, OUT, 120)
    x = centers[y] + rng.normal(0, 0.5, (120, IN))
    return x, y


def _softmax_grad(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = float(-np.log(p[np.arange(len(y)), y]).mean())
    p[np.arange(len(y)), y] -= 1.0
    return loss, p / len(y)


# ------------------------------------------------------------------------------ packing (no HE)


@pytest.mark.parametrize(
    ("rows", "inner", "cols", "slots"),
    [(12, 7, 3, 2048), (32, 65, 64, 2048), (32, 257, 256, 2048), (5, 3, 9, 16), (3, 40, 2, 32)],
)
def test_packing_computes_the_product(rows: int, inner: int, cols: int, slots: int) -> None:
    rng = np.random.default_rng(rows + inner)
    x, m = rng.normal(size=(rows, inner)), rng.normal(size=(inner, cols))
    lay = choose_layout(rows, inner, cols, slots)
    canaries = rng.uniform(-1, 1, lay.groups)
    xs = lay.pack_inputs(x, canaries).reshape(lay.groups, lay.inputs_per_group, slots)
    ws = lay.pack_weights(m)
    ys = np.einsum("gsk,tsk->gtk", xs, ws).reshape(-1, slots)
    np.testing.assert_allclose(lay.unpack_outputs(ys, canaries), x @ m, atol=1e-9)
    with pytest.raises(MalformedMessage, match="canary"):
        lay.unpack_outputs(ys, canaries + 0.5)


# ------------------------------------------------------------------- (a) ciphertext-only view


def test_server_receives_only_ciphertexts_uncorrelated_with_activations() -> None:
    cfg = dataclasses.replace(_exact_config(), noise_multiplier=0.5, clip=1.0)
    client, server = _pair(cfg)
    a = np.random.default_rng(3).normal(size=(BATCH, IN))
    request = client.forward(a)
    assert all(isinstance(c, bytes) for c in request.ciphertexts)
    blob = b"".join(request.ciphertexts)
    for dtype in (np.float64, np.float32):
        raw = a.astype(dtype).tobytes()
        width = np.dtype(dtype).itemsize
        assert not any(raw[i : i + width] in blob for i in range(0, len(raw), width))
    # the ciphertext's words do not track the packed activations (2048 pairs: |r| < 0.1 is 4.5
    # standard deviations of the correlation of independent data)
    lay = choose_layout(BATCH, IN + 1, OUT, 2048)
    packed = lay.pack_inputs(np.hstack([a, np.ones((BATCH, 1))]), np.zeros(lay.groups))[0]
    words = np.frombuffer(request.ciphertexts[0][-8 * 2048 :], dtype="<u8").astype(float)
    assert abs(np.corrcoef(words, packed)[0, 1]) < 0.1
    # encrypting the same activations again gives unrelated bytes (randomised encryption)
    client2, _ = _pair(cfg)
    again = client2.forward(a).ciphertexts[0]
    same = np.frombuffer(again[-4096:], np.uint8) == np.frombuffer(
        request.ciphertexts[0][-4096:], np.uint8
    )
    assert same.mean() < 0.05
    z = client.finish_forward(server.forward(request))
    g = np.random.default_rng(4).normal(0, 0.1, z.shape)
    back = client.backward(g)
    assert back.plain_gradient is None and back.gradient_ciphertexts
    g_blob = b"".join(back.gradient_ciphertexts)
    assert not any(g.tobytes()[i : i + 8] in g_blob for i in range(0, g.nbytes, 8))
    # the only plaintext the server gets is the noised weight gradient: not the exact one
    exact = np.hstack([a, np.ones((BATCH, 1))]).T @ g
    assert np.abs(back.weight_gradient.reshape(IN, OUT) - exact[:-1]).max() > 1e-3


# --------------------------------------------------------------------------- (b) accuracy


def test_forward_matches_plaintext_within_ckks_tolerance() -> None:
    cfg = _exact_config(in_features=16, out_features=8, batch_size=10)
    client, server = _pair(cfg, seed=5)
    a = np.random.default_rng(6).uniform(-2, 2, (10, 16))
    z = client.finish_forward(server.forward(client.forward(a)))
    np.testing.assert_allclose(z, a @ server.weight + server.bias, atol=CKKS_TOL)
    g = np.random.default_rng(7).normal(0, 0.5, z.shape)
    w_before = server.weight
    da = client.finish_backward(server.backward(client.backward(g)))
    np.testing.assert_allclose(da, g @ w_before.T, atol=CKKS_TOL)


# --------------------------------------------------------------------------- (c) training


def test_training_reduces_loss_and_matches_plaintext_training() -> None:
    cfg = _exact_config()
    client, server = _pair(cfg, seed=8)
    w, b = server.weight, server.bias
    x, y = _data()
    enc_losses, plain_losses = [], []
    for step in range(6):
        idx = slice(step * BATCH, (step + 1) * BATCH)
        a, labels = x[idx], y[idx]
        z = client.finish_forward(server.forward(client.forward(a)))
        loss, g = _softmax_grad(z, labels)
        enc_losses.append(loss)
        client.finish_backward(server.backward(client.backward(g)))
        p_loss, p_g = _softmax_grad(a @ w + b, labels)
        plain_losses.append(p_loss)
        w, b = w - 0.5 * a.T @ p_g, b - 0.5 * p_g.sum(axis=0)
    np.testing.assert_allclose(server.weight, w, atol=CKKS_TOL)
    np.testing.assert_allclose(server.bias, b, atol=CKKS_TOL)
    np.testing.assert_allclose(enc_losses, plain_losses, atol=CKKS_TOL)
    full_before = _softmax_grad(x @ _pair(cfg, seed=8)[1].weight, y)[0]
    assert _softmax_grad(x @ server.weight + server.bias, y)[0] < 0.7 * full_before


def test_dp_training_reduces_loss_and_reports_the_mechanism() -> None:
    cfg = HeCutConfig(
        in_features=IN,
        out_features=OUT,
        batch_size=BATCH,
        clip=5.0,
        noise_multiplier=0.3,
    )
    sink = MemorySink()
    with pytest.warns(UserWarning, match="seeded"):
        noise = CsprngGaussian(seed=b"he-cut-test", test_mode=True)
    client, server = _pair(cfg, seed=8, noise=noise, event_sink=sink)
    x, y = _data()
    start = _softmax_grad(x @ server.weight + server.bias, y)[0]
    for step in range(10):
        idx = slice((step % 10) * BATCH, (step % 10 + 1) * BATCH)
        z = client.finish_forward(server.forward(client.forward(x[idx])))
        client.finish_backward(server.backward(client.backward(_softmax_grad(z, y[idx])[1])))
    assert _softmax_grad(x @ server.weight + server.bias, y)[0] < 0.8 * start
    steps = [e for e in sink.events if isinstance(e, GaussianSteps)]
    assert len(steps) == 10
    # replace-one: sensitivity 2 * clip, so multiplier 0.3 / 2 relative to it; no sampling
    assert steps[0].noise_multiplier == 0.15 and steps[0].clip == 10.0
    assert steps[0].sample_rate == 1.0 and steps[0].mechanism == "split-he-cut-weight-gradient"


# ------------------------------------------------------------------------------ (d) bad input


def _forwarded(cfg: HeCutConfig | None = None) -> tuple[HeCutClient, HeCutServer, np.ndarray]:
    client, server = _pair(cfg or _exact_config())
    a = np.random.default_rng(9).normal(size=(BATCH, IN))
    z = client.finish_forward(server.forward(client.forward(a)))
    return client, server, z


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_activations_and_gradients_are_refused_before_sending(bad: float) -> None:
    client, _ = _pair(_exact_config())
    a = np.zeros((BATCH, IN))
    a[2, 3] = bad
    with pytest.raises(NonFiniteInputError):
        client.forward(a)
    assert client.stage == "ready"
    client, _, z = _forwarded()
    g = np.zeros_like(z)
    g[0, 0] = bad
    with pytest.raises(NonFiniteInputError):
        client.backward(g)
    assert client.stage == "forward_done"


def test_wrong_shapes_and_out_of_bound_values_are_refused() -> None:
    client, _ = _pair(_exact_config())
    with pytest.raises(InvalidInputError, match="shape"):
        client.forward(np.zeros((BATCH - 1, IN)))
    with pytest.raises(InvalidInputError, match="shape"):
        client.forward(np.zeros((BATCH, IN + 1)))
    with pytest.raises(InvalidInputError, match="activation_bound"):
        client.forward(np.full((BATCH, IN), 100.0))
    client, _, _ = _forwarded()
    with pytest.raises(InvalidInputError, match="shape"):
        client.backward(np.zeros((BATCH, OUT + 1)))


def test_bad_weight_gradient_is_refused_and_the_step_not_applied() -> None:
    client, server, z = _forwarded()
    request = client.backward(np.full(z.shape, 0.01))
    w, b = server.weight, server.bias
    for field_name, value in [
        ("weight_gradient", np.full(IN * OUT, np.nan)),
        ("bias_gradient", np.full(OUT, np.inf)),
        ("weight_gradient", np.zeros((IN + 1) * OUT)),
    ]:
        bad = dataclasses.replace(request, **{field_name: value})
        with pytest.raises(InvalidInputError):
            server.backward(bad)
        np.testing.assert_array_equal(server.weight, w)
        np.testing.assert_array_equal(server.bias, b)
        assert server.stage == "forward_done"
    with pytest.raises(InvalidInputError, match="1-D"):  # matrices travel flat: 2-D is refused
        dataclasses.replace(request, weight_gradient=np.zeros((IN, OUT)))
    dropped = dataclasses.replace(request, gradient_ciphertexts=request.gradient_ciphertexts[:-1])
    with pytest.raises(MalformedMessage, match="wrong batch size"):
        server.backward(dropped)
    np.testing.assert_array_equal(server.weight, w)
    server.backward(request)  # the genuine request still goes through
    assert not np.array_equal(server.weight, w)


def test_wrong_batch_size_and_order_are_refused() -> None:
    client, server = _pair(_exact_config())
    a = np.random.default_rng(10).normal(size=(BATCH, IN))
    request = client.forward(a)
    short = dataclasses.replace(request, ciphertexts=request.ciphertexts[:-1] or (b"x",))
    if len(request.ciphertexts) == 1:
        short = dataclasses.replace(request, ciphertexts=request.ciphertexts * 2)
    with pytest.raises(MalformedMessage, match="wrong batch size"):
        server.forward(short)
    with pytest.raises(ProtocolError, match="step"):
        server.forward(dataclasses.replace(request, step=1))
    response = server.forward(request)
    with pytest.raises(ProtocolError, match="step"):
        client.finish_forward(dataclasses.replace(response, step=5))
    with pytest.raises(ProtocolError, match="digest"):
        client.finish_forward(dataclasses.replace(response, request_digest=bytes(32)))
    z = client.finish_forward(response)
    back = client.backward(np.full(z.shape, 0.01))
    with pytest.raises(ProtocolError, match="another forward"):
        server.backward(dataclasses.replace(back, forward_digest=bytes(32)))
    reply = server.backward(back)
    client.finish_backward(reply)
    # step 1: replaying step 0's messages is refused on both sides
    with pytest.raises(ProtocolError):
        server.forward(request)
    request1 = client.forward(a)
    with pytest.raises(ProtocolError):
        client.finish_forward(response)
    # a result from step 0 relabelled as step 1 fails the canary: ciphertexts are bound too
    response1 = server.forward(request1)
    stale = ForwardResponse(response1.session_id, 1, response1.request_digest, response.ciphertexts)
    with pytest.raises(MalformedMessage, match="canary"):
        client.finish_forward(stale)
    client.finish_forward(response1)
    with pytest.raises(ProtocolError, match="stage"):
        client.forward(a)


def test_foreign_ciphertexts_are_refused() -> None:
    client, server = _pair(_exact_config())
    a = np.random.default_rng(11).normal(size=(BATCH, IN))
    request = client.forward(a)
    # other parameters: does not parse under the cut layer's context
    other = CutLayerSecretKey(
        CkksParameters(poly_modulus_degree=8192, coeff_mod_bit_sizes=(60, 60), scale=2.0**25)
    )
    foreign = other.encrypt_rows(np.zeros((len(request.ciphertexts), 4096)))
    with pytest.raises(MalformedMessage, match="foreign context"):
        server.forward(dataclasses.replace(request, ciphertexts=foreign))
    with pytest.raises(MalformedMessage):
        server.forward(dataclasses.replace(request, ciphertexts=(b"\x00" * 100,) * len(foreign)))
    # a message for other parameters, or from another client's session, is refused
    with pytest.raises(MalformedMessage, match="fingerprint"):
        server.forward(dataclasses.replace(request, key_fingerprint=other.key_fingerprint))
    other_client, _ = _pair(_exact_config())
    with pytest.raises(ProtocolError, match="session"):
        server.forward(other_client.forward(a))
    # same parameters, another key, passed off as a result: fails the canary on decryption
    response = server.forward(request)
    stranger_server = CutLayerSecretKey()
    lay = choose_layout(BATCH, IN + 1, OUT, 2048)
    fake = stranger_server.encrypt_rows(np.zeros((lay.groups * lay.inputs_per_group, 2048)))
    from secureagg.he.ckks import CutLayerEvaluator

    ev = CutLayerEvaluator(stranger_server.evaluation_context(), expected=CUT_LAYER_PARAMETERS)
    forged = ev.weighted_sums(fake, lay.pack_weights(np.zeros((IN + 1, OUT))), input_bound=16.0)
    with pytest.raises(MalformedMessage, match="canary"):
        client.finish_forward(dataclasses.replace(response, ciphertexts=forged * lay.groups))
    # a fresh ciphertext where a product belongs is refused by its scale
    with pytest.raises(MalformedMessage, match="scale"):
        client.finish_forward(
            dataclasses.replace(
                response, ciphertexts=request.ciphertexts[: len(forged)] * lay.groups
            )
        )


def test_plain_gradient_mode_and_mismatched_modes() -> None:
    cfg = _exact_config(encrypt_gradient=False)
    client, server, z = _forwarded(cfg)
    g = np.random.default_rng(12).normal(0, 0.1, z.shape)
    w = server.weight
    request = client.backward(g)
    assert request.plain_gradient is not None and not request.gradient_ciphertexts
    with pytest.raises(MalformedMessage):
        server.backward(dataclasses.replace(request, gradient_ciphertexts=(b"x",)))
    da = client.finish_backward(server.backward(request))
    np.testing.assert_allclose(da, g @ w.T, atol=1e-12)


# ---------------------------------------------------------------- (e) keys and configuration


def test_secret_key_context_is_rejected_by_the_server() -> None:
    key = CutLayerSecretKey()
    leaked = bytes(key._ctx.serialize(save_secret_key=True))
    server = HeCutServer(
        _exact_config(), weight=np.zeros((IN, OUT)), bias=np.zeros(OUT), learning_rate=0.1
    )
    cfg = _exact_config()
    with pytest.raises(InvalidKeyError, match="secret key"):
        server.accept_setup(CutSetup(bytes(16), leaked, cfg.summary_json()))
    assert server.stage == "setup"
    with pytest.raises(InvalidKeyError, match="deserialize"):
        server.accept_setup(CutSetup(bytes(16), b"not a context", cfg.summary_json()))
    other = _exact_config(out_features=4).summary_json()
    with pytest.raises(ConfigurationError, match="differs"):
        server.accept_setup(CutSetup(bytes(16), key.evaluation_context(), other))
    server.accept_setup(CutSetup(bytes(16), key.evaluation_context(), cfg.summary_json()))
    with pytest.raises(ProtocolError):
        server.accept_setup(CutSetup(bytes(16), key.evaluation_context(), cfg.summary_json()))


def test_unsafe_configurations_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="allow_exact_weight_gradient"):
        HeCutConfig(in_features=4, out_features=2, batch_size=8, noise_multiplier=0.0)
    with pytest.raises(ConfigurationError, match="must exceed out_features"):
        HeCutConfig(
            in_features=4,
            out_features=8,
            batch_size=8,
            noise_multiplier=0.0,
            allow_exact_weight_gradient=True,
        )
    with pytest.raises(ConfigurationError) as info:
        HeCutConfig(in_features=0, out_features=2, batch_size=8, clip=-1.0, sample_rate=2.0)
    assert len(info.value.problems) == 3


def test_weights_too_large_for_the_modulus_are_refused_before_computing() -> None:
    client, server = _pair(_exact_config())
    server._weight[:] = 100.0
    request = client.forward(np.ones((BATCH, IN)))
    with pytest.raises(ConfigurationError, match="beyond"):
        server.forward(request)
    assert server.stage == "ready"
    assert isinstance(request, ForwardRequest) and isinstance(BackwardRequest, type)
