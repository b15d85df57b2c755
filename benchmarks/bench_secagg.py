"""Benchmark of SecAgg / SecAgg+ (issue 3): per-stage costs against a measured floor model.

What it measures, for each configuration of the grid (protocol x n x d x dropout):

* one seeded round of ``sa.simulate`` with random float32 updates in [-1, 1], a random
  ``dropout`` fraction of the clients dropped at the ``"masked"`` stage (they shared their keys,
  so the server must recover and remove their pairwise masks: the costly case for the server);
* per stage (advertise/share/masked/unmask), from ``res.metrics``: client seconds (mean per active
  client and max), server seconds, bytes up and down per client;
* the floor model of ``ANCHORS.md`` with unit costs **measured on this machine in the same run**
  at the same ``d`` (median of several repeats), and the ratio measured / floor::

      floor_client = t_quant + (k + 1) t_mask + 2k t_agree + 2 t_share(k, t)
      floor_server = |U3| t_add + |U3| t_mask + P t_mask

  with ``P`` the number of (client dropped at "masked", surviving neighbour) pairs (the unit
  costs, the formulas and ``P`` come from :mod:`secureagg.bench.floor`);
* the server's peak memory, measured in a separate process that rebuilds only the server and
  replays the recorded uplink messages one at a time (n = 50 and n = 500, same d);
* if ``flwr`` is importable, Flower's SecAgg+ mask PRG and Shamir sharing beside ours.

Every simulation is seeded (``seed=``) so the numbers are reproducible; seeded keys and masks are
not secret, which is fine for a benchmark and recorded as ``"seeded": true``. Configurations whose
estimated time (from the floor model) exceeds ``--max-config-seconds`` or whose estimated memory
exceeds ``--max-config-gb`` are skipped and recorded as skipped, never with a made-up figure.

Usage::

    python benchmarks/bench_secagg.py --quick                  # smoke check, well under a minute
    python benchmarks/bench_secagg.py                          # the full grid (expensive)
    python benchmarks/bench_secagg.py --grid-n 100 --grid-d 1000000 --grid-dropout 0.1 \\
        --protocols secagg+                                    # one configuration
    python benchmarks/bench_secagg.py --parts memory --memory-d 100000

Results go to ``--out`` (default ``benchmarks/results/secagg.json``); progress to stderr.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import secureagg as sa  # noqa: E402
from secureagg.bench.floor import (  # noqa: E402
    FLOOR_FORMULA,
    dropped_neighbour_pairs,
    floor_seconds,
    measure_unit_costs,
    median_seconds,
)
from secureagg.bench.output import machine_info as _machine_info  # noqa: E402
from secureagg.crypto import labels, prg, shamir  # noqa: E402
from secureagg.errors import ProtocolError, SecureAggError  # noqa: E402
from secureagg.protocols.secagg.context import RoundContext  # noqa: E402
from secureagg.protocols.secagg.server import SecAggServer  # noqa: E402
from secureagg.transport.codec import decode  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "secagg.json"
FULL_GRID = {"n": [10, 100, 500], "d": [100_000, 1_000_000], "dropout": [0.0, 0.1, 0.3]}
QUICK_GRID = {"n": [10, 50], "d": [10_000], "dropout": [0.0, 0.1]}
PROTOCOLS = ["secagg", "secagg+"]
DROP_STAGE = "masked"
FLOWER_MOD_RANGE = 1 << 32  # Flower's default SecAgg+ modulus range
TARGET_N, TARGET_D, TARGET_PROTOCOL = 100, 1_000_000, "secagg+"
_RECORD = struct.Struct(">BII")  # stage index, sender id, message length
_MIB = 1024 * 1024


_T0 = time.perf_counter()


def _log(text: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {text}", file=sys.stderr, flush=True)


def _interleaved(
    contenders: dict[str, Callable[[], object]], *, repeats: int, budget: float = 0.02
) -> dict[str, float]:
    """Median seconds per call of each contender, timed round-robin (one batch of each per
    round, ``repeats`` rounds) so that load drift on a shared machine hits all of them alike."""
    numbers = {}
    for name, fn in contenders.items():
        t0 = time.perf_counter()
        fn()
        numbers[name] = max(1, min(200, int(budget / max(time.perf_counter() - t0, 1e-7))))
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            for _ in range(numbers[name]):
                fn()
            samples[name].append((time.perf_counter() - t0) / numbers[name])
    return {name: statistics.median(v) for name, v in samples.items()}


def _seed_for(*parts: object) -> int:
    """A stable per-configuration seed, so that subsets of the grid reproduce the same rounds."""
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(b"bench_secagg/" + text).digest()[:8], "big")


def _aggregate_digest(arrays: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()


def _make_agg(protocol: str, n: int, dropout: float = 0.0) -> Any:
    # Parameters chosen for the dropout the configuration injects (at least the default 10%),
    # as a user expecting that dropout would configure them.
    return sa.make_aggregator(protocol, num_clients=n, clip=1.0, dropout_rate=max(0.1, dropout))


# ------------------------------------------------------------------------------ machine info


def machine_info() -> dict[str, Any]:
    """The package's machine facts (secureagg.bench.output), plus Flower's version."""
    info = _machine_info()
    flwr = _import_flower()
    info["flwr"] = flwr[0].__version__ if flwr is not None else None
    return info


# -------------------------------------------------------------------------------- estimates


def estimate_config(
    c: dict[str, Any], *, n: int, d: int, dropout: float, gen_seconds: float
) -> dict[str, float]:
    """Wall time and memory of one simulated round, from the floor model plus the driver's copies.

    The simulator runs every client in this one process, so the time is n client floors plus the
    server floor, plus per client: drawing the update, the aggregator's float64 copy, the codec's
    encode/decode of the masked vector (~4 vector passes), and the agreements the floor model does
    not count (the client does ~4 X25519 per neighbour, the floor counts 2); for the server, its
    Shamir reconstructions (~5 splits' worth each). Memory: the float32
    updates, the aggregator's float64 copies and the masked vectors in flight (n * d * 16 bytes).
    """
    k = c["k"]
    dropped = round(dropout * n)
    survivors = n - dropped
    pairs = dropped * k * (survivors / max(n - 1, 1))
    fc, fs = floor_seconds(c, survivors=survivors, pairs=round(pairs))
    per_client = 1.2 * fc + 4 * c["t_add"] + 2 * k * c["t_agree"] + gen_seconds
    # The server's Shamir reconstructions (with the consistency check of the extra shares) cost
    # a few splits each; they are not in the floor model but dominate at small d.
    server = 1.2 * fs + 5 * n * c["t_share"]
    seconds = n * per_client + server
    memory = n * d * 16 + 64 * _MIB
    return {"seconds": seconds, "memory_gb": memory / 1024**3, "expected_pairs": pairs}


# --------------------------------------------------------------------------------- the grid


def _updates(n: int, d: int, seed: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.random(d, dtype=np.float32)
        x *= 2
        x -= 1
        out.append([x])
    return out


def _dropped(n: int, dropout: float, seed: int) -> dict[int, str]:
    count = round(dropout * n)
    rng = np.random.default_rng(seed + 1)
    ids = rng.choice(n, size=count, replace=False) if count else []
    return {int(u): DROP_STAGE for u in sorted(ids)}


def _stage_table(res: Any) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Per-stage figures from res.metrics; the active clients of a stage are those who sent."""
    stages = res.metrics["stages"]
    senders: dict[str, set[int]] = {}
    for e in res.transcript:
        senders.setdefault(e.stage, set()).add(e.sender)
    recipients: dict[str, set[int]] = {}
    for e in res.downlink:
        recipients.setdefault(e.stage, set()).add(e.recipient)
    table: dict[str, dict[str, Any]] = {}
    client_mean_total = 0.0
    upload_full = 0.0
    for stage, row in stages.items():
        active = len(senders.get(stage, ()))
        got = len(recipients.get(stage, ()))
        mean = row["client_seconds_total"] / active if active else 0.0
        up = row["bytes_up"] / active if active else 0.0
        table[stage] = {
            "active_clients": active,
            "client_seconds_mean": mean,
            "client_seconds_max": row["client_seconds_max"],
            "client_seconds_total": row["client_seconds_total"],
            "server_seconds": row["server_seconds"],
            "codec_seconds": row["codec_seconds"],
            "bytes_up_per_client": up,
            "bytes_down_per_client": row["bytes_down"] / got if got else 0.0,
            "bytes_up": row["bytes_up"],
            "bytes_down": row["bytes_down"],
        }
        client_mean_total += mean
        upload_full += up
    everyone = set().union(*senders.values()) if senders else set()
    totals = {
        "client_seconds_mean": client_mean_total,
        "client_seconds_max": res.metrics["totals"]["client_seconds_max"],
        "server_seconds": res.metrics["totals"]["server_seconds"],
        "codec_seconds": res.metrics["totals"]["codec_seconds"],
        "setup_seconds": res.metrics["setup_seconds"],
        # Upload of a client that took part in every stage (sum of per-stage means) ...
        "upload_per_full_client": upload_full,
        # ... and total uplink bytes over every client that sent anything.
        "upload_per_sender": res.metrics["totals"]["bytes_up"] / max(len(everyone), 1),
    }
    return table, totals


def run_config(
    protocol: str, n: int, d: int, dropout: float, *, repeats: int, args: argparse.Namespace
) -> dict[str, Any]:
    entry: dict[str, Any] = {"protocol": protocol, "n": n, "d": d, "dropout": dropout}
    agg = _make_agg(protocol, n, dropout)
    params = agg.parameters()
    entry["k"], entry["t"] = agg.params.degree, agg.params.threshold
    entry["parameters"] = params
    costs = measure_unit_costs(
        agg.encoder, d, k=agg.params.degree, t=agg.params.threshold, repeats=repeats
    )
    gen = median_seconds(lambda: _updates(1, d, 0), repeats=3)
    est = estimate_config(costs, n=n, d=d, dropout=dropout, gen_seconds=gen)
    entry["estimated_seconds"] = est["seconds"]
    entry["estimated_memory_gb"] = est["memory_gb"]
    entry["unit_costs"] = costs
    if args.dry_run:
        entry.update(skipped=True, reason="--dry-run: estimate only, nothing simulated")
        return entry
    if est["seconds"] > args.max_config_seconds:
        entry.update(
            skipped=True,
            reason=f"estimated {est['seconds']:.0f} s > --max-config-seconds "
            f"{args.max_config_seconds:g} (floor model with this run's unit costs)",
        )
        return entry
    if est["memory_gb"] > args.max_config_gb:
        entry.update(
            skipped=True,
            reason=f"estimated {est['memory_gb']:.1f} GB > --max-config-gb {args.max_config_gb:g}",
        )
        return entry
    seed = _seed_for(protocol, n, d, dropout, args.seed)
    updates = _updates(n, d, seed)
    drops = _dropped(n, dropout, seed)
    entry["seed"] = seed
    entry["dropped_at_masked"] = len(drops)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sa.SeededRunWarning)
            res = sa.simulate(agg, updates, dropouts=drops, seed=seed)
    except SecureAggError as exc:
        entry.update(skipped=False, error=f"{type(exc).__name__}: {exc}")
        entry["wall_seconds"] = time.perf_counter() - t0
        return entry
    entry["wall_seconds"] = time.perf_counter() - t0
    entry["skipped"] = False
    entry["seeded"] = bool(res.seeded)
    u3 = res.details["u3"]
    entry["survivors"] = len(u3)
    entry["rejected"] = len(res.metrics["rejected"])
    entry["client_aborts"] = len(res.metrics["client_aborts"])
    # Correctness: the decoded sum against the float64 sum over U3, within the rounding bound.
    expected = np.zeros(d, dtype=np.float64)
    for u in u3:
        expected += updates[u][0]
    err = float(np.max(np.abs(res.aggregate[0] - expected)))
    bound = float(agg.error_bound(survivors=len(u3)))
    entry["max_abs_error"], entry["error_bound"], entry["correct"] = err, bound, err <= bound
    del expected, updates
    pairs = dropped_neighbour_pairs(agg, res)
    entry["dropped_surviving_neighbour_pairs"] = pairs
    stages, totals = _stage_table(res)
    entry["stages"], entry["totals"] = stages, totals
    fc, fs = floor_seconds(costs, survivors=len(u3), pairs=pairs)
    payload = 4 * d
    entry["floor"] = {"client_seconds": fc, "server_seconds": fs}
    entry["ratio"] = {
        "client_mean_over_floor": totals["client_seconds_mean"] / fc,
        "client_max_over_floor": totals["client_seconds_max"] / fc,
        "server_over_floor": totals["server_seconds"] / fs if fs else None,
        "upload_over_32bit_payload": totals["upload_per_full_client"] / payload,
        "upload_per_sender_over_32bit_payload": totals["upload_per_sender"] / payload,
    }
    del res
    gc.collect()
    return entry


