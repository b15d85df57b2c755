"""``secureagg demo``: the command (its options, ``--selftest``, and the two demos it starts).

The demos themselves live in :mod:`secureagg.demos` (:mod:`secureagg.demos.federated` and
:mod:`secureagg.demos.split`); this module checks the options, refuses those that do not apply to
the chosen mode, and runs ``--selftest`` (the cryptographic self-test and one SecAgg+ round
explained, written to a run directory through :class:`~secureagg.audit.rundir.RunDirectory`).

The federated demo is what most users come for: ten silos holding non-IID slices of a real data set
(Dirichlet label skew, alpha 0.5), an ordinary PyTorch model and training loop, and
:class:`~secureagg.fl.FederatedRun` aggregating the clients' updates with SecAgg+ (by default)
so that the server only sees masked vectors - with DP-SGD on the clients and distributed DP in
the sum unless ``--no-dp``. Per round it prints accuracy, epsilon spent, bytes and the time of
secure aggregation; at the end it compares with plaintext FedAvg on the same split and says where
the run directory is. It first self-tests the cryptographic primitives (one line; ``--selftest``
prints every check and demonstrates one SecAgg+ round from the bytes the server received).
``--seed S`` makes a run reproducible exactly (keys, masks, noise, dropouts, training order), says
so on stderr and records ``seeded`` and the seed in the run directory: NOT private. Under SecAgg
or SecAgg+ in curious mode the output and ``comparison.json`` say what that mode gives up.

Exit codes: 0 success, 1 a self-test check failed, 2 bad arguments, a missing dependency or a
``--selftest`` round over its limits, 4 an internal error.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import time
import warnings
from typing import Any

import numpy as np

import secureagg
from secureagg.aggregators import make_aggregator
from secureagg.audit.rundir import CONFIG, RESULT, RunDirectory, transcript_records
from secureagg.cli.common import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    _check_out,
    _CliError,
    _error_bound,
    _run_dir,
    _warn,
    seeded_warning,
    threat_model_note,
)
from secureagg.cli.estimate import estimate_round, limits_from_args
from secureagg.crypto import labels, prg
from secureagg.errors import ConfigurationError, MissingDependencyError
from secureagg.selftest import run_selftest
from secureagg.transport import SeededRunWarning, derive_sim_seed, simulate
from secureagg.transport.codec import decode

__all__ = ["cmd_demo"]


def _chi_square_top_byte(values: np.ndarray[Any, Any]) -> float:
    top = (values.astype(np.uint64) >> np.uint64(values.dtype.itemsize * 8 - 8)).astype(np.int64)
    counts = np.bincount(top, minlength=256).astype(float)
    expected = counts.sum() / 256
    return float(((counts - expected) ** 2 / expected).sum())


def _selftest_aggregator(args: argparse.Namespace) -> Any:
    """The SecAgg+ aggregator of ``--selftest``, refused before anything runs if the round
    cannot fit the memory and time limits."""
    problems: list[str] = []
    if args.dim < 1:
        problems.append(f"--dim must be >= 1, got {args.dim}")
    limits = limits_from_args(args, problems)
    if problems:
        raise ConfigurationError(problems)
    agg = make_aggregator(
        "secagg+", num_clients=args.clients, clip=1.0, threat=args.threat or "curious"
    )
    dropped = min(len(agg.dropout_stages), args.clients // 5)
    estimate = estimate_round(
        agg.parameters(), num_clients=args.clients, dim=args.dim, dropout=dropped / args.clients
    )
    too_big = limits.problems(estimate, lower="--dim or --clients")
    if too_big:
        raise ConfigurationError(too_big)
    return agg


def _secagg_round(args: argparse.Namespace, agg: Any) -> bool:
    n, d = args.clients, args.dim
    p = agg.parameters()
    print(f"\nSecAgg+ round: {n} clients, {d} values each, threat model '{p['threat']}'")
    note = threat_model_note(p)
    if note is not None:
        print(f"  WARNING: {note}")
    print(
        f"  parameters chosen: degree k={p['degree']}, threshold t={p['threshold']}, "
        f"{p['bits']}-bit masks, clip {p['clip']}"
    )
    print(
        f"  targets: 40-bit security (achieved bound {p['security_failure']:.1e}), "
        f"round failure probability {p['failure_probability']:.1e} at 10% dropout"
    )

    master = (
        prg.random_seed() if args.seed is None else derive_sim_seed(args.seed, context=b"demo")
    )
    stream = prg.Keystream(master, label=labels.SIM_DRIVER, context=b"demo/data")
    data = (stream.uniform(n * d).reshape(n, d) * 1.6 - 0.8).astype(np.float32)
    data[0, :] = 0.5  # client 0 sends a constant vector: any leak would be obvious
    stages = list(agg.dropout_stages)
    dropouts = {n - 1 - i: stages[i % len(stages)] for i in range(min(len(stages), n // 5))}
    print("  dropouts: " + ", ".join(f"client {c} silent from '{s}'" for c, s in dropouts.items()))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeededRunWarning)  # said once, on stderr, by cmd_demo
        res = simulate(
            agg, [[row] for row in data], dropouts=dropouts, keep_raw=True, seed=args.seed
        )
    raw = res.raw_uplink or []
    masked = [
        (e.sender, raw[i]) for i, e in enumerate(res.transcript) if e.kind == "secagg/masked-input"
    ]
    sender, wire = next((s, b) for s, b in masked if s == 0)
    values = getattr(decode(wire), "values")  # noqa: B009 - a MaskedInput's field
    chi2 = _chi_square_top_byte(values)
    print(f"\n  what the server received from client {sender} (whose data is 0.5 everywhere):")
    print(f"    first values: {values[:4].tolist()} ...")
    print(f"    top-byte chi-square {chi2:.0f} (uniform: about 255, under 370 at p=1e-6)")

    survivors = list(res.survivors)
    expected = np.clip(data[survivors].astype(np.float64), -1, 1).sum(axis=0)
    error = float(np.max(np.abs(res.aggregate[0] - expected)))
    bound = _error_bound(agg, len(survivors))
    sent: dict[int, int] = {}
    for entry in res.transcript:
        sent[entry.sender] = sent.get(entry.sender, 0) + entry.size
    up_per_client = float(np.mean([sent[u] for u in survivors]))
    print(
        f"\n  survivors in the sum: {len(survivors)} of {n} "
        f"(clients silent only at 'unmask' still count)"
    )
    print(
        f"  aggregate vs plaintext sum of the survivors: max error {error:.2e} "
        f"(stated bound {bound:.2e})"
    )
    print(
        f"  upload per surviving client, all stages: {up_per_client:,.0f} bytes = "
        f"{up_per_client / (4 * d):.3f}x a 32-bit payload"
    )
    for stage, row in res.metrics["stages"].items():
        print(
            f"    {stage:<11} client {row['client_seconds_max'] * 1e3:8.2f} ms (max)   "
            f"server {row['server_seconds'] * 1e3:8.2f} ms   up {int(row['bytes_up']):>10,} B"
        )

    run = RunDirectory(_run_dir(args.out, "demo"))
    run_dir = run.path
    run.write_json(
        CONFIG,
        {
            "command": "demo",
            "protocol": "secagg+",
            "clients": n,
            "dim": d,
            "threat": p["threat"],
            "seeded": args.seed is not None,
            "seed": args.seed,
            "dropouts": {str(k): v for k, v in dropouts.items()},
            "parameters": p,
            "threat_model_note": note,
            "secureagg_version": secureagg.__version__,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    ok = error <= bound and chi2 < 370.0
    run.write_json(
        RESULT,
        {
            "status": "ok" if ok else "check_failed",
            "survivors": survivors,
            "max_abs_error": error,
            "error_bound": bound,
            "within_bound": error <= bound,
            "masked_input_chi_square": chi2,
            "seeded": res.seeded,
            "seed": args.seed,
            "metrics": res.metrics,
        },
    )
    run.write_transcript(transcript_records(res.transcript, res.downlink, res.peer_traffic))
    run.seal(kind="selftest")
    print(f"\n  run directory: {run_dir}  (inspect with: secureagg audit {run_dir})")
    print(json.dumps({"demo_ok": ok}) if args.json else ("  result: ok" if ok else "  FAIL"))
    return ok


def _selftest_line(results: list[Any]) -> tuple[str, list[str]]:
    failed = [r.name for r in results if not r.ok]
    line = (
        f"self-test of the cryptographic primitives: {len(results) - len(failed)}/{len(results)} "
        "passed" + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return line, failed


def _cmd_selftest(args: argparse.Namespace) -> int:
    """``secureagg demo --selftest``: every check, then one SecAgg+ round explained."""
    if args.clients is None:
        args.clients = 20
    if args.dim is None:
        args.dim = 10000
    agg = _selftest_aggregator(args)
    print(f"secureagg {secureagg.__version__}: self-test of the cryptographic building blocks")
    results = run_selftest(out=print)
    failed = [r.name for r in results if not r.ok]
    if not _secagg_round(args, agg):
        failed.append("secagg+ round")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return EXIT_CHECK_FAILED
    print("all checks passed")
    return EXIT_OK


def _workers(value: Any) -> Any:
    """``--workers``: ``auto`` or an integer (checked with the other settings)."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise _CliError(f"--workers must be an integer >= 1 or 'auto', got {value!r}") from None


