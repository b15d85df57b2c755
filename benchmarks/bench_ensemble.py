"""Private ensembles (issue 16): student accuracy against ε, aggregation cost, training speed-up.

What it runs, on sklearn's digits with the ``secureagg demo ensemble`` pipeline
(:func:`secureagg.demos.ensemble.run_ensemble_demo`: ``--parties`` parties, one logistic-
regression teacher each; ``--queries`` public points, chosen as the points nearest to k-means
centres of the public inputs, labelled by secure GNMax in batches of 50; the noisy histograms
propagated over the public pool, then a logistic-regression student):

* **student accuracy against ε**: ``--repeats`` full runs per budget in ``--epsilons`` (δ = 1e-5;
  the noise calibrated so that every batch fits the budget in the worst case of dropouts; fresh
  noise each run), mean, min and max, beside the non-private ensemble's accuracy; plotted to
  ``ensemble_student_vs_epsilon.png``; and at ε = 8 against the number of queries (50, 100, 150);
* **aggregation seconds per 1,000 queries**, at 10 parties (the target) and at ``--parties``:
  secure GNMax batches of 50 / 250 / 1,000 queries under SecAgg+ (distributed discrete Gaussian
  noise) and under CKKS (the key holder adding the noise; fresh keys per batch), as the wall time
  of the round with every party's, the server's and the codec's compute; and secure ensemble
  inference of 1,000 queries under SecAgg+ and under CKKS (no noise);
* **teacher-training speed-up**: the same teachers trained sequentially and with one worker per
  core (bit-identical with a seed), wall seconds and their ratio.

Keys, masks and noise are fresh unless ``--seed`` (then NOT private; recorded). Usage::

    python benchmarks/bench_ensemble.py            # ε in 1, 2, 4, 8, 16 (~6 min on 2 cores)
    python benchmarks/bench_ensemble.py --quick    # ε in 4, 8; 50 parties

Results go to ``--out`` (default ``benchmarks/results/ensemble.json``) and the plot beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from secureagg.bench.output import machine_info  # noqa: E402
from secureagg.demos.ensemble import NUM_CLASSES, run_ensemble_demo  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "ensemble.json"


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _run(eps: float, *, parties: int, queries: int, seed: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_ensemble_") as tmp:
        r = run_ensemble_demo(out=Path(tmp) / "run", parties=parties, queries=queries,
                              epsilon=eps, seed=seed, quiet=True, time_sequential=False)
    return {
        "epsilon_spent": r["epsilon"]["record_level"],
        "sigma": r["settings"]["sigma"],
        "queries_answered": r["queries_answered"],
        "private_label_accuracy": r["private_label_accuracy"],
        "propagated_label_accuracy": r["propagated_label_accuracy"],
        "student_accuracy": r["student_accuracy"],
        "student_private_labels_only_accuracy": r["student_private_labels_only_accuracy"],
        "ensemble_accuracy": r["ensemble_accuracy"],
        "teacher_accuracy_mean": r["teachers"]["accuracy_mean"],
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, min and max over repeats (fresh noise each; the teachers and the split are fixed
    by the demo's data split, the teachers' training is not seeded)."""
    out: dict[str, Any] = {"repeats": len(runs), "runs": runs,
                           "epsilon_spent": max(r["epsilon_spent"] for r in runs),
                           "sigma": runs[0]["sigma"],
                           "queries_answered": min(r["queries_answered"] for r in runs)}
    for key in ("private_label_accuracy", "propagated_label_accuracy", "student_accuracy",
                "student_private_labels_only_accuracy", "ensemble_accuracy",
                "teacher_accuracy_mean"):
        values = [float(r[key]) for r in runs if r[key] is not None]
        out[key] = float(np.mean(values)) if values else None
        out[f"{key}_min"] = min(values) if values else None
        out[f"{key}_max"] = max(values) if values else None
    return out


def student_curve(epsilons: list[float], *, parties: int, queries: int, repeats: int,
                  seed: int | None) -> list[dict[str, Any]]:
    rows = []
    for eps in epsilons:
        row = {"epsilon_budget": eps, "queries": queries, **_summary(
            [_run(eps, parties=parties, queries=queries, seed=seed) for _ in range(repeats)])}
        _log(f"ε budget {eps:g}, {queries} queries: spent {row['epsilon_spent']:.3f}, labels "
             f"{row['private_label_accuracy']:.1%}, student {row['student_accuracy']:.1%} "
             f"[{row['student_accuracy_min']:.1%}, {row['student_accuracy_max']:.1%}] "
             f"(ensemble {row['ensemble_accuracy']:.1%}; {repeats} repeats)")
        rows.append(row)
    return rows


