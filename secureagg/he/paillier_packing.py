"""Packing many quantised values into one Paillier plaintext, with a proven no-overflow bound.

``k`` non-negative slot values of ``s`` bits each form one plaintext ``m = sum_j v_j 2^(s j)``
(BatchCrypt, Zhang et al. 2020). **Proof that a sum never carries across slots and stays below the
modulus**: if every contribution's slot values satisfy ``0 <= v <= V`` and at most ``S``
contributions are summed with ``S * V <= 2^s - 1`` (checked at construction), every slot of the sum
satisfies ``0 <= sum_i v_ij <= 2^s - 1``; hence ``sum_i m_i = sum_j (sum_i v_ij) 2^(s j)`` is the
base-``2^s`` representation of the sum and no slot carries into the next. Since
``k * s <= bits(n) - 1``, that sum is below ``2^(bits(n) - 1) <= n``, so Paillier's decryption,
which works modulo ``n``, returns it exactly. A configuration where either inequality fails raises
:class:`~secureagg.errors.HeadroomError` naming the largest safe number of summands.

Pure numpy and Python integers: no optional dependency.

>>> import numpy as np
>>> p = SlotPacking.for_values(key_bits=2048, max_value=65534, summands=100)
>>> p.slot_bits, p.slots
(23, 89)
>>> v = np.array([1, 65534, 7], dtype=np.uint64)
>>> p.unpack(p.pack(v) + p.pack(v), 3).tolist()
[2, 131068, 14]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.errors import ConfigurationError, HeadroomError, MalformedMessage
from secureagg.validation import is_integer_scalar

__all__ = ["MAX_SLOT_BITS", "SlotPacking"]

MAX_SLOT_BITS = 64  # slot values travel as uint64


@dataclass(frozen=True)
class SlotPacking:
    """``slots`` values of ``slot_bits`` bits per plaintext, with headroom for ``summands``.

    ``max_value`` is the largest value one contribution may put in a slot. The constructor proves
    the no-overflow bound of the module docstring - ``summands * max_value <= 2^slot_bits - 1`` and
    ``slots * slot_bits <= key_bits - 1`` - and raises :class:`~secureagg.errors.HeadroomError`
    (naming the largest safe ``summands``) when it cannot hold.
    """

    key_bits: int
    slot_bits: int
    max_value: int
    summands: int
    slots: int = field(init=False)

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in ("key_bits", "slot_bits", "max_value", "summands"):
            value = getattr(self, name)
            if not is_integer_scalar(value) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if problems:
            raise ConfigurationError(problems)
        s, v, count = int(self.slot_bits), int(self.max_value), int(self.summands)
        if s > MAX_SLOT_BITS:
            raise HeadroomError(
                f"slots of {s} bits exceed the {MAX_SLOT_BITS}-bit limit: too many summands "
                "for this quantisation (use fewer quantisation bits)",
                max_safe_summands=((1 << MAX_SLOT_BITS) - 1) // v,
            )
        capacity = (1 << s) - 1
        if count * v > capacity:
            safe = capacity // v
            raise HeadroomError(
                f"packed slots can overflow: summands * max_value = {count} * {v} = {count * v} "
                f"exceeds 2^{s} - 1 = {capacity}; the largest safe number of summands is "
                f"{safe if safe >= 1 else 'none'} (use more slot bits or fewer quantisation bits)",
                max_safe_summands=safe if safe >= 1 else None,
            )
        slots = (int(self.key_bits) - 1) // s
        if slots < 1:
            raise HeadroomError(
                f"a {s}-bit slot does not fit a {self.key_bits}-bit plaintext",
                max_safe_summands=None,
            )
        object.__setattr__(self, "slots", slots)

    @classmethod
    def for_values(cls, *, key_bits: int, max_value: int, summands: int) -> SlotPacking:
        """The narrowest slots for ``summands`` contributions of values in ``0..max_value``."""
        integers = is_integer_scalar(max_value) and is_integer_scalar(summands)
        if not integers or max_value < 1 or summands < 1:
            raise ConfigurationError("max_value and summands must be positive integers")
        return cls(
            key_bits=key_bits,
            slot_bits=(int(summands) * int(max_value)).bit_length(),
            max_value=int(max_value),
            summands=int(summands),
        )

    def pack(self, values: npt.NDArray[np.uint64]) -> int:
        """``sum_j values[j] * 2^(slot_bits * j)`` for at most :attr:`slots` values."""
        k, s = int(values.size), int(self.slot_bits)
        if k > self.slots:
            raise ConfigurationError(f"{k} values do not fit {self.slots} slots")
        if k == 0:
            return 0
        be = np.ascontiguousarray(values, dtype=">u8").view(np.uint8).reshape(k, 8)
        bits = np.unpackbits(be, axis=1)[::-1, 64 - s :].reshape(-1)  # top slot first, MSB first
        pad = (-bits.size) % 8
        if pad:
            bits = np.concatenate([np.zeros(pad, dtype=np.uint8), bits])
        return int.from_bytes(np.packbits(bits).tobytes(), "big")

    def unpack(self, m: int, count: int) -> npt.NDArray[np.uint64]:
        """The ``count`` slot values of plaintext ``m``; bits above the slots are an error."""
        s = int(self.slot_bits)
        nbits = count * s
        if m < 0 or m.bit_length() > nbits:
            raise MalformedMessage(
                "a decrypted plaintext exceeds its packed slots: not an honest aggregate"
            )
        nbytes = (nbits + 7) // 8
        bits = np.unpackbits(np.frombuffer(m.to_bytes(nbytes, "big"), dtype=np.uint8))
        bits = bits[nbytes * 8 - nbits :].reshape(count, s)[::-1]
        full = np.zeros((count, 64), dtype=np.uint8)
        full[:, 64 - s :] = bits
        return np.packbits(full, axis=1).view(">u8").reshape(-1).astype(np.uint64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_bits": int(self.key_bits),
            "slot_bits": int(self.slot_bits),
            "slots_per_ciphertext": int(self.slots),
            "max_slot_value": int(self.max_value),
            "summands": int(self.summands),
        }