def _mode_problems(args: argparse.Namespace) -> list[str]:
    """Options that do not apply to the chosen mode, or that are invalid in every mode: refused
    before anything runs rather than silently ignored."""
    mode = getattr(args, "mode", "fl")
    split = mode == "split"
    problems = []
    if getattr(args, "queries", None) is not None and mode != "ensemble":
        problems.append("--queries applies only to 'secureagg demo ensemble'")
    if mode == "ensemble":
        return _ensemble_problems(args, problems)
    if args.seed is not None and args.seed < 0:
        problems.append(f"--seed must be a non-negative integer, got {args.seed}")
    if split:
        if args.seed is not None:
            problems.append(
                "--seed is not supported by 'secureagg demo split' yet (its data split and "
                "initial models are fixed, its noise is fresh); leave --seed out"
            )
        if args.selftest:
            problems.append("--selftest does not combine with 'split'")
        if args.threat is not None:
            problems.append("--threat applies to the federated demo and --selftest, not 'split'")
        if not (math.isfinite(args.epsilon) and args.epsilon > 0):
            problems.append(f"--epsilon must be a positive number, got {args.epsilon}")
    elif args.quick:
        problems.append("--quick applies only to 'secureagg demo split'")
    flower = getattr(args, "engine", "local") == "flower"
    if getattr(args, "tls", False) and not flower:
        problems.append("--tls applies only with --engine flower")
    if flower and (split or args.selftest):
        problems.append("--engine flower runs the federated demo; it does not combine with "
                        "'split' or --selftest")
    if flower and args.dropout:
        problems.append("--dropout simulates dropouts; with --engine flower dropouts are real "
                        "(a node that misses a stage's deadline), so leave --dropout out")
    if flower and str(args.workers) not in ("1", "None"):
        problems.append("--workers applies to the local engine; Flower nodes train themselves")
    if not args.selftest or split:
        given = [
            option
            for option, value in (
                ("--dim", args.dim),
                ("--max-memory", args.max_memory),
                ("--max-seconds", args.max_seconds),
            )
            if value is not None
        ]
        if given:
            problems.append(f"{', '.join(given)} only apply with --selftest")
    return problems