# ------------------------------------------------------------------------------ memory replay


def _write_replay(
    path: Path, res: Any, *, protocol: str, n: int, d: int, dropout: float, params: Any
) -> None:
    stages: list[str] = []
    for e in res.transcript:
        if e.stage not in stages:
            stages.append(e.stage)
    header = {
        "protocol": protocol,
        "n": n,
        "d": d,
        "dropout": dropout,
        "session_id": res.session_id.hex(),
        "round_id": res.round_id,
        "parameters": params,
        "stages": stages,
        "messages": len(res.transcript),
        "aggregate_sha256": _aggregate_digest(res.aggregate),
        "rejected": len(res.metrics["rejected"]),
    }
    raw = json.dumps(header).encode()
    with open(path, "wb") as fh:
        fh.write(struct.pack(">I", len(raw)))
        fh.write(raw)
        for entry, data in zip(res.transcript, res.raw_uplink, strict=True):
            fh.write(_RECORD.pack(stages.index(entry.stage), entry.sender, len(data)))
            fh.write(data)


def _rss_kib() -> int:
    """Current resident set size in KiB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError):
        return 0


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark to its current RSS (Linux >= 4.0), so that
    ru_maxrss afterwards is the peak *since now*, not a transient of the imports."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def memory_child(path: str, mode: str) -> dict[str, Any]:
    """Rebuild only the server, replay the recorded uplink one message at a time, measure."""
    with open(path, "rb") as fh:
        (hlen,) = struct.unpack(">I", fh.read(4))
        header = json.loads(fh.read(hlen))
        agg = _make_agg(header["protocol"], header["n"], header["dropout"])
        mine = json.loads(json.dumps(agg.parameters()))
        if mine != header["parameters"]:
            diff = sorted(k for k in set(mine) | set(header["parameters"])
                          if mine.get(k) != header["parameters"].get(k))
            raise SystemExit(
                f"the child's aggregator parameters differ from the parent's in {diff} (was "
                "the library edited during the run?)"
            )
        ctx = RoundContext(
            params=agg.params,
            session_id=bytes.fromhex(header["session_id"]),
            round_id=header["round_id"],
            encoder=agg.encoder,
            shapes=((header["d"],),),
            weighted=False,
            registry=None,
        )
        server = SecAggServer(ctx, model_digest=agg.model_digest)
        stages = header["stages"]
        gc.collect()
        hwm_reset = _reset_peak_rss()
        rss_before = _rss_kib()
        maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if mode == "tracemalloc":
            tracemalloc.start()
        t0 = time.perf_counter()
        server.start()
        fed = rejected = 0
        while True:
            head = fh.read(_RECORD.size)
            if not head:
                break
            stage_index, sender, length = _RECORD.unpack(head)
            data = fh.read(length)
            stage = stages[stage_index]
            while server.stage != stage and not server.finished:
                server.end_stage()
            try:
                server.receive(sender, decode(data))
            except ProtocolError:
                rejected += 1
            del data
            fed += 1
        while not server.finished:
            server.end_stage()
        seconds = time.perf_counter() - t0
        traced = tracemalloc.get_traced_memory()[1] if mode == "tracemalloc" else None
        if mode == "tracemalloc":
            tracemalloc.stop()
        maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcome = server.result()
    return {
        "mode": mode,
        "messages_fed": fed,
        "rejected": rejected,
        "replay_seconds": seconds,
        "peak_reset_before_feeding": hwm_reset,
        "rss_before_kib": rss_before,
        "maxrss_before_kib": maxrss_before,
        "maxrss_after_kib": maxrss_after,
        "peak_increase_kib": maxrss_after - maxrss_before,
        "tracemalloc_peak_bytes": traced,
        "aggregate_sha256": _aggregate_digest(outcome.aggregate),
        "survivors": len(outcome.survivor_ids),
    }


def _run_child(path: Path, mode: str) -> dict[str, Any]:
    # Through /bin/sh, which forks the child: a child exec'd straight from this (large) process
    # inherits its peak RSS in ru_maxrss (Linux keeps the pre-exec high-water mark in the signal
    # struct), which would hide the replay's own peak.
    cmd = ["/bin/sh", "-c", '"$0" "$@"; exit $?', sys.executable, str(Path(__file__).resolve()),
           "--memory-child", str(path), "--memory-mode", mode]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run_memory(
    ns: Sequence[int], d: int, *, protocol: str, dropout: float, args: argparse.Namespace
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "protocol": protocol,
        "d": d,
        "dropout_at_masked": dropout,
        "method": "parent: simulate(keep_raw=True), uplink bytes + stage to a temp file; child "
        "(fresh interpreter, forked through /bin/sh so that it does not inherit the parent's "
        "ru_maxrss): RoundContext + SecAggServer only, messages decoded and fed one at a time; "
        "peak = ru_maxrss after feeding - ru_maxrss right before (after imports and server "
        "construction, the high-water mark reset to the current RSS via /proc/self/clear_refs "
        "when possible); tracemalloc peak during feeding in a second child run; the child's "
        "aggregate must equal the parent's (sha256 of the float64 bytes)",
        "runs": {},
    }
    for n in ns:
        _log(f"[memory] {protocol} n={n} d={d} dropout={dropout}: simulating ...")
        agg = _make_agg(protocol, n, dropout)
        seed = _seed_for("memory", protocol, n, d, dropout, args.seed)
        updates = _updates(n, d, seed)
        drops = _dropped(n, dropout, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sa.SeededRunWarning)
            res = sa.simulate(agg, updates, dropouts=drops, seed=seed, keep_raw=True)
        del updates
        run: dict[str, Any] = {
            "k": agg.params.degree,
            "t": agg.params.threshold,
            "survivors": len(res.survivors),
            "dropped": len(drops),
            "messages": len(res.transcript),
            "uplink_bytes": sum(len(b) for b in res.raw_uplink or []),
            "parent_server_seconds": res.metrics["totals"]["server_seconds"],
        }
        parent_digest = _aggregate_digest(res.aggregate)
        with tempfile.TemporaryDirectory(prefix="bench_secagg_") as tmp:
            path = Path(tmp) / "uplink.bin"
            _write_replay(path, res, protocol=protocol, n=n, d=d, dropout=dropout,
                          params=agg.parameters())
            del res
            gc.collect()
            _log(f"[memory] n={n}: replaying {run['messages']} messages in a child process ...")
            rss = _run_child(path, "rss")
            traced = _run_child(path, "tracemalloc")
        run["rss"], run["tracemalloc"] = rss, traced
        run["aggregate_matches_parent"] = (
            rss["aggregate_sha256"] == parent_digest == traced["aggregate_sha256"]
        )
        run["peak_increase_mib"] = rss["peak_increase_kib"] / 1024
        run["tracemalloc_peak_mib"] = traced["tracemalloc_peak_bytes"] / _MIB
        run["vector_mib"] = 4 * d / _MIB
        out["runs"][str(n)] = run
        _log(
            f"[memory] n={n}: peak +{run['peak_increase_mib']:.1f} MiB RSS, tracemalloc "
            f"{run['tracemalloc_peak_mib']:.1f} MiB, matches parent: "
            f"{run['aggregate_matches_parent']}"
        )
    return out


# ------------------------------------------------------------------------------------ Flower


def _import_flower() -> tuple[Any, Any, Any] | None:
    try:
        import flwr
        from flwr.common.secure_aggregation.crypto import shamir as fshamir
        from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    except ImportError:
        return None
    return flwr, fshamir, pseudo_rand_gen


def _flower_one(
    n: int, k: int, t: int, d: int, *, repeats: int, mods: tuple[Any, Any, Any]
) -> dict[str, Any]:
    _, fshamir, pseudo_rand_gen = mods
    seeds = [os.urandom(32) for _ in range(k + 1)]
    acc32 = np.zeros(d, dtype=np.uint32)
    acc64 = np.zeros(d, dtype=np.int64)

    def ours() -> None:
        for s in seeds:
            prg.add_mask(acc32, s, label=labels.PAIRWISE_MASK, context=b"bench")

    def theirs() -> None:
        for s in seeds:
            np.add(acc64, pseudo_rand_gen(s, FLOWER_MOD_RANGE, [(d,)])[0], out=acc64)

    def theirs_gen_only() -> None:
        for s in seeds:
            pseudo_rand_gen(s, FLOWER_MOD_RANGE, [(d,)])

    masks = _interleaved(
        {"ours": ours, "flower": theirs, "flower_gen": theirs_gen_only}, repeats=repeats
    )
    t_ours, t_theirs, t_gen = masks["ours"], masks["flower"], masks["flower_gen"]
    secret = os.urandom(32)
    indices = list(range(1, k + 1))
    ours_shares = shamir.split(secret, threshold=t, indices=indices)
    flower_shares = fshamir.create_shares(secret, t, k)
    ok = (
        shamir.reconstruct(ours_shares[:t]) == secret
        and fshamir.combine_shares(flower_shares[:t]) == secret
    )

    def ours_rec_uncached() -> None:
        shamir.lagrange_coefficients.cache_clear()
        shamir.reconstruct(ours_shares[:t])

    timed = _interleaved(
        {
            "ours_split_seconds": lambda: shamir.split(secret, threshold=t, indices=indices),
            "flower_create_shares_seconds": lambda: fshamir.create_shares(secret, t, k),
            "ours_reconstruct_uncached_seconds": ours_rec_uncached,
            "ours_reconstruct_cached_seconds": lambda: shamir.reconstruct(ours_shares[:t]),
            "flower_combine_shares_seconds": lambda: fshamir.combine_shares(flower_shares[:t]),
        },
        repeats=repeats,
    )
    sh: dict[str, Any] = {
        **timed,
        "both_reconstruct_the_secret": ok,
        "share_bytes_ours": len(ours_shares[0].to_bytes()),
        "share_bytes_flower": len(flower_shares[0]),
    }
    sh["split_ratio_flower_over_ours"] = (
        sh["flower_create_shares_seconds"] / sh["ours_split_seconds"]
    )
    sh["reconstruct_ratio_flower_over_ours_uncached"] = (
        sh["flower_combine_shares_seconds"] / sh["ours_reconstruct_uncached_seconds"]
    )
    comparison = {
        "n": n,
        "k": k,
        "t": t,
        "masks": {
            "count": k + 1,
            "ours_seconds": t_ours,
            "flower_seconds": t_theirs,
            "flower_generation_only_seconds": t_gen,
            "ratio_flower_over_ours": t_theirs / t_ours,
        },
        "shamir": sh,
    }
    _log(
        f"[flower] n={n} k={k} t={t} d={d}: masks ours {t_ours * 1e3:.1f} ms, flower "
        f"{t_theirs * 1e3:.1f} ms; split ours {sh['ours_split_seconds'] * 1e3:.2f} ms, "
        f"flower {sh['flower_create_shares_seconds'] * 1e3:.2f} ms"
    )
    return comparison


def run_flower(
    kts: Sequence[tuple[int, int, int]], d: int, *, repeats: int
) -> dict[str, Any]:
    """Flower's SecAgg+ mask PRG and Shamir beside ours, for each (n, k, t)."""
    mods = _import_flower()
    if mods is None:
        return {"available": False, "note": "flwr not installed"}
    flwr = mods[0]
    out: dict[str, Any] = {
        "available": True,
        "version": flwr.__version__,
        "d": d,
        "mask_note": "one client's k+1 masks of d values, each generated and added into an "
        "accumulator. Flower: pseudo_rand_gen(seed, 2^32, [(d,)]) (numpy RandomState seeded with "
        "32 bits, int64 output) + np.add; ours: prg.add_mask (AES-128-CTR, uint32, in place)",
        "shamir_note": "32-byte secret to k parties, threshold t; reconstruct from t shares. "
        "Flower: create_shares/combine_shares (pycryptodome, 16-byte chunks, thread pool); ours: "
        "shamir.split/reconstruct (GF(2^256+297), pure Python; Lagrange cache cleared for "
        "'uncached')",
        "comparisons": [],
    }
    for n, k, t in kts:
        out["comparisons"].append(_flower_one(n, k, t, d, repeats=repeats, mods=mods))
    return out


