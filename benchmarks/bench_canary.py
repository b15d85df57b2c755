"""The one-run canary audit (issue 14, item 6) at full size: ε lower bounds of real federated runs.

What it runs: :func:`secureagg.audit.canary.canary_audit` (Steinke, Nasr, Jagielski 2023) on the
digits task - sklearn's digits split over ``--clients`` silos (Dirichlet 1.0), a 64-128-10 MLP,
the user-style SGD loop (momentum 0.9, batch 16), FedAvg through SecAgg+ - three times:

* DP-SGD at a claimed ε = 1 and ε = 8 (δ = 1e-5, per client, sample level; public schedule
  ``batches_per_epoch``/``expected_batch_size`` so nothing released depends on how many canaries
  the client holds);
* no DP at all (the leak the audit must detect).

For each count in ``--canaries`` (default 1000 and 3000), that many random-label noise patterns
(each pixel 0 or 1) are drawn, each included with
probability 1/2 in client 0's data (fresh CSPRNG bits unless ``--seed``); the auditor scores each
by its logit margin on the final model minus that on the initial one, tries ``(k+, k-) = (m/20,
m/20), (m/10, m/10), (m/4, m/4)`` with a union bound, and reports the ε lower bound at 95 %
(Theorem 3 with the run's δ; pure ε, δ = 0, for the run without DP). ``ceiling`` is the bound the
largest tried guess count would give if every guess were right: the most this audit's size can
show.

The run's keys, masks and DP noise are fresh (only torch's data order and initialisation are
seeded with ``training_seed``), so the DP runs are private as their ledgers claim.

Usage::

    python benchmarks/bench_canary.py              # 1000 and 3000 canaries, 20 rounds (~3 min)
    python benchmarks/bench_canary.py --quick      # 200 canaries, 5 rounds

Results go to ``--out`` (default ``benchmarks/results/canary.json``); progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from bench_fl import machine_info  # noqa: E402

from secureagg.audit.canary import canary_audit  # noqa: E402
from secureagg.audit.canary_bound import epsilon_lower_bound  # noqa: E402
from secureagg.canary.digits import digits_build_run  # noqa: E402
from secureagg.canary.digits import margins as digits_margins  # noqa: E402
from secureagg.demos.data import FederatedData, load_digits_federated  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "canary.json"
_T0 = time.perf_counter()


def _log(text: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {text}", file=sys.stderr, flush=True)


def make_build_run(
    data: FederatedData, epsilon: float | None, canaries: int, args: argparse.Namespace
) -> Any:
    """The digits run with the placement's canaries in client 0 (secureagg.canary.digits)."""
    epochs = args.local_epochs if epsilon is not None else args.local_epochs_no_dp
    return digits_build_run(epsilon, canaries=canaries, rounds=args.rounds,
                            local_epochs=epochs, clients=len(data.client_indices))


def one_audit(
    data: FederatedData, epsilon: float | None, canaries: int, args: argparse.Namespace
) -> dict[str, Any]:
    audit = canary_audit(
        make_build_run(data, epsilon, canaries, args), digits_margins, canaries=canaries,
        input_shape=(64,), num_classes=10, seed=args.seed,
    )
    out = audit.to_dict()
    out["target_epsilon"] = epsilon
    out["ceiling"] = max(  # every guess right, with the largest r tried
        epsilon_lower_bound(
            p + n, p + n, delta=audit.delta, confidence=1 - 0.05 / len(audit.choices),
            canaries=audit.canaries if audit.delta > 0 else None,
        )
        for p, n in audit.choices
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 canaries, 5 rounds")
    parser.add_argument("--canaries", default="1000,3000", help="canary counts m, one audit each")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=2, help="under DP-SGD")
    parser.add_argument("--local-epochs-no-dp", type=int, default=5)
    parser.add_argument("--epsilons", default="1,8", help="claimed ε of the DP runs")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed the canaries and inclusion bits (reproducible; default fresh)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.canaries, args.rounds = "200", 5
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    data = load_digits_federated(num_clients=args.clients, alpha=1.0, seed=0)
    targets: list[float | None] = [float(e) for e in args.epsilons.split(",") if e.strip()]
    counts = [int(m) for m in args.canaries.split(",") if m.strip()]
    results = []
    for canaries in counts:
        for epsilon in [*targets, None]:
            label = "no DP" if epsilon is None else f"DP-SGD ε = {epsilon:g}"
            _log(f"{label}: {canaries} canaries, {args.rounds} rounds ...")
            r = one_audit(data, epsilon, canaries, args)
            results.append(r)
            _log(f"{label}: claimed {r['claimed_epsilon']}, lower bound "
                 f"{r['epsilon_lower_bound']:.3f} ({r['correct']}/{r['guesses']} right), "
                 f"{r['seconds']:.0f} s")
    report = {
        "benchmark": "bench_canary",
        "quick": bool(args.quick),
        "machine": machine_info(),
        "configuration": {
            "data": f"sklearn digits, {args.clients} clients, Dirichlet 1.0 (split seed 0)",
            "model": "MLP 64-128-10, SGD lr 0.1 momentum 0.9, batch 16",
            "aggregator": "secagg+",
            "rounds": args.rounds,
            "local_epochs_dp": args.local_epochs,
            "local_epochs_no_dp": args.local_epochs_no_dp,
            "canaries": counts,
            "canary_client": 0,
            "canary_design": "random 0/1 pixel patterns with uniform random labels",
            "score": "logit margin on the final model minus that on the initial model",
            "confidence": 0.95,
            "seed": args.seed,
        },
        "definitions": {
            "claimed_epsilon": "the run's own privacy ledger: sample-level ε of client 0 "
            "(null: no DP, no claim)",
            "epsilon_lower_bound": "at 95 %, union bound over the tried (k+, k-); Theorem 3 of "
            "Steinke-Nasr-Jagielski 2023 with the run's δ (pure ε, δ = 0, without DP)",
            "ceiling": "the bound if every guess of the largest (k+, k-) tried had been right",
            "seconds": "training and scoring of the audited run",
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\ncanary audit, digits, {args.clients} clients, secagg+, {args.rounds} rounds")
    print(f"  {'m':>5} {'run':<8} {'claimed ε':>10} {'lower bound':>12} {'ceiling':>8} "
          f"{'right':>10} {'k+/k-':>9} {'accuracy':>9} {'seconds':>8}")
    for r in results:
        name = "no DP" if r["target_epsilon"] is None else f"ε = {r['target_epsilon']:g}"
        claimed = "-" if r["claimed_epsilon"] is None else f"{r['claimed_epsilon']:.3f}"
        acc = (r["final_metrics"] or {}).get("accuracy")
        print(f"  {r['canaries']:>5} {name:<8} {claimed:>10} {r['epsilon_lower_bound']:>12.3f} "
              f"{r['ceiling']:>8.3f} {r['correct']:>4}/{r['guesses']:<5} "
              f"{r['k_plus']:>4}/{r['k_minus']:<4} {'' if acc is None else f'{acc:.3f}':>9} "
              f"{r['seconds']:>8.0f}")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
