"""Adversarial shapes across the cut: every refusal is a library error, never a numpy/torch one.

A declared ``shape`` is checked with exact integer arithmetic (Python ints), so a shape whose
product overflows int64 - ``(2^62 + 1, 4)`` "holds" 4 values under ``np.prod`` - is refused like
any other size mismatch. Negative, zero, huge, too many, non-integer and boolean dimensions are
refused too, by the message constructor (so ``decode`` raises ``MalformedMessage``) and again by
the receiving party (``InvalidInputError``), before any model is touched. So is a tensor that
does not fit the receiving model (a wrong feature width), or labels that are not class indices.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from secureagg.errors import (  # noqa: E402
    InvalidInputError,
    MalformedMessage,
    ProtocolError,
    SecureAggError,
)
from secureagg.split import (  # noqa: E402
    Activations,
    CutGradients,
    OutputGradients,
    ServerOutputs,
    SplitClient,
    SplitServer,
    split_sequential,
)
from secureagg.split.cut_validation import receive_tensor  # noqa: E402
from secureagg.split.messages import MAX_DIMS, CutTensor  # noqa: E402
from secureagg.transport import (  # noqa: E402
    codec,
    decode,
    encode,
)
from tests.split.exchange import to_client, to_server  # noqa: E402

SID = b"s" * 16
OVERFLOWING = [
    (2**62 + 1, 4),  # np.prod wraps to 4 in int64
    (2**63, 2),  # wraps to 0 in int64/uint64
    (2**32, 2**32 + 1),  # wraps to 2^32 in int64... and so on
    (2**64 + 4,),  # beyond every numpy integer
    (2**61, 2**3, 1, 4),
]


def sgd(params: Any) -> Any:
    return torch.optim.SGD(params, lr=0.1)


def make_net() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8), torch.nn.ReLU(),
        torch.nn.Linear(8, 3),
    )


def flat(module: Any) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()]).numpy().copy()


def vanilla_pair(*, label_table: bool = True) -> tuple[Any, SplitClient, SplitServer]:
    net = make_net()
    bottom, top = split_sequential(net, [2])
    client = SplitClient(bottom, sgd(bottom.parameters()), session_id=SID,
                         send_labels=not label_table)
    server = SplitServer(top, sgd(top.parameters()), session_id=SID,
                         labels=torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]) if label_table else None)
    return net, client, server


def u_pair() -> tuple[Any, SplitClient, SplitServer]:
    net = make_net()
    bottom, middle, head = split_sequential(net, [2, 4])
    client = SplitClient(bottom, sgd(bottom.parameters()), session_id=SID, head=head,
                         head_optimizer=sgd(head.parameters()),
                         loss_fn=torch.nn.functional.cross_entropy)
    server = SplitServer(middle, sgd(middle.parameters()), session_id=SID, topology="u-shaped")
    return net, client, server


def raw_message(cls: type[CutTensor], shape: Any, values: Any, **extra: Any) -> Any:
    """A message built without its constructor's checks: what a buggy or hostile driver could
    hand a party directly (the sans-I/O parties must not rely on the constructor alone)."""
    msg = object.__new__(cls)
    fields = {"session_id": SID, "step": 0, "shape": shape, "values": values, **extra}
    for name, value in fields.items():
        object.__setattr__(msg, name, value)
    return msg


def wire_bytes(kind: type[CutTensor], shape: tuple[int, ...], values: np.ndarray,
               **extra: Any) -> bytes:
    """The codec bytes a hostile peer would send: encoded field by field, no constructor."""
    out: list[Any] = [codec.MAGIC, codec._U8.pack(codec.FORMAT_VERSION)]
    name = kind.KIND.encode()
    out += [codec._U16.pack(len(name)), name]
    fields = {"session_id": SID, "step": 0, "shape": shape, "values": values, **extra}
    for field, fc in codec._plan(kind):
        fc.write(fc.check(fields[field], field), out)
    return b"".join(bytes(p) for p in out)


# ------------------------------------------------------------------------- the reported flaw


@pytest.mark.parametrize("shape", OVERFLOWING, ids=str)
def test_receive_tensor_refuses_a_shape_whose_product_overflows_int64(
    shape: tuple[int, ...]
) -> None:
    msg = raw_message(CutGradients, shape, np.ones(4, dtype=np.float32))
    with pytest.raises(InvalidInputError, match="needs"):
        receive_tensor(msg, session_id=SID, step=0, shape=(None,) * len(shape), what="gradient")


@pytest.mark.parametrize("shape", OVERFLOWING, ids=str)
def test_decode_refuses_a_split_message_whose_shape_overflows_int64(
    shape: tuple[int, ...]
) -> None:
    data = wire_bytes(CutGradients, shape, np.ones(4, dtype=np.float32))
    with pytest.raises(MalformedMessage):
        decode(data)


def test_client_refuses_cut_gradients_with_an_overflowing_shape_and_applies_nothing() -> None:
    _net, client, server = vanilla_pair()
    reply = to_server(server, client.forward(torch.randn(2, 6), example_ids=torch.arange(2)))
    before = flat(client.bottom)
    for shape in OVERFLOWING:
        bad = raw_message(CutGradients, shape, np.ones(4, dtype=np.float32))
        with pytest.raises(InvalidInputError):
            to_client(client, bad)
    np.testing.assert_array_equal(flat(client.bottom), before)
    assert to_client(client, reply) is None and client.step == 1


def test_every_party_refuses_overflowing_shapes_with_a_library_error() -> None:
    values = np.ones(4, dtype=np.float32)
    # vanilla server: activations
    net, client, server = vanilla_pair()
    before = flat(net)
    for shape in OVERFLOWING:
        bad = raw_message(Activations, shape, values,
                          example_ids=np.arange(shape[0] if shape[0] < 8 else 1, dtype=np.int64),
                          labels=None)
        with pytest.raises(InvalidInputError):
            to_server(server, bad)
    # U-shaped: server (activations, output gradients) and client (server outputs)
    net, client, server = u_pair()
    y = torch.tensor([0, 1])
    for shape in OVERFLOWING:
        with pytest.raises(InvalidInputError):
            to_server(server, raw_message(Activations, shape, values, example_ids=None,
                                          labels=None))
    outputs = to_server(server, client.forward(torch.randn(2, 6), labels=y))
    for shape in OVERFLOWING:
        with pytest.raises(InvalidInputError):
            to_client(client, raw_message(ServerOutputs, shape, values))
    og = to_client(client, outputs)
    assert og is not None
    for shape in OVERFLOWING:
        with pytest.raises(InvalidInputError):
            to_server(server, raw_message(OutputGradients, shape, values))
    assert to_client(client, to_server(server, og)) is None  # the genuine exchange still completes
    assert not np.array_equal(flat(net), before)


# ------------------------------------------------------------------ every other bad dimension


BAD_SHAPES: list[tuple[Any, int]] = [
    ((2, -2), 4),  # negative
    ((-1, -4), 4),  # two negatives multiply to the right size
    ((0, 4), 0),  # an empty axis
    ((2, 0), 0),
    ((), 1),  # no axis at all (a scalar)
    ((1,) * (MAX_DIMS + 1), 1),  # too many axes (numpy cannot even reshape to 65)
    ((1,) * 70, 1),
    ((2, True), 2),  # bool is not a dimension
    ((2, 2.0), 4),  # float
    ((2, "2"), 4),  # str
    ((2, None), 4),
    ((2, np.float64(2.0)), 4),
    ([2, 2], 4),  # not a tuple: fine if a list of ints? (normalised) - see the check below
]


@pytest.mark.parametrize(("shape", "size"), BAD_SHAPES, ids=str)
def test_bad_dimensions_are_refused_by_the_receiving_party(shape: Any, size: int) -> None:
    msg = raw_message(CutGradients, shape, np.ones(size, dtype=np.float32))
    rank = len(shape) if isinstance(shape, tuple | list) else 2
    try:
        out = receive_tensor(msg, session_id=SID, step=0, shape=(None,) * rank, what="gradient")
    except InvalidInputError:
        return
    # only a list of valid ints may pass, as the equivalent tuple
    assert isinstance(shape, list) and out.shape == tuple(shape)


@pytest.mark.parametrize(("shape", "size"), BAD_SHAPES[:-1], ids=str)
def test_bad_dimensions_are_refused_when_the_message_is_built(shape: Any, size: int) -> None:
    with pytest.raises(InvalidInputError):
        CutGradients(session_id=SID, step=0, shape=shape,
                     values=np.ones(size, dtype=np.float32))


def test_numpy_integer_dimensions_are_normalised_to_python_ints() -> None:
    msg = CutGradients(session_id=SID, step=0, shape=(np.int64(2), np.uint8(3)),
                       values=np.ones(6, dtype=np.float32))
    assert msg.shape == (2, 3) and all(type(d) is int for d in msg.shape)
    assert decode(encode(msg)).shape == (2, 3)


def test_values_that_are_not_a_flat_array_are_refused() -> None:
    for values in ([1.0, 2.0], np.ones((2, 2), dtype=np.float32), None):
        with pytest.raises(InvalidInputError):
            CutGradients(session_id=SID, step=0, shape=(2, 2), values=values)  # type: ignore[arg-type]
        msg = raw_message(CutGradients, (2, 2), values)
        with pytest.raises(InvalidInputError):
            receive_tensor(msg, session_id=SID, step=0, shape=(2, 2), what="gradient")


def test_first_activations_of_the_wrong_width_are_refused_and_do_not_fix_the_width() -> None:
    net, client, server = u_pair()
    before = flat(net)
    bad = Activations(session_id=SID, step=0, shape=(2, 15),
                      values=np.ones(30, dtype=np.float32), example_ids=None, labels=None)
    with pytest.raises(InvalidInputError):
        to_server(server, bad)  # the middle takes 16 features: a library error, not torch's
    np.testing.assert_array_equal(flat(net), before)
    y = torch.tensor([0, 1])
    outputs = to_server(server, client.forward(torch.randn(2, 6), labels=y))  # still accepted
    og = to_client(client, outputs)
    assert og is not None and to_client(client, to_server(server, og)) is None


def test_vanilla_server_first_activations_of_the_wrong_width_do_not_poison_it() -> None:
    _net, client, server = vanilla_pair()
    bad = Activations(session_id=SID, step=0, shape=(2, 15),
                      values=np.ones(30, dtype=np.float32),
                      example_ids=np.arange(2, dtype=np.int64), labels=None)
    with pytest.raises(InvalidInputError):
        to_server(server, bad)
    reply = to_server(server, client.forward(torch.randn(2, 6), example_ids=torch.arange(2)))
    assert to_client(client, reply) is None and server.steps_done == 1


def test_u_shaped_client_refuses_server_outputs_that_do_not_fit_its_head() -> None:
    _net, client, server = u_pair()
    outputs = to_server(server, client.forward(torch.randn(2, 6), labels=torch.tensor([0, 1])))
    head_before = flat(client.head)
    bad = dataclasses.replace(outputs, shape=(2, 7), values=np.ones(14, dtype=np.float32))
    with pytest.raises(InvalidInputError):
        to_client(client, bad)  # the head takes 8 features
    np.testing.assert_array_equal(flat(client.head), head_before)
    assert client.stage == "awaiting-outputs"
    og = to_client(client, outputs)
    assert og is not None and to_client(client, to_server(server, og)) is None


@pytest.mark.parametrize(
    "labels",
    [
        np.array([0, 7], dtype=np.int64),  # beyond the server's 3 classes
        np.array([0, -1], dtype=np.int64),  # negative
        np.array([0.0, 1.0]),  # not integers
        np.array([0, 2**63], dtype=np.uint64),  # wraps to a negative int64
        np.array([[0, 1]], dtype=np.int64).reshape(-1)[:1],  # one label for two rows
    ],
    ids=["out-of-range", "negative", "float", "uint64-wrap", "too-few"],
)
def test_vanilla_server_refuses_labels_sent_by_the_client_that_are_not_class_indices(
    labels: np.ndarray,
) -> None:
    net, client, server = vanilla_pair(label_table=False)
    good = client.forward(torch.randn(2, 6), labels=torch.tensor([0, 1]))
    before = flat(net)
    with pytest.raises(InvalidInputError):
        to_server(server, dataclasses.replace(good, labels=labels))
    np.testing.assert_array_equal(flat(net), before)
    assert to_client(client, to_server(server, good)) is None


# --------------------------------------------------------------------- property: any shape


dims = st.one_of(
    st.integers(min_value=-3, max_value=6),
    st.integers(min_value=2**31 - 2, max_value=2**31 + 2),
    st.integers(min_value=2**62 - 2, max_value=2**64 + 2),
    st.integers(min_value=-(2**64), max_value=2**70),
)
shapes = st.lists(dims, min_size=0, max_size=MAX_DIMS + 4).map(tuple)
sizes = st.integers(min_value=0, max_value=64)

LIBRARY = (SecureAggError,)
FORBIDDEN = (ValueError, OverflowError, MemoryError, IndexError, RuntimeError, TypeError)


def _only_library_errors(fn: Any) -> None:
    try:
        fn()
    except LIBRARY:
        pass
    except FORBIDDEN as exc:  # pragma: no cover - the failure this test exists for
        pytest.fail(f"bare {type(exc).__name__}: {exc}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=shapes, size=sizes)
def test_property_decode_and_receive_refuse_any_bad_shape_with_a_library_error(
    shape: tuple[int, ...], size: int
) -> None:
    values = np.ones(size, dtype=np.float32)
    data = wire_bytes(CutGradients, shape, values)
    consistent = (
        1 <= len(shape) <= MAX_DIMS
        and all(d >= 1 for d in shape)
        and math.prod(shape) == size
    )
    try:
        msg = decode(data)
    except MalformedMessage:
        assert not consistent
        msg = raw_message(CutGradients, shape, values)
    except FORBIDDEN as exc:  # pragma: no cover
        pytest.fail(f"decode raised a bare {type(exc).__name__}: {exc}")
    else:
        assert consistent
    _only_library_errors(
        lambda: receive_tensor(msg, session_id=SID, step=0, shape=(None,) * len(shape),
                               what="gradient")
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=shapes, size=sizes, which=st.sampled_from(["vanilla", "u-server", "u-client",
                                                        "u-output-grads", "v-client"]))
@example(shape=(2**62 + 1, 4), size=4, which="u-server")  # the reported case
@example(shape=(2**62 + 1, 4), size=4, which="u-client")
@example(shape=(1,) * 70, size=1, which="u-server")
def test_property_every_party_refuses_any_bad_shape_with_a_library_error(
    shape: tuple[int, ...], size: int, which: str
) -> None:
    values = np.ones(size, dtype=np.float32)
    if which == "vanilla":
        _net, _client, server = vanilla_pair()
        msg = raw_message(Activations, shape, values,
                          example_ids=np.arange(2, dtype=np.int64), labels=None)
        _only_library_errors(lambda: to_server(server, msg))
    elif which == "v-client":
        _net, client, server = vanilla_pair()
        to_server(server, client.forward(torch.randn(2, 6), example_ids=torch.arange(2)))
        _only_library_errors(lambda: to_client(client, raw_message(CutGradients, shape, values)))
    else:
        _net, client, server = u_pair()
        if which == "u-server":
            msg = raw_message(Activations, shape, values, example_ids=None, labels=None)
            _only_library_errors(lambda: to_server(server, msg))
            return
        outputs = to_server(server, client.forward(torch.randn(2, 6), labels=torch.tensor([0, 1])))
        if which == "u-client":
            _only_library_errors(lambda: to_client(client, raw_message(ServerOutputs, shape,
                                                                     values)))
            return
        to_client(client, outputs)
        _only_library_errors(lambda: to_server(server, raw_message(OutputGradients, shape, values)))


def test_huge_integers_from_a_peer_are_refused_without_printing_them() -> None:
    # str() of an int above 4300 digits raises ValueError; the codec carries 65535-byte ints.
    huge = 2**20000
    gradient = decode(encode(raw_message(CutGradients, (2, 2), np.ones(4, dtype=np.float32))))
    replayed = dataclasses.replace(gradient, step=huge)
    with pytest.raises(ProtocolError, match="bit integer"):
        receive_tensor(replayed, session_id=SID, step=0, shape=(2, 2), what="gradient")
    with pytest.raises(MalformedMessage, match="bit integer"):
        decode(wire_bytes(CutGradients, (huge, 2), np.ones(4, dtype=np.float32)))
    _net, _client, server = vanilla_pair()
    with pytest.raises(InvalidInputError):
        to_server(server, raw_message(Activations, (huge, 2), np.ones(4, dtype=np.float32),
                                   example_ids=np.arange(2, dtype=np.int64), labels=None))
