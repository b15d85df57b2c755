"""The shared predicates refuse what every layer must refuse, and error text never raises."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from secureagg import validation
from secureagg.validation import int_text, is_int, is_positive_real, is_rate, is_real, shown


@pytest.mark.parametrize("value", [True, False, "1", None, 1.0, np.int64(3)])
def test_is_int_takes_python_ints_only(value: object) -> None:
    assert not is_int(value)


@pytest.mark.parametrize("value", [True, "1", None, math.nan, math.inf, -math.inf, [1.0]])
def test_is_real_refuses_bools_strings_and_non_finite(value: object) -> None:
    assert not is_real(value)


@pytest.mark.parametrize("value", [1, 0.5, np.float32(2.0), np.int64(7)])
def test_numpy_scalars_are_real_numbers(value: object) -> None:
    assert is_real(value) and is_positive_real(value)


def test_positive_and_rate_bounds() -> None:
    assert not is_positive_real(0) and not is_positive_real(-1e-9)
    assert is_rate(0.0) and is_rate(0.999) and not is_rate(1.0) and not is_rate(-0.1)


def test_error_text_of_a_huge_integer_never_raises() -> None:
    huge = 10**5000  # str() of it raises ValueError (4300-digit limit)
    with pytest.raises(ValueError):
        str(huge)
    assert int_text(huge) == f"<a {huge.bit_length()}-bit integer>"
    assert int_text(-huge).startswith("-<a ")
    assert int_text(2**63) == str(2**63)
    assert "huge integer" in shown([huge])
    assert len(shown("x" * 1000)) == 203


def test_module_doctests() -> None:
    result = doctest.testmod(validation)
    assert result.attempted > 0 and result.failed == 0
