"""Predicates for checking parameters, and safe text of values for error messages.

One home for the checks every layer repeats when it validates what a caller or a peer passed:
``bool`` is never a number here (``True`` is an ``int`` to Python), numpy scalars are numbers
(``numbers.Real`` includes them), and a value printed in an error message never raises - Python's
``str()`` of an integer above 4300 digits raises ``ValueError``, and a peer controls the integers
of its messages.

>>> is_int(3), is_int(True), is_positive_real(0.5), is_positive_real("1"), is_rate(1.0)
(True, False, True, False, False)
>>> int_text(2**70)
'<a 71-bit integer>'
"""

from __future__ import annotations

import math
from numbers import Integral, Real

__all__ = [
    "int_text",
    "is_int",
    "is_integer_scalar",
    "is_positive_real",
    "is_rate",
    "is_real",
    "shown",
]

_SHOWN_BITS = 64  # integers wider than this are described, not printed
_SHOWN_CHARS = 200


def is_int(value: object) -> bool:
    """A Python ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_integer_scalar(value: object) -> bool:
    """An integer from Python or numpy (``numbers.Integral``), not a ``bool``.

    Unlike :func:`is_int` (Python ``int`` only) it takes numpy integers, which callers pass from
    arrays and shapes: the encoders' and the HE backends' check of counts and sizes.
    """
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A finite real number (``int``, ``float`` or a numpy scalar), not a ``bool``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return False
    return math.isfinite(float(value))


def is_positive_real(value: object) -> bool:
    """A finite real number ``> 0`` (see :func:`is_real`)."""
    return is_real(value) and float(value) > 0  # type: ignore[arg-type]  # checked by is_real


def is_rate(value: object) -> bool:
    """A real number in ``[0, 1)`` (a dropout or corruption fraction)."""
    return is_real(value) and 0.0 <= float(value) < 1.0  # type: ignore[arg-type]


def int_text(value: int) -> str:
    """``value`` for an error message: printed if it fits 64 bits, else described by its width."""
    if value.bit_length() <= _SHOWN_BITS:
        return str(value)
    return f"{'-' if value < 0 else ''}<a {value.bit_length()}-bit integer>"


def shown(value: object) -> str:
    """``repr(value)`` for an error message, at most 200 characters; never raises (a value
    holding an integer beyond the 4300-digit limit is described instead)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return int_text(value)
    try:
        text = repr(value)
    except ValueError:
        return f"<a {type(value).__name__} holding a huge integer>"
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."
