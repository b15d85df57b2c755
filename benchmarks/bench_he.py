"""Benchmark of homomorphic aggregation (issue 4): CKKS and packed Paillier against their peers.

For every (d, n) of the grid (d in {10^5, 10^6}, n in {10, 100} by default):

CKKS, measured in the same run on the same data, every column repeated interleaved:

* ``ours``: the ``"ckks"`` aggregator (its default context: N=8192, [60, 60, 60] since the key
  checks, [60, 60] in the committed results; scale 2^40, flooding on) with
  ``precompute_encryption=True``, driven party by party: each client's ``precompute()`` (the pool
  of encryptions of zero, timed apart as ``client_offline_seconds``), its online
  encode+encrypt+serialize and the codec (``client_encrypt_seconds``), the server's codec,
  validation and in-place adds, the key holder's decryption and flooding; plus
  ``client_encrypt_seconds_fresh``, the same aggregator's clients without the pool (the default);
* ``raw``: raw TenSEAL calls doing the same operations with the same context: fresh encryption
  (``ckks_vector(ctx, chunk).serialize()``) and the same pool trick as bare calls (offline
  ``ckks_vector(ctx, zeros)``, online ``add_plain_`` + ``serialize``); deserialize and ``add_``;
  deserialize and decrypt;
* ``ours_flare_context``: our aggregator with NVIDIA FLARE's default context (N=8192,
  [60, 40, 40, 60], scale 2^40): the same code, only the context differs (fresh encryption);
* ``flare``: the raw calls with FLARE's default context.

Paillier, two columns:

* ``packed``: the ``"paillier"`` aggregator (3072-bit key, 16-bit quantisation): blinding factors
  precomputed per client (timed separately as the offline part), encryption, upload bytes, the
  server's range/gcd checks, products and re-randomisation, CRT decryption. Beyond
  ``--paillier-full-max-d`` the round runs at a subset of ``--paillier-subset`` ciphertexts per
  client, the upload size and the server's adds over n full-size uploads are measured at full d,
  and the rest is extrapolated per ciphertext (``packed.method`` says which figure is which);
* ``phe``: unpacked phe, one ciphertext per value, at the same precision (``precision = clip / Q``),
  measured by :func:`secureagg.bench.he_peers.measure_phe_peer` on a sample of values
  (``--phe-sample``; our key pair, n vectors summed value by value) and **extrapolated**: per-value
  encryption, addition and decryption times multiplied by ``d`` (and by ``n - 1`` additions per
  value). he_peers times wall seconds only, so ``--clock cpu`` is for ``--parts ckks``.

Where ``n * d`` is large, only ``--client-sample`` clients encrypt for real; the other clients'
uploads are copies of theirs (different senders), so the server still validates and adds ``n``
uploads and the plaintext reference is the sum of the data actually encrypted. Every figure is
labelled ``measured``, ``extrapolated`` or ``sampled`` in the JSON.

Targets (reported as ``{"target", "measured", "met"}``): CKKS costs at most 1.2x raw TenSEAL for
the same operations (three totals: both pooled online, both pooled with the offline fill, both
fresh), uploads at most 8.5x a float32 payload (FLARE: about 20x), and the server
aggregates at least 5x faster with our default context than with FLARE's (same server code; the
raw-TenSEAL FLARE figure is reported beside it); Paillier packs at least 50 values per
ciphertext at n=100 with 16-bit quantisation, encrypts at least 30x faster per value than unpacked
phe, and uploads at most 3x a float32 payload.

Usage::

    python benchmarks/bench_he.py --quick                    # smoke run, about 15 s
    python benchmarks/bench_he.py --grid-d 100000 --grid-n 10
    python benchmarks/bench_he.py                            # the full grid, about 18 min

Results go to ``--out`` (default ``benchmarks/results/he.json``) and a table to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import secureagg as sa  # noqa: E402
from secureagg.he.ckks import FLARE_DEFAULT, CkksParameters, require_tenseal  # noqa: E402
from secureagg.protocols.base import KEY_HOLDER, SERVER  # noqa: E402
from secureagg.transport import codec  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "he.json"
FULL_GRID = {"d": [100_000, 1_000_000], "n": [10, 100]}
QUICK_GRID = {"d": [3 * 4096 - 1], "n": [4]}  # d + the count slot fill three ciphertexts exactly
QUICK_PAILLIER_D = 1_000
QUICK_PAILLIER_EXTRAPOLATED_D = 20_000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


#: The clock of every timing: wall time (``perf_counter``, the default) or, with ``--clock cpu``,
#: this process's CPU time (``process_time``: user + system, page faults included). Everything
#: timed here runs on one thread (TenSEAL contexts use ``n_threads=1``), so on a machine shared
#: with other jobs CPU time measures our work without their load; the JSON names the clock.
CLOCK: Callable[[], float] = time.perf_counter


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = CLOCK()
    out = fn()
    return out, CLOCK() - t0


def client_data(k: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed + k).uniform(-1, 1, d).astype(np.float32)


# ------------------------------------------------------------------------------ our protocols


def run_ours(agg: Any, *, n: int, d: int, sample: int, seed: int, repeat: int = 1,
             before_clients: Callable[[Any], dict[str, float]] | None = None,
             offline: bool = False, server_phase: bool = True,
             keep_wires: bool = False) -> dict[str, Any]:
    """Drive one round of ``agg`` party by party, timing each role; see the module docstring.

    Every phase runs ``repeat`` times on fresh parties (same key; the server phases on the same
    uploads) and the fastest run of each is kept, as for the raw baselines: the machine is shared.
    ``offline=True`` calls each client's ``precompute()`` (the encryption pool) before its upload
    and times it apart (``client_offline_seconds``); ``client_encrypt_seconds`` is then the online
    part only. ``server_phase=False`` stops after the clients' uploads.
    """
    k_real = min(n, sample)
    rows = [client_data(k, d, seed) for k in range(k_real)]
    updates = [[rows[i % k_real]] for i in range(n)]

    def new_setup() -> Any:
        return agg.setup_round(updates, weights=None, session_id=b"bench-he-session",
                               round_id=0, seed=None)

    setup = new_setup()
    extra = before_clients(setup) if before_clients is not None else {}
    requests = {env.recipient: env.message for env in setup.server.start()}
    best_client = [math.inf] * k_real
    best_offline = [math.inf] * k_real
    wires: list[bytes] = []
    for attempt in range(max(1, repeat)):  # fresh clients each time (one upload per client)
        clients = setup.clients if attempt == 0 else new_setup().clients
        for k in range(k_real):
            if offline:
                _, pre_seconds = timed(clients[k].precompute)
                best_offline[k] = min(best_offline[k], pre_seconds)
            [reply], seconds = timed(lambda k=k, c=clients: c[k].receive(SERVER, requests[k]))
            wire, enc_seconds = timed(lambda r=reply: codec.encode(r.message))
            best_client[k] = min(best_client[k], seconds + enc_seconds)
            if attempt == 0:
                wires.append(wire)
    client_seconds = best_client
    clients_part: dict[str, Any] = {
        "clients_encrypted": k_real,
        "client_encrypt_seconds": statistics.mean(client_seconds),
        "client_encrypt_seconds_max": max(client_seconds),
        "upload_bytes": len(wires[0]),
        "upload_vs_float32": len(wires[0]) / (4 * d),
    }
    if offline:
        clients_part["client_offline_seconds"] = statistics.mean(best_offline)
    if keep_wires:
        clients_part["_wires"] = wires
    if not server_phase:
        return {**clients_part, "repeats": max(1, repeat), **extra}
    runs = []
    for attempt in range(max(1, repeat)):
        current = setup if attempt == 0 else new_setup()
        server, holder = current.server, current.helpers[KEY_HOLDER]
        if attempt:
            server.start()
        # offline, before the uploads: the server's input-independent work (Paillier: the
        # re-randomisation factors of the aggregate; CKKS: nothing), timed apart
        _, server_offline = timed(server.precompute)
        add_seconds = 0.0
        for i in range(n):
            def deliver(i: int = i, server: Any = server) -> None:
                server.receive(i, codec.decode(wires[i % k_real]))
            _, seconds = timed(deliver)
            add_seconds += seconds
        [to_holder], export_seconds = timed(server.end_stage)
        aggregate_wire = codec.encode(to_holder.message)
        [release], decrypt_seconds = timed(
            lambda h=holder, w=aggregate_wire: h.receive(SERVER, codec.decode(w)))
        release_wire = codec.encode(release.message)
        _, finish_seconds = timed(
            lambda s=server, w=release_wire: (s.receive(KEY_HOLDER, codec.decode(w)),
                                              s.end_stage()))
        runs.append({"add": add_seconds, "export": export_seconds, "decrypt": decrypt_seconds,
                     "offline": server_offline,
                     "finish": finish_seconds, "bytes": len(aggregate_wire),
                     "result": server.result().aggregate[0]})
    best = min(runs, key=lambda r: r["add"] + r["export"])
    decrypt_best = min(r["decrypt"] for r in runs)
    clip = getattr(agg, "clip", None)
    reference = sum(
        (np.clip(rows[i % k_real].astype(np.float64), -clip, clip) if clip is not None
         else rows[i % k_real].astype(np.float64))
        for i in range(n)
    )
    return {
        **clients_part,
        "repeats": len(runs),
        "server_aggregate_seconds": best["add"] + best["export"],
        "server_offline_seconds": best["offline"],
        "server_add_seconds": best["add"],
        "server_export_seconds": best["export"],
        "aggregate_bytes": best["bytes"],
        "decrypt_seconds": decrypt_best,
        "server_finish_seconds": best["finish"],
        "max_error": max(float(np.max(np.abs(r["result"] - reference))) for r in runs),
        "error_bound": float(agg.error_bound(survivors=n)),
        **extra,
    }


# ------------------------------------------------------------------------------ CKKS baselines


def run_raw_tenseal(params: CkksParameters, *, n: int, d: int, sample: int,
                    seed: int, repeat: int = 1, pool: bool = False) -> dict[str, Any]:
    """The same operations as our CKKS round, as bare TenSEAL calls (no protocol, no checks).

    Client: ``ckks_vector(ctx, chunk).serialize()`` per 4096-value chunk. With ``pool=True`` the
    same pool trick as ours, also as bare calls: offline, ``ckks_vector(ctx, zeros)`` per chunk
    (``client_offline_seconds``); online, ``vec.data.add_plain_(chunk.tolist())`` and
    ``serialize()`` (``client_encrypt_seconds``); the fresh figure is kept as
    ``client_encrypt_seconds_fresh``. Server: ``ckks_vector_from`` and ``add_`` per chunk, then
    ``serialize``; key holder: ``ckks_vector_from`` and ``decrypt``.
    """
    ts = require_tenseal()
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=params.poly_modulus_degree,
                     coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes), n_threads=1)
    ctx.global_scale = params.scale
    public = ts.context_from(ctx.serialize(save_secret_key=False, save_galois_keys=False,
                                           save_relin_keys=False), n_threads=1)
    k_real = min(n, sample)
    slots = params.slots
    blobs, fresh_seconds, online_seconds, offline_seconds = [], [], [], []
    for k in range(k_real):
        x = client_data(k, d, seed).astype(np.float64)

        def encrypt(x: np.ndarray = x) -> list[bytes]:
            return [ts.ckks_vector(public, x[i : i + slots]).serialize()
                    for i in range(0, d, slots)]

        def fill(x: np.ndarray = x) -> list[Any]:
            return [ts.ckks_vector(public, [0.0] * len(x[i : i + slots])).data
                    for i in range(0, d, slots)]

        def encrypt_pooled(zeros: list[Any], x: np.ndarray = x) -> list[bytes]:
            out = []
            for j, i in enumerate(range(0, d, slots)):
                vec = zeros[j]
                vec.add_plain_(x[i : i + slots].tolist())
                out.append(vec.serialize())
            return out

        attempts = [timed(encrypt) for _ in range(max(1, repeat))]
        fresh_seconds.append(min(seconds for _, seconds in attempts))
        if pool:
            best_on, best_off, first = math.inf, math.inf, None
            for _ in range(max(1, repeat)):
                zeros, off = timed(fill)
                cts, on = timed(lambda z=zeros: encrypt_pooled(z))
                best_on, best_off = min(best_on, on), min(best_off, off)
                first = first if first is not None else cts
            online_seconds.append(best_on)
            offline_seconds.append(best_off)
            blobs.append(first)
        else:
            blobs.append(attempts[0][0])

    def aggregate() -> list[bytes]:
        sums: list[Any] = [None] * len(blobs[0])
        for i in range(n):
            for j, blob in enumerate(blobs[i % k_real]):
                vec = ts.ckks_vector_from(public, blob)
                if sums[j] is None:
                    sums[j] = vec
                else:
                    sums[j].add_(vec)
        return [s.serialize() for s in sums]

    attempts = [timed(aggregate) for _ in range(max(1, repeat))]
    exported = attempts[0][0]
    server_seconds = min(seconds for _, seconds in attempts)

    def decrypt() -> np.ndarray:
        return np.concatenate([np.asarray(ts.ckks_vector_from(ctx, b).decrypt())
                               for b in exported])

    decrypts = [timed(decrypt) for _ in range(max(1, repeat))]
    result = decrypts[0][0]
    decrypt_seconds = min(seconds for _, seconds in decrypts)
    reference = sum(client_data(i % k_real, d, seed).astype(np.float64) for i in range(n))
    upload = sum(len(b) for b in blobs[0])
    out = {
        "context": params.to_dict(),
        "clients_encrypted": k_real,
        "repeats": max(1, repeat),
        "client_encrypt_seconds": statistics.mean(online_seconds if pool else fresh_seconds),
        "client_encrypt_seconds_fresh": statistics.mean(fresh_seconds),
        "upload_bytes": upload,
        "upload_vs_float32": upload / (4 * d),
        "server_aggregate_seconds": server_seconds,
        "decrypt_seconds": decrypt_seconds,
        "max_error": float(np.max(np.abs(result - reference))),
    }
    if pool:
        out["client_offline_seconds"] = statistics.mean(offline_seconds)
    return out


_TIMINGS = ("client_encrypt_seconds", "client_encrypt_seconds_fresh", "client_offline_seconds",
            "server_aggregate_seconds", "server_add_seconds", "server_export_seconds",
            "decrypt_seconds", "server_finish_seconds", "server_offline_seconds")


def _fastest(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The first run's figures with every timing replaced by its minimum over ``runs``."""
    out = dict(runs[0])
    for key in _TIMINGS:
        if key in out:
            out[key] = min(r[key] for r in runs)
    out["repeats"] = len(runs)
    if "max_error" in out:
        out["max_error"] = max(r["max_error"] for r in runs)
    return out


