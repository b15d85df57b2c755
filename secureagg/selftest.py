"""Self-test of the cryptographic building blocks, run by ``secureagg demo``.

Each check exercises a primitive the way the protocols use it and compares against a published
known answer where one exists (RFC 7748 section 6.1 for X25519, RFC 5869 test case 1 for HKDF).
A failing check means this installation must not be trusted: a broken ``cryptography`` build, a
platform issue, or a regression. Checks are independent: a missing or broken module fails its own
check only. Fixed seeds below serve known answers only; nothing here produces key material that is
used elsewhere.

>>> results = run_selftest(out=None)
>>> all(r.ok for r in results if r.name.startswith("x25519"))
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["CHECKS", "CheckResult", "run_selftest"]


class SelfTestError(Exception):
    """A check produced a wrong answer."""


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise SelfTestError(what)


@dataclass(frozen=True)
class CheckResult:
    """One check: its name, whether it passed, and what was verified (or what went wrong)."""

    name: str
    ok: bool
    detail: str


# RFC 7748 section 6.1
_X25519_ALICE_PRIVATE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
_X25519_ALICE_PUBLIC = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
_X25519_BOB_PRIVATE = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
_X25519_BOB_PUBLIC = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
_X25519_SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"

# RFC 5869 appendix A.1 (test case 1)
_HKDF_IKM = "0b" * 22
_HKDF_SALT = "000102030405060708090a0b0c"
_HKDF_INFO = "f0f1f2f3f4f5f6f7f8f9"
_HKDF_OKM = (
    "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
)


def _check_x25519() -> str:
    from secureagg.crypto import keyagree

    a, b = keyagree.KeyPair.generate(), keyagree.KeyPair.generate()
    _require(
        keyagree.agree(a, b.public_bytes) == keyagree.agree(b, a.public_bytes),
        "agreement is not symmetric",
    )
    alice = keyagree.KeyPair.from_private_bytes(bytes.fromhex(_X25519_ALICE_PRIVATE))
    bob = keyagree.KeyPair.from_private_bytes(bytes.fromhex(_X25519_BOB_PRIVATE))
    _require(alice.public_bytes.hex() == _X25519_ALICE_PUBLIC, "RFC 7748 public key (Alice)")
    _require(bob.public_bytes.hex() == _X25519_BOB_PUBLIC, "RFC 7748 public key (Bob)")
    _require(keyagree.agree(alice, bob.public_bytes).hex() == _X25519_SHARED, "RFC 7748 secret")
    _require(keyagree.agree(bob, alice.public_bytes).hex() == _X25519_SHARED, "RFC 7748 secret")
    return "agreement symmetric; RFC 7748 6.1 keys and shared secret match"


def _check_hkdf() -> str:
    from secureagg.crypto import kdf

    okm = kdf.hkdf_sha256(
        bytes.fromhex(_HKDF_IKM),
        salt=bytes.fromhex(_HKDF_SALT),
        info=bytes.fromhex(_HKDF_INFO),
        length=42,
    )
    _require(okm.hex() == _HKDF_OKM, "RFC 5869 test case 1 output differs")
    return "RFC 5869 test case 1 matches"


def _check_aead() -> str:
    from secureagg.crypto import aead
    from secureagg.errors import InvalidCiphertext

    key = aead.generate_key()
    ad = b"session|round|1->2"
    ct = aead.encrypt(key, b"share bytes", associated_data=ad)
    _require(aead.decrypt(key, ct, associated_data=ad) == b"share bytes", "round trip")
    tampered = bytearray(ct)
    tampered[-1] ^= 0x01
    for bad, what in ((bytes(tampered), "flipped tag bit"), (ct[:-1], "truncated")):
        try:
            aead.decrypt(key, bad, associated_data=ad)
        except InvalidCiphertext:
            continue
        raise SelfTestError(f"{what} ciphertext was accepted")
    try:
        aead.decrypt(key, ct, associated_data=b"session|round|1->3")
    except InvalidCiphertext:
        pass
    else:
        raise SelfTestError("ciphertext accepted under other associated data")
    return "AES-256-GCM round trip; tampered, truncated and re-addressed ciphertexts rejected"


def _check_ed25519() -> str:
    from secureagg.crypto import signing
    from secureagg.errors import InvalidSignature

    key = signing.SigningKey.generate()
    sig = key.sign(b"advertised keys")
    signing.verify(key.public_bytes, b"advertised keys", sig)
    try:
        signing.verify(key.public_bytes, b"advertised keyz", sig)
    except InvalidSignature:
        pass
    else:
        raise SelfTestError("signature verified over a different message")
    return "sign/verify; signature over an altered message rejected"


def _check_prg() -> str:
    from secureagg.crypto import labels, prg

    seed = bytes(range(32))
    words = prg.expand(seed, label=labels.TEST_VECTOR, count=8192, bits=8)
    _require(int(words.max()) == 255 and int(words.min()) == 0, "8-bit words miss 0 or 255")
    counts = np.bincount(words, minlength=256)
    _require(int(counts.min()) > 0, "some 8-bit value never occurs in 8192 draws")
    x = prg.expand(seed, label=labels.TEST_VECTOR, count=1000, bits=32, context=b"x")
    acc = x.copy()
    prg.add_mask(acc, seed, label=labels.TEST_VECTOR, context=b"mask")
    _require(not np.array_equal(acc, x), "the mask changed nothing")
    prg.add_mask(acc, seed, label=labels.TEST_VECTOR, context=b"mask", subtract=True)
    _require(np.array_equal(acc, x), "adding and subtracting a mask does not cancel")
    return "all 256 byte values (incl. the top value 255) occur; +mask -mask cancels mod 2^32"


def _check_shamir() -> str:
    from secureagg.crypto import shamir
    from secureagg.errors import InvalidShareError

    secret = bytes(range(32))
    shares = shamir.split(secret, threshold=3, indices=[1, 2, 3, 4, 5])
    _require(shamir.reconstruct(shares[:3]) == secret, "3 of 5 shares (1,2,3) do not reconstruct")
    _require(shamir.reconstruct(shares[2:]) == secret, "3 of 5 shares (3,4,5) do not reconstruct")
    try:
        shamir.reconstruct(shares[:2])
    except InvalidShareError:
        pass
    else:
        raise SelfTestError("2 shares of a 3-of-5 sharing were accepted")
    return "3-of-5 sharing reconstructs from two different triples; 2 shares refused"


def _check_encoding() -> str:
    from secureagg.crypto import encoding

    clip, n = 1.0, 5
    encoder = encoding.FixedPointEncoder(clip=clip, num_summands=n, bits=32)
    grid = np.linspace(-1.5, 1.5, 31)
    inputs = [np.roll(grid, i) for i in range(n)]
    encoded = [encoder.encode(x) for x in inputs]
    total = np.zeros(grid.size, dtype=encoder.dtype)
    for e in encoded:
        total += e.values  # wraps modulo 2^bits by design
    decoded = np.asarray(encoder.decode(total), dtype=np.float64)
    expected = sum(np.clip(x, -clip, clip) for x in inputs)
    error = float(np.max(np.abs(decoded - expected)))
    bound = float(encoder.error_bound())
    _require(error <= bound, f"decoded sum is off by {error:.3g} > bound {bound:.3g}")
    clipped = sum(int(e.clipped) for e in encoded)
    expected_clipped = n * int(np.count_nonzero(np.abs(grid) > clip))
    _require(
        clipped == expected_clipped,
        f"counted {clipped} clipped values, {expected_clipped} expected",
    )
    return (
        f"sum of {n} encoded vectors decodes within {error:.2e} <= bound {bound:.2e}; "
        f"{clipped} clipped values counted"
    )


def _check_codec() -> str:
    from secureagg.errors import MalformedMessage
    from secureagg.protocols.plain.messages import PlainUpload
    from secureagg.transport import codec

    msg = PlainUpload(round_id=7, session_id=b"\x01" * 16, values=np.arange(4.0), weight=2.0)
    data = codec.encode(msg)
    back = codec.decode(data)
    _require(isinstance(back, PlainUpload) and codec.encode(back) == data, "round trip")
    for bad in (data[:-1], data + b"\x00", b"XXXX" + data[4:]):
        try:
            codec.decode(bad)
        except MalformedMessage:
            continue
        raise SelfTestError("malformed bytes decoded")
    return "message round trip; truncated, extended and bad-magic bytes rejected"


#: (name, check) pairs in the order they run.
CHECKS: tuple[tuple[str, Callable[[], str]], ...] = (
    ("x25519", _check_x25519),
    ("hkdf", _check_hkdf),
    ("aead", _check_aead),
    ("ed25519", _check_ed25519),
    ("prg", _check_prg),
    ("shamir", _check_shamir),
    ("encoding", _check_encoding),
    ("codec", _check_codec),
)


def run_selftest(*, out: Callable[[str], None] | None = print) -> list[CheckResult]:
    """Run every check; print ``ok``/``FAIL`` lines through ``out`` (None: silent)."""
    results: list[CheckResult] = []
    for name, check in CHECKS:
        try:
            result = CheckResult(name, True, check())
        except Exception as exc:  # a self-test reports every failure, whatever its type
            result = CheckResult(name, False, f"{type(exc).__name__}: {exc}")
        results.append(result)
        if out is not None:
            out(f"  {'ok  ' if result.ok else 'FAIL'}  {name:<9} {result.detail}")
    return results
