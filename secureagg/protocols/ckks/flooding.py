"""Noise flooding of released CKKS decryptions (IND-CPA-D, Li-Micciancio 2021).

Why. A CKKS decryption is approximate: it returns the message *plus the decryption noise*, and
the noise is a known linear function of the secret key for whoever knows how the ciphertext was
made. Li and Micciancio (Eurocrypt 2021) recover the key from such released decryptions. The key
holder therefore never releases a raw decryption: it adds fresh Gaussian noise ("flooding") whose
standard deviation is ``2^flooding_bits`` times a high-probability bound ``B`` on the decryption
noise of the aggregate, or - with the fixed-point encoding - rounds to the integer grid, which
removes the noise altogether except with probability ``delta`` (exact CKKS; Bossuat et al.,
eprint 2024/853).

The bound ``B`` (value units, per slot) for an aggregate of up to ``n`` fresh ciphertexts is
``Z * sqrt(n) * sigma_1 / scale`` with ``sigma_1`` the conservative per-slot noise std of one fresh
ciphertext (:meth:`secureagg.he.ckks.CkksParameters.fresh_noise_std`) and ``Z = 10`` standard
deviations (a Gaussian exceeds it with probability 2^-75.8 per value). The key holder uses
``n = num_clients`` - the largest possible count - never the count the server claims.

What the flooding buys, stated plainly. Li, Micciancio, Schultz and Sorrell (Crypto 2022) show
that Gaussian flooding with standard deviation ``sigma >= 2^(s/2) * sqrt(64 t) * B`` gives ``s``
bits of statistical IND-CPA-D security over ``t`` released decryptions, i.e.
``s = 2 * flooding_bits - 6 - log2(t)``. The default ``flooding_bits = 12`` (with fresh keys every
round, ``t = 1``) is **18 statistical bits**, a modest figure: 40 bits would need
``flooding_bits = 23``, whose noise (std about 0.66 on a 20-client sum at scale 2^40) swamps
typical model updates. The flooding is one layer; the others are fresh keys per round (one
decryption per key), the ``min_clients`` release rule with a decrypted count check, and the range
check on decrypted values. Where a provable guarantee matters, use ``encoding="fixed"``: the
release is then a deterministic function of the plaintext sum except with probability
:func:`exact_failure_log2`.

Sampling: Box-Muller on 53-bit uniforms from the AES-CTR keystream (label
``secureagg/v1/he/ckks-flooding``); tails are truncated at 8.5 standard deviations, which is
irrelevant for flooding.

>>> from secureagg.crypto import labels, prg
>>> z = gaussian(prg.Keystream(bytes(32), label=labels.TEST_VECTOR), 4)
>>> z.shape, bool(abs(z).max() < 9)
((4,), True)
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from secureagg.crypto import prg
from secureagg.errors import ConfigurationError
from secureagg.he.ckks import CkksParameters

__all__ = [
    "DEFAULT_FLOODING_BITS",
    "TAIL_SIGMAS",
    "decryption_noise_bound",
    "exact_failure_log2",
    "gaussian",
    "statistical_security_bits",
]

DEFAULT_FLOODING_BITS = 12
#: Standard deviations in every high-probability bound (P[|N(0,1)| > 10] = 2^-75.8).
TAIL_SIGMAS = 10.0
_LOG2_TAIL = -75.8  # log2 P[|N(0, 1)| > 10]


def gaussian(rng: prg.Keystream, count: int) -> npt.NDArray[np.float64]:
    """``count`` standard normal samples (Box-Muller) from the keystream."""
    if count < 0:
        raise ConfigurationError("count must be >= 0")
    half = (count + 1) // 2
    u = rng.uniform(2 * half)
    radius = np.sqrt(-2.0 * np.log1p(-u[:half]))  # 1 - u lies in (0, 1]: log is finite
    angle = 2.0 * math.pi * u[half:]
    out = np.empty(2 * half, dtype=np.float64)
    np.multiply(radius, np.cos(angle), out=out[:half])
    np.multiply(radius, np.sin(angle), out=out[half:])
    return out[:count]


def decryption_noise_bound(params: CkksParameters, *, summands: int, scale: float) -> float:
    """``B``: bound on |decryption noise| per slot of a sum of ``summands`` fresh ciphertexts."""
    if summands < 1:
        raise ConfigurationError("summands must be >= 1")
    return TAIL_SIGMAS * math.sqrt(summands) * params.fresh_noise_std() / scale


def statistical_security_bits(flooding_bits: int, *, releases: int = 1) -> float:
    """``2 * flooding_bits - log2(64 * releases)``: LMSS22's statistical IND-CPA-D bits."""
    if flooding_bits <= 0:
        return 0.0
    return 2.0 * flooding_bits - math.log2(64 * max(1, releases))


def exact_failure_log2(*, values: int) -> float:
    """log2 of the probability that exact (rounded) decryption of ``values`` slots fails."""
    return _LOG2_TAIL + math.log2(max(1, values))