# ------------------------------------------------------------------------------------ targets


def _find(configs: list[dict[str, Any]], **want: Any) -> dict[str, Any] | None:
    hits = [
        c for c in configs
        if all(c.get(k) == v for k, v in want.items()) and not c.get("skipped") and "error" not in c
    ]
    hits.sort(key=lambda c: c["dropout"])  # prefer no dropout when the dropout is not fixed
    return hits[0] if hits else None


def _target(desc: str, measured: float | None, limit: float, where: str) -> dict[str, Any]:
    if measured is None:
        return {"target": desc, "measured": None, "met": None,
                "note": f"not measured in this run ({where})"}
    return {"target": desc, "measured": measured, "met": bool(measured <= limit), "where": where}


def evaluate_targets(
    configs: list[dict[str, Any]], memory: dict[str, Any] | None
) -> dict[str, Any]:
    base = {"protocol": TARGET_PROTOCOL, "n": TARGET_N, "d": TARGET_D}
    where = f"{TARGET_PROTOCOL} n={TARGET_N} d={TARGET_D}"
    c_any = _find(configs, **base)
    c_drop = _find(configs, dropout=0.1, **base)
    targets = {
        "client_total_over_floor": _target(
            "client total (mean per client) <= 2x floor",
            c_any["ratio"]["client_mean_over_floor"] if c_any else None, 2.0,
            f"{where} dropout={c_any['dropout']}" if c_any else where,
        ),
        "server_total_over_floor_10pct_dropout": _target(
            "server total with 10% dropout <= 2x floor",
            c_drop["ratio"]["server_over_floor"] if c_drop else None, 2.0,
            f"{where} dropout=0.1",
        ),
        "upload_over_32bit_payload": _target(
            "upload per client <= 1.05x a 32-bit payload (4 d bytes)",
            c_any["ratio"]["upload_over_32bit_payload"] if c_any else None, 1.05,
            f"{where} dropout={c_any['dropout']}" if c_any else where,
        ),
    }
    runs = (memory or {}).get("runs", {})
    if "50" in runs and "500" in runs and runs["50"]["peak_increase_mib"] > 0:
        ratio = runs["500"]["peak_increase_mib"] / runs["50"]["peak_increase_mib"]
        targets["server_peak_memory_500_over_50"] = _target(
            "server peak memory n=500 <= 1.5x n=50", ratio, 1.5,
            f"{memory['protocol']} d={memory['d']} (ru_maxrss increase in a replay child)",
        )
        if runs["50"]["tracemalloc_peak_mib"] > 0:
            targets["server_peak_memory_500_over_50"]["tracemalloc_ratio"] = (
                runs["500"]["tracemalloc_peak_mib"] / runs["50"]["tracemalloc_peak_mib"]
            )
    else:
        targets["server_peak_memory_500_over_50"] = _target(
            "server peak memory n=500 <= 1.5x n=50", None, 1.5, "memory part with n=50 and n=500"
        )
    return targets


