"""Encrypted cut layer: malformed fields from the other party are library errors, never bare ones.

The codec carries integers of up to 65535 bytes, so a peer can send a step whose ``str()`` raises
``ValueError`` (Python's 4300-digit limit): the order check must refuse it as a ``ProtocolError``
without printing it. A driver that skips the codec could hand a party a ragged list, ``None`` or a
2-D array where a flat array or a ciphertext tuple belongs: the message constructors refuse that
(``InvalidInputError``; ``MalformedMessage`` from ``decode``), and the parties refuse it again if
the constructor was bypassed.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("tenseal")

from secureagg.errors import (
    InvalidInputError,
    MalformedMessage,
    ProtocolError,
    SecureAggError,
)
from secureagg.he.ckks import CutLayerSecretKey
from secureagg.split.he_cut import (
    BackwardRequest,
    BackwardResponse,
    ForwardRequest,
    ForwardResponse,
    HeCutClient,
    HeCutConfig,
    HeCutServer,
)
from secureagg.transport import decode, encode

IN, OUT, BATCH = 6, 3, 12
HUGE = 2**20000  # str() of it raises ValueError
FORBIDDEN = (ValueError, OverflowError, MemoryError, IndexError, TypeError, AttributeError)
_KEY: list[CutLayerSecretKey] = []


def key() -> CutLayerSecretKey:
    if not _KEY:
        _KEY.append(CutLayerSecretKey())
    return _KEY[0]


def pair(*, encrypt_gradient: bool = True) -> tuple[HeCutClient, HeCutServer]:
    cfg = HeCutConfig(in_features=IN, out_features=OUT, batch_size=BATCH, clip=None,
                      noise_multiplier=0.0, allow_exact_weight_gradient=True,
                      encrypt_gradient=encrypt_gradient)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        client = HeCutClient(cfg, key=key())
    rng = np.random.default_rng(0)
    server = HeCutServer(cfg, weight=rng.normal(0, 0.3, (IN, OUT)), bias=np.zeros(OUT),
                         learning_rate=0.1)
    server.accept_setup(client.setup())
    return client, server


def wire(message: Any) -> Any:
    return decode(encode(message))


def raw(message: Any, **changes: Any) -> Any:
    """``message`` with ``changes``, its constructor's checks bypassed (a hostile driver)."""
    out = object.__new__(type(message))
    for f in dataclasses.fields(message):
        object.__setattr__(out, f.name, changes.get(f.name, getattr(message, f.name)))
    return out


def test_a_huge_step_from_the_wire_is_a_protocol_error_on_every_party() -> None:
    client, server = pair()
    request = client.forward(np.zeros((BATCH, IN)))
    with pytest.raises(ProtocolError, match="bit integer"):
        server.forward(wire(dataclasses.replace(request, step=HUGE)))
    response = server.forward(request)
    with pytest.raises(ProtocolError, match="bit integer"):
        client.finish_forward(wire(dataclasses.replace(response, step=-HUGE)))
    client.finish_forward(response)
    back = client.backward(np.full((BATCH, OUT), 0.01))
    with pytest.raises(ProtocolError, match="bit integer"):
        server.backward(wire(dataclasses.replace(back, step=HUGE)))
    reply = server.backward(back)
    with pytest.raises(ProtocolError, match="bit integer"):
        client.finish_backward(wire(dataclasses.replace(reply, step=HUGE)))
    client.finish_backward(reply)  # the genuine messages still complete the step
    assert client.step == 1 and server.step == 1


BAD_ARRAYS = [[[1.0, 2.0], [3.0]], "abc", np.zeros((IN, OUT)), 5, [0.0] * (IN * OUT)]


