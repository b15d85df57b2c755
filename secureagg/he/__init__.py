"""Thin adapters to homomorphic-encryption libraries, behind one small role-based interface.

* :mod:`secureagg.he.backend` - the interface: :class:`~secureagg.he.backend.Encryptor` (client,
  public key), :class:`~secureagg.he.backend.Accumulator` (server, public key, in-place running
  sums), :class:`~secureagg.he.backend.Decryptor` (key holder, secret key).
* :mod:`secureagg.he.ckks` - CKKS through TenSEAL (the only package importing ``tenseal``), with
  parameters and the noise model in :mod:`secureagg.he.ckks_params`.
* :mod:`secureagg.he.paillier` - packed Paillier through phe and gmpy2 (the only module importing
  them), with the slot packing and its no-overflow proof in :mod:`secureagg.he.paillier_packing`.

Importing this package imports no optional dependency; a missing one raises
:class:`~secureagg.errors.MissingDependencyError` naming the ``he`` extra when it is first used.

>>> from secureagg.he import backend
>>> backend.HE_STANDARD_MAX_MODULUS_BITS[4096]
109
"""
