"""Benchmark of split learning (issue 7): the cost of each protection, and what it buys.

All on sklearn's digits (1,438 training / 359 test images), the MLP of
:func:`secureagg.demos.split_experiments.digits_mlp` (64-64-64-10), batch 32, one process, torch
on one thread. Every figure comes from the same run:

* **cost per batch** (seconds, bytes both ways) of unsplit training (the same model in one
  piece), vanilla split learning, and each protection (vanilla + Marvell label protection,
  vanilla + NoPeek, U-shaped, U-shaped + ActivationDP, U-shaped SplitFed through SecAgg+ with 3
  clients), as ratios to vanilla and to unsplit; Marvell is for binary labels, so it is costed
  on the binary task "is it a 0?" next to vanilla on the same task;
* **encrypted cut layer** at widths 64 and 256: the full U-shaped step through
  :class:`~secureagg.split.encrypted.EncryptedSplitLearning` (width 64 is the demo model; 256
  widens the cut and the server's layer) against vanilla split learning of the same model, and
  the breakdown of one step by part from ``benchmarks/_he_cut_cost.py`` (target: <= 20x vanilla
  per batch at width 64);
* **attack success**: label leakage AUC (norm, cosine; "is it a 0?", 10% positives) with
  protection off and on, vanilla and U-shaped; input reconstruction ratio with no protection,
  NoPeek and ActivationDP;
* **accuracy vs epsilon** of U-shaped training with DP on the activations (and without DP), with a
  plot (``split_dp_curve.png``).

Usage::

    python benchmarks/bench_split.py            # ~5-8 min on 2 cores
    python benchmarks/bench_split.py --quick    # fewer epochs, one width, no curve (~1 min)

Results: ``--out`` (default ``benchmarks/results/split.json``); progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

import secureagg
from secureagg.demos import split_experiments as ex
from secureagg.demos.data import load_digits_federated
from secureagg.split.label_protection import MarvellNoise

RESULTS = Path(__file__).resolve().parent / "results"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer epochs, width 64 only")
    parser.add_argument("--out", type=Path, default=RESULTS / "split.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(1)
    epochs = 2 if args.quick else 6
    widths = [64] if args.quick else [64, 256]
    data = load_digits_federated(num_clients=2, alpha=100.0, seed=0)
    x, y, xt, yt = data.x_train, data.y_train, data.x_test, data.y_test
    started = time.perf_counter()
    out: dict[str, Any] = {
        "benchmark": "bench_split",
        "quick": args.quick,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "torch_threads": 1,
                    "secureagg": secureagg.__version__},
        "configuration": {"data": "sklearn digits", "model": "MLP 64-64-W-10 (W = width)",
                          "batch": 32, "epochs": epochs, "optimizer": "SGD lr 0.05 momentum 0.9"},
    }

    # ------------------------------------------------------------------ cost of each protection
    log("cost per batch of each protection ...")
    cost: dict[str, Any] = {}
    cost["unsplit"] = ex.train_unsplit(x, y, xt, yt, epochs=epochs, width=64)
    configs: dict[str, dict[str, Any]] = {
        "vanilla": {"topology": "vanilla"},
        "vanilla(binary task)": {"topology": "vanilla", "binary": True},
        "vanilla+marvell(binary task)": {"topology": "vanilla", "binary": True,
                                         "label_protection": MarvellNoise(power_scale=32.0)},
        "vanilla(binary task, lr 0.01)": {"topology": "vanilla", "binary": True, "lr": 0.01},
        "vanilla+marvell16(binary task, lr 0.01)": {
            "topology": "vanilla", "binary": True, "lr": 0.01,
            "label_protection": MarvellNoise(power_scale=16.0),
        },
        "vanilla+nopeek": {"topology": "vanilla", "nopeek": 1.0},
        "u-shaped": {"topology": "u-shaped"},
        "u-shaped+activation-dp(eps=8)": {"topology": "u-shaped", "epsilon": 8.0},
        "u-shaped+splitfed(secagg+,3 clients)": {"topology": "u-shaped", "clients": 3,
                                                  "aggregator": "secagg+"},
    }
    for name, kw in configs.items():
        labels, test_labels = (y, yt) if not kw.pop("binary", False) else (y == 0, yt == 0)
        r = ex.train_split(x, labels.astype(np.int64), xt, test_labels.astype(np.int64),
                           epochs=epochs, **kw)
        cost[name] = {k: r[k] for k in ("accuracy", "seconds_per_batch", "bytes_per_batch",
                                         "epsilon", "aggregation_bytes")}
        log(f"  {name}: {1e3 * r['seconds_per_batch']:.2f} ms/batch, "
            f"{r['bytes_per_batch']:.0f} B/batch, accuracy {r['accuracy']:.3f}")
    vanilla = cost["vanilla"]["seconds_per_batch"]
    for r in cost.values():
        r["vs_vanilla"] = r["seconds_per_batch"] / vanilla
        r["vs_unsplit"] = r["seconds_per_batch"] / cost["unsplit"]["seconds_per_batch"]
    out["cost"] = cost

    # ------------------------------------------------------------------ encrypted cut layer
    log("encrypted cut layer ...")
    from _he_cut_cost import encrypted_cut_cost

    enc: dict[str, Any] = {}
    for width in widths:
        # the plaintext references over all epochs (a single epoch is dominated by warm-up)
        base = ex.train_split(x, y, xt, yt, topology="u-shaped", epochs=epochs, width=width)
        run = ex.train_encrypted(x, y, xt, yt, epochs=1 if args.quick else 2, width=width)
        breakdown = encrypted_cut_cost(width, 32, 64, 2 if args.quick else 3)
        vanilla_w = ex.train_split(x, y, xt, yt, topology="vanilla", epochs=epochs, width=width)
        enc[str(width)] = {
            "encrypted_seconds_per_batch": run["seconds_per_batch"],
            "encrypted_bytes_per_batch": run["bytes_per_batch"],
            "encrypted_accuracy": run["accuracy"],
            "u_shaped_plain_seconds_per_batch": base["seconds_per_batch"],
            "vanilla_seconds_per_batch": vanilla_w["seconds_per_batch"],
            "vs_vanilla": run["seconds_per_batch"] / vanilla_w["seconds_per_batch"],
            "vs_u_shaped_plain": run["seconds_per_batch"] / base["seconds_per_batch"],
            "bytes_vs_vanilla": run["bytes_per_batch"] / vanilla_w["bytes_per_batch"],
            "server_received": run["server_received"],
            "breakdown_one_step": breakdown,
        }
        log(f"  width {width}: {1e3 * run['seconds_per_batch']:.1f} ms/batch = "
            f"{enc[str(width)]['vs_vanilla']:.1f}x vanilla, "
            f"{run['bytes_per_batch'] / 1e6:.2f} MB/batch")
    out["encrypted_cut"] = enc

    # ------------------------------------------------------------------ attacks
    log("label leakage and inversion ...")
    yb = (y == 0).astype(np.int64)
    leaks = {}
    settings = (("off", None, 0.05), ("marvell", MarvellNoise(power_scale=32.0), 0.05),
                ("marvell16-lr0.01", MarvellNoise(power_scale=16.0), 0.01))
    for topology in ("vanilla", "u-shaped"):
        for name, protection, lr in settings:
            r = ex.label_leakage(x, yb, topology=topology, label_protection=protection, epochs=2,
                                 lr=lr)
            leaks[f"{topology}/{name}"] = {k: r[k] for k in ("norm_auc", "cosine_auc",
                                                             "positives", "final_loss")}
    out["label_leakage"] = leaks
    inv = {}
    for name, kw in (("none", {}), ("nopeek(1.0)", {"nopeek": 1.0}),
                     ("activation-dp(eps=8)", {"epsilon": 8.0})):
        r = ex.inversion(x, y, epochs=3, **kw)  # type: ignore[arg-type]
        inv[name] = {k: r[k] for k in ("mse_ratio", "feature_correlation", "epsilon")}
    out["inversion"] = inv

    # ------------------------------------------------------------------ accuracy vs epsilon
    if not args.quick:
        log("accuracy vs epsilon (ActivationDP, U-shaped) ...")
        curve = []
        for eps in (8.0, 32.0, 128.0, 512.0, 2048.0, None):
            r = ex.train_split(x, y, xt, yt, topology="u-shaped", epochs=epochs, epsilon=eps)
            curve.append({"epsilon": eps, "accuracy": r["accuracy"],
                          "noise_multiplier": r["noise_multiplier"]})
            log(f"  eps {eps}: accuracy {r['accuracy']:.3f}")
        out["accuracy_vs_epsilon"] = curve
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(5, 3.2))
            pts = [c for c in curve if c["epsilon"] is not None]
            ax.semilogx([c["epsilon"] for c in pts], [c["accuracy"] for c in pts], "o-",
                        label="U-shaped + ActivationDP")
            ax.axhline(curve[-1]["accuracy"], color="gray", ls="--", label="no DP")
            ax.axvline(8.0, color="red", ls=":", label="ε = 8")
            ax.set_xlabel("ε per record (δ = 1e-5)")
            ax.set_ylabel("test accuracy (digits)")
            ax.legend(fontsize=8)
            fig.tight_layout()
            fig.savefig(args.out.with_name("split_dp_curve.png"), dpi=120)
        except ImportError:
            log("  matplotlib missing: no plot")

    out["targets"] = [
        {"name": "encrypted cut layer vs vanilla split per batch, width 64", "target": "<= 20x",
         "measured": enc["64"]["vs_vanilla"], "met": enc["64"]["vs_vanilla"] <= 20},
        {"name": "label leakage AUC with Marvell (vanilla; norm, cosine)", "target": "<= 0.6",
         "measured": [leaks["vanilla/marvell"]["norm_auc"], leaks["vanilla/marvell"]["cosine_auc"]],
         "met": max(leaks["vanilla/marvell"]["norm_auc"],
                    leaks["vanilla/marvell"]["cosine_auc"]) <= 0.6},
        {"name": "label leakage AUC without protection (vanilla; norm, cosine)",
         "target": "> 0.9 (the attacks work)",
         "measured": [leaks["vanilla/off"]["norm_auc"], leaks["vanilla/off"]["cosine_auc"]],
         "met": min(leaks["vanilla/off"]["norm_auc"], leaks["vanilla/off"]["cosine_auc"]) > 0.9},
        {"name": "U-shaped + ActivationDP (eps <= 8) test accuracy", "target": ">= 0.90",
         "measured": cost["u-shaped+activation-dp(eps=8)"]["accuracy"],
         "met": cost["u-shaped+activation-dp(eps=8)"]["accuracy"] >= 0.9},
    ]
    out["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=float) + "\n", encoding="utf-8")
    for t in out["targets"]:
        log(f"{'MET ' if t['met'] else 'MISS'} {t['name']}: {t['measured']} (target {t['target']})")
    log(f"wrote {args.out} in {out['seconds']:.0f} s")


if __name__ == "__main__":
    main()