def bench_ckks(*, n: int, d: int, sample: int, seed: int, repeat: int) -> dict[str, Any]:
    """The CKKS columns, run ``repeat`` times *interleaved* (the machine is shared: a load burst
    then hits every column alike); each timing is the fastest of its repeats.

    ``ours`` is the ``"ckks"`` aggregator with ``precompute_encryption=True`` (pool filled
    offline, timed apart) for the whole round; its fresh-encryption client time (the default,
    no pool) comes from a second, client-only run of the same aggregator without the pool, in the
    same repeat (the server and key holder do the same work either way). ``raw_tenseal`` measures
    the same two client variants with bare calls. FLARE-context columns: fresh encryption.
    """
    from secureagg.he.ckks import CkksSecretKey

    # one key per context for all repeats (the aggregator's default is a fresh key per round)
    key = CkksSecretKey()
    agg = sa.make_aggregator("ckks", num_clients=n, clip=1.0, key=key)
    pooled_agg = sa.make_aggregator("ckks", num_clients=n, clip=1.0, key=key,
                                    precompute_encryption=True)
    flare_agg = sa.make_aggregator("ckks", num_clients=n, clip=1.0,
                                   coeff_mod_bit_sizes=FLARE_DEFAULT.coeff_mod_bit_sizes,
                                   key=CkksSecretKey(FLARE_DEFAULT))
    columns: dict[str, list[dict[str, Any]]] = {"ours": [], "ours_fresh": [], "ours_flare": [],
                                                "raw": [], "flare": []}
    for attempt in range(max(1, repeat)):
        log(f"  ckks n={n} d={d}: repeat {attempt + 1}/{max(1, repeat)} (ours pooled + fresh, "
            "ours with FLARE's context, raw pooled + fresh, raw with FLARE's context)")
        columns["ours"].append(run_ours(pooled_agg, n=n, d=d, sample=sample, seed=seed,
                                        offline=True))
        columns["ours_fresh"].append(run_ours(agg, n=n, d=d, sample=sample, seed=seed,
                                              server_phase=False))
        columns["ours_flare"].append(run_ours(flare_agg, n=n, d=d, sample=sample, seed=seed))
        columns["raw"].append(run_raw_tenseal(CkksParameters(), n=n, d=d, sample=sample,
                                              seed=seed, pool=True))
        # the same calls as he_peers.measure_tenseal_peer(context="flare-60-40-40-60"), kept here
        # for --clock cpu (he_peers times wall seconds only) and like for like with "raw"
        columns["flare"].append(run_raw_tenseal(FLARE_DEFAULT, n=n, d=d, sample=sample,
                                                seed=seed))
    ours, ours_flare = _fastest(columns["ours"]), _fastest(columns["ours_flare"])
    raw, flare = _fastest(columns["raw"]), _fastest(columns["flare"])
    ours["client_encrypt_seconds_fresh"] = _fastest(columns["ours_fresh"])[
        "client_encrypt_seconds"]
    ours["upload_bytes_fresh"] = columns["ours_fresh"][0]["upload_bytes"]

    def total(r: dict[str, Any], client: str, *, offline: bool = False) -> float:
        per_client = r[client] + (r["client_offline_seconds"] if offline else 0.0)
        return float(per_client * r["clients_encrypted"] + r["server_aggregate_seconds"]
                     + r["decrypt_seconds"])

    def ratio(key: str) -> float:
        return float(ours[key] / raw[key])

    online_total = total(ours, "client_encrypt_seconds") / total(raw, "client_encrypt_seconds")
    with_offline = (total(ours, "client_encrypt_seconds", offline=True)
                    / total(raw, "client_encrypt_seconds", offline=True))
    fresh_total = (total(ours, "client_encrypt_seconds_fresh")
                   / total(raw, "client_encrypt_seconds_fresh"))
    return {
        "ours": ours,
        "ours_flare_context": ours_flare,
        "raw_tenseal": raw,
        "flare_default": flare,
        "totals_seconds": {
            "how": "client seconds x clients encrypted + server aggregate + decrypt",
            "ours_pooled_online": total(ours, "client_encrypt_seconds"),
            "ours_pooled_with_offline": total(ours, "client_encrypt_seconds", offline=True),
            "ours_fresh": total(ours, "client_encrypt_seconds_fresh"),
            "raw_pooled_online": total(raw, "client_encrypt_seconds"),
            "raw_pooled_with_offline": total(raw, "client_encrypt_seconds", offline=True),
            "raw_fresh": total(raw, "client_encrypt_seconds_fresh"),
        },
        "ratios": {
            "ours_vs_raw_total_pooled_online": online_total,
            "ours_vs_raw_total_pooled_with_offline": with_offline,
            "ours_vs_raw_total_fresh": fresh_total,
            "ours_vs_raw_client_online": ratio("client_encrypt_seconds"),
            "ours_vs_raw_client_offline": ratio("client_offline_seconds"),
            "ours_vs_raw_client_fresh": ratio("client_encrypt_seconds_fresh"),
            "ours_vs_raw_server": ratio("server_aggregate_seconds"),
            "ours_vs_raw_decrypt": ratio("decrypt_seconds"),
            "pool_speedup_client_online": ours["client_encrypt_seconds_fresh"]
            / ours["client_encrypt_seconds"],
            "ours_pooled_online_vs_raw_fresh_total": total(ours, "client_encrypt_seconds")
            / total(raw, "client_encrypt_seconds_fresh"),
            "flare_context_vs_default_server": ours_flare["server_aggregate_seconds"]
            / ours["server_aggregate_seconds"],
            "raw_flare_vs_ours_server": flare["server_aggregate_seconds"]
            / ours["server_aggregate_seconds"],
            "raw_flare_vs_raw_default_server": flare["server_aggregate_seconds"]
            / raw["server_aggregate_seconds"],
            "flare_vs_ours_upload": flare["upload_bytes"] / ours["upload_bytes"],
        },
        "parameters": pooled_agg.parameters(),
    }


