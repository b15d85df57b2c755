"""CKKS through TenSEAL: the only package of secureagg that imports ``tenseal``.

One module per concept; each states its part of the threat model and its invariants:

* :mod:`~secureagg.he.ckks.keys` - the key holder's :class:`CkksSecretKey` (the only object that
  ever holds the secret key) and the validated :class:`CkksPublicContext` the server and the
  clients build from its public material; the ``tenseal`` import (:func:`require_tenseal`).
* :mod:`~secureagg.he.ckks.ciphertexts` - parsing and validating one serialized ciphertext under
  the round's context (parameters, level, scale, size, byte budget); malformed, truncated or
  foreign bytes raise :class:`~secureagg.errors.MalformedMessage`, TenSEAL's own exceptions never
  escape.
* :mod:`~secureagg.he.ckks.encryption` - the client side: the encryption-of-zero pool
  (:class:`CkksZeroPool`, each entry used once) and the chunking :class:`CkksEncryptor`.
* :mod:`~secureagg.he.ckks.summation` - the server's in-place running sums
  (:class:`CkksAccumulator`, a contribution added completely or not at all, key-check probes) and
  the key holder's :class:`CkksDecryptor`.
* :mod:`~secureagg.he.ckks.cut_layer` - the encrypted linear layer of split learning
  (:class:`CutLayerSecretKey`, :class:`CutLayerEvaluator`, :data:`CUT_LAYER_PARAMETERS`).

Parameters, their validation against the HE-standard table and the noise model live in
:mod:`secureagg.he.ckks_params` (no tenseal import) and are re-exported here.

>>> key = CkksSecretKey()                               # the key holder's
>>> server_view = CkksPublicContext(key.public_material())
>>> server_view.params.slots, server_view.key_fingerprint == key.key_fingerprint
(4096, True)
"""

from __future__ import annotations

from secureagg.he.ckks.cut_layer import (
    CUT_LAYER_PARAMETERS,
    CutLayerEvaluator,
    CutLayerSecretKey,
    cut_layer_product_bound,
)
from secureagg.he.ckks.encryption import CkksEncryptor, CkksZeroPool
from secureagg.he.ckks.keys import CkksPublicContext, CkksSecretKey, require_tenseal
from secureagg.he.ckks.summation import CkksAccumulator, CkksDecryptor
from secureagg.he.ckks_params import FFT_SAFE_BITS, FLARE_DEFAULT, CkksParameters

__all__ = [
    "CUT_LAYER_PARAMETERS",
    "FFT_SAFE_BITS",
    "FLARE_DEFAULT",
    "CkksAccumulator",
    "CkksDecryptor",
    "CkksEncryptor",
    "CkksParameters",
    "CkksPublicContext",
    "CkksSecretKey",
    "CkksZeroPool",
    "CutLayerEvaluator",
    "CutLayerSecretKey",
    "cut_layer_product_bound",
    "require_tenseal",
]