@pytest.mark.parametrize("field", ["weight_gradient", "bias_gradient"])
@pytest.mark.parametrize("bad", BAD_ARRAYS, ids=["ragged", "str", "2-D", "int", "list"])
def test_malformed_gradient_arrays_are_refused_when_built_and_by_the_server(
    field: str, bad: Any
) -> None:
    client, server = pair()
    client.finish_forward(server.forward(client.forward(np.zeros((BATCH, IN)))))
    back = client.backward(np.full((BATCH, OUT), 0.01))
    with pytest.raises(InvalidInputError):
        dataclasses.replace(back, **{field: bad})
    w = server.weight
    with pytest.raises(InvalidInputError):
        server.backward(raw(back, **{field: bad}))
    np.testing.assert_array_equal(server.weight, w)
    assert server.stage == "forward_done"
    server.backward(back)


@pytest.mark.parametrize("bad", [None, [b"x", 3], (1, 2), b"abc"], ids=str)
def test_malformed_ciphertext_tuples_are_refused_when_built_and_by_each_party(bad: Any) -> None:
    client, server = pair()
    request = client.forward(np.zeros((BATCH, IN)))
    with pytest.raises(InvalidInputError):
        dataclasses.replace(request, ciphertexts=bad)
    with pytest.raises(MalformedMessage):
        server.forward(raw(request, ciphertexts=bad))
    response = server.forward(request)
    with pytest.raises(MalformedMessage):
        client.finish_forward(raw(response, ciphertexts=bad))
    client.finish_forward(response)
    back = client.backward(np.full((BATCH, OUT), 0.01))
    with pytest.raises(MalformedMessage):
        server.backward(raw(back, gradient_ciphertexts=bad))
    reply = server.backward(back)
    with pytest.raises(MalformedMessage):
        client.finish_backward(raw(reply, ciphertexts=bad))
    client.finish_backward(reply)


@pytest.mark.parametrize("bad", BAD_ARRAYS, ids=["ragged", "str", "2-D", "int", "list"])
def test_malformed_plaintext_gradients_are_refused_in_the_plaintext_mode(bad: Any) -> None:
    client, server = pair(encrypt_gradient=False)
    client.finish_forward(server.forward(client.forward(np.zeros((BATCH, IN)))))
    back = client.backward(np.full((BATCH, OUT), 0.01))
    with pytest.raises(InvalidInputError):
        server.backward(raw(back, plain_gradient=bad))
    reply = server.backward(back)
    with pytest.raises(InvalidInputError):
        client.finish_backward(raw(reply, plain_input_gradient=bad))
    client.finish_backward(reply)


def test_message_constructors_refuse_wrong_field_types() -> None:
    with pytest.raises(InvalidInputError):
        ForwardRequest(b"s" * 16, True, b"f", ())  # a bool is not a step
    with pytest.raises(InvalidInputError):
        ForwardResponse("s", 0, b"d", ())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        BackwardRequest(b"s" * 16, 0, b"d", np.zeros(2), None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        BackwardResponse(b"s" * 16, 0, b"d", plain_input_gradient=np.zeros((2, 2)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(min_value=0, max_value=40),
    dtype=st.sampled_from(["<f8", "<f4", "<i8", "<u1", "<i4"]),
    field=st.sampled_from(["weight_gradient", "bias_gradient"]),
    step=st.one_of(st.just(0), st.integers(min_value=-(2**70), max_value=2**70)),
)
def test_property_any_backward_request_from_the_wire_is_refused_with_a_library_error(
    size: int, dtype: str, field: str, step: int
) -> None:
    client, server = pair()
    client.finish_forward(server.forward(client.forward(np.zeros((BATCH, IN)))))
    back = client.backward(np.full((BATCH, OUT), 0.01))
    bad = wire(dataclasses.replace(back, step=step, **{field: np.ones(size, dtype=dtype)}))
    w = server.weight
    try:
        server.backward(bad)
    except SecureAggError:
        np.testing.assert_array_equal(server.weight, w)
    except FORBIDDEN as exc:  # pragma: no cover - what this test exists for
        pytest.fail(f"bare {type(exc).__name__}: {exc}")