# ------------------------------------------------------------------------------ Paillier


def _phe_unpacked(key: Any, agg: Any, *, n: int, d: int, phe_sample: int,
                  seed: int) -> dict[str, Any]:
    """Unpacked phe (one ciphertext per value): :func:`~secureagg.bench.he_peers.measure_phe_peer`
    on ``phe_sample`` values with our key pair and precision, extrapolated to ``d`` values."""
    from secureagg.bench.he_peers import measure_phe_peer

    log(f"  paillier phe   sample of {phe_sample} values")
    r = measure_phe_peer(n, d, repeats=1, max_d=phe_sample, precision=1.0 / agg.scheme.scale,
                         clients_encrypted=1, keypair=key.phe_keypair(),
                         seed=seed.to_bytes(32, "big", signed=True))
    if not r["available"]:
        raise RuntimeError(f"phe peer unavailable: {r['reason']}")
    measured = r["d_measured"]
    per_add = r["server_seconds"] / (measured * max(1, n - 1))
    ct_bytes = r["upload_bytes"] // measured
    return {
        "method": f"extrapolated from {measured} measured values "
        f"(secureagg.bench.he_peers.measure_phe_peer: phe EncryptedNumber, precision "
        f"1/{agg.scheme.scale:.0f}, n={n} vectors summed value by value); server cost counts "
        "only the n-1 additions per value (no obfuscation of the aggregate)",
        "measured_encrypt_seconds_per_value": r["client_seconds_per_value"],
        "measured_add_seconds_per_value": per_add,
        "measured_decrypt_seconds_per_value": r["decrypt_seconds_per_value"],
        "client_encrypt_seconds": r["client_seconds_per_value"] * d,
        "upload_bytes": ct_bytes * d,
        "upload_vs_float32": ct_bytes / 4.0,
        "server_aggregate_seconds": per_add * d * (n - 1),
        "decrypt_seconds": r["decrypt_seconds_per_value"] * d,
    }