def aggregation_cost(parties: int, *, seed: int | None) -> dict[str, Any]:
    from secureagg.ensemble.aggregate import SecureVoteAggregator
    from secureagg.ensemble.inference import combine_predictions
    from secureagg.ensemble.votes import encode_votes

    rng = np.random.default_rng(0)  # vote contents only: the cost does not depend on them
    out: dict[str, Any] = {"parties": parties, "gnmax_secagg+": {}, "gnmax_ckks": {},
                           "inference": {}}
    for batch in (50, 250, 1000):
        agg = SecureVoteAggregator(parties, NUM_CLASSES, sigma=20.0,
                                   seed=None if seed is None else seed.to_bytes(8, "big"))
        votes = {p: encode_votes("one-hot", rng.integers(0, NUM_CLASSES, batch), NUM_CLASSES)
                 for p in range(parties)}
        t0 = time.perf_counter()
        res = agg.aggregate(votes)
        wall = time.perf_counter() - t0
        out["gnmax_secagg+"][str(batch)] = {
            "queries": batch, "wall_seconds": wall, "round_seconds": res.seconds,
            "seconds_per_1000_queries": wall * 1000 / batch, "answered": res.answered,
        }
        _log(f"GNMax secagg+ batch {batch}: {wall:.2f} s ({wall * 1000 / batch:.2f} s per 1000)")
    out["gnmax_ckks"] = gnmax_ckks_cost(parties, seed=seed, rng=rng)
    probs = {p: rng.dirichlet(np.ones(NUM_CLASSES), size=1000) for p in range(parties)}
    for protocol in ("secagg+", "ckks"):
        try:
            t0 = time.perf_counter()
            combine_predictions(probs, protocol=protocol, seed=seed)
            wall = time.perf_counter() - t0
        except ImportError as exc:
            out["inference"][protocol] = {"available": False, "reason": str(exc)}
            continue
        out["inference"][protocol] = {"queries": 1000, "wall_seconds": wall,
                                      "seconds_per_1000_queries": wall}
        _log(f"secure inference {protocol}, 1000 queries: {wall:.2f} s")
    return out


def gnmax_ckks_cost(
    parties: int,
    *,
    seed: int | None,
    rng: np.random.Generator,
    batches: tuple[int, ...] = (50, 250, 1000),
) -> dict[str, Any]:
    """GNMax under CKKS, the key holder adding the noise: seconds per batch (one CKKS round,
    fresh keys included) and per 1,000 queries, like the secagg+ rows."""
    from secureagg.ensemble.votes import encode_votes

    try:
        from secureagg.ensemble.ckks_votes import CkksVoteAggregator

        CkksVoteAggregator(parties, NUM_CLASSES, sigma=20.0)  # tenseal present?
    except ImportError as exc:
        return {"available": False, "reason": str(exc)}
    rows: dict[str, Any] = {}
    for batch in batches:
        agg = CkksVoteAggregator(parties, NUM_CLASSES, sigma=20.0,
                                 seed=None if seed is None else seed.to_bytes(8, "big"))
        votes = {p: encode_votes("one-hot", rng.integers(0, NUM_CLASSES, batch), NUM_CLASSES)
                 for p in range(parties)}
        t0 = time.perf_counter()
        res = agg.aggregate(votes)
        wall = time.perf_counter() - t0
        rows[str(batch)] = {
            "queries": batch, "wall_seconds": wall, "round_seconds": res.seconds,
            "seconds_per_1000_queries": wall * 1000 / batch, "answered": res.answered,
            "ckks_error_bound": agg.rounding_error_bound,
        }
        _log(f"GNMax ckks batch {batch}: {wall:.2f} s ({wall * 1000 / batch:.2f} s per 1000)")
    return rows


