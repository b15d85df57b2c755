"""``secureagg demo``: federated learning on sklearn's digits, secure aggregation and DP.

The demo is what most users come for: ten silos holding non-IID slices of a real data set
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
from collections.abc import Mapping
from typing import Any

import numpy as np

import secureagg
from secureagg.aggregators import make_aggregator
from secureagg.cli.common import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    _check_out,
    _CliError,
    _error_bound,
    _run_dir,
    _warn,
    _write_json,
    _write_transcript,
    seeded_warning,
    threat_model_note,
)
from secureagg.cli.estimate import estimate_round, limits_from_args
from secureagg.crypto import labels, prg
from secureagg.errors import ConfigurationError
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

    run_dir = _run_dir(args.out, "demo")
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(
        run_dir / "config.json",
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
    _write_json(
        run_dir / "result.json",
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
    _write_transcript(run_dir / "transcript.jsonl", res.transcript, res.downlink, res.peer_traffic)
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


def _pct(value: Any) -> str:
    return "  n/a " if value is None else f"{100 * float(value):5.1f}%"


def _kb(n: float) -> str:
    return f"{n / 1000:,.1f} kB"


def _round_line(entry: Mapping[str, Any], total: int) -> str:
    r = f"round {entry['round']:>3}/{total}"
    if entry.get("status") != "completed":
        return f"{r}  ABORTED ({entry.get('error')}); the global model is unchanged"
    metrics = entry.get("metrics") or {}
    privacy = entry.get("privacy") or {}
    eps = privacy.get("epsilon")
    b = entry.get("bytes") or {}
    sec = entry.get("seconds") or {}
    parts = [
        r,
        f"accuracy {_pct(metrics.get('accuracy'))}",
        f"ε {eps:5.2f}" if eps is not None else "ε    -",
        f"clients {len(entry.get('participants', []))}/{len(entry.get('sampled', []))}",
        f"up {_kb(float(b.get('up_per_participant', 0.0)))}/client "
        f"({float(b.get('expansion', 0.0)):.2f}x plaintext)",
        f"aggregation {1e3 * float(sec.get('aggregation_critical', 0.0)):6.1f} ms"
        f" (training {1e3 * float(sec.get('train_max', 0.0)):6.1f} ms)",
    ]
    failures = entry.get("client_failures") or []
    if failures:
        parts.append(f"{len(failures)} client failure(s)")
    return "  ".join(parts)


def _summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    done = [e for e in history if e.get("status") == "completed"]
    accuracies = [e["metrics"].get("accuracy") for e in done if e.get("metrics")]
    accuracies = [a for a in accuracies if a is not None]
    privacy = (history[-1].get("privacy") or {}) if history else {}
    user = privacy.get("user_level") or {}
    return {
        "rounds": len(history),
        "rounds_completed": len(done),
        "final_accuracy": accuracies[-1] if accuracies else None,
        "best_accuracy": max(accuracies) if accuracies else None,
        "epsilon": privacy.get("epsilon"),
        "user_epsilon": user.get("epsilon"),
        "delta": privacy.get("delta"),
        "bytes_up": sum(int((e.get("bytes") or {}).get("up", 0)) for e in history),
        # the median round, clients in parallel: the first rounds pay torch's warm-up
        "round_seconds_median": float(
            np.median([float((e.get("seconds") or {}).get("critical_path", 0.0)) for e in done])
        )
        if done
        else 0.0,
        "aggregation_seconds_median": float(
            np.median(
                [float((e.get("seconds") or {}).get("aggregation_critical", 0.0)) for e in done]
            )
        )
        if done
        else 0.0,
        "upload_expansion": float(
            np.median([float((e.get("bytes") or {}).get("expansion", 0.0)) for e in done])
        )
        if done
        else 0.0,
        "wall_seconds": sum(
            float((e.get("seconds") or {}).get("round_wall", 0.0)) for e in history
        ),
        "clipped": (
            "withheld (user-level DP: clip counts of un-noised updates are not recorded)"
            if any("withheld" in (e.get("clipped") or {}) for e in history)
            else sum(int((e.get("clipped") or {}).get("total", 0)) for e in history)
        ),
    }


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
    split = getattr(args, "mode", "fl") == "split"
    problems = []
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
        from secureagg.cli.split_demo import cmd_demo_split

        return cmd_demo_split(args)
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

    from secureagg.fl.demo import (
        DemoSettings,
        baseline_settings,
        digits_task,
        run_demo,
        use_one_thread,
    )

    use_one_thread()

    settings = DemoSettings(
        protocol=args.protocol,
        clients=args.clients if args.clients is not None else 10,
        rounds=args.rounds if args.rounds is not None else 20,
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
    task = digits_task(settings)
    sizes = task.data.client_sizes()
    say(
        f"  data: {task.data.y_train.size} training images split across {settings.clients} "
        f"clients by Dirichlet({settings.alpha}) label skew ({min(sizes)} to {max(sizes)} per "
        f"client); {task.data.y_test.size} held-out test images"
    )
    say(
        f"  model: MLP 64-{settings.hidden}-10 ({task.parameters:,} parameters); each round every "
        f"client runs {settings.local_epochs} epochs of SGD (batch "
        f"{settings.loader_batch_size}, lr {settings.learning_rate}, momentum "
        f"{settings.momentum}) in its own training loop"
        + (f"; {settings.workers} training processes" if settings.workers not in (None, 1) else "")
    )
    dp = settings.dp()
    say(
        f"  aggregation: {settings.protocol}"
        + (f" ({settings.threat} server)" if settings.threat is not None else "")
        + f", dropout {settings.dropout:.0%}"
    )
    note = (
        threat_model_note({"protocol": settings.protocol, "threat": settings.threat or "curious"})
    )
    if note is not None:
        say(f"  WARNING: {note}")
    if settings.run_seed is not None:
        say(f"  WARNING: seeded run (seed {settings.run_seed}): reproducible, NOT private")
    if dp is None:
        say("  privacy: no differential privacy (--no-dp)")
    else:
        say(
            f"  privacy, per client (its records): DP-SGD, ε ≤ {settings.epsilon} at δ = "
            f"{settings.delta}, gradients clipped to {settings.max_grad_norm}"
        )
        if not dp.public_schedule:
            say(
                "    (adjacency: add/remove one record; record counts are treated as public - "
                "each client's sampling rate, σ and step count depend on its record count; "
                "privacy_ledger.json, sample_level_scope, says what this ε covers)"
            )
        if dp.distributed_noise_multiplier is not None:
            say(
                f"  privacy, per client (all of it): distributed DP inside {settings.protocol}, "
                f"every client adds Skellam noise shares (multiplier {settings.user_noise}, "
                f"updates clipped to L2 {settings.update_clip}, server step "
                f"{settings.server_lr})"
            )
    run_dir = _run_dir(args.out, "demo")
    say(f"\n{settings.protocol} FedAvg, {settings.rounds} rounds:")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeededRunWarning)  # said once, on stderr, above
        run = run_demo(
            settings, task, run_dir=run_dir, progress=not quiet, round_summary=_round_line
        )
    secure = _summary(run.history)
    report: dict[str, Any] = {"protocol": settings.protocol, "dp": settings.epsilon is not None,
                              "run_dir": str(run_dir), "seeded": settings.run_seed is not None,
                              "seed": settings.run_seed, "threat_model_note": note, **secure}
    if not args.no_baseline and settings.protocol != "plain":
        base_settings = baseline_settings(settings)
        say(f"\nplaintext FedAvg on the same split (no secure aggregation, no DP), "
            f"{settings.rounds} rounds ...")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SeededRunWarning)
            baseline = run_demo(
                base_settings, task, run_dir=run_dir / "baseline-plain", progress=not quiet,
                round_summary=lambda entry, total: "",
            )
        base = _summary(baseline.history)
        report["baseline"] = base
        if secure["final_accuracy"] is not None and base["final_accuracy"] is not None:
            report["accuracy_difference_pp"] = 100 * (
                secure["final_accuracy"] - base["final_accuracy"]
            )
        if base["round_seconds_median"]:
            report["round_time_ratio"] = (
                secure["round_seconds_median"] / base["round_seconds_median"]
            )
    report["demo_seconds"] = time.perf_counter() - t_start
    _write_json(run_dir / "comparison.json", report)

    print(f"\nresult ({settings.protocol}{', DP' if report['dp'] else ''}): test accuracy "
          f"{_pct(secure['final_accuracy']).strip()} after {secure['rounds']} rounds "
          f"(best {_pct(secure['best_accuracy']).strip()})"
          + (f", ε = {secure['epsilon']:.2f} per client at δ = {secure['delta']} (DP-SGD, "
             "records)" if secure["epsilon"] is not None else "")
          + (f"; SEEDED (seed {settings.run_seed}): reproducible, NOT private"
             if settings.run_seed is not None else ""))
    if secure.get("user_epsilon") is not None:
        print(f"user-level ε of the released sums (distributed DP, whole clients): "
              f"{secure['user_epsilon']:,.0f} - no meaningful guarantee with {settings.clients} "
              "clients: the noise that would give one destroys the model (docs/federated.md)")
    if "baseline" in report:
        base = report["baseline"]
        print(f"plaintext FedAvg, same split: {_pct(base['final_accuracy']).strip()} "
              f"(difference {report.get('accuracy_difference_pp', float('nan')):+.1f} points)")
        agg_ms = 1e3 * secure["aggregation_seconds_median"]
        round_ms = 1e3 * secure["round_seconds_median"]
        print(f"secure aggregation overhead: upload {secure['upload_expansion']:.2f}x a float32 "
              f"plaintext update (the plain baseline sends float64: "
              f"{base['upload_expansion']:.2f}x); {agg_ms:.0f} ms of protocol per round = "
              f"{100 * agg_ms / round_ms if round_ms else 0:.0f}% of a {round_ms:.0f} ms round "
              f"(median; clients in parallel), plaintext aggregation "
              f"{1e3 * base['aggregation_seconds_median']:.0f} ms")
        if not report["dp"] and "round_time_ratio" in report:
            print(f"round time with {settings.protocol} / plaintext round (same training): "
                  f"{report['round_time_ratio']:.2f}x")
    print(f"run directory: {run_dir}  (inspect with: secureagg audit {run_dir})")
    if args.json:
        print(json.dumps(report, allow_nan=False))
    return EXIT_OK