def _paillier_ratios(packed: dict[str, Any], phe: dict[str, Any], d: int) -> dict[str, float]:
    per_enc = phe["measured_encrypt_seconds_per_value"]
    return {
        "phe_vs_ours_client_per_value_total": per_enc / (packed["client_total_seconds"] / d),
        "phe_vs_ours_client_per_value_online": per_enc
        / (packed["client_encrypt_seconds"] / d),
        "phe_vs_ours_upload": phe["upload_bytes"] / packed["upload_bytes"],
    }


def _packed_round(key: Any, agg: Any, *, n: int, d: int, sample: int, seed: int,
                  keep_wires: bool = False) -> dict[str, Any]:
    """Our packed-Paillier round at ``d``, every phase measured (pools filled offline, timed)."""
    count = math.ceil((d + 1) / agg.scheme.packing.slots)

    def precompute(setup: Any) -> dict[str, float]:
        # offline: each encrypting client fills its pool (the server fills its own, for the
        # re-randomisation of the aggregate, in run_ours: server.precompute())
        fills = []
        for k in range(min(n, sample)):
            _, seconds = timed(lambda k=k: setup.clients[k].encryptor.pool.fill(count))
            fills.append(seconds)
        return {"client_pool_fill_seconds": statistics.mean(fills)}

    log(f"  paillier packed n={n} d={d} ({count} ciphertexts per client)")
    packed = run_ours(agg, n=n, d=d, sample=sample, seed=seed, before_clients=precompute,
                      keep_wires=keep_wires)
    packed["ciphertexts_per_client"] = count
    # the server's pool (re-randomisation factors), filled by server.precompute() in run_ours
    packed["server_pool_fill_seconds"] = packed["server_offline_seconds"]
    packed["client_total_seconds"] = (packed["client_encrypt_seconds"]
                                      + packed["client_pool_fill_seconds"])
    return packed