def _ensemble_problems(args: argparse.Namespace, problems: list[str]) -> list[str]:
    if args.seed is not None and args.seed < 0:
        problems.append(f"--seed must be a non-negative integer, got {args.seed}")
    for option, value in (("--selftest", args.selftest), ("--threat", args.threat),
                          ("--quick", args.quick), ("--no-dp", args.no_dp),
                          ("--rounds", args.rounds), ("--dim", args.dim)):
        if value not in (None, False):
            problems.append(f"{option} does not apply to 'secureagg demo ensemble'")
    flower = getattr(args, "engine", "local") == "flower"
    if getattr(args, "tls", False) and not flower:
        problems.append("--tls applies only with --engine flower")
    if flower and args.dropout:
        problems.append("--dropout simulates dropouts; with --engine flower dropouts are real "
                        "(a node that misses a stage's deadline), so leave --dropout out")
    if flower and str(args.workers) not in ("1", "None"):
        problems.append("--workers applies to the local engine; with --engine flower every "
                        "party's node trains its own teacher")
    if flower and args.clients is not None and args.clients > 32:
        problems.append(f"--engine flower starts one SuperNode per party on this machine: "
                        f"--clients must be at most 32, got {args.clients}")
    if args.protocol not in (None, "secagg+", "secagg"):
        problems.append("'secureagg demo ensemble' sums the votes with --protocol secagg+ "
                        f"(default) or secagg, got {args.protocol!r}")
    if args.epsilon is not None and not (math.isfinite(args.epsilon) and args.epsilon > 0):
        problems.append(f"--epsilon must be a positive number, got {args.epsilon}")
    if args.clients is not None and not 2 <= args.clients <= 500:
        problems.append(f"--clients (parties) must be in 2..500, got {args.clients}")
    if args.queries is not None and not 1 <= args.queries <= 347:
        problems.append(f"--queries must be in 1..347 (the public pool), got {args.queries}")
    if args.dropout and not 0 <= args.dropout < 0.5:
        problems.append(f"--dropout must be in [0, 0.5), got {args.dropout}")
    return problems


