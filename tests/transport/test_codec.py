"""The message codec: round trips for every field type, canonical bytes, strict total decoding."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.util
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from secureagg.errors import InvalidInputError, MalformedMessage
from secureagg.protocols.base import Message, message_types
from secureagg.protocols.plain.messages import PlainRequest, PlainUpload
from secureagg.transport import codec
from secureagg.transport.codec import MAGIC, decode, encode, message_digest
from tests.conftest import slow_scale


@dataclass(frozen=True)
class AllFields(Message):
    """A test message with one field of every supported type."""

    KIND: ClassVar[str] = "test/codec-all-fields"

    number: int
    flag: bool
    real: float
    text: str
    blob: bytes
    array: npt.NDArray[np.float64]
    raw_array: np.ndarray  # type: ignore[type-arg]
    ints: tuple[int, ...]
    blobs: tuple[bytes, ...]
    view: bytes | memoryview
    views: tuple[bytes | memoryview, ...]
    by_id: dict[int, bytes]
    counts: dict[int, int]
    maybe_int: int | None
    maybe_array: npt.NDArray[np.uint32] | None
    maybe_blobs: tuple[bytes, ...] | None


@dataclass(frozen=True)
class Validated(Message):
    """A message whose constructor refuses negative values."""

    KIND: ClassVar[str] = "test/codec-validated"

    value: int

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError("value must be >= 0")


# Register every shipped protocol's message kinds that exist yet, so that the checks cover them.
for _module in ("secagg", "ckks", "paillier"):
    if importlib.util.find_spec(f"secureagg.protocols.{_module}.messages") is not None:
        importlib.import_module(f"secureagg.protocols.{_module}.messages")

WIRE_DTYPES = ["u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f4", "f8"]


def sample(**overrides: Any) -> AllFields:
    values: dict[str, Any] = {
        "number": -(2**100) + 7,
        "flag": True,
        "real": -0.0,
        "text": "héllo ✓",
        "blob": b"\x00\xff" * 5,
        "array": np.array([1.5, -2.0, np.inf, np.nan]),
        "raw_array": np.arange(5, dtype=np.int16),
        "ints": (0, -1, 2**64, -(2**63)),
        "blobs": (b"", b"a", b"\x00" * 40),
        "by_id": {3: b"c", -1: b"minus", 0: b""},
        "counts": {7: -7, 1: 2**70},
        "maybe_int": None,
        "maybe_array": np.array([0, 2**32 - 1], dtype=np.uint32),
        "maybe_blobs": (),
        "view": b"\x01\x02\x03",
        "views": (b"", b"ciphertext", b"\x00" * 33),
    }
    values.update(overrides)
    return AllFields(**values)


def assert_same(a: Message, b: Message) -> None:
    assert type(a) is type(b)
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert isinstance(y, np.ndarray)
            assert x.dtype == y.dtype
            assert x.shape == y.shape
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f.name
        elif isinstance(x, float):
            assert struct.pack(">d", x) == struct.pack(">d", y), f.name  # bit-exact, even -0.0
        elif f.name in ("view", "views"):  # bytes | memoryview: decoded as views
            assert x == y, f.name
            for v in y if isinstance(y, tuple) else (y,):
                assert isinstance(v, memoryview) and v.readonly, f.name
        else:
            assert x == y, f.name
            assert type(x) is type(y), f.name


# --------------------------------------------------------------------------- round trips


def test_round_trip_every_field_type() -> None:
    msg = sample()
    data = encode(msg)
    assert data.startswith(MAGIC + b"\x01")
    back = decode(data)
    assert_same(msg, back)
    assert encode(back) == data


@pytest.mark.parametrize(
    "value", [0, 1, -1, 127, 128, -128, -129, 255, 256, 2**63 - 1, -(2**63), 2**1000, -(2**1000)]
)
def test_integers_of_any_size_round_trip_with_minimal_length(value: int) -> None:
    data = encode(Validated(value=abs(value)))
    assert decode(data) == Validated(value=abs(value))
    msg = sample(number=value)
    assert decode(encode(msg)).number == value  # type: ignore[attr-defined]


def test_integer_encoding_is_minimal_twos_complement() -> None:
    head = len(encode(Validated(value=0))) - 3
    assert encode(Validated(value=0))[head:] == b"\x00\x01\x00"
    assert encode(Validated(value=127))[head:] == b"\x00\x01\x7f"
    assert encode(Validated(value=128))[head:] == b"\x00\x02\x00\x80"


@pytest.mark.parametrize("dtype", WIRE_DTYPES)
def test_every_wire_dtype_round_trips_and_is_little_endian(dtype: str) -> None:
    arr = np.arange(6).astype(dtype)
    msg = sample(raw_array=arr)
    back = decode(encode(msg))
    assert back.raw_array.dtype == np.dtype(dtype)  # type: ignore[attr-defined]
    assert np.array_equal(back.raw_array, arr)  # type: ignore[attr-defined]
    assert arr.astype("<" + dtype).tobytes() in encode(msg)


def test_big_endian_input_array_is_converted() -> None:
    arr = np.arange(4, dtype=">i4")
    back = decode(encode(sample(raw_array=arr)))
    assert back.raw_array.dtype == np.dtype("=i4")  # type: ignore[attr-defined]
    assert back.raw_array.tolist() == [0, 1, 2, 3]  # type: ignore[attr-defined]


def test_decoded_arrays_are_read_only_and_do_not_alias_a_mutable_input() -> None:
    msg = sample()
    data = bytearray(encode(msg))
    back = decode(data)
    assert back.array.flags.writeable is False  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="read-only"):
        back.array[0] = 0.0  # type: ignore[attr-defined]
    raw = msg.array.astype("<f8").tobytes()
    at = bytes(data).index(raw)
    data[at : at + len(raw)] = bytes(len(raw))  # the caller changes its buffer afterwards ...
    assert np.array_equal(back.array, msg.array, equal_nan=True)  # type: ignore[attr-defined]


def test_view_fields_decode_zero_copy_and_read_only() -> None:
    msg = sample(views=(b"a" * 1000, b"b" * 70_000))
    data = encode(msg)
    back = decode(data)
    for view in (back.view, *back.views):  # type: ignore[attr-defined]
        assert isinstance(view, memoryview) and view.readonly
        assert view.obj is data  # a view of the input itself: no copy
    assert back.views[1] == b"b" * 70_000  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        back.views[0][0] = 0  # type: ignore[attr-defined]
    assert encode(back) == data  # canonical: views re-encode to the same bytes


def test_view_fields_do_not_alias_a_mutable_input() -> None:
    msg = sample(view=b"secret-bytes")
    data = bytearray(encode(msg))
    back = decode(data)
    at = bytes(data).index(b"secret-bytes")
    data[at : at + 12] = bytes(12)  # the caller reuses its buffer ...
    assert back.view == b"secret-bytes"  # type: ignore[attr-defined]


def test_view_fields_accept_any_contiguous_bytes_like() -> None:
    ref = encode(sample(view=b"xyz"))
    assert encode(sample(view=bytearray(b"xyz"))) == ref
    assert encode(sample(view=memoryview(b"--xyz--")[2:5])) == ref
    assert encode(sample(view=memoryview(np.frombuffer(b"xyz", dtype=np.uint8)))) == ref
    with pytest.raises(InvalidInputError, match="non-contiguous"):
        encode(sample(view=memoryview(b"x-y-z-")[::2]))
    with pytest.raises(InvalidInputError, match=r"expected bytes \| memoryview"):
        encode(sample(view="xyz"))


def test_empty_containers_round_trip() -> None:
    msg = sample(
        text="", blob=b"", array=np.zeros(0), ints=(), blobs=(), by_id={}, counts={},
        maybe_array=None, maybe_blobs=None, maybe_int=0,
    )
    back = decode(encode(msg))
    assert_same(msg, back)


def test_dict_keys_are_encoded_in_sorted_order() -> None:
    a = sample(by_id={2: b"b", 1: b"a"})
    b = sample(by_id={1: b"a", 2: b"b"})
    assert encode(a) == encode(b)


def test_plain_messages_round_trip() -> None:
    req = PlainRequest(round_id=4, session_id=b"s" * 16)
    assert decode(encode(req)) == req
    up = PlainUpload(round_id=4, session_id=b"s" * 16, values=np.arange(3.0), weight=0.5)
    back = decode(encode(up))
    assert_same(up, back)


def test_every_registered_message_type_is_supported() -> None:
    kinds = message_types()
    assert {"plain/request", "plain/upload", AllFields.KIND} <= set(kinds)
    for cls in kinds.values():
        codec.check_message_type(cls)


def test_message_digest_is_sha256_hex() -> None:
    data = encode(PlainRequest(round_id=1, session_id=b"x"))
    assert message_digest(data) == hashlib.sha256(data).hexdigest()
    assert len(message_digest(b"")) == 64


# ------------------------------------------------------------------------- encode misuse


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("number", 1.5),
        ("number", True),
        ("flag", 1),
        ("real", "1.0"),
        ("text", b"bytes"),
        ("blob", "str"),
        ("array", [1.0, 2.0]),
        ("array", np.zeros((2, 2))),
        ("array", np.zeros(2, dtype=np.complex128)),
        ("array", np.zeros(2, dtype=bool)),
        ("ints", (1, "2")),
        ("by_id", {1: "not bytes"}),
        ("by_id", [(1, b"")]),
        ("maybe_int", 2.0),
    ],
)
def test_encode_refuses_values_that_do_not_match_the_type_hint(field: str, value: Any) -> None:
    msg = sample(**{field: value})
    with pytest.raises(InvalidInputError, match=field):
        encode(msg)


def test_encode_refuses_unregistered_and_non_message_objects() -> None:
    @dataclass(frozen=True)
    class Unregistered(Message):
        value: int

    with pytest.raises((InvalidInputError, TypeError)):
        encode(Unregistered(value=1))
    with pytest.raises(InvalidInputError):
        encode("not a message")  # type: ignore[arg-type]


def test_unsupported_field_types_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="not supported"):
        codec._codec_for(list[int], "X.field")
    with pytest.raises(TypeError, match="not supported"):
        codec._codec_for(dict[float, int], "X.field")
    with pytest.raises(TypeError, match="not supported"):
        codec._codec_for(int | str, "X.field")


# ------------------------------------------------------------------------ strict decoding


def _header(kind: str) -> bytes:
    raw = kind.encode()
    return MAGIC + b"\x01" + struct.pack(">H", len(raw)) + raw


def _validated(payload: bytes) -> bytes:
    return _header(Validated.KIND) + payload


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (b"SAG", "truncated"),
        (b"XAGG\x01\x00\x00", "magic"),
        (MAGIC + b"\x02" + _header("plain/request")[5:], "version"),
        (_header("no/such-kind"), "unknown message kind"),
        (MAGIC + b"\x01\x00\x02\xff\xfe", "utf-8"),
        (_validated(b"\x00\x00"), "zero length"),
        (_validated(b"\x00\x02\x00\x05"), "non-canonical"),
        (_validated(b"\x00\x02\xff\xff"), "non-canonical"),
        (_validated(b"\x00\x05\x01"), "truncated"),
        (_validated(b"\x00\x01\x05\x00"), "trailing"),
        (_validated(b"\x00\x01\xff"), "rejected by its constructor"),
    ],
)
def test_decode_refuses_malformed_bytes(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        decode(data)


def test_every_truncation_of_a_valid_message_is_refused() -> None:
    data = encode(sample())
    for cut in range(len(data)):
        with pytest.raises(MalformedMessage):
            decode(data[:cut])


def test_bool_byte_must_be_zero_or_one() -> None:
    base = encode(sample(number=0, flag=False))
    index = len(_header(AllFields.KIND)) + 3  # after the 3-byte integer 0
    assert base[index] == 0
    for bad in (2, 0xFF):
        data = base[:index] + bytes([bad]) + base[index + 1 :]
        with pytest.raises(MalformedMessage, match="boolean"):
            decode(data)


def _array_offset(data: bytes, arr: np.ndarray) -> int:  # type: ignore[type-arg]
    raw = arr.astype("<f8").tobytes()
    return data.index(raw) - 9  # dtype code u8 + count u64 precede the elements


def test_bad_dtype_code_and_oversized_counts_are_refused() -> None:
    arr = np.array([1.25, 2.5, 3.75])
    data = encode(sample(array=arr))
    at = _array_offset(data, arr)
    assert data[at] == 10  # float64
    for code in (0, 11, 255):
        with pytest.raises(MalformedMessage, match="dtype code"):
            decode(data[:at] + bytes([code]) + data[at + 1 :])
    for count in (4, 2**40, 2**64 - 1):  # never allocated: checked against the remaining bytes
        forged = data[: at + 1] + struct.pack(">Q", count) + data[at + 9 :]
        with pytest.raises(MalformedMessage):
            decode(forged)


def test_huge_container_counts_are_refused_without_allocation() -> None:
    # A PlainUpload whose session_id claims 4 GiB.
    head = _header(PlainUpload.KIND) + b"\x00\x01\x01"
    with pytest.raises(MalformedMessage, match="truncated"):
        decode(head + b"\xff\xff\xff\xff" + b"x" * 10)
    # AllFields with a tuple claiming 2^32-1 elements: refused up front.
    msg = sample(ints=(5,))
    data = encode(msg)
    marker = struct.pack(">I", 1) + b"\x00\x01\x05"
    at = data.index(marker)
    forged = data[:at] + b"\xff\xff\xff\xff" + data[at + 4 :]
    with pytest.raises(MalformedMessage, match="cannot fit"):
        decode(forged)


def test_dict_keys_must_be_strictly_increasing() -> None:
    data = encode(sample(counts={1: 10, 2: 20}))
    one, two = b"\x00\x01\x01\x00\x01\x0a", b"\x00\x01\x02\x00\x01\x14"
    assert one + two in data
    with pytest.raises(MalformedMessage, match="strictly increasing"):
        decode(data.replace(one + two, two + one))
    with pytest.raises(MalformedMessage, match="strictly increasing"):
        decode(data.replace(one + two, one + one))


def test_optional_tag_must_be_zero_or_one() -> None:
    data = encode(sample(maybe_blobs=None))
    assert data[-1] == 0
    with pytest.raises(MalformedMessage, match="tag"):
        decode(data[:-1] + b"\x02")


def test_invalid_utf8_in_a_string_field_is_refused() -> None:
    data = encode(sample(text="ab"))
    assert b"\x00\x00\x00\x02ab" in data
    with pytest.raises(MalformedMessage, match="utf-8"):
        decode(data.replace(b"\x00\x00\x00\x02ab", b"\x00\x00\x00\x02\xc3\x28"))


def test_decode_refuses_non_bytes() -> None:
    with pytest.raises(MalformedMessage):
        decode("SAGG")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- fuzz

# SECUREAGG_SLOW_SCALE=full runs the fuzzers 20x longer.
FUZZ = settings(
    max_examples=300 if slow_scale() == "small" else 6000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _decode_or_refuse(data: bytes) -> None:
    """The property: MalformedMessage, or a valid message whose encoding is exactly ``data``."""
    try:
        msg = decode(data)
    except MalformedMessage:
        return
    assert isinstance(msg, Message)
    assert encode(msg) == data  # canonical: valid bytes have exactly one encoding


small_ints = st.integers(min_value=-(2**80), max_value=2**80)
messages = st.builds(
    AllFields,
    number=small_ints,
    flag=st.booleans(),
    real=st.floats(allow_nan=True, allow_infinity=True),
    text=st.text(max_size=8),
    blob=st.binary(max_size=8),
    array=hnp.arrays(np.float64, st.integers(0, 4)),
    raw_array=st.sampled_from(WIRE_DTYPES).flatmap(
        lambda dt: hnp.arrays(np.dtype(dt), st.integers(0, 4))
    ),
    ints=st.lists(small_ints, max_size=3).map(tuple),
    blobs=st.lists(st.binary(max_size=4), max_size=3).map(tuple),
    by_id=st.dictionaries(small_ints, st.binary(max_size=4), max_size=3),
    counts=st.dictionaries(small_ints, small_ints, max_size=3),
    maybe_int=st.none() | small_ints,
    maybe_array=st.none() | hnp.arrays(np.uint32, st.integers(0, 3)),
    maybe_blobs=st.none() | st.lists(st.binary(max_size=3), max_size=2).map(tuple),
    view=st.binary(max_size=8),
    views=st.lists(st.binary(max_size=6), max_size=3).map(tuple),
)


@FUZZ
@given(messages)
def test_property_round_trip(msg: AllFields) -> None:
    data = encode(msg)
    back = decode(data)
    assert_same(msg, back)
    assert encode(back) == data


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    _decode_or_refuse(data)


@FUZZ
@given(st.sampled_from(sorted(message_types())), st.binary(max_size=120))
def test_fuzz_random_payload_after_a_valid_header(kind: str, payload: bytes) -> None:
    _decode_or_refuse(_header(kind) + payload)


@FUZZ
@given(messages, st.data())
def test_fuzz_bit_flips_and_truncations_of_valid_encodings(
    msg: AllFields, data: st.DataObject
) -> None:
    raw = bytearray(encode(msg))
    flips = data.draw(st.lists(st.integers(0, len(raw) * 8 - 1), min_size=1, max_size=3))
    for bit in flips:
        raw[bit // 8] ^= 1 << (bit % 8)
    _decode_or_refuse(bytes(raw))
    cut = data.draw(st.integers(0, len(raw)))
    _decode_or_refuse(bytes(raw[:cut]))
    extra = data.draw(st.binary(min_size=1, max_size=4))
    with pytest.raises(MalformedMessage):
        decode(encode(msg) + extra)


@FUZZ
@given(
    st.sampled_from(sorted(message_types())),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
)
def test_fuzz_corrupted_registered_kinds(kind: str, edits: list[tuple[int, int]]) -> None:
    """Take a valid message of a real protocol kind when we can build one, corrupt bytes."""
    cls = message_types()[kind]
    if cls is PlainUpload:
        base = encode(PlainUpload(round_id=1, session_id=b"s" * 16, values=np.ones(4), weight=1.0))
    elif cls is PlainRequest:
        base = encode(PlainRequest(round_id=1, session_id=b"s" * 16))
    else:
        base = _header(kind) + bytes(64)
    raw = bytearray(base)
    for pos, value in edits:
        raw[pos % len(raw)] = value
    _decode_or_refuse(bytes(raw))


# ------------------------------------------------------------ adversarial integers and shapes

# The split messages carry a ``shape: tuple[int, ...]``; register them (and the encrypted cut
# layer's, when tenseal is there) so that the property below covers them too.
for _module in ("secureagg.split.messages", "secureagg.split.he_cut"):
    with contextlib.suppress(ImportError):  # torch or tenseal missing
        importlib.import_module(_module)

#: Integers a hostile peer can put in any int field: int64/uint64 overflow, negative, 2^64+, and
#: wider than Python's 4300-digit str() limit (the codec carries up to 65535 bytes per int).
HOSTILE_INTS = [2**62 + 1, 2**63, -(2**63) - 1, 2**64 + 4, -1, 0, 2**20000, -(2**20000)]
HOSTILE_SHAPES = [
    (2**62 + 1, 4), (2**63, 2), (2**32, 2**32 + 1), (2**64 + 4,), (-1, -4), (0, 4), (), (1,) * 70,
    (2**20000, 1),
]


def _hostile_value(fc: codec._FieldCodec, pick: int) -> Any:
    """A well-typed value for field codec ``fc``: adversarial where it is an integer."""
    if isinstance(fc, codec._OptionalCodec):
        return _hostile_value(fc.inner, pick)
    if isinstance(fc, codec._TupleCodec):
        if isinstance(fc.inner, codec._IntCodec):
            return HOSTILE_SHAPES[pick % len(HOSTILE_SHAPES)]
        return tuple(_hostile_value(fc.inner, pick) for _ in range(2))
    if isinstance(fc, codec._DictCodec):
        return {0: _hostile_value(fc.value, pick)}
    if isinstance(fc, codec._IntCodec):
        return HOSTILE_INTS[pick % len(HOSTILE_INTS)]
    if isinstance(fc, codec._BoolCodec):
        return True
    if isinstance(fc, codec._FloatCodec):
        return 1.0
    if isinstance(fc, codec._StrCodec):
        return "x"
    if isinstance(fc, codec._BytesCodec | codec._ViewCodec):
        return b"s" * 16
    if isinstance(fc, codec._ArrayCodec):
        return np.ones(4, dtype=np.float32)
    raise AssertionError(f"no hostile value for {fc.name}")  # pragma: no cover


def _raw_encoding(cls: type[Message], values: dict[str, Any]) -> bytes:
    """The bytes of ``cls`` with ``values``, written field by field: no constructor runs."""
    out: list[Any] = [_header(cls.KIND)]
    for name, fc in codec._plan(cls):
        fc.write(fc.check(values[name], name), out)
    return b"".join(bytes(p) for p in out)


@pytest.mark.parametrize("kind", sorted(message_types()))
@pytest.mark.parametrize("pick", range(len(HOSTILE_SHAPES)))
def test_hostile_integers_and_shapes_decode_or_raise_malformed_message_only(
    kind: str, pick: int
) -> None:
    cls = message_types()[kind]
    values = {name: _hostile_value(fc, pick) for name, fc in codec._plan(cls)}
    data = _raw_encoding(cls, values)
    try:
        msg = decode(data)
    except MalformedMessage as exc:
        refusal = str(exc)
    else:
        assert encode(msg) == data
        return
    assert len(refusal) < 2000  # a refusal never echoes a 6000-digit integer


@dataclass(frozen=True)
class OverflowingConstructor(Message):
    """A message whose constructor lets numpy's OverflowError out (a careless message class)."""

    KIND: ClassVar[str] = "test/codec-overflowing-constructor"

    value: int

    def __post_init__(self) -> None:
        np.int64(self.value)  # OverflowError beyond int64


