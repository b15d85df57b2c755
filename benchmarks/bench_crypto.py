"""Crypto-layer benchmark: mask PRG, Flower's mask generator, Shamir sharing, fixed-point encoding.

Usage::

    python benchmarks/bench_crypto.py [--quick] [--out PATH]

Every figure is the median of repeated ``time.perf_counter`` measurements, and every comparison is
measured in the same run, interleaved round by round (each round gives every contender one untimed
warm-up call and then a few timed calls in a row), so that load drift on a shared machine hits all
of them alike while each is timed in its own steady state. Results are printed as a
table and written as JSON (default ``benchmarks/results/crypto.json``); each target appears as
``{"target", "comparison", "measured", "met"}``. Masks, seeds and stochastic rounding use fresh
OS randomness (``"seeded": false``); only the benchmark's input data comes from a fixed numpy seed.

``--quick`` shrinks the sizes (10^5 values, Shamir at n=100 only) for a CI smoke run; its numbers
are not comparable with the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from secureagg.bench.output import machine_info as _machine_info  # noqa: E402
from secureagg.crypto import encoding, labels, prg  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "crypto.json"


# ------------------------------------------------------------------------------------ timing


def compare(
    contenders: dict[str, Callable[[], object]], *, rounds: int, per_round: int
) -> dict[str, float]:
    """Median seconds per call of each contender, timed interleaved: ``rounds`` rounds, each
    calling every contender once untimed (so that its block starts from its own steady state:
    allocator and caches shaped by itself, not by the previous contender) and then ``per_round``
    times timed."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            fn()
            for _ in range(per_round):
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def target(value: float | None, goal: float, comparison: str, unit: str) -> dict[str, Any]:
    if value is None:
        met = False
    elif comparison == ">=":
        met = value >= goal
    else:
        met = value <= goal
    return {"target": goal, "comparison": comparison, "unit": unit, "measured": value, "met": met}


def gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


# --------------------------------------------------------------------------------- sections


def bench_prg(d: int, rounds: int) -> dict[str, Any]:
    """Mask expansion (d uint32 values) vs the raw AES-128-CTR keystream and a numpy add."""
    nbytes = 4 * d
    seed = prg.random_seed()
    key = os.urandom(prg.KEY_BYTES)  # the same cipher as ours (AES-128)
    zeros = bytes(nbytes)
    out = bytearray(nbytes)
    acc = np.zeros(d, dtype=np.uint32)
    other = np.ones(d, dtype=np.uint32)

    def raw_update() -> bytes:
        return Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(zeros)

    def raw_update_into() -> int:
        return Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update_into(zeros, out)

    times = compare(
        {
            "prg.expand": lambda: prg.expand(seed, label=labels.PAIRWISE_MASK, count=d, bits=32),
            "prg.add_mask": lambda: prg.add_mask(acc, seed, label=labels.PAIRWISE_MASK),
            "aes-128-ctr update": raw_update,
            "aes-128-ctr update_into": raw_update_into,
            "numpy add uint32": lambda: np.add(acc, other, out=acc),
        },
        rounds=rounds,
        per_round=5,
    )
    raw = times["aes-128-ctr update_into"]
    result: dict[str, Any] = {"values": d, "bytes": nbytes, "seconds": times}
    result["GBps"] = {name: gbps(nbytes, t) for name, t in times.items()}
    result["throughput_vs_raw_update_into"] = {
        "prg.expand": raw / times["prg.expand"],
        "prg.add_mask": raw / times["prg.add_mask"],
    }
    result["throughput_vs_raw_update"] = {
        "prg.expand": times["aes-128-ctr update"] / times["prg.expand"],
        "prg.add_mask": times["aes-128-ctr update"] / times["prg.add_mask"],
    }
    return result