def _cmd_demo_ensemble(args: argparse.Namespace) -> int:
    """``secureagg demo ensemble``: :func:`secureagg.demos.ensemble.run_ensemble_demo`, or with
    ``--engine flower`` :func:`secureagg.demos.ensemble_flower.run_ensemble_flower_demo`."""
    try:
        from secureagg.demos.ensemble import DEFAULTS, run_ensemble_demo
    except ImportError as exc:
        raise _CliError(f"the ensemble demo needs the 'dp' extra (torch): {exc}") from None
    if getattr(args, "engine", "local") == "flower":
        return _cmd_demo_ensemble_flower(args)
    out = _run_dir(args.out, "ensemble")
    results = run_ensemble_demo(
        out=out,
        parties=args.clients if args.clients is not None else DEFAULTS["parties"],
        queries=args.queries if args.queries is not None else DEFAULTS["queries"],
        epsilon=args.epsilon if args.epsilon is not None else DEFAULTS["epsilon"],
        dropout=float(args.dropout or 0.0),
        # the teachers are trained twice, sequentially and with these workers (default: one per
        # core), to show the speed-up
        workers="auto" if str(args.workers) == "1" else _workers(args.workers),
        protocol=args.protocol or "secagg+",
        seed=args.seed,
        quiet=bool(getattr(args, "quiet", False)),
    )
    _ensemble_json(args, results, out)
    return EXIT_OK


def _cmd_demo_ensemble_flower(args: argparse.Namespace) -> int:
    """``secureagg demo ensemble --engine flower``: every party on its own SuperNode."""
    import importlib.util

    if importlib.util.find_spec("flwr") is None:
        raise MissingDependencyError("flwr", "flower")
    from secureagg.demos.ensemble_flower import FLOWER_DEFAULTS, run_ensemble_flower_demo

    out = _run_dir(args.out, "ensemble-flower")
    queries = args.queries if args.queries is not None else FLOWER_DEFAULTS["queries"]
    results = run_ensemble_flower_demo(
        out=out,
        parties=args.clients if args.clients is not None else FLOWER_DEFAULTS["parties"],
        queries=queries,
        batch=max(1, math.ceil(queries / 2)),  # two batches: the second uses the kept teachers
        epsilon=args.epsilon if args.epsilon is not None else 8.0,
        protocol=args.protocol or "secagg+",
        seed=args.seed,
        tls=bool(getattr(args, "tls", False)),
        quiet=bool(getattr(args, "quiet", False)),
    )
    _ensemble_json(args, results, out)
    return EXIT_OK


def _ensemble_json(args: argparse.Namespace, results: dict[str, Any], out: Any) -> None:
    if getattr(args, "json", False):
        print(json.dumps({
            "ensemble_accuracy": results["ensemble_accuracy"],
            "private_label_accuracy": results["private_label_accuracy"],
            "student_accuracy": results["student_accuracy"],
            "epsilon": results["epsilon"]["record_level"],
            "queries_answered": results["queries_answered"],
            "run_dir": str(out),
        }))