def test_decode_turns_a_constructor_overflow_into_malformed_message() -> None:
    data = _raw_encoding(OverflowingConstructor, {"value": 2**64})
    with pytest.raises(MalformedMessage, match="constructor"):
        decode(data)


# ------------------------------------- what the caller hands the round (transport/updates.py)


class _BrokenTensor:
    """Duck-typed like a torch tensor, but its conversion fails the way a foreign library's may."""

    def __init__(self, error: type[Exception]) -> None:
        self.error = error

    def detach(self) -> _BrokenTensor:
        return self

    def cpu(self) -> _BrokenTensor:
        return self

    def numpy(self) -> Any:
        raise self.error("cannot convert")


@pytest.mark.parametrize("error", [AttributeError, ValueError, TypeError, RuntimeError])
def test_normalize_updates_refuses_an_unconvertible_tensor_with_a_library_error(
    error: type[Exception],
) -> None:
    from secureagg.transport.updates import normalize_updates

    with pytest.raises(InvalidInputError, match="client 0, tensor 0"):
        normalize_updates([[_BrokenTensor(error)]], num_clients=1)
    for bad in ([[[1.0], [1.0, 2.0]]], [np.zeros(2, dtype=complex)], [np.array(["a"])]):
        with pytest.raises(InvalidInputError):
            normalize_updates([bad], num_clients=1)