def bench_flower(d: int, rounds: int) -> dict[str, Any]:
    """Flower's SecAgg+ mask generator on the same output size, if flwr is importable."""
    try:
        import flwr
        from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    except ImportError:
        return {"status": "not installed"}
    seed = prg.random_seed()
    num_range = 2**32  # the modulus of a 32-bit mask, as in our expand(bits=32)
    times = compare(
        {
            "flwr pseudo_rand_gen": lambda: pseudo_rand_gen(seed, num_range, [(d,)]),
            "prg.expand": lambda: prg.expand(seed, label=labels.PAIRWISE_MASK, count=d, bits=32),
        },
        rounds=rounds,
        per_round=3,
    )
    return {
        "status": "measured",
        "flwr_version": flwr.__version__,
        "values": d,
        "call": "pseudo_rand_gen(seed32bytes, 2**32, [(d,)]) (numpy RandomState, int64 output)",
        "seconds": times,
        "speedup_ours": times["flwr pseudo_rand_gen"] / times["prg.expand"],
    }


def bench_shamir(sizes: list[tuple[int, int]], rounds: int) -> dict[str, Any]:
    """Share and reconstruct (cached Lagrange coefficients) a 32-byte secret."""
    try:
        from secureagg.crypto import shamir
    except ImportError as exc:
        return {"status": f"not available: {exc}"}
    results: dict[str, Any] = {"status": "measured"}
    for n, t in sizes:
        secret = os.urandom(32)
        indices = list(range(1, n + 1))
        shares = shamir.split(secret, threshold=t, indices=indices)
        subset = shares[:t]
        if shamir.reconstruct(subset) != secret:
            raise RuntimeError(f"Shamir round trip failed at n={n}, t={t}")
        per_round = 5 if n <= 100 else 1
        times = compare(
            {
                "split": lambda s=secret, t=t, i=indices: shamir.split(s, threshold=t, indices=i),
                "reconstruct": lambda sub=subset: shamir.reconstruct(sub),
            },
            rounds=rounds,
            per_round=per_round,
        )
        results[f"n{n}_t{t}"] = {
            "n": n,
            "t": t,
            "share_ms": times["split"] * 1e3,
            "reconstruct_ms": times["reconstruct"] * 1e3,
        }
    return results


def bench_encoding(d: int, rounds: int) -> dict[str, Any]:
    """FixedPointEncoder.encode of d values vs a plain numpy clip, scale and round."""
    enc = encoding.FixedPointEncoder(clip=3.0, num_summands=100, bits=32)
    scale = enc.effective_scale
    data = np.random.default_rng(0).standard_normal(d)  # N(0,1): ~0.27% beyond the clip
    results: dict[str, Any] = {
        "values": d,
        "encoder": "FixedPointEncoder(clip=3.0, num_summands=100, bits=32), fresh keystream",
        "baseline": "the faster of np.rint(np.clip(x, -3.0, 3.0) * scale) (allocating) and "
        "the same three ufuncs writing into a preallocated buffer (out=)",
    }
    for dtype in ("float32", "float64"):
        x = data.astype(dtype)
        small = (x * 0.25).astype(dtype)  # nothing clipped
        buf = np.empty_like(x)

        def in_place(x: np.ndarray = x, buf: np.ndarray = buf) -> np.ndarray:
            np.clip(x, -3.0, 3.0, out=buf)
            np.multiply(buf, scale, out=buf)
            return np.rint(buf, out=buf)

        times = compare(
            {
                "numpy clip*scale+rint": lambda x=x: np.rint(np.clip(x, -3.0, 3.0) * scale),
                "numpy in place (out=)": in_place,
                "encode": lambda x=x: enc.encode(x),
                "encode (nothing clipped)": lambda y=small: enc.encode(y),
            },
            rounds=rounds,
            per_round=5,
        )
        # The stricter comparison: against whichever numpy formulation is faster in this run.
        base = min(times["numpy clip*scale+rint"], times["numpy in place (out=)"])
        results[dtype] = {
            "seconds": times,
            "clipped": enc.encode(x).clipped,
            "ratio": times["encode"] / base,
            "ratio_nothing_clipped": times["encode (nothing clipped)"] / base,
        }
    return results


# --------------------------------------------------------------------------------------- main


