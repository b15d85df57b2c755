"""Versioned binary codec for every registered protocol :class:`~secureagg.protocols.base.Message`.

Threat model: the bytes handed to :func:`decode` come from another party or from the network and
may be truncated, bit-flipped, replayed or crafted. Decoding is therefore *strict and total*: it
either returns a valid message of a registered kind or raises
:class:`~secureagg.errors.MalformedMessage` - never ``IndexError``, ``struct.error``,
``UnicodeError`` or ``MemoryError`` - and it never allocates memory based on a length field before
checking that the data is really there. There is no pickle and no dynamic import: a message can
only decode to one of the classes registered through ``Message.KIND``.

The encoding is also *canonical*: if ``decode(data)`` succeeds then ``encode(decode(data)) ==
data``, so the sha256 of the bytes (:func:`message_digest`) identifies a message uniquely in a
transcript.

Layout (all multi-byte integers big-endian unless noted)::

    b"SAGG" | version u8 (= 1) | kind: u16 length + utf-8 | fields in declaration order

Field encodings, chosen from the dataclass type hints (``typing.get_type_hints``):

=======================  ======================================================================
``int``                  u16 length n >= 1, then n bytes of minimal two's complement (any size)
``bool``                 one byte, 0 or 1
``float``                IEEE-754 binary64, big-endian
``str``                  u32 length + strict utf-8
``bytes``                u32 length + raw bytes
``bytes | memoryview``   as ``bytes`` on the wire; decoded as a read-only **zero-copy**
                         ``memoryview`` of the input (large blobs such as ciphertexts; below)
``numpy.ndarray``        dtype code u8, element count u64, raw elements **little-endian**. Only
                         1-D arrays of uint8/16/32/64, int8/16/32/64, float32/64 are allowed.
``tuple[T, ...]``        u32 count + elements
``dict[K, V]``           u32 count + (key, value) pairs, keys strictly increasing
``X | None``             u8 tag (0 = None, 1 = present) + X
=======================  ======================================================================

Decoded arrays are **read-only** (``flags.writeable`` is False), like the frozen message that holds
them; they are zero-copy views of the input bytes when the input is ``bytes`` and the data is
aligned, copies otherwise. Copy an array (``arr.copy()``) before modifying it. The codec carries
the dtype on the wire and does not enforce the dtype named in the type hint: checking what a peer
sent (dtype, length, range) is the receiving party's job.

A field declared ``bytes | memoryview`` is for large blobs that the receiver parses right away
(CKKS ciphertexts of 256 KiB each, 64 MB per upload at d = 10^6): copying every blob into its own
``bytes`` object costs a fresh allocation per blob and dominated the server's decode time. Such a
field decodes to a read-only ``memoryview`` of the (immutable) input bytes - same bounds checks,
same canonical layout as ``bytes`` - and keeps the whole input alive while it is referenced. The
receiving party must accept any bytes-like object there (``bytes(view)`` copies when it needs to).

>>> from secureagg.protocols.plain.messages import PlainRequest
>>> data = encode(PlainRequest(round_id=3, session_id=b"\\x00" * 16))
>>> data[:4], decode(data) == PlainRequest(round_id=3, session_id=b"\\x00" * 16)
(b'SAGG', True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import types
import typing
from typing import Any

import numpy as np

from secureagg.errors import InvalidInputError, MalformedMessage, SecureAggError
from secureagg.protocols.base import Message, message_types
from secureagg.transport.codec_fields import (  # noqa: F401 - tests reach them as codec._X
    _CODE_OF,
    _DTYPE_CODES,
    _F64,
    _INT_BATCH,
    _INT_BOUNDS,
    _INT_COLUMNS,
    _KEY_TYPES,
    _SCALARS,
    _U8,
    _U16,
    _U32,
    _U64,
    _ArrayCodec,
    _BoolCodec,
    _BytesCodec,
    _DictCodec,
    _FieldCodec,
    _FloatCodec,
    _int_length,
    _IntCodec,
    _IntTupleCodec,
    _OptionalCodec,
    _Reader,
    _StrCodec,
    _TupleCodec,
    _ViewCodec,
)

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "check_message_type",
    "decode",
    "encode",
    "message_digest",
]

MAGIC = b"SAGG"
FORMAT_VERSION = 1

def message_digest(data: bytes) -> str:
    """The sha256 of encoded message bytes, as lowercase hex (transcripts use it)."""
    return hashlib.sha256(data).hexdigest()


def _codec_for(hint: Any, where: str) -> _FieldCodec:
    if hint in _SCALARS:
        return _SCALARS[hint]()
    if hint is np.ndarray:
        return _ArrayCodec()
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is np.ndarray:
        return _ArrayCodec()
    if origin in (typing.Union, types.UnionType):
        if set(args) == {bytes, memoryview}:
            return _ViewCodec()
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return _OptionalCodec(_codec_for(rest[0], where))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        inner = _codec_for(args[0], where)
        if type(inner) is _IntCodec:
            return _IntTupleCodec(inner)
        return _TupleCodec(inner)
    if origin is dict and len(args) == 2 and args[0] in _KEY_TYPES:
        return _DictCodec(_codec_for(args[0], where), _codec_for(args[1], where))
    raise TypeError(
        f"{where}: type {hint!r} is not supported by the message codec; use int, bool, float, "
        "str, bytes, bytes | memoryview, numpy.ndarray, tuple[T, ...], dict[int|str|bytes, T] "
        "or T | None"
    )


_PLANS: dict[type[Message], tuple[tuple[str, _FieldCodec], ...]] = {}


def _plan(cls: type[Message]) -> tuple[tuple[str, _FieldCodec], ...]:
    cached = _PLANS.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    plan = []
    for f in dataclasses.fields(cls):
        if not f.init:
            raise TypeError(f"{cls.__name__}.{f.name}: message fields must be init fields")
        plan.append((f.name, _codec_for(hints[f.name], f"{cls.__name__}.{f.name}")))
    _PLANS[cls] = tuple(plan)
    return _PLANS[cls]


def check_message_type(cls: type[Message]) -> None:
    """Raise ``TypeError`` if ``cls`` is not a frozen, registered dataclass the codec supports."""
    if not (isinstance(cls, type) and issubclass(cls, Message)):
        raise TypeError(f"{cls!r} is not a Message subclass")
    kind = cls.__dict__.get("KIND", "")
    if not kind or message_types().get(kind) is not cls:
        raise TypeError(f"{cls.__name__} has no registered KIND")
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__} must be a frozen dataclass")
    if len(kind.encode("utf-8")) > 0xFFFF:
        raise TypeError(f"{cls.__name__}: KIND is too long")
    _plan(cls)


# ------------------------------------------------------------------------------------ public


def encode(message: Message) -> bytes:
    """Encode a registered message to bytes. Wrong field values raise ``InvalidInputError``."""
    cls = type(message)
    if not isinstance(message, Message):
        raise InvalidInputError(f"can only encode Message objects, got {cls.__name__}")
    check_message_type(cls)
    kind = cls.KIND.encode("utf-8")
    out: list[bytes | memoryview] = [MAGIC, _U8.pack(FORMAT_VERSION), _U16.pack(len(kind)), kind]
    for name, codec in _plan(cls):
        where = f"{cls.__name__}.{name}"
        codec.write(codec.check(getattr(message, name), where), out)
    return b"".join(out)


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode bytes into a registered message; anything invalid raises ``MalformedMessage``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"expected bytes, got {type(data).__name__}")
    raw = bytes(data)  # an immutable copy: decoded arrays may view it
    try:
        return _decode(_Reader(raw))
    except MalformedMessage:
        raise
    except (struct.error, IndexError, UnicodeError, OverflowError, ValueError) as exc:
        # Defence in depth: every path above checks bounds explicitly, so this is unreachable in
        # tested code; it keeps decode total if a new field type forgets a check.
        raise MalformedMessage(f"malformed message ({type(exc).__name__})") from None


def _decode(reader: _Reader) -> Message:
    magic = reader.take(len(MAGIC), "magic")
    if magic != MAGIC:
        raise MalformedMessage("bad magic: not a secureagg message")
    version = reader.unpack(_U8, "version")
    if version != FORMAT_VERSION:
        raise MalformedMessage(
            f"unsupported format version {version} (this build reads {FORMAT_VERSION})"
        )
    kind_len = reader.unpack(_U16, "kind length")
    try:
        kind = reader.take(kind_len, "kind").decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise MalformedMessage("message kind is not valid utf-8") from None
    cls = message_types().get(kind)
    if cls is None:
        shown = kind if len(kind) <= 64 else kind[:64] + "..."
        raise MalformedMessage(f"unknown message kind {shown!r}")
    values: dict[str, Any] = {}
    for name, codec in _plan(cls):
        values[name] = codec.read(reader, f"{cls.__name__}.{name}")
    if reader.remaining:
        raise MalformedMessage(f"{reader.remaining} trailing bytes after a {kind!r} message")
    try:
        return cls(**values)
    except MalformedMessage:
        raise
    except (SecureAggError, ValueError, TypeError, ArithmeticError, LookupError) as exc:
        # ArithmeticError: a constructor that converts a peer's (arbitrarily large) integer to a
        # fixed-width type, e.g. np.int64, raises OverflowError; it is still the peer's fault.
        text = str(exc)
        if len(text) > 500:
            text = text[:500] + "..."
        raise MalformedMessage(f"{kind!r} message rejected by its constructor: {text}") from None