def bench_paillier(*, n: int, d: int, sample: int, phe_sample: int, seed: int,
                   key_bits: int) -> dict[str, Any]:
    """Packed Paillier at ``d``, every figure of ``packed`` measured."""
    from secureagg.he.paillier import PaillierSecretKey

    key, keygen_seconds = timed(lambda: PaillierSecretKey.generate(key_bits))
    agg = sa.make_aggregator("paillier", num_clients=n, clip=1.0, key_bits=key_bits, key=key)
    packed = _packed_round(key, agg, n=n, d=d, sample=sample, seed=seed)
    packed["keygen_seconds"] = keygen_seconds
    packed["method"] = (f"measured: {min(n, sample)} client(s) encrypt for real, the other "
                        "uploads are copies of theirs (different senders)")
    phe = _phe_unpacked(key, agg, n=n, d=d, phe_sample=phe_sample, seed=seed)
    return {"packed": packed, "phe_unpacked": phe, "ratios": _paillier_ratios(packed, phe, d),
            "parameters": agg.parameters()}


def bench_paillier_extrapolated(*, n: int, d: int, subset_ciphertexts: int, phe_sample: int,
                                seed: int, key_bits: int) -> dict[str, Any]:
    """Packed Paillier at a ``d`` too large to run whole: a measured subset, then extrapolation.

    1. **Measured subset**: the whole round (one client's pool fill and encryption, the server's
       pool fill, validation, products and re-randomisation, the key holder's CRT decryption, the
       error) at ``d_sub`` values, chosen so that the payload is exactly ``subset_ciphertexts``
       ciphertexts.
    2. **Measured at full d**: the upload bytes, and the server's validation and products over all
       ``n`` full-size uploads - each upload is the subset's ciphertexts tiled to the full
       ciphertext count (real ciphertexts under the round's key; the same bytes repeat, which
       costs the server exactly what distinct ciphertexts would).
    3. **Extrapolated** (linear in the number of ciphertexts, since every Paillier operation is
       per ciphertext): client pool fill and encryption, server pool fill and export
       (re-randomisation), decryption.
    """
    from secureagg.he.paillier import PaillierSecretKey

    key, keygen_seconds = timed(lambda: PaillierSecretKey.generate(key_bits))
    agg = sa.make_aggregator("paillier", num_clients=n, clip=1.0, key_bits=key_bits, key=key)
    slots = agg.scheme.packing.slots
    count = math.ceil((d + 1) / slots)
    m = min(subset_ciphertexts, count)
    d_sub = m * slots - 1  # + the count slot = exactly m ciphertexts
    sub = _packed_round(key, agg, n=n, d=d_sub, sample=1, seed=seed, keep_wires=True)
    sub_wire = sub.pop("_wires")[0]
    factor = count / m

    # full d: n uploads of `count` ciphertexts each, validated and multiplied for real
    log(f"  paillier full-d server adds: n={n} uploads x {count} ciphertexts")
    row = client_data(0, d, seed)
    setup = agg.setup_round([[row]] * n, weights=None, session_id=b"bench-he-session",
                            round_id=0, seed=None)
    setup.server.start()
    cts = codec.decode(sub_wire).ciphertexts  # type: ignore[attr-defined]
    scheme = agg.scheme
    upload = scheme.upload_type(
        session_id=b"bench-he-session", round_id=0, key_fingerprint=key.key_fingerprint,
        ciphertexts=tuple(bytes(cts[j % m]) for j in range(count)),
    )
    wire = codec.encode(upload)
    add_seconds = 0.0
    for i in range(n):
        _, seconds = timed(lambda i=i: setup.server.receive(i, codec.decode(wire)))
        add_seconds += seconds
    if setup.server.accumulator.contributions != n:
        raise RuntimeError("the server did not accept every full-size upload")

    def scaled(key_name: str) -> float:
        return float(sub[key_name] * factor)

    export_seconds = scaled("server_export_seconds")
    packed = {
        "method": (
            f"subset measured, then extrapolated: the whole round ran at d_sub={d_sub} "
            f"({m} ciphertexts per client, one client encrypting); measured at full d={d}: "
            f"upload_bytes and server_add_seconds (n={n} uploads of {count} real ciphertexts - "
            "the subset's, tiled - validated and multiplied); extrapolated x"
            f"{factor:.2f} (= {count}/{m} ciphertexts, every Paillier operation being per "
            "ciphertext): client_pool_fill_seconds, client_encrypt_seconds, "
            "server_pool_fill_seconds, server_export_seconds, decrypt_seconds; max_error is the "
            "subset's"
        ),
        "measured_at_full_d": ["upload_bytes", "upload_vs_float32", "server_add_seconds"],
        "extrapolated": ["client_pool_fill_seconds", "client_encrypt_seconds",
                         "client_total_seconds", "server_pool_fill_seconds",
                         "server_export_seconds", "server_aggregate_seconds",
                         "decrypt_seconds"],
        "subset": sub,
        "clients_encrypted": 1,
        "ciphertexts_per_client": count,
        "upload_bytes": len(wire),
        "upload_vs_float32": len(wire) / (4 * d),
        "server_add_seconds": add_seconds,
        "server_export_seconds": export_seconds,
        "server_aggregate_seconds": add_seconds + export_seconds,
        "client_pool_fill_seconds": scaled("client_pool_fill_seconds"),
        "client_encrypt_seconds": scaled("client_encrypt_seconds"),
        "client_total_seconds": scaled("client_total_seconds"),
        "server_pool_fill_seconds": scaled("server_pool_fill_seconds"),
        "decrypt_seconds": scaled("decrypt_seconds"),
        "max_error": sub["max_error"],
        "error_bound": sub["error_bound"],
        "keygen_seconds": keygen_seconds,
    }
    phe = _phe_unpacked(key, agg, n=n, d=d, phe_sample=phe_sample, seed=seed)
    return {"packed": packed, "phe_unpacked": phe, "ratios": _paillier_ratios(packed, phe, d),
            "parameters": agg.parameters()}


