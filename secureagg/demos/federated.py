"""``secureagg demo``: federated learning on sklearn's digits with secure aggregation and DP.

The run behind the command (:mod:`secureagg.cli.demo` checks the options and builds the
:class:`~secureagg.demos.federated_task.DemoSettings`): ten silos holding non-IID slices of a
real data set (Dirichlet label skew, alpha 0.5), an ordinary PyTorch model and training loop, and
:class:`~secureagg.fl.FederatedRun` aggregating the clients' updates with SecAgg+ (by default) so
that the server only sees masked vectors - with DP-SGD on the clients and distributed DP in the
sum unless ``--no-dp``. Per round it prints accuracy, epsilon spent, bytes and the time of secure
aggregation; at the end it compares with plaintext FedAvg on the same split, writes
``comparison.json`` into the run directory (through :class:`~secureagg.audit.rundir.RunDirectory`;
the federated run writes the rest) and says where the run directory is. A seeded run says so in
its output and in ``comparison.json``; under SecAgg or SecAgg+ in curious mode both carry what
that mode gives up (``note``).

>>> _round_line({"round": 2, "status": "aborted", "error": "too few survivors"}, 5)
'round   2/5  ABORTED (too few survivors); the global model is unchanged'
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from secureagg.audit.rundir import RunDirectory
from secureagg.demos.federated_task import DemoSettings, baseline_settings, digits_task, run_demo
from secureagg.transport import SeededRunWarning

__all__ = ["run_federated_demo"]


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


def _flower_round_line(entry: Mapping[str, Any], total: int) -> str:
    """A deployed round: its wall time, and how much of it was ours (protocol compute, the
    slowest node's training) - the rest is Flower's polling and process starts."""
    line = _round_line(entry, total)
    if entry.get("status") != "completed":
        return line
    sec = entry.get("seconds") or {}
    head = line[: line.index("  aggregation")]
    return (f"{head}  round {float(sec.get('round_wall', 0.0)):5.1f} s (protocol "
            f"{float(sec.get('aggregation_critical', 0.0)):.2f} s, training "
            f"{float(sec.get('train_max', 0.0)):.1f} s)")


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
        "round_wall_median": float(
            np.median([float((e.get("seconds") or {}).get("round_wall", 0.0)) for e in done])
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


def run_federated_demo(
    settings: DemoSettings,
    *,
    run_dir: Path,
    quiet: bool,
    baseline: bool,
    note: str | None,
    json_summary: bool,
    started: float,
    engine: str = "local",
    tls: bool = False,
) -> dict[str, Any]:
    """Train the digits task with ``settings`` (and, with ``baseline``, plaintext FedAvg on the
    same split), print the result and return the report written to ``comparison.json``.

    ``engine="flower"`` runs the same federated run on a local Flower deployment
    (:mod:`secureagg.demos.flower_demo`; ``tls`` over TLS), and the comparison run is then the
    same settings in this process: what the deployment changes, not what privacy costs.

    ``note`` is what the threat model gives up (or ``None``), ``started`` the
    :func:`time.perf_counter` at which the command started (for ``demo_seconds``)."""

    def say(text: str) -> None:
        if not quiet:
            print(text)

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
    where = " on Flower (one SuperNode per client)" if engine == "flower" else ""
    say(f"\n{settings.protocol} FedAvg{where}, {settings.rounds} rounds:")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeededRunWarning)  # said once, by the command
        if engine == "flower":
            from secureagg.demos.flower_demo import run_flower_demo

            history = run_flower_demo(settings, run_dir=run_dir, tls=tls, say=say,
                                      round_line=_flower_round_line)
        else:
            history = run_demo(
                settings, task, run_dir=run_dir, progress=not quiet, round_summary=_round_line
            ).history
    secure = _summary(history)
    report: dict[str, Any] = {"protocol": settings.protocol, "dp": settings.epsilon is not None,
                              "run_dir": str(run_dir), "seeded": settings.run_seed is not None,
                              "seed": settings.run_seed, "threat_model_note": note, **secure}
    report["engine"] = engine
    def compare(other: DemoSettings, folder: str, key: str, what: str) -> dict[str, Any]:
        say(f"\n{what}, {settings.rounds} rounds ...")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SeededRunWarning)
            other_run = run_demo(other, task, run_dir=run_dir / folder, progress=not quiet,
                                 round_summary=lambda entry, total: "")
        summary = _summary(other_run.history)
        report[key] = summary
        if secure["final_accuracy"] is not None and summary["final_accuracy"] is not None:
            report["accuracy_difference_pp"] = 100 * (
                secure["final_accuracy"] - summary["final_accuracy"]
            )
        return summary

    if baseline and engine == "flower":
        compare(settings, "in-process", "in_process",
                "the same settings in this process (no Flower)")
    elif baseline and settings.protocol != "plain":
        base = compare(baseline_settings(settings), "baseline-plain", "baseline",
                       "plaintext FedAvg on the same split (no secure aggregation, no DP)")
        if base["round_seconds_median"]:
            report["round_time_ratio"] = (
                secure["round_seconds_median"] / base["round_seconds_median"]
            )
    report["demo_seconds"] = time.perf_counter() - started
    out = RunDirectory(run_dir)
    out.write_json("comparison.json", report)
    out.seal(kind="federated")  # again: the comparison is part of the record

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
    if "in_process" in report:
        local = report["in_process"]
        print(f"the same settings in one process: {_pct(local['final_accuracy']).strip()} "
              f"(difference {report.get('accuracy_difference_pp', float('nan')):+.1f} points; "
              + ("the same seed: the same model bit for bit, so the difference is 0"
                 if settings.run_seed is not None else "fresh DP noise and keys in each run: "
                 "unseeded runs differ by a few points even in one process") + ")")
        print(f"seconds per round (median): {secure['round_wall_median']:.1f} on Flower, of "
              f"which {secure['aggregation_seconds_median']:.2f} s protocol compute (the rest "
              f"is training and Flower's polling and process starts); "
              f"{local['round_wall_median']:.1f} in one process")
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
    if json_summary:
        print(json.dumps(report, allow_nan=False))
    return report
