"""The message codec's field codecs: how each field type of a message is written and read.

Split out of :mod:`secureagg.transport.codec` (which plans a message type's fields and frames the
message); the wire format is described there. Every reader is strict: a malformed, truncated or
oversized field raises :class:`~secureagg.errors.MalformedMessage`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from secureagg.errors import InvalidInputError, MalformedMessage

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")

#: Wire codes of the allowed array dtypes (little-endian on the wire).
_DTYPE_CODES: dict[int, np.dtype[Any]] = {
    1: np.dtype("<u1"),
    2: np.dtype("<u2"),
    3: np.dtype("<u4"),
    4: np.dtype("<u8"),
    5: np.dtype("<i1"),
    6: np.dtype("<i2"),
    7: np.dtype("<i4"),
    8: np.dtype("<i8"),
    9: np.dtype("<f4"),
    10: np.dtype("<f8"),
}
_CODE_OF: dict[tuple[str, int], int] = {(dt.kind, dt.itemsize): c for c, dt in _DTYPE_CODES.items()}



# ------------------------------------------------------------------------------------ reading


class _Reader:
    """Bounds-checked cursor over immutable bytes. Every read checks the remaining length first."""

    __slots__ = ("data", "pos", "view")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.view = memoryview(data)  # read-only: ``data`` is immutable bytes
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def need(self, n: int, what: str) -> None:
        if n > self.remaining:
            raise MalformedMessage(
                f"truncated message: {what} needs {n} bytes at offset {self.pos}, "
                f"only {self.remaining} remain"
            )

    def unpack(self, fmt: struct.Struct, what: str) -> Any:
        self.need(fmt.size, what)
        (value,) = fmt.unpack_from(self.data, self.pos)
        self.pos += fmt.size
        return value

    def take(self, n: int, what: str) -> bytes:
        self.need(n, what)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


# ------------------------------------------------------------------------------ field codecs


class _FieldCodec:
    """Encodes one type; ``min_size`` is the fewest bytes any encoded value of it occupies."""

    min_size = 1
    name = "?"

    def check(self, value: Any, where: str) -> Any:
        """Validate (and normalise) a value before encoding; raise InvalidInputError."""
        raise NotImplementedError

    def write(self, value: Any, out: list[bytes | memoryview]) -> None:
        raise NotImplementedError

    def read(self, reader: _Reader, where: str) -> Any:
        raise NotImplementedError

    def _wrong(self, value: Any, where: str) -> InvalidInputError:
        return InvalidInputError(
            f"{where}: expected {self.name}, got {type(value).__name__}; "
            "build the message with the field types it declares"
        )


def _int_length(value: int) -> int:
    """Bytes of the minimal two's complement encoding of ``value`` (at least one)."""
    bits = value.bit_length() if value >= 0 else (~value).bit_length()
    return bits // 8 + 1


class _IntCodec(_FieldCodec):
    min_size = _U16.size + 1
    name = "int"

    def check(self, value: Any, where: str) -> int:
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
            raise self._wrong(value, where)
        return int(value)

    def write(self, value: int, out: list[bytes | memoryview]) -> None:
        n = _int_length(value)
        if n > 0xFFFF:
            raise InvalidInputError(f"integer of {n} bytes is too large for the codec (max 65535)")
        out.append(_U16.pack(n))
        out.append(value.to_bytes(n, "big", signed=True))

    def read(self, reader: _Reader, where: str) -> int:
        n = reader.unpack(_U16, f"{where} length")
        if n == 0:
            raise MalformedMessage(f"{where}: integer of zero length")
        value = int.from_bytes(reader.take(n, where), "big", signed=True)
        if _int_length(value) != n:
            raise MalformedMessage(f"{where}: non-canonical integer encoding")
        return value


class _BoolCodec(_FieldCodec):
    min_size = 1
    name = "bool"

    def check(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool | np.bool_):
            raise self._wrong(value, where)
        return bool(value)

    def write(self, value: bool, out: list[bytes | memoryview]) -> None:
        out.append(b"\x01" if value else b"\x00")

    def read(self, reader: _Reader, where: str) -> bool:
        byte = reader.unpack(_U8, where)
        if byte > 1:
            raise MalformedMessage(f"{where}: boolean byte must be 0 or 1, got {byte}")
        return bool(byte)


class _FloatCodec(_FieldCodec):
    min_size = _F64.size
    name = "float"

    def check(self, value: Any, where: str) -> float:
        if isinstance(value, bool | np.bool_) or not isinstance(
            value, float | int | np.floating | np.integer
        ):
            raise self._wrong(value, where)
        return float(value)

    def write(self, value: float, out: list[bytes | memoryview]) -> None:
        out.append(_F64.pack(value))

    def read(self, reader: _Reader, where: str) -> float:
        return float(reader.unpack(_F64, where))