# ---------------------------------------------------------------------------------- printing


def _fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1e3:.2f}ms" if x < 1 else f"{x:.2f}s"


def print_report(report: dict[str, Any]) -> None:
    print(f"\nSecAgg benchmark (seeded={report['seeded']}; cpu_count="
          f"{report['machine']['cpu_count']}; floor unit costs measured in this run)")
    for c in report["configs"]:
        head = (f"{c['protocol']:<8} n={c['n']:<4} d={c['d']:<8} drop={c['dropout']:<4} "
                f"k={c['k']:<3} t={c['t']:<3}")
        if c.get("skipped"):
            print(f"{head} SKIPPED: {c['reason']}")
            continue
        if "error" in c:
            print(f"{head} ERROR: {c['error']}")
            continue
        r, f, tot = c["ratio"], c["floor"], c["totals"]
        srv_ratio = f"{r['server_over_floor']:.2f}x" if r["server_over_floor"] else "-"
        print(f"{head} |U3|={c['survivors']:<4} P={c['dropped_surviving_neighbour_pairs']:<6} "
              f"wall {c['wall_seconds']:.1f}s (est {c['estimated_seconds']:.1f}s) "
              f"correct={c['correct']}")
        print(f"    client mean {_fmt_s(tot['client_seconds_mean'])} / floor "
              f"{_fmt_s(f['client_seconds'])} = {r['client_mean_over_floor']:.2f}x  (max "
              f"{_fmt_s(tot['client_seconds_max'])})   server {_fmt_s(tot['server_seconds'])} / "
              f"floor {_fmt_s(f['server_seconds'])} = {srv_ratio}   upload "
              f"{r['upload_over_32bit_payload']:.4f}x of 4d bytes")
        print(f"    {'stage':<10}{'active':>7}{'client mean':>13}{'client max':>12}"
              f"{'server':>11}{'up/client':>13}{'down/client':>13}")
        for stage, s in c["stages"].items():
            print(f"    {stage:<10}{s['active_clients']:>7}{_fmt_s(s['client_seconds_mean']):>13}"
                  f"{_fmt_s(s['client_seconds_max']):>12}{_fmt_s(s['server_seconds']):>11}"
                  f"{s['bytes_up_per_client']:>13,.0f}{s['bytes_down_per_client']:>13,.0f}")
    if report["unit_costs_by_d"]:
        print("\nfloor unit costs (median, this machine, this run):")
        for d, u in report["unit_costs_by_d"].items():
            print(f"    d={d:<8} t_mask {_fmt_s(u['t_mask'])}  t_add {_fmt_s(u['t_add'])}  "
                  f"t_quant {_fmt_s(u['t_quant'])}  t_agree {u['t_agree'] * 1e6:.1f}us  "
                  f"t_share(k={u['k']},t={u['t']}) {_fmt_s(u['t_share'])}")
    mem = report.get("memory")
    if mem:
        print(f"\nserver peak memory ({mem['protocol']}, d={mem['d']}, replay in a child):")
        for n, r in mem["runs"].items():
            print(f"    n={n:<4} ru_maxrss +{r['peak_increase_mib']:.1f} MiB  tracemalloc peak "
                  f"{r['tracemalloc_peak_mib']:.1f} MiB  (one vector {r['vector_mib']:.1f} MiB; "
                  f"replay {r['rss']['replay_seconds']:.2f}s; aggregate matches parent: "
                  f"{r['aggregate_matches_parent']})")
    fl = report.get("flower")
    if fl is not None:
        if not fl.get("available"):
            print(f"\nFlower: {fl['note']}")
        else:
            print(f"\nFlower {fl['version']} vs ours (d={fl['d']}):")
            for cmp_ in fl["comparisons"]:
                m, s = cmp_["masks"], cmp_["shamir"]
                print(f"    n={cmp_['n']} k={cmp_['k']} t={cmp_['t']}: {m['count']} masks ours "
                      f"{_fmt_s(m['ours_seconds'])} flower {_fmt_s(m['flower_seconds'])} "
                      f"({m['ratio_flower_over_ours']:.1f}x); split ours "
                      f"{_fmt_s(s['ours_split_seconds'])} flower "
                      f"{_fmt_s(s['flower_create_shares_seconds'])}; reconstruct ours "
                      f"{_fmt_s(s['ours_reconstruct_uncached_seconds'])} (cached "
                      f"{_fmt_s(s['ours_reconstruct_cached_seconds'])}) flower "
                      f"{_fmt_s(s['flower_combine_shares_seconds'])}")
    print("\ntargets:")
    for name, tg in report["targets"].items():
        measured = "-" if tg["measured"] is None else f"{tg['measured']:.3f}"
        met = {True: "MET", False: "NOT MET", None: "n/a"}[tg["met"]]
        extra = tg.get("where") or tg.get("note", "")
        print(f"    {name:<40} {tg['target']:<58} measured {measured:>7}  {met:<8} {extra}")