def machine_info() -> dict[str, Any]:
    """The package's machine facts (secureagg.bench.output)."""
    return _machine_info()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a CI smoke run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = parser.parse_args(argv)

    d = 10**5 if args.quick else 10**6
    rounds = 3 if args.quick else 8
    shamir_sizes = [(100, 51)] if args.quick else [(100, 51), (1000, 501)]

    started = time.time()
    prg_res = bench_prg(d, rounds)
    flower_res = bench_flower(d, rounds)
    shamir_res = bench_shamir(shamir_sizes, rounds)
    enc_res = bench_encoding(d, rounds)

    n100 = shamir_res.get("n100_t51", {})
    targets = {
        "prg_expand_throughput_vs_raw_keystream": target(
            prg_res["throughput_vs_raw_update_into"]["prg.expand"], 0.5, ">=", "fraction"
        ),
        "flower_mask_generation_slowdown_vs_ours": target(
            flower_res.get("speedup_ours"), 5.0, ">=", "x"
        ),
        "shamir_share_n100_t51": target(n100.get("share_ms"), 2.0, "<=", "ms"),
        "shamir_reconstruct_n100_t51": target(n100.get("reconstruct_ms"), 0.1, "<=", "ms"),
        "encode_float32_vs_numpy": target(enc_res["float32"]["ratio"], 3.0, "<=", "x"),
        "encode_float64_vs_numpy": target(enc_res["float64"]["ratio"], 3.0, "<=", "x"),
    }
    report = {
        "benchmark": "crypto",
        "seeded": False,
        "quick": args.quick,
        "started_unix": started,
        "wall_seconds": time.time() - started,
        "machine": machine_info(),
        "method": (
            "median of time.perf_counter per call; contenders interleaved per round, each "
            "round: one untimed warm-up call, then a block of timed calls"
        ),
        "prg": prg_res,
        "flower": flower_res,
        "shamir": shamir_res,
        "encoding": enc_res,
        "targets": targets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(report)
    print(f"\nwrote {args.out}")
    return 0


def print_table(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"crypto benchmark ({'quick' if r['quick'] else 'full'}); {m['cpu_count']} CPUs, "
          f"{m['cpu']}; numpy {m['numpy']}, cryptography {m['cryptography']}; seeded=false")
    p = r["prg"]
    print(f"\nPRG: {p['values']:,} uint32 values ({p['bytes'] / 1e6:.1f} MB)")
    for name, sec in p["seconds"].items():
        print(f"  {name:28s} {sec * 1e3:9.3f} ms  {p['GBps'][name]:6.2f} GB/s")
    f = r["flower"]
    print("\nFlower mask generator")
    if f["status"] == "measured":
        for name, sec in f["seconds"].items():
            print(f"  {name:28s} {sec * 1e3:9.3f} ms")
        print(f"  ours is {f['speedup_ours']:.1f}x faster (flwr {f['flwr_version']})")
    else:
        print(f"  {f['status']}")
    s = r["shamir"]
    print("\nShamir, 32-byte secret")
    for key, row in s.items():
        if isinstance(row, dict):
            print(f"  n={row['n']:5d} t={row['t']:4d}  share {row['share_ms']:9.3f} ms  "
                  f"reconstruct {row['reconstruct_ms']:8.4f} ms")
        elif key == "status" and row != "measured":
            print(f"  {row}")
    e = r["encoding"]
    print(f"\nEncoding {e['values']:,} values ({e['encoder']})")
    for dtype in ("float32", "float64"):
        row = e[dtype]
        sec = row["seconds"]
        print(f"  {dtype}: numpy {sec['numpy clip*scale+rint'] * 1e3:7.3f} ms "
              f"(in place {sec['numpy in place (out=)'] * 1e3:7.3f} ms), encode "
              f"{sec['encode'] * 1e3:7.3f} ms ({row['ratio']:.2f}x; {row['clipped']} clipped), "
              f"nothing clipped {sec['encode (nothing clipped)'] * 1e3:7.3f} ms "
              f"({row['ratio_nothing_clipped']:.2f}x)")
    print("\nTargets")
    for name, t in r["targets"].items():
        measured = "n/a" if t["measured"] is None else f"{t['measured']:.4g}"
        print(f"  {'MET ' if t['met'] else 'MISS'} {name:42s} {measured:>9s} "
              f"(target {t['comparison']} {t['target']:g} {t['unit']})")


if __name__ == "__main__":
    raise SystemExit(main())