class _BytesCodec(_FieldCodec):
    min_size = _U32.size
    name = "bytes"

    def check(self, value: Any, where: str) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise self._wrong(value, where)
        raw = bytes(value)
        if len(raw) > 0xFFFFFFFF:
            raise InvalidInputError(f"{where}: {len(raw)} bytes exceed the codec limit of 2^32-1")
        return raw

    def write(self, value: bytes, out: list[bytes | memoryview]) -> None:
        out.append(_U32.pack(len(value)))
        out.append(value)

    def read(self, reader: _Reader, where: str) -> bytes:
        n = reader.unpack(_U32, f"{where} length")
        return reader.take(n, where)


class _ViewCodec(_FieldCodec):
    """``bytes | memoryview``: bytes on the wire, a zero-copy read-only view when decoded."""

    min_size = _U32.size
    name = "bytes | memoryview"

    def check(self, value: Any, where: str) -> bytes | memoryview:
        if isinstance(value, bytes):
            raw: bytes | memoryview = value
        elif isinstance(value, bytearray | memoryview):
            view = memoryview(value)
            if not view.c_contiguous:
                raise InvalidInputError(f"{where}: a non-contiguous buffer cannot be sent")
            raw = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        else:
            raise self._wrong(value, where)
        if len(raw) > 0xFFFFFFFF:
            raise InvalidInputError(f"{where}: {len(raw)} bytes exceed the codec limit of 2^32-1")
        return raw

    def write(self, value: bytes | memoryview, out: list[bytes | memoryview]) -> None:
        out.append(_U32.pack(len(value)))
        out.append(value)

    def read(self, reader: _Reader, where: str) -> memoryview:
        n = reader.unpack(_U32, f"{where} length")
        reader.need(n, where)
        view = reader.view[reader.pos : reader.pos + n]
        reader.pos += n
        return view


class _StrCodec(_BytesCodec):
    name = "str"

    def check(self, value: Any, where: str) -> bytes:
        if not isinstance(value, str):
            raise self._wrong(value, where)
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(f"{where}: string is not encodable as utf-8") from None
        return super().check(raw, where)

    def write(self, value: bytes, out: list[bytes | memoryview]) -> None:
        super().write(value, out)

    def read(self, reader: _Reader, where: str) -> str:  # type: ignore[override]
        raw = super().read(reader, where)
        try:
            return raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            raise MalformedMessage(f"{where}: invalid utf-8") from None


class _ArrayCodec(_FieldCodec):
    min_size = _U8.size + _U64.size
    name = "1-D numpy array"

    def check(self, value: Any, where: str) -> np.ndarray[Any, np.dtype[Any]]:
        if not isinstance(value, np.ndarray):
            raise self._wrong(value, where)
        if value.ndim != 1:
            raise InvalidInputError(
                f"{where}: arrays in messages are 1-D, got shape {value.shape}; flatten it first"
            )
        code = _CODE_OF.get((value.dtype.kind, value.dtype.itemsize))
        if code is None:
            raise InvalidInputError(
                f"{where}: dtype {value.dtype} is not allowed on the wire; use one of "
                "uint8/16/32/64, int8/16/32/64, float32/64"
            )
        wire = _DTYPE_CODES[code]
        return np.ascontiguousarray(value, dtype=wire)

    def write(self, value: np.ndarray[Any, np.dtype[Any]], out: list[bytes | memoryview]) -> None:
        code = _CODE_OF[(value.dtype.kind, value.dtype.itemsize)]
        out.append(_U8.pack(code) + _U64.pack(value.size))
        if value.size:
            out.append(value.data.cast("B"))

    def read(self, reader: _Reader, where: str) -> np.ndarray[Any, np.dtype[Any]]:
        code = reader.unpack(_U8, f"{where} dtype")
        wire = _DTYPE_CODES.get(code)
        if wire is None:
            raise MalformedMessage(f"{where}: unknown array dtype code {code}")
        count = reader.unpack(_U64, f"{where} count")
        if count > reader.remaining // wire.itemsize:
            raise MalformedMessage(
                f"{where}: array of {count} elements does not fit in the "
                f"{reader.remaining} remaining bytes"
            )
        native = wire.newbyteorder("=")
        if count == 0:
            arr: np.ndarray[Any, np.dtype[Any]] = np.empty(0, dtype=native)
        else:
            arr = np.frombuffer(reader.data, dtype=wire, count=count, offset=reader.pos)
            reader.pos += count * wire.itemsize
            if not arr.dtype.isnative or not arr.flags.aligned:
                arr = arr.astype(native, copy=True)
        arr.flags.writeable = False
        return arr