def cmd_demo(args: argparse.Namespace) -> int:
    """Federated learning on digits with secure aggregation (and DP); ``--selftest`` for crypto."""
    problems = _mode_problems(args)
    if problems:
        raise ConfigurationError(problems)
    if args.out is not None:
        _check_out(args.out)
    if args.seed is not None:
        _warn(seeded_warning(args.seed))
    if getattr(args, "mode", "fl") == "split":
        return _cmd_demo_split(args)
    if getattr(args, "mode", "fl") == "ensemble":
        return _cmd_demo_ensemble(args)
    if args.selftest:
        return _cmd_selftest(args)
    t_start = time.perf_counter()
    line, failed = _selftest_line(run_selftest(out=None))
    quiet = bool(args.quiet)

    def say(text: str) -> None:
        if not quiet:
            print(text)

    say(f"secureagg {secureagg.__version__} demo: federated learning on sklearn's digits")
    say(f"  {line}")
    if failed:
        print(f"FAILED: {', '.join(failed)} (run 'secureagg demo --selftest' for details)")
        return EXIT_CHECK_FAILED

    flower = getattr(args, "engine", "local") == "flower"
    if flower:
        import importlib.util

        if importlib.util.find_spec("flwr") is None:
            raise MissingDependencyError("flwr", "flower")
    from secureagg.demos.federated import run_federated_demo
    from secureagg.demos.federated_task import DemoSettings, use_one_thread

    use_one_thread()

    settings = DemoSettings(
        protocol=args.protocol,
        clients=args.clients if args.clients is not None else (5 if flower else 10),
        rounds=args.rounds if args.rounds is not None else (8 if flower else 20),
        dropout=args.dropout,
        epsilon=None if args.no_dp else args.epsilon,
        user_noise=args.user_noise,
        workers=_workers(args.workers),
        run_seed=args.seed,
        threat=args.threat,
    )
    problems = settings.problems()
    if problems:
        raise _CliError("; ".join(problems))
    note = threat_model_note(
        {"protocol": settings.protocol, "threat": settings.threat or "curious"}
    )
    run_federated_demo(
        settings,
        run_dir=_run_dir(args.out, "demo-flower" if flower else "demo"),
        quiet=quiet,
        baseline=not args.no_baseline,
        note=note,
        json_summary=bool(args.json),
        started=t_start,
        engine="flower" if flower else "local",
        tls=bool(getattr(args, "tls", False)),
    )
    return EXIT_OK


def _cmd_demo_split(args: argparse.Namespace) -> int:
    """``secureagg demo split``: the options, then :func:`secureagg.demos.split.run_split_demo`."""
    try:
        from secureagg.demos.split import run_split_demo
    except ImportError as exc:
        raise _CliError(f"the split demo needs the 'dp' extra (torch): {exc}") from None
    clients = args.clients if args.clients is not None else 3
    epochs = args.rounds if args.rounds is not None else (3 if args.quick else 6)
    epsilon = args.epsilon if args.epsilon is not None else 8.0
    aggregator = args.protocol or "secagg+"
    if clients < 1 or epochs < 1 or epsilon <= 0:
        raise _CliError("--clients and --rounds must be >= 1 and --epsilon > 0")
    out = _run_dir(args.out, "split")
    results = run_split_demo(
        clients=clients,
        epochs=epochs,
        epsilon=epsilon,
        aggregator=aggregator,
        quick=bool(args.quick),
        out=out,
        quiet=bool(getattr(args, "quiet", False)),
    )
    if getattr(args, "json", False):
        runs, leaks, inv = results["accuracy"], results["label_leakage"], results["inversion"]
        print(json.dumps({
            "accuracy": {k: v["accuracy"] for k, v in runs.items()},
            "label_leakage": {k: [v["norm_auc"], v["cosine_auc"]] for k, v in leaks.items()},
            "inversion": {k: v["mse_ratio"] for k, v in inv.items()},
            "run_dir": str(out),
        }))
    return EXIT_OK
