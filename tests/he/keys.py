"""Keys shared by the HE tests, made once per test session (key generation is the slow part).

Paillier keys are 2048 bits - the smallest size we accept - derived from a fixed test keystream so
that every run uses the same key; the default (3072) is checked separately without being
generated in a loop.
"""

from __future__ import annotations

import functools

from secureagg.crypto import labels, prg
from secureagg.he.ckks import CkksParameters, CkksSecretKey
from secureagg.he.paillier import PaillierSecretKey


@functools.lru_cache(maxsize=4)
def paillier_key(bits: int = 2048, tag: bytes = b"main") -> PaillierSecretKey:
    rng = prg.Keystream(bytes(32), label=labels.TEST_VECTOR, context=b"tests/paillier-key/" + tag)
    return PaillierSecretKey.generate(bits, rng=rng)


@functools.lru_cache(maxsize=4)
def ckks_key(params: CkksParameters | None = None) -> CkksSecretKey:
    return CkksSecretKey(params)