# ------------------------------------------------------------------------------ report


def targets(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for r in results:
        where = f"d={r['d']}, n={r['n']}"
        if "ckks" in r:
            c = r["ckks"]
            ratios = c["ratios"]
            out += [
                {"name": f"CKKS cost vs raw TenSEAL, same operations, both with the encryption "
                         f"pool: online total ({where})",
                 "target": "<= 1.2x", "measured": ratios["ours_vs_raw_total_pooled_online"],
                 "met": ratios["ours_vs_raw_total_pooled_online"] <= 1.2},
                {"name": f"CKKS cost vs raw TenSEAL, same operations, both with the encryption "
                         f"pool: total including the offline pool fill ({where})",
                 "target": "<= 1.2x", "measured": ratios["ours_vs_raw_total_pooled_with_offline"],
                 "met": ratios["ours_vs_raw_total_pooled_with_offline"] <= 1.2},
                {"name": f"CKKS cost vs raw TenSEAL, same operations, both encrypting fresh (no "
                         f"pool, our default) ({where})",
                 "target": "<= 1.2x", "measured": ratios["ours_vs_raw_total_fresh"],
                 "met": ratios["ours_vs_raw_total_fresh"] <= 1.2},
                {"name": f"CKKS upload vs float32 payload ({where})", "target": "<= 8.5x",
                 "measured": c["ours"]["upload_vs_float32"],
                 "met": c["ours"]["upload_vs_float32"] <= 8.5},
                {"name": f"FLARE-default upload vs float32 ({where}), for reference",
                 "target": "about 20x", "measured": c["flare_default"]["upload_vs_float32"],
                 "met": c["flare_default"]["upload_vs_float32"] > 15},
                {"name": f"CKKS server aggregation speed-up, our server with our default "
                         f"context vs with FLARE's default context ({where})",
                 "target": ">= 5x", "measured": ratios["flare_context_vs_default_server"],
                 "met": ratios["flare_context_vs_default_server"] >= 5},
                {"name": f"  for reference: raw TenSEAL with FLARE's context vs our server "
                         f"({where})",
                 "target": ">= 5x", "measured": ratios["raw_flare_vs_ours_server"],
                 "met": ratios["raw_flare_vs_ours_server"] >= 5},
            ]
        if "paillier" in r:
            p = r["paillier"]
            how = ("extrapolated from a measured subset"
                   if "extrapolated" in p["packed"] else "measured")
            pwhere = f"d={r.get('paillier_d', r['d'])}, n={r['n']}, {how}"
            out += [
                {"name": f"Paillier client encryption per value vs unpacked phe, including the "
                         f"blinding precomputation ({pwhere})",
                 "target": ">= 30x", "measured": p["ratios"]["phe_vs_ours_client_per_value_total"],
                 "met": p["ratios"]["phe_vs_ours_client_per_value_total"] >= 30},
                {"name": f"Paillier upload vs float32 payload ({pwhere})", "target": "<= 3x",
                 "measured": p["packed"]["upload_vs_float32"],
                 "met": p["packed"]["upload_vs_float32"] <= 3},
            ]
    from secureagg.he.paillier_packing import SlotPacking

    slots = SlotPacking.for_values(key_bits=3072, max_value=2 * 32767, summands=100).slots
    out.append({"name": "Paillier values per ciphertext at n=100, 16-bit quantisation, 3072 bits",
                "target": ">= 50", "measured": slots, "met": slots >= 50})
    return out


def table(results: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'config':<18} {'column':<16} {'enc s/client':>12} {'offline s':>10} "
             f"{'upload x f32':>12} {'server s':>10} {'decrypt s':>10} {'max error':>10}"]
    for r in results:
        cfg = f"d={r['d']:,} n={r['n']}"
        columns: list[tuple[str, dict[str, Any]]] = []
        if "ckks" in r:
            ours, raw = r["ckks"]["ours"], r["ckks"]["raw_tenseal"]
            columns += [
                ("ckks ours pool", ours),
                ("ckks ours fresh", {**ours, "client_encrypt_seconds":
                                     ours["client_encrypt_seconds_fresh"],
                                     "client_offline_seconds": 0.0}),
                ("raw pool", raw),
                ("raw fresh", {**raw, "client_encrypt_seconds":
                               raw["client_encrypt_seconds_fresh"],
                               "client_offline_seconds": 0.0}),
                ("ours flare-ctx", r["ckks"]["ours_flare_context"]),
                ("raw flare-ctx", r["ckks"]["flare_default"]),
            ]
        if "paillier" in r:
            packed = dict(r["paillier"]["packed"])
            packed["client_offline_seconds"] = packed["client_pool_fill_seconds"]
            label = "paillier (extr.)" if "extrapolated" in packed else "paillier packed"
            columns += [(label, packed),
                        ("phe (extrap.)", {**r["paillier"]["phe_unpacked"], "max_error": 0.0})]
        for name, c in columns:
            lines.append(
                f"{cfg:<18} {name:<16} {c['client_encrypt_seconds']:>12.3f} "
                f"{c.get('client_offline_seconds', 0.0):>10.3f} "
                f"{c['upload_vs_float32']:>12.2f} {c['server_aggregate_seconds']:>10.3f} "
                f"{c['decrypt_seconds']:>10.3f} {c.get('max_error', 0.0):>10.2e}"
            )
            cfg = ""
        if "ckks" in r:
            ratios = r["ckks"]["ratios"]
            lines.append(
                f"{'':<18} ours/raw total: pooled online "
                f"{ratios['ours_vs_raw_total_pooled_online']:.2f}x, pooled with offline "
                f"{ratios['ours_vs_raw_total_pooled_with_offline']:.2f}x, fresh "
                f"{ratios['ours_vs_raw_total_fresh']:.2f}x; "
                f"server {ratios['ours_vs_raw_server']:.2f}x"
                f", decrypt {ratios['ours_vs_raw_decrypt']:.2f}x")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (small d and n)")
    parser.add_argument("--grid-d", type=int, nargs="+", default=None)
    parser.add_argument("--grid-n", type=int, nargs="+", default=None)
    parser.add_argument("--parts", nargs="+", default=["ckks", "paillier"],
                        choices=["ckks", "paillier"])
    parser.add_argument("--client-sample", type=int, default=None,
                        help="clients that really encrypt (default: all when n*d <= 2e6 for "
                        "CKKS; 1 for Paillier beyond d=10^4)")
    parser.add_argument("--phe-sample", type=int, default=32,
                        help="values encrypted with unpacked phe to extrapolate from")
    parser.add_argument("--key-bits", type=int, default=3072)
    parser.add_argument("--paillier-full-max-d", type=int, default=200_000,
                        help="largest d at which the Paillier round runs whole; beyond it, a "
                        "subset runs and the rest is extrapolated (stated in the JSON)")
    parser.add_argument("--paillier-subset", type=int, default=128,
                        help="ciphertexts per client in the measured Paillier subset")
    parser.add_argument("--repeat", type=int, default=3,
                        help="repeats of every CKKS phase, fastest kept (Paillier: 1)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: perf_counter; cpu: this process's CPU time (process_time), "
                        "robust to other jobs on a shared machine (CKKS part only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.clock == "cpu" and "paillier" in args.parts:
        parser.error("--clock cpu needs --parts ckks: the phe column comes from "
                     "secureagg.bench.he_peers, which times wall seconds (perf_counter) only")
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    grid = QUICK_GRID if args.quick else FULL_GRID
    ds = args.grid_d or grid["d"]
    ns = args.grid_n or grid["n"]
    results = []
    started = time.time()
    for d in ds:
        for n in ns:
            row: dict[str, Any] = {"d": d, "n": n}
            log(f"config d={d} n={n}")
            if "ckks" in args.parts:
                sample = args.client_sample or (n if n * d <= 2_000_000 else 4)
                row["ckks"] = bench_ckks(n=n, d=d, sample=sample, seed=args.seed,
                                         repeat=args.repeat)
            if "paillier" in args.parts:
                pd = QUICK_PAILLIER_D if args.quick else d
                if pd <= args.paillier_full_max_d:
                    sample = args.client_sample or (min(n, 3) if pd <= 10_000 else 1)
                    row["paillier"] = bench_paillier(n=n, d=pd, sample=sample,
                                                     phe_sample=args.phe_sample, seed=args.seed,
                                                     key_bits=args.key_bits)
                else:
                    row["paillier"] = bench_paillier_extrapolated(
                        n=n, d=pd, subset_ciphertexts=args.paillier_subset,
                        phe_sample=args.phe_sample, seed=args.seed, key_bits=args.key_bits)
                row["paillier_d"] = pd
                if args.quick:  # smoke-test the extrapolation path too
                    row["paillier_extrapolated_smoke"] = bench_paillier_extrapolated(
                        n=n, d=QUICK_PAILLIER_EXTRAPOLATED_D, subset_ciphertexts=8,
                        phe_sample=4, seed=args.seed, key_bits=args.key_bits)
            results.append(row)
    report = {
        "benchmark": "bench_he",
        "quick": args.quick,
        "clock": ("process_time: CPU seconds of this process (user + system)" if args.clock == "cpu"
                  else "perf_counter: wall seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "load_average": list(os.getloadavg())},
        "seconds": time.time() - started,
        "results": results,
        "targets": targets(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    print()
    for t in report["targets"]:
        measured = t["measured"]
        shown = f"{measured:.3g}" if isinstance(measured, float) else str(measured)
        print(f"  {'MET ' if t['met'] else 'MISS'}  {t['name']}: {shown} (target {t['target']})")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