class _OptionalCodec(_FieldCodec):
    min_size = 1

    def __init__(self, inner: _FieldCodec) -> None:
        self.inner = inner
        self.name = f"{inner.name} | None"

    def check(self, value: Any, where: str) -> Any:
        return None if value is None else self.inner.check(value, where)

    def write(self, value: Any, out: list[bytes | memoryview]) -> None:
        if value is None:
            out.append(b"\x00")
        else:
            out.append(b"\x01")
            self.inner.write(value, out)

    def read(self, reader: _Reader, where: str) -> Any:
        tag = reader.unpack(_U8, f"{where} tag")
        if tag == 0:
            return None
        if tag != 1:
            raise MalformedMessage(f"{where}: optional tag must be 0 or 1, got {tag}")
        return self.inner.read(reader, where)


class _TupleCodec(_FieldCodec):
    min_size = _U32.size

    def __init__(self, inner: _FieldCodec) -> None:
        self.inner = inner
        self.name = f"tuple[{inner.name}, ...]"

    def check(self, value: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(value, tuple | list):
            raise self._wrong(value, where)
        if len(value) > 0xFFFFFFFF:
            raise InvalidInputError(f"{where}: too many elements for the codec")
        return tuple(self.inner.check(v, f"{where}[{i}]") for i, v in enumerate(value))

    def write(self, value: tuple[Any, ...], out: list[bytes | memoryview]) -> None:
        out.append(_U32.pack(len(value)))
        for item in value:
            self.inner.write(item, out)

    def read(self, reader: _Reader, where: str) -> tuple[Any, ...]:
        count = reader.unpack(_U32, f"{where} count")
        if count > reader.remaining // self.inner.min_size:
            raise MalformedMessage(f"{where}: {count} elements cannot fit in the remaining bytes")
        return tuple(self.inner.read(reader, f"{where}[{i}]") for i in range(count))


#: ``_INT_BOUNDS[j]`` is the smallest magnitude (``v`` or ``~v``) that needs ``j + 2`` bytes.
_INT_BOUNDS = np.array([1 << (8 * j + 7) for j in range(7)], dtype=np.int64)
#: Column numbers of a (length u16 | 8-byte big-endian value) row; the length columns always kept.
_INT_COLUMNS = np.array([10, 10, 2, 3, 4, 5, 6, 7, 8, 9], dtype=np.int64)
#: Below this many elements the per-element path is as fast as the vectorised one.
_INT_BATCH = 16


class _IntTupleCodec(_TupleCodec):
    """``tuple[int, ...]``: a vectorised path for the common case, same bytes as the generic one.

    Survivor and dropout lists (``tuple[int, ...]`` of client ids, ~10^3 per message, one message
    per client) made the per-element path the codec's hot spot. This class keeps the wire format
    exactly (u32 count, then each element as u16 length + minimal two's complement) but encodes a
    sequence of plain ``int`` that fit in int64 with numpy in one go, and decodes runs of elements
    of equal length (1..8 bytes) as one strided block. Everything else - other element types,
    larger integers, zero or oversized lengths, truncation - takes the per-element path, so the
    errors and their order are those of :class:`_TupleCodec`.
    """

    def check(self, value: Any, where: str) -> tuple[Any, ...]:
        if isinstance(value, tuple | list) and set(map(type, value)) <= {int}:
            if len(value) > 0xFFFFFFFF:
                raise InvalidInputError(f"{where}: too many elements for the codec")
            return tuple(value)  # plain ints (not bool, not numpy): nothing to normalise
        return super().check(value, where)

    def write(self, value: tuple[Any, ...], out: list[bytes | memoryview]) -> None:
        if len(value) < _INT_BATCH:
            super().write(value, out)
            return
        try:
            arr = np.array(value, dtype=np.int64)
        except OverflowError:  # an element beyond int64: the per-element path sizes it
            super().write(value, out)
            return
        count = arr.size
        magnitude = arr ^ (arr >> 63)  # v, or ~v when negative: sizes two's complement
        lengths = np.searchsorted(_INT_BOUNDS, magnitude, side="right") + 1
        rows = np.empty((count, 10), dtype=np.uint8)
        rows[:, 0] = 0
        rows[:, 1] = lengths
        rows[:, 2:] = arr.astype(">i8").view(np.uint8).reshape(count, 8)
        # Row-major boolean selection: each row's u16 length, then its last ``length`` bytes.
        keep = (10 - lengths)[:, None] <= _INT_COLUMNS
        out.append(_U32.pack(count))
        out.append(rows[keep].tobytes())

    def read(self, reader: _Reader, where: str) -> tuple[Any, ...]:
        count = reader.unpack(_U32, f"{where} count")
        if count > reader.remaining // self.inner.min_size:
            raise MalformedMessage(f"{where}: {count} elements cannot fit in the remaining bytes")
        data = reader.data
        values: list[int] = []
        i = 0
        slow_until = 0 if count >= _INT_BATCH else count
        while i < count:
            pos = reader.pos
            n = data[pos + 1] if i >= slow_until and pos + 2 <= len(data) and not data[pos] else 0
            if 1 <= n <= 8 and pos + 2 + n <= len(data):
                run = self._read_run(reader, n, count - i, where, i)
                values.extend(run)
                i += len(run)
                if len(run) < 8:  # short runs: numpy costs more than it saves for a while
                    slow_until = i + 4 * _INT_BATCH
            else:
                values.append(self.inner.read(reader, f"{where}[{i}]"))
                i += 1
        return tuple(values)

    @staticmethod
    def _read_run(reader: _Reader, n: int, limit: int, where: str, start: int) -> list[int]:
        """Decode the run of consecutive ``n``-byte elements at the cursor (at least one, which
        the caller has checked is complete); stop before the first element of another length,
        at ``limit`` elements, or where the data ends."""
        width = 2 + n
        m = min(limit, reader.remaining // width)
        block = np.frombuffer(reader.data, dtype=np.uint8, count=m * width, offset=reader.pos)
        block = block.reshape(m, width)
        same = (block[:, 0] == 0) & (block[:, 1] == n)
        k = m if bool(same.all()) else int(np.argmin(same))
        wide = np.empty((k, 8), dtype=np.uint8)
        wide[:, : 8 - n] = np.where(block[:k, 2:3] >= 0x80, 0xFF, 0)  # sign extension
        wide[:, 8 - n :] = block[:k, 2:]
        values = wide.view(">i8").reshape(k)
        if n > 1:
            # Minimal: the value must not fit in n - 1 bytes, i.e. v < -2^(8n-9) or v >= 2^(8n-9).
            half = 1 << (8 * n - 9)
            loose = (values >= -half) & (values < half)
            if bool(loose.any()):
                raise MalformedMessage(
                    f"{where}[{start + int(np.argmax(loose))}]: non-canonical integer encoding"
                )
        reader.pos += k * width
        out: list[int] = values.tolist()
        return out


class _DictCodec(_FieldCodec):
    min_size = _U32.size

    def __init__(self, key: _FieldCodec, value: _FieldCodec) -> None:
        self.key = key
        self.value = value
        self.name = f"dict[{key.name}, {value.name}]"

    def check(self, value: Any, where: str) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise self._wrong(value, where)
        if len(value) > 0xFFFFFFFF:
            raise InvalidInputError(f"{where}: too many entries for the codec")
        checked = {
            self.key.check(k, f"{where} key"): self.value.check(v, f"{where}[{k!r}]")
            for k, v in value.items()
        }
        if len(checked) != len(value):
            raise InvalidInputError(f"{where}: keys collide after normalisation")
        return checked

    def write(self, value: dict[Any, Any], out: list[bytes | memoryview]) -> None:
        out.append(_U32.pack(len(value)))
        for k in sorted(value):
            self.key.write(k, out)
            self.value.write(value[k], out)

    def read(self, reader: _Reader, where: str) -> dict[Any, Any]:
        count = reader.unpack(_U32, f"{where} count")
        if count > reader.remaining // (self.key.min_size + self.value.min_size):
            raise MalformedMessage(f"{where}: {count} entries cannot fit in the remaining bytes")
        out: dict[Any, Any] = {}
        previous: Any = None
        for i in range(count):
            k = self.key.read(reader, f"{where} key {i}")
            if i and not previous < k:
                raise MalformedMessage(f"{where}: keys are not strictly increasing")
            out[k] = self.value.read(reader, f"{where}[{k!r}]")
            previous = k
        return out


_SCALARS: dict[Any, Callable[[], _FieldCodec]] = {
    int: _IntCodec,
    bool: _BoolCodec,
    float: _FloatCodec,
    str: _StrCodec,
    bytes: _BytesCodec,
}
_KEY_TYPES = (int, str, bytes)  # keys must sort canonically
