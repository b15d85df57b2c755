"""Accuracy vs ε of the demo task (digits, 10 clients, Dirichlet 0.5, SecAgg+, DP-SGD + distributed
DP at the demo's settings), over several data/initialisation seeds; JSON + PNG in
``benchmarks/results/fl_dp_curve.{json,png}``.

Every point is one full ``secureagg demo`` training run (no plaintext baseline) at target ε per
client (δ = 1e-5, sample level, the accountant's figure is reported too); DP noise is fresh in
every run. ``--seeds`` changes the split and the initial model, as ``DemoSettings.seed``.

    python benchmarks/bench_fl_dp_curve.py --epsilons 1,2,4,8,16 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def one_run(epsilon: float | None, seed: int, workers: Any) -> dict[str, Any]:
    from secureagg.demos.federated_task import DemoSettings, digits_task, run_demo

    settings = replace(DemoSettings(), epsilon=epsilon, seed=seed, workers=workers)
    task = digits_task(settings)
    t0 = time.perf_counter()
    run = run_demo(settings, task, run_dir=None, progress=False)
    done = [e for e in run.history if e.get("status") == "completed"]
    accuracies = [float(e["metrics"]["accuracy"]) for e in done]
    privacy = run.history[-1].get("privacy") or {}
    return {
        "target_epsilon": epsilon,
        "seed": seed,
        "final_accuracy": accuracies[-1],
        "best_accuracy": max(accuracies),
        "epsilon_spent": privacy.get("epsilon"),
        "user_epsilon": (privacy.get("user_level") or {}).get("epsilon"),
        "seconds": time.perf_counter() - t0,
        "settings": {
            k: v for k, v in vars(settings).items() if isinstance(v, int | float | str | None)
        },
    }


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = sorted({p["target_epsilon"] for p in points if p["target_epsilon"] is not None})
    fig, ax = plt.subplots(figsize=(6, 4))
    for p in points:
        if p["target_epsilon"] is not None:
            ax.scatter(p["target_epsilon"], 100 * p["final_accuracy"], color="tab:blue", s=12)
    means = [
        statistics.mean(100 * p["final_accuracy"] for p in points if p["target_epsilon"] == e)
        for e in eps
    ]
    ax.plot(eps, means, color="tab:blue", label="DP-SGD + distributed DP (mean over seeds)")
    no_dp = [100 * p["final_accuracy"] for p in points if p["target_epsilon"] is None]
    if no_dp:
        ax.axhline(statistics.mean(no_dp), color="tab:green", ls="--", label="no DP")
    ax.axhline(85, color="tab:red", ls=":", label="target 85 %")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("ε per client (sample level, δ = 1e-5)")
    ax.set_ylabel("test accuracy after 20 rounds (%)")
    ax.set_title("secureagg demo: digits, 10 clients, Dirichlet 0.5, SecAgg+")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", default="1,2,4,8,16")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--no-dp", action="store_true", help="add no-DP runs as a reference")
    parser.add_argument("--workers", default="1")
    parser.add_argument("--out", default=str(RESULTS / "fl_dp_curve.json"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from secureagg.demos.federated_task import use_one_thread

    use_one_thread()
    workers: Any = args.workers if args.workers == "auto" else int(args.workers)
    epsilons: list[float | None] = [float(e) for e in args.epsilons.split(",") if e]
    if args.no_dp:
        epsilons.append(None)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    points = []
    for eps in epsilons:
        for seed in seeds:
            point = one_run(eps, seed, workers)
            points.append(point)
            print(json.dumps({k: point[k] for k in ("target_epsilon", "seed", "final_accuracy",
                                                     "epsilon_spent", "seconds")}), flush=True)
    summary = []
    for eps in epsilons:
        finals = [p["final_accuracy"] for p in points if p["target_epsilon"] == eps]
        summary.append({"target_epsilon": eps, "runs": len(finals),
                        "mean": statistics.mean(finals), "min": min(finals), "max": max(finals)})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"points": points, "summary": summary}, indent=2) + "\n")
    plot(points, out.with_suffix(".png"))
    for row in summary:
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