# --------------------------------------------------------------------------------------- main


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny grid (n 10,50; d 1e4; dropout 0,0.1), memory at d=1e5")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    p.add_argument("--grid-n", type=_ints, help="comma-separated client counts")
    p.add_argument("--grid-d", type=_ints, help="comma-separated dimensions")
    p.add_argument("--grid-dropout", type=_floats, help="comma-separated dropout fractions")
    p.add_argument("--protocols", type=lambda s: [x for x in s.split(",") if x],
                   help="comma-separated: secagg,secagg+")
    p.add_argument("--parts", type=lambda s: [x for x in s.split(",") if x],
                   default=["grid", "memory", "flower"],
                   help="which parts to run: grid,memory,flower (default all)")
    p.add_argument("--max-config-seconds", type=float, default=180.0,
                   help="skip configurations estimated slower than this (default 180)")
    p.add_argument("--max-config-gb", type=float, default=12.0,
                   help="skip configurations estimated to need more memory (default 12)")
    p.add_argument("--dry-run", action="store_true",
                   help="measure unit costs and print each configuration's estimate; run nothing")
    p.add_argument("--repeats", type=int, help="repeats for unit costs (default 5, quick 3)")
    p.add_argument("--seed", type=int, default=0, help="base seed of the seeded simulations")
    p.add_argument("--memory-n", type=_ints, default=[50, 500], help="default 50,500")
    p.add_argument("--memory-d", type=int, help="default 1e6 (quick: 1e5)")
    p.add_argument("--memory-dropout", type=float, default=0.1,
                   help="fraction dropped at 'masked' in the memory runs (default 0.1)")
    p.add_argument("--memory-protocol", default="secagg+")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    p.add_argument("--memory-mode", default="rss", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    grid = QUICK_GRID if args.quick else FULL_GRID
    args.grid_n = args.grid_n or list(grid["n"])
    args.grid_d = args.grid_d or list(grid["d"])
    args.grid_dropout = args.grid_dropout if args.grid_dropout is not None else grid["dropout"]
    args.protocols = args.protocols or list(PROTOCOLS)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.memory_d = args.memory_d or (100_000 if args.quick else 1_000_000)
    if args.dry_run:
        args.parts = ["grid"]
    bad = [x for x in args.protocols if x not in PROTOCOLS]
    bad += [x for x in args.parts if x not in ("grid", "memory", "flower")]
    if bad:
        p.error(f"unknown protocol or part: {bad}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.memory_mode)))
        return 0
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "secagg",
        "issue": 3,
        "seeded": True,
        "seeded_note": "every simulation runs with seed= (per-configuration seeds derived from "
        "--seed) so that rounds are reproducible; seeded keys and masks are not secret",
        "machine": machine_info(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                 if not k.startswith("memory_child")},
        "drop_stage": DROP_STAGE,
        "floor_model": {
            "client": FLOOR_FORMULA["client"],
            "server": FLOOR_FORMULA["server"] + ", P = #(dropped at masked, surviving "
            "neighbour) pairs",
            "unit_costs": "secureagg.bench.floor.measure_unit_costs: t_mask: prg.add_mask of d "
            "uint32; t_add: np.add(acc, v, out=acc) on d uint32; t_quant: agg.encoder.encode on d "
            "float64; t_agree: keyagree.derive_shared_key (X25519 + HKDF); t_share: shamir.split "
            "of 32 bytes to k indices, threshold t; medians, re-measured before each configuration",
        },
        "unit_costs_by_d": {},
        "configs": [],
    }
    configs: list[dict[str, Any]] = report["configs"]
    if "grid" in args.parts:
        grid = [(proto, n, d, drop) for n in args.grid_n for d in args.grid_d
                for drop in args.grid_dropout for proto in args.protocols]
        for i, (proto, n, d, drop) in enumerate(grid, start=1):
            label = f"[{i}/{len(grid)}] {proto} n={n} d={d} dropout={drop}"
            _log(f"{label}: measuring unit costs ...")
            entry = run_config(proto, n, d, drop, repeats=args.repeats, args=args)
            report["unit_costs_by_d"].setdefault(str(d), entry["unit_costs"])
            if entry.get("skipped"):
                _log(f"{label}: est {entry['estimated_seconds']:.1f}s, "
                     f"{entry['estimated_memory_gb']:.1f} GB: skipped ({entry['reason']})")
            elif "error" in entry:
                _log(f"{label}: error {entry['error']}")
            else:
                ratio = entry["ratio"]
                _log(f"{label}: est {entry['estimated_seconds']:.1f}s, took "
                     f"{entry['wall_seconds']:.1f}s; client {ratio['client_mean_over_floor']:.2f}x"
                     f" floor, server {ratio['server_over_floor'] or 0:.2f}x floor")
            configs.append(entry)
    memory = None
    if "memory" in args.parts:
        memory = run_memory(args.memory_n, args.memory_d, protocol=args.memory_protocol,
                            dropout=args.memory_dropout, args=args)
        report["memory"] = memory
    if "flower" in args.parts:
        kts = []
        for n in sorted(set(args.grid_n)):
            plus = _make_agg("secagg+", n)
            kts.append((n, plus.params.degree, plus.params.threshold))
        report["flower"] = run_flower(kts, max(args.grid_d), repeats=args.repeats)
    report["targets"] = evaluate_targets(configs, memory)
    report["total_seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    print_report(report)
    print(f"\nwrote {args.out} in {report['total_seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
