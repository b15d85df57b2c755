"""CKKS parameters: validation against the HE-standard table, sizes and the noise model.

No tenseal import here: parameters can be checked (and refused) before the optional dependency is
loaded. :mod:`secureagg.he.ckks` re-exports everything.

Validation: the ring dimension N is a power of two in the HomomorphicEncryption.org table, every
prime has 17..60 bits, there are at least two moduli (data prime(s) and the special prime SEAL
encrypts with, last), the total is within the 128-bit budget for N (4096: 109 bits, 8192: 218,
16384: 438), and the scale is finite, > 1 and leaves room for values in the data modulus.

Noise model (used for the flooding of released decryptions and the stated error bounds). SEAL
encrypts with the public key at the key level (data primes x special prime ``P``) and divides by
``P`` with rounding, so a fresh ciphertext's decryption noise is ``r0 + r1 * s`` with rounding
errors ``r0, r1`` uniform on [-1/2, 1/2] (variance 1/12) and a uniform ternary secret ``s``
(variance 2/3); the encryption errors divided by ``P`` are negligible. Per coefficient the variance
is ``(1 + 2N/3) / 12``; a slot sums N coefficients, so we take the per-slot standard deviation
``sqrt(N (1 + 2N/3) / 12)`` in scaled units (1931 at N = 8192). This is conservative: the real
part of a slot has half that variance (measured: 1365-1380 at N = 8192, any message magnitude).

>>> params = CkksParameters()
>>> params.slots, params.data_modulus_bits, params.total_modulus_bits
(4096, 120, 180)
>>> round(params.fresh_noise_std())
1931
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from secureagg.errors import ConfigurationError
from secureagg.he.backend import HE_STANDARD_MAX_MODULUS_BITS
from secureagg.validation import is_integer_scalar

__all__ = ["FFT_SAFE_BITS", "FLARE_DEFAULT", "CkksParameters"]

#: Encoded magnitudes (value x scale) are kept below 2^50 when exactness matters (fixed-point
#: encoding): SEAL's encoder and decoder run a double-precision FFT whose absolute error is about
#: 2^-53 x log2(N) x magnitude, so 2^50 keeps it below a few units, far below any usable scale.
FFT_SAFE_BITS = 50
_MIN_PRIME_BITS, _MAX_PRIME_BITS = 17, 60  # SEAL's CoeffModulus::Create accepts up to 60 bits


@dataclass(frozen=True)
class CkksParameters:
    """CKKS parameters: ring dimension, coefficient moduli (bits, special prime last), scale.

    Validation (every problem at once, :class:`~secureagg.errors.ConfigurationError`): the ring
    dimension is a power of two in the HE-standard table; every prime has 17..60 bits; there are
    at least two moduli (a data prime and the special prime SEAL encrypts with); the total is within
    the HE-standard budget for 128-bit security (N=4096: 109 bits, 8192: 218, 16384: 438); the
    scale is finite, > 1 and leaves at least two bits of the data modulus for the values.
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 60, 60)
    scale: float = 2.0**40

    def __post_init__(self) -> None:
        if isinstance(self.coeff_mod_bit_sizes, list | tuple):
            object.__setattr__(self, "coeff_mod_bit_sizes", tuple(self.coeff_mod_bit_sizes))
        problems = self.problems()
        if problems:
            raise ConfigurationError(problems)

    def problems(self) -> list[str]:
        """Every reason these parameters are unsafe or unusable (empty when they are fine)."""
        out: list[str] = []
        n = self.poly_modulus_degree
        if not is_integer_scalar(n) or int(n) not in HE_STANDARD_MAX_MODULUS_BITS:
            out.append(
                f"poly_modulus_degree must be one of {sorted(HE_STANDARD_MAX_MODULUS_BITS)}, "
                f"got {n!r}"
            )
        bits = self.coeff_mod_bit_sizes
        if not isinstance(bits, tuple) or not bits or not all(is_integer_scalar(b) for b in bits):
            out.append(f"coeff_mod_bit_sizes must be integers, got {bits!r}")
        else:
            if len(bits) < 2:
                out.append(
                    "coeff_mod_bit_sizes needs at least two moduli: the data prime(s) and the "
                    f"special prime last (e.g. (60, 60)), got {bits!r}"
                )
            bad = [b for b in bits if not _MIN_PRIME_BITS <= int(b) <= _MAX_PRIME_BITS]
            if bad:
                out.append(
                    f"every coefficient modulus must have {_MIN_PRIME_BITS}..{_MAX_PRIME_BITS} "
                    f"bits, got {bad}"
                )
            if is_integer_scalar(n) and int(n) in HE_STANDARD_MAX_MODULUS_BITS:
                budget = HE_STANDARD_MAX_MODULUS_BITS[int(n)]
                total = sum(int(b) for b in bits)
                if total > budget:
                    out.append(
                        f"insecure parameters: the coefficient moduli total {total} bits, above "
                        f"the HE-standard budget of {budget} bits for 128-bit security at "
                        f"N={n}; use fewer or smaller primes or a larger poly_modulus_degree"
                    )
        scale = self.scale
        if (
            isinstance(scale, bool)
            or not isinstance(scale, int | float)
            or not math.isfinite(scale)
            or scale <= 1
        ):
            out.append(f"scale must be a finite number > 1, got {scale!r}")
        elif len(bits) >= 2 and all(is_integer_scalar(b) for b in bits):
            room = sum(int(b) for b in bits[:-1]) - 2
            if math.log2(scale) > room:
                out.append(
                    f"scale 2^{math.log2(scale):.1f} leaves no room for values in the "
                    f"{self.data_modulus_bits}-bit data modulus; use a scale <= 2^{room}"
                )
        return out

    @property
    def slots(self) -> int:
        """Values per ciphertext: N / 2."""
        return int(self.poly_modulus_degree) // 2

    @property
    def data_modulus_bits(self) -> int:
        """Bits of the modulus the ciphertexts live in (every prime but the special one)."""
        return sum(int(b) for b in self.coeff_mod_bit_sizes[:-1])

    @property
    def total_modulus_bits(self) -> int:
        return sum(int(b) for b in self.coeff_mod_bit_sizes)

    @property
    def security_bits(self) -> int:
        """128: validation refuses anything above the HE-standard 128-bit budget."""
        return 128

    def fresh_noise_std(self) -> float:
        """Conservative per-slot std of a fresh ciphertext's decryption noise, in scaled units."""
        n = float(self.poly_modulus_degree)
        return math.sqrt(n * (1.0 + 2.0 * n / 3.0) / 12.0)

    def max_magnitude(self, scale: float | None = None) -> float:
        """Largest |slot value| whose encoding ``value * scale`` stays below 2^(data bits - 2).

        A slot value bounds the magnitude of every plaintext coefficient, and decryption is exact
        modulo the data modulus q >= 2^(data bits - 1), centred: so |value| * scale plus the noise
        must stay below q / 2. Sums beyond this bound wrap around and decrypt to garbage.
        """
        s = self.scale if scale is None else scale
        return float(2.0 ** (self.data_modulus_bits - 2) / s)

    def ciphertext_bytes(self) -> int:
        """Approximate serialized size of one fresh ciphertext (two polynomials, data level)."""
        primes = len(self.coeff_mod_bit_sizes) - 1
        return 2 * int(self.poly_modulus_degree) * primes * 8 + 256

    def to_dict(self) -> dict[str, Any]:
        return {
            "poly_modulus_degree": int(self.poly_modulus_degree),
            "coeff_mod_bit_sizes": [int(b) for b in self.coeff_mod_bit_sizes],
            "scale": float(self.scale),
            "log2_scale": math.log2(self.scale),
            "total_modulus_bits": self.total_modulus_bits,
            "he_standard_budget_bits": HE_STANDARD_MAX_MODULUS_BITS[int(self.poly_modulus_degree)],
            "security_bits": self.security_bits,
        }


#: The CKKS context of TenSEAL's tutorials and of FLARE-style examples, for comparisons: N=8192,
#: [60, 40, 40, 60], scale 2^40. (NVIDIA FLARE's own HEBuilder default is [60, 40, 40]; see
#: :data:`secureagg.bench.he_peers.TENSEAL_PEER_CONTEXTS`.) The name is kept for compatibility.
FLARE_DEFAULT = CkksParameters(poly_modulus_degree=8192, coeff_mod_bit_sizes=(60, 40, 40, 60))