def speedup(parties: int, *, seed: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_ensemble_") as tmp:
        r = run_ensemble_demo(out=Path(tmp) / "run", parties=parties, queries=50, epsilon=8.0,
                              seed=seed, quiet=True)
    t = r["teachers"]
    return {"parties": parties, "workers": t["workers"],
            "sequential_seconds": t["sequential_seconds"],
            "parallel_seconds": t["parallel_seconds"],
            "speedup": t["sequential_seconds"] / t["parallel_seconds"]}


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    eps = [r["epsilon_spent"] for r in rows]
    ax.errorbar(eps, [r["student_accuracy"] for r in rows],
                yerr=[[r["student_accuracy"] - r["student_accuracy_min"] for r in rows],
                      [r["student_accuracy_max"] - r["student_accuracy"] for r in rows]],
                marker="o", capsize=3, label="student (mean, min-max)")
    ax.plot(eps, [r["private_label_accuracy"] for r in rows], marker="s",
            label="private labels (accuracy on the queried points)")
    ax.axhline(rows[0]["ensemble_accuracy"], color="C3", linestyle="--",
               label="non-private ensemble")
    ax.axhline(0.85, color="grey", linestyle=":", label="85 % target")
    ax.set_xscale("log")
    ax.set_xlabel("ε per record = per party (δ = 1e-5; upper bound)")
    ax.set_ylabel("test accuracy (digits)")
    ax.set_title(f"secure GNMax, {rows[0]['queries_answered']} private labels, "
                 f"{rows[0]['repeats']} repeats per point", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="ε 4 and 8, 50 parties")
    parser.add_argument("--epsilons", default=None, help="comma-separated budgets")
    parser.add_argument("--parties", type=int, default=None)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per point (fresh noise each); mean, min and max reported")
    parser.add_argument("--seed", type=int, default=None,
                        help="reproducible (NOT private; for tests)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    parties = args.parties or (50 if args.quick else 100)
    epsilons = ([float(e) for e in args.epsilons.split(",")] if args.epsilons
                else ([4.0, 8.0] if args.quick else [1.0, 2.0, 4.0, 8.0, 16.0]))
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    rows = student_curve(epsilons, parties=parties, queries=args.queries,
                         repeats=args.repeats, seed=args.seed)
    by_queries = student_curve([8.0], parties=parties, queries=50, repeats=args.repeats,
                               seed=args.seed)
    by_queries += [r for r in rows if r["epsilon_budget"] == 8.0]
    by_queries += student_curve([8.0], parties=parties, queries=150, repeats=args.repeats,
                                seed=args.seed)
    report: dict[str, Any] = {
        "benchmark": "ensemble",
        "issue": 16,
        "seeded": args.seed is not None,
        "machine": machine_info(),
        "settings": {"parties": parties, "queries": args.queries, "batch": 50,
                     "repeats": args.repeats, "query_selection": "k-means centres of the "
                     "public inputs", "student": "label propagation of the noisy histograms, "
                     "then logistic regression",
                     "delta": 1e-5, "mechanism": "ddgauss", "protocol": "secagg+"},
        "student_vs_epsilon": rows,
        "student_vs_queries_at_epsilon_8": by_queries,
        # the target is at 10 parties; the demo's party count beside it
        "aggregation": {str(n): aggregation_cost(n, seed=args.seed)
                        for n in sorted({10, parties})},
        "training_speedup": speedup(parties, seed=args.seed),
    }
    at8 = [r for r in rows + by_queries if r["epsilon_spent"] <= 8.0]
    best_row = max(at8, key=lambda r: r["student_accuracy"], default=None)
    best = None if best_row is None else best_row["student_accuracy"]
    per_1000 = report["aggregation"]["10"]["gnmax_secagg+"]["1000"]["wall_seconds"]
    report["targets"] = [
        {"target": "student accuracy >= 85% at record-level ε <= 8 (δ = 1e-5), proven bound",
         "measured": best, "measured_as": "mean over repeats of the best configuration",
         "configuration": None if best_row is None else {
             "epsilon_budget": best_row["epsilon_budget"], "queries": best_row["queries"],
             "min": best_row["student_accuracy_min"], "max": best_row["student_accuracy_max"]},
         "met": best is not None and best >= 0.85},
        {"target": "secure aggregation of 1,000 queries' histograms, 10 parties, secagg+: < 2 s",
         "measured_seconds": per_1000, "met": per_1000 < 2.0},
    ]
    report["total_seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_name("ensemble_student_vs_epsilon.png")
    report["plot"] = png.name if plot(rows, png) else None
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for t in report["targets"]:
        _log(f"target: {t}")
    _log(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