# ------------------------- the simulator's argument checks (transport/simulate_arguments.py)


def test_simulate_refuses_huge_integers_in_faults_and_dropouts_with_configuration_error() -> None:
    from secureagg.aggregators import make_aggregator
    from secureagg.errors import ConfigurationError
    from secureagg.transport import simulate
    from secureagg.transport.faults import Drop, Tamper

    agg = make_aggregator("plain", num_clients=2)
    ups = [[np.zeros(2)], [np.zeros(2)]]
    huge = 2**20000  # its repr() raises ValueError: a problem message must not try
    for kwargs in (
        {"faults": [Tamper(client=5, stage="upload", offset=huge)]},
        {"faults": [Drop(client=huge, stage="upload")]},
        {"dropouts": {huge: "upload"}},
    ):
        with pytest.raises(ConfigurationError, match=r"(bit|huge) integer"):
            simulate(agg, ups, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------- tuple[int, ...]: vectorised vs per-element
#
# ``tuple[int, ...]`` fields (survivor / dropout lists) take a vectorised path. It must produce the
# same bytes as the per-element path for every value, and decode every input - valid or not - to
# the same value or the same MalformedMessage.

_FAST_INTS = codec._IntTupleCodec(codec._IntCodec())
_SLOW_INTS = codec._TupleCodec(codec._IntCodec())
_INT_EDGES = [
    0, 1, -1, 127, 128, -128, -129, 255, 256, 2**15 - 1, 2**15, -(2**15), -(2**15) - 1,
    2**23, -(2**23) - 1, 2**31 - 1, 2**31, -(2**31) - 1, 2**55, -(2**55) - 1,
    2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64, 2**200, -(2**200),
]  # fmt: skip


def _reference_ints(values: list[int]) -> bytes:
    """The documented layout, written out independently of the codec."""
    out = [struct.pack(">I", len(values))]
    for v in values:
        n = (v.bit_length() if v >= 0 else (~v).bit_length()) // 8 + 1
        out.append(struct.pack(">H", n) + v.to_bytes(n, "big", signed=True))
    return b"".join(out)


def _write_ints(c: Any, values: Any) -> bytes | tuple[str, str]:
    out: list[bytes | memoryview] = []
    try:
        c.write(c.check(values, "f"), out)
    except InvalidInputError as exc:
        return ("InvalidInputError", str(exc))
    return b"".join(out)


def _read_ints(c: Any, data: bytes) -> tuple[Any, ...]:
    reader = codec._Reader(data)
    try:
        value = c.read(reader, "f")
    except MalformedMessage as exc:
        return ("MalformedMessage", str(exc))
    assert all(type(v) is int for v in value)
    return ("ok", value, reader.pos)


def _run_of_width(n: int) -> st.SearchStrategy[list[int]]:
    """16..40 integers that all take ``n`` bytes, boundaries (e.g. -128, 0x80..) favoured."""
    hi, lo = 2 ** (8 * n - 1), 2 ** (8 * n - 9) if n > 1 else 0
    edges = [hi - 1, -hi, lo, -lo - 1] if n > 1 else [127, -128, 0, -1, 1]
    wide = st.integers(-hi, -lo - 1) | st.integers(lo, hi - 1)
    return st.lists(st.sampled_from(edges) | wide, min_size=16, max_size=40)


# Long runs of equal-width elements (the vectorised decoder's blocks), or mixed widths.
int_lists = st.lists(st.integers(1, 9).flatmap(_run_of_width), min_size=1, max_size=3).map(
    lambda runs: [v for run in runs for v in run]
) | st.lists(
    st.sampled_from(_INT_EDGES)
    | st.integers(-(2**63), 2**63 - 1)
    | st.integers(-300, 300)
    | st.integers(-(2**70), 2**70),
    max_size=70,
)


@FUZZ
@given(int_lists)
def test_int_tuples_encode_like_the_per_element_path_and_round_trip(values: list[int]) -> None:
    data = _write_ints(_FAST_INTS, values)
    assert data == _write_ints(_SLOW_INTS, values) == _reference_ints(values)
    assert data == _write_ints(_FAST_INTS, tuple(values))
    assert isinstance(data, bytes)
    assert _read_ints(_FAST_INTS, data) == ("ok", tuple(values), len(data))
    assert _read_ints(_SLOW_INTS, data) == ("ok", tuple(values), len(data))


@pytest.mark.parametrize(
    "values",
    [
        list(range(1000)),  # sorted client ids: a run of 1-byte then of 2-byte elements
        [v for v in range(1000) if v % 10],
        [(-1) ** v * v for v in range(200)],
        [7, 300] * 50,  # lengths alternate: runs of one element
        [5] * 20 + [2**100] + [-5] * 20,  # one element beyond int64 in the middle
        _INT_EDGES * 3,
        [],
    ],
)
def test_int_tuple_known_shapes_match_the_reference_layout(values: list[int]) -> None:
    data = _write_ints(_FAST_INTS, values)
    assert data == _reference_ints(values)
    assert _read_ints(_FAST_INTS, data) == ("ok", tuple(values), len(data))


class _Id(int):
    """An int subclass: normalised to a plain int, like the per-element path does."""


@pytest.mark.parametrize(
    "values",
    [
        [1] * 20 + [np.int64(-3)] + [2] * 5,
        [np.uint64(2**64 - 1)] * 17,
        [_Id(300)] * 18,
        [1] * 20 + [True],
        [1] * 20 + [1.0],
        [1] * 20 + ["1"],
        (1,) * 16 + (None,),
        {1, 2, 3},
        frozenset(range(20)),
        np.arange(20),
    ],
)
def test_int_tuples_with_other_element_types_behave_as_the_per_element_path(values: Any) -> None:
    fast = _write_ints(_FAST_INTS, values)
    assert fast == _write_ints(_SLOW_INTS, values)
    if isinstance(fast, bytes):
        decoded = _read_ints(_FAST_INTS, fast)
        assert decoded == ("ok", tuple(int(v) for v in values), len(fast))


@FUZZ
@given(
    int_lists.filter(lambda v: len(v) >= 1),
    st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=4),
    st.integers(0, 2**16),
    st.binary(max_size=3),
)
def test_int_tuple_decoding_of_corrupted_bytes_matches_the_per_element_path(
    values: list[int], edits: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    data = bytearray(_reference_ints(values))
    for where, byte in edits:
        data[where % len(data)] = byte
    for candidate in (bytes(data), bytes(data[: cut % (len(data) + 1)]), bytes(data) + tail):
        assert _read_ints(_FAST_INTS, candidate) == _read_ints(_SLOW_INTS, candidate)


@pytest.mark.parametrize(
    ("element", "reason"),
    [
        (b"\x00\x02\x00\x05", "non-canonical"),  # 5 padded to 2 bytes
        (b"\x00\x02\xff\x80", "non-canonical"),  # -128 padded to 2 bytes
        (b"\x00\x08" + (2**55 - 1).to_bytes(8, "big"), "non-canonical"),
        (b"\x00\x00", "zero length"),
        (b"\x00\x03\x01", "truncated"),
    ],
)
def test_int_tuple_decoding_refuses_a_bad_element_inside_a_run(element: bytes, reason: str) -> None:
    good = _reference_ints(list(range(200, 240)))  # 40 two-byte elements
    data = good[:4] + good[4 : 4 + 4 * 30] + element + good[4 + 4 * 30 :]
    data = struct.pack(">I", 41) + data[4:]
    if reason == "truncated":
        data = data[: 4 + 4 * 30 + len(element)]
    got = _read_ints(_FAST_INTS, data)
    assert got == _read_ints(_SLOW_INTS, data)
    assert got[0] == "MalformedMessage" and reason in got[1] and "f[30]" in got[1]


def test_message_int_tuple_fields_use_the_vectorised_codec() -> None:
    from secureagg.protocols.secagg.messages import UnmaskRequest

    plan = dict(codec._plan(UnmaskRequest))
    assert type(plan["survivors"]) is codec._IntTupleCodec
    msg = UnmaskRequest(
        session_id=bytes(16), round_id=3, survivors=tuple(range(0, 1000, 2)),
        dropped=tuple(range(1, 1000, 2)), signatures={},
    )  # fmt: skip
    data = encode(msg)
    assert data[-4:] == b"\x00\x00\x00\x00"  # empty signatures dict last
    assert _reference_ints(list(range(0, 1000, 2))) in data
    assert decode(data) == msg
