"""The HE peers, measured in this process: bare TenSEAL as NVIDIA FLARE runs it, and unpacked phe.

Our ``"ckks"`` and ``"paillier"`` aggregators are compared against what a user would otherwise
run. This module measures those peers on given ``(n, d)`` and returns JSON-ready dicts; running
our own rounds beside them (interleaved, same data sizes) is the caller's job.

* :func:`measure_tenseal_peer` - bare TenSEAL calls, no protocol and no checks, on one of the
  contexts of :data:`TENSEAL_PEER_CONTEXTS`:

  - ``"flare-default"``: NVIDIA FLARE's default (``HEBuilder`` in
    ``nvflare/lighter/impl/he.py``): CKKS, N = 8192, coefficient moduli [60, 40, 40], global
    scale 2^40, relinearisation keys, ``ENCRYPTION_TYPE.SYMMETRIC``: FLARE's clients hold the
    **secret key** and encrypt with it (cheaper than public-key encryption; any client can decrypt
    any other client's upload). ``encryption="asymmetric"`` measures the same context with
    public-key encryption, like for like with our clients, which hold the public key only.
  - ``"flare-60-40-40-60"``: N = 8192, [60, 40, 40, 60], scale 2^40, TenSEAL's default
    public-key (asymmetric) encryption - the context of TenSEAL's tutorials and of
    FLARE-style examples.
  - ``"secureagg-default"``: our ``"ckks"`` aggregator's default context (N = 8192,
    [60, 60, 60], scale 2^40) with public-key encryption: bare TenSEAL doing only the HE work
    our round does (no clipping, no validation, no key checks, no flooding), so that the
    difference from our round is what the protocol around TenSEAL costs.

* :func:`measure_phe_peer` - unpacked ``phe`` (python-paillier): one ``EncryptedNumber`` per
  value at a fixed precision, the server adding the clients' vectors value by value.

Every context and key is pinned to one thread (TenSEAL ``n_threads=1``), as ours are; key
generation is timed apart (``setup_seconds``), never in a figure. Test data are uniform in
``[-1, 1)`` from the CSPRNG keystream (``seed`` makes them reproducible). Each figure is the
median over ``repeats`` (all samples are kept under ``samples``), in seconds (``time.perf_counter``)
and bytes. The decrypted aggregate is compared with the plaintext sum of the data actually
encrypted (``max_error``), so a peer that computes the wrong thing is visible.

Missing optional dependencies are not an error: the result is then
``{"available": False, "reason": ...}``.

>>> sorted(TENSEAL_PEER_CONTEXTS)
['flare-60-40-40-60', 'flare-default', 'secureagg-default']
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.crypto import labels, prg
from secureagg.errors import ConfigurationError, MissingDependencyError

__all__ = [
    "PHE_DEFAULT_PRECISION",
    "TENSEAL_PEER_CONTEXTS",
    "measure_phe_peer",
    "measure_tenseal_peer",
]

#: The peer contexts: ring dimension, coefficient moduli (special prime last), log2 of the global
#: scale, the encryption type the peer uses by default, and where the configuration comes from.
TENSEAL_PEER_CONTEXTS: dict[str, dict[str, Any]] = {
    "flare-default": {
        "poly_modulus_degree": 8192,
        "coeff_mod_bit_sizes": (60, 40, 40),
        "scale_bits": 40,
        "encryption": "symmetric",
        "source": "NVIDIA FLARE HEBuilder defaults (nvflare/lighter/impl/he.py): "
        "poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40], scale_bits=40, "
        "ENCRYPTION_TYPE.SYMMETRIC, relin keys; the clients' context holds the secret key",
    },
    "flare-60-40-40-60": {
        "poly_modulus_degree": 8192,
        "coeff_mod_bit_sizes": (60, 40, 40, 60),
        "scale_bits": 40,
        "encryption": "asymmetric",
        "source": "TenSEAL's tutorial context (N=8192, [60, 40, 40, 60], scale 2^40) with "
        "TenSEAL's default public-key encryption",
    },
    "secureagg-default": {
        "poly_modulus_degree": 8192,
        "coeff_mod_bit_sizes": (60, 60, 60),
        "scale_bits": 40,
        "encryption": "asymmetric",
        "source": "secureagg's default ckks context (N=8192, [60, 60, 60], scale 2^40) with "
        "public-key encryption, as our clients encrypt; bare TenSEAL calls, no protocol",
    },
}

#: phe's encoding precision by default: one quantum of our 16-bit quantisation at clip 1.
PHE_DEFAULT_PRECISION = 1.0 / 32767

_Clock = Callable[[], float]


def _unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason}


def _check_sizes(n: object, d: object, repeats: object) -> list[str]:
    problems = []
    for name, value, low in (("n", n, 1), ("d", d, 1), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            problems.append(f"{name} must be an integer >= {low}, got {value!r}")
    return problems


def _data(count: int, d: int, seed: bytes | None, what: bytes) -> npt.NDArray[np.float64]:
    """``count x d`` values uniform in [-1, 1) from the CSPRNG keystream."""
    stream = prg.Keystream(
        seed if seed is not None else prg.random_seed(),
        label=labels.SIM_DRIVER,
        context=b"bench/he-peers/" + what,
    )
    values = stream.uniform(count * d).reshape(count, d)
    values *= 2
    values -= 1
    return values


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _encrypting_clients(n: int, clients_encrypted: int | None) -> int:
    if clients_encrypted is None:
        return n
    if (
        isinstance(clients_encrypted, bool)
        or not isinstance(clients_encrypted, int)
        or (clients_encrypted < 1)
    ):
        raise ConfigurationError(
            f"clients_encrypted must be None or an integer >= 1, got {clients_encrypted!r}"
        )
    return min(n, clients_encrypted)


# ------------------------------------------------------------------------------ TenSEAL


def measure_tenseal_peer(
    n: int,
    d: int,
    *,
    repeats: int = 3,
    context: str = "flare-default",
    encryption: str | None = None,
    clients_encrypted: int | None = None,
    seed: bytes | None = None,
) -> dict[str, Any]:
    """Bare TenSEAL on a peer context: ``n`` clients' uploads of ``d`` values, summed, decrypted.

    What is timed (each a median over ``repeats`` rounds, one key for all of them):

    * ``client_seconds`` (per client): for each chunk of N/2 = 4096 values,
      ``ts.ckks_vector(client_context, chunk)`` and ``.serialize()`` - FLARE's client, on a
      float64 numpy array. The client context is FLARE's: secret key, public key (asymmetric
      only) and relinearisation keys.
    * ``server_seconds``: for each of the ``n`` uploads and each chunk,
      ``ts.ckks_vector_from(server_context, blob)`` and an in-place ``add_`` into the running
      sum (the first upload's chunks become the sums), then ``.serialize()`` of every sum - an
      unweighted sum, the cheapest aggregation (FLARE's aggregator also multiplies by weights).
      The server context holds no secret key (FLARE's server kit: relinearisation keys only).
    * ``decrypt_seconds``: ``ts.ckks_vector_from(client_context, blob).decrypt()`` per sum chunk.

    ``clients_encrypted`` (default: all ``n``) clients encrypt for real; the other uploads are
    copies of theirs (the server's work per upload is the same). ``max_error`` is the largest
    ``|decrypted sum - plaintext sum|`` over the values and the repeats. ``encryption``
    (``"symmetric"`` or ``"asymmetric"``) overrides the context's own (see the module docstring).
    """
    problems = _check_sizes(n, d, repeats)
    if context not in TENSEAL_PEER_CONTEXTS:
        raise ConfigurationError(
            [*problems, f"unknown context {context!r}; known: {sorted(TENSEAL_PEER_CONTEXTS)}"]
        )
    config = TENSEAL_PEER_CONTEXTS[context]
    mode = config["encryption"] if encryption is None else encryption
    if mode not in ("symmetric", "asymmetric"):
        problems.append(f"encryption must be None, 'symmetric' or 'asymmetric', got {mode!r}")
    if problems:
        raise ConfigurationError(problems)
    k_real = _encrypting_clients(n, clients_encrypted)
    try:
        from secureagg.he.ckks import require_tenseal

        ts = require_tenseal()
    except MissingDependencyError as exc:
        return _unavailable(str(exc))

    kind = ts.ENCRYPTION_TYPE.SYMMETRIC if mode == "symmetric" else ts.ENCRYPTION_TYPE.ASYMMETRIC

    def keys() -> tuple[Any, Any]:
        private = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=config["poly_modulus_degree"],
            coeff_mod_bit_sizes=list(config["coeff_mod_bit_sizes"]),
            encryption_type=kind,
            n_threads=1,
        )
        private.generate_relin_keys()
        private.global_scale = 2.0 ** config["scale_bits"]
        # FLARE's kits (HEBuilder.get_serialized_context): clients get the secret key (and the
        # public key), the server only the relinearisation keys
        client = ts.context_from(
            private.serialize(
                save_public_key=mode == "asymmetric",
                save_secret_key=True,
                save_galois_keys=False,
                save_relin_keys=True,
            ),
            n_threads=1,
        )
        server = ts.context_from(
            private.serialize(
                save_public_key=False,
                save_secret_key=False,
                save_galois_keys=False,
                save_relin_keys=True,
            ),
            n_threads=1,
        )
        return client, server

    (client_ctx, server_ctx), setup_seconds = _timed(keys)
    slots = config["poly_modulus_degree"] // 2
    data = _data(k_real, d, seed, b"tenseal")
    reference = np.zeros(d, dtype=np.float64)
    for i in range(n):
        reference += data[i % k_real]

    client_samples: list[float] = []
    server_samples: list[float] = []
    decrypt_samples: list[float] = []
    errors: list[float] = []
    upload_bytes = aggregate_bytes = 0
    for _ in range(repeats):
        uploads: list[list[bytes]] = []
        for k in range(k_real):

            def encrypt(row: npt.NDArray[np.float64] = data[k]) -> list[bytes]:
                return [
                    ts.ckks_vector(client_ctx, row[i : i + slots]).serialize()
                    for i in range(0, d, slots)
                ]

            blobs, seconds = _timed(encrypt)
            client_samples.append(seconds)
            uploads.append(blobs)
        upload_bytes = sum(len(b) for b in uploads[0])

        def aggregate(uploads: list[list[bytes]] = uploads) -> list[bytes]:
            sums: list[Any] = []
            for i in range(n):
                for j, blob in enumerate(uploads[i % k_real]):
                    vec = ts.ckks_vector_from(server_ctx, blob)
                    if i == 0:
                        sums.append(vec)
                    else:
                        sums[j].add_(vec)
            return [s.serialize() for s in sums]

        sums, seconds = _timed(aggregate)
        server_samples.append(seconds)
        aggregate_bytes = sum(len(b) for b in sums)

        def decrypt(sums: list[bytes] = sums) -> npt.NDArray[np.float64]:
            out = np.empty(d, dtype=np.float64)
            for j, blob in enumerate(sums):
                out[j * slots : (j + 1) * slots] = ts.ckks_vector_from(client_ctx, blob).decrypt()
            return out

        total, seconds = _timed(decrypt)
        decrypt_samples.append(seconds)
        errors.append(float(np.max(np.abs(total - reference))))

    return {
        "available": True,
        "peer": "tenseal",
        "tenseal_version": str(getattr(ts, "__version__", "unknown")),
        "context": context,
        "context_source": config["source"],
        "poly_modulus_degree": config["poly_modulus_degree"],
        "coeff_mod_bit_sizes": list(config["coeff_mod_bit_sizes"]),
        "scale": 2.0 ** config["scale_bits"],
        "encryption": mode,
        "clients_hold_secret_key": True,
        "n": n,
        "d": d,
        "repeats": repeats,
        "clients_encrypted": k_real,
        "ciphertexts_per_client": math.ceil(d / slots),
        "client_seconds": _median(client_samples),
        "server_seconds": _median(server_samples),
        "decrypt_seconds": _median(decrypt_samples),
        "upload_bytes": upload_bytes,
        "upload_vs_float32": upload_bytes / (4.0 * d),
        "aggregate_bytes": aggregate_bytes,
        "max_error": max(errors),
        "setup_seconds": setup_seconds,
        "samples": {
            "client_seconds": client_samples,
            "server_seconds": server_samples,
            "decrypt_seconds": decrypt_samples,
        },
        "timed": {
            "client_seconds": "per client: ts.ckks_vector(ctx, chunk of 4096 float64) + "
            "serialize(), every chunk",
            "server_seconds": "n uploads: ckks_vector_from + add_ per chunk, then serialize() "
            "of every sum (unweighted)",
            "decrypt_seconds": "ckks_vector_from + decrypt() per sum chunk",
        },
    }


# ------------------------------------------------------------------------------ phe


#: key size -> (phe key pair, seconds its generation took), generated once per process
_PHE_KEYS: dict[int, tuple[tuple[Any, Any], float]] = {}


def measure_phe_peer(
    n: int,
    d: int,
    *,
    repeats: int = 1,
    max_d: int | None = None,
    key_bits: int = 3072,
    precision: float = PHE_DEFAULT_PRECISION,
    clients_encrypted: int | None = 1,
    keypair: tuple[Any, Any] | None = None,
    seed: bytes | None = None,
) -> dict[str, Any]:
    """Unpacked phe: ``n`` clients' vectors of ``d`` values, one ciphertext per value.

    phe is slow (one ``2 * key_bits``-bit modular exponentiation per value on the client), so the
    caller may cap the measured size: with ``max_d``, the round runs at ``d_measured =
    min(d, max_d)`` values and the result says so (``capped``; no figure is extrapolated here:
    every figure is for ``d_measured`` values). What is timed (medians over ``repeats``):

    * ``client_seconds`` (per client): ``public_key.encrypt(float(x), precision=precision)`` for
      each of the ``d_measured`` values (phe encodes, encrypts and obfuscates each).
    * ``server_seconds``: the element-wise sum of the ``n`` clients' vectors of
      ``EncryptedNumber`` (``n - 1`` additions per value, each a modular multiplication); phe
      does not re-randomise the aggregate, and there is no parsing (the objects are in memory).
    * ``decrypt_seconds``: ``private_key.decrypt`` of every value of the sum.

    ``clients_encrypted`` clients (default 1; ``None``: all ``n``) encrypt for real; the other
    clients' vectors are copies of theirs (the same additions for the server). ``keypair`` is a
    ``(public, private)`` pair of phe keys (e.g. :meth:`PaillierSecretKey.phe_keypair
    <secureagg.he.paillier.PaillierSecretKey.phe_keypair>`, to share ours); by default a fresh
    ``key_bits``-bit pair (generation timed apart in ``setup_seconds``). ``max_error`` compares
    the decrypted sums with the plaintext sums (phe's encoding rounds each value to
    ``precision``).
    """
    problems = _check_sizes(n, d, repeats)
    if max_d is not None and (isinstance(max_d, bool) or not isinstance(max_d, int) or max_d < 1):
        problems.append(f"max_d must be None or an integer >= 1, got {max_d!r}")
    if not (isinstance(precision, float | int) and math.isfinite(precision) and precision > 0):
        problems.append(f"precision must be a finite number > 0, got {precision!r}")
    if problems:
        raise ConfigurationError(problems)
    k_real = _encrypting_clients(n, clients_encrypted)
    try:
        from secureagg.he.paillier import require_phe

        paillier = require_phe()
    except MissingDependencyError as exc:
        return _unavailable(str(exc))
    d_measured = d if max_d is None else min(d, max_d)
    if keypair is None:
        if key_bits not in _PHE_KEYS:  # one key per size per process: keygen is seconds
            _PHE_KEYS[key_bits] = _timed(
                lambda: paillier.generate_paillier_keypair(n_length=key_bits)
            )
        (public, private), setup_seconds = _PHE_KEYS[key_bits]
    else:
        (public, private), setup_seconds = keypair, 0.0
    data = _data(k_real, d_measured, seed, b"phe")
    reference = np.zeros(d_measured, dtype=np.float64)
    for i in range(n):
        reference += data[i % k_real]

    client_samples: list[float] = []
    server_samples: list[float] = []
    decrypt_samples: list[float] = []
    errors: list[float] = []
    for _ in range(repeats):
        vectors = []
        for k in range(k_real):
            values = [float(x) for x in data[k]]

            def encrypt(values: list[float] = values) -> list[Any]:
                return [public.encrypt(x, precision=precision) for x in values]

            encrypted, seconds = _timed(encrypt)
            client_samples.append(seconds)
            vectors.append(encrypted)

        def aggregate(vectors: list[list[Any]] = vectors) -> list[Any]:
            total = list(vectors[0])
            for i in range(1, n):
                total = [a + b for a, b in zip(total, vectors[i % k_real], strict=True)]
            return total

        total, seconds = _timed(aggregate)
        server_samples.append(seconds)

        def decrypt(total: list[Any] = total) -> list[float]:
            return [private.decrypt(e) for e in total]

        plain, seconds = _timed(decrypt)
        decrypt_samples.append(seconds)
        errors.append(float(np.max(np.abs(np.asarray(plain, dtype=np.float64) - reference))))

    ciphertext_bytes = (2 * int(public.n).bit_length() + 7) // 8
    return {
        "available": True,
        "peer": "phe",
        "key_bits": int(public.n).bit_length(),
        "precision": float(precision),
        "n": n,
        "d": d,
        "d_measured": d_measured,
        "capped": d_measured < d,
        "repeats": repeats,
        "clients_encrypted": k_real,
        "client_seconds": _median(client_samples),
        "server_seconds": _median(server_samples),
        "decrypt_seconds": _median(decrypt_samples),
        "client_seconds_per_value": _median(client_samples) / d_measured,
        "server_seconds_per_value": _median(server_samples) / d_measured,
        "decrypt_seconds_per_value": _median(decrypt_samples) / d_measured,
        "upload_bytes": ciphertext_bytes * d_measured,  # binary width; phe itself has no codec
        "upload_vs_float32": ciphertext_bytes / 4.0,
        "max_error": max(errors),
        "error_bound": n * precision,
        "setup_seconds": setup_seconds,
        "samples": {
            "client_seconds": client_samples,
            "server_seconds": server_samples,
            "decrypt_seconds": decrypt_samples,
        },
        "timed": {
            "client_seconds": "per client: public_key.encrypt(x, precision) per value",
            "server_seconds": "element-wise EncryptedNumber additions of n vectors "
            "(n - 1 per value; no re-randomisation, no parsing)",
            "decrypt_seconds": "private_key.decrypt per value of the sum",
        },
    }
