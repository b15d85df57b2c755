"""``secureagg demo split``: split learning on sklearn's digits, each protection measured.

It trains the same small MLP on digits (nothing is downloaded) cut between the clients and the
server, and prints, for each configuration, test accuracy, the cost per batch (seconds, bytes),
and what the attacks in :mod:`secureagg.split.attacks` get out of the exchange:

* accuracy: unsplit training (the reference), vanilla and U-shaped SplitFed (client parts averaged
  through ``--protocol``, SecAgg+ by default), U-shaped with DP on the activations at
  ``--epsilon``, and U-shaped with the encrypted (CKKS) cut layer;
* label leakage on the imbalanced task "is it a 0?" (10% positives): the norm and cosine attacks'
  AUC on the gradients the non-label party receives, protection off and on (Marvell);
* input reconstruction: a ridge decoder from the activations the server received to the images,
  relative to guessing the mean image, with no protection, NoPeek and ActivationDP.

Everything lands in a run directory (``split.json``). ``--quick`` trains for fewer epochs. For
every configuration the record carries ``privacy``: the ε claimed (or ``None``) and its scope -
what that ε covers, what it does not (labels, output gradients, the client model trained on every
record, the averaged client parts), adjacency and what is public (:mod:`secureagg.split.scope`);
``privacy_scopes`` gathers them, and the demo prints each ε's scope in words.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from secureagg.cli.common import EXIT_OK, _CliError, _run_dir, _write_json

__all__ = ["cmd_demo_split"]


def cmd_demo_split(args: argparse.Namespace) -> int:
    """Split learning on digits: accuracy, attacks and cost, protections off and on."""
    quiet = bool(getattr(args, "quiet", False))

    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    try:
        import torch

        from secureagg.fl.data import load_digits_federated
        from secureagg.split import experiments as ex
        from secureagg.split.label_protection import MarvellNoise
    except ImportError as exc:
        raise _CliError(f"the split demo needs the 'dp' extra (torch): {exc}") from None
    torch.set_num_threads(1)
    clients = args.clients if args.clients is not None else 3
    epochs = args.rounds if args.rounds is not None else (3 if args.quick else 6)
    epsilon = args.epsilon if args.epsilon is not None else 8.0
    aggregator = args.protocol or "secagg+"
    if clients < 1 or epochs < 1 or epsilon <= 0:
        raise _CliError("--clients and --rounds must be >= 1 and --epsilon > 0")
    out = _run_dir(args.out, "split")
    data = load_digits_federated(num_clients=2, alpha=100.0, seed=0)
    x, y, xt, yt = data.x_train, data.y_train, data.x_test, data.y_test
    t_start = time.perf_counter()
    say(f"secureagg demo split: digits ({len(y)} train / {len(yt)} test), {clients} client(s), "
        f"{epochs} epochs; SplitFed through {aggregator}")

    results: dict[str, Any] = {"settings": {
        "clients": clients, "epochs": epochs, "epsilon": epsilon, "aggregator": aggregator,
    }}
    say("\naccuracy and cost per batch")
    say(f"  {'configuration':<44}{'accuracy':>9}{'ms/batch':>10}{'KiB/batch':>11}")

    def row(name: str, r: dict[str, Any], extra: str = "") -> None:
        say(f"  {name:<44}{r['accuracy']:>9.3f}{1e3 * r['seconds_per_batch']:>10.1f}"
            f"{r['bytes_per_batch'] / 1024:>11.1f}{extra}")

    runs = results["accuracy"] = {}
    runs["unsplit"] = ex.train_unsplit(x, y, xt, yt, epochs=epochs, seed=0)
    row("unsplit (reference)", runs["unsplit"])
    splitfed = aggregator if clients > 1 else None
    for topology in ("vanilla", "u-shaped"):
        r = ex.train_split(x, y, xt, yt, topology=topology, epochs=epochs, clients=clients,
                           aggregator=splitfed)
        runs[topology] = r
        row(f"{topology}" + (f" SplitFed ({splitfed})" if splitfed else ""), r)
    r = ex.train_split(x, y, xt, yt, topology="u-shaped", epochs=epochs, clients=clients,
                       aggregator=splitfed, epsilon=epsilon)
    runs["u-shaped-activation-dp"] = r
    row(f"u-shaped + ActivationDP (eps={r['epsilon']:.2f})", r,
        f"   noise x{r['noise_multiplier']:.2f} per coordinate")
    enc_epochs = min(epochs, 2 if args.quick else 3)
    r = ex.train_encrypted(x, y, xt, yt, epochs=enc_epochs, seed=0)
    runs["u-shaped-encrypted-cut"] = r
    row(f"u-shaped, encrypted cut layer ({enc_epochs} epochs)", r)
    say(f"    the server received only {', '.join(r['server_received'])}")
    say("\nwhat each ε covers (and what it does not):")
    for name in ("u-shaped-activation-dp", "u-shaped-encrypted-cut"):
        say(f"  {name}: {runs[name]['privacy']['summary']}")

    say("\nlabel leakage ('is it a 0?', 10% positives): attack AUC, 0.5 = chance")
    yb = (y == 0).astype(np.int64)
    leaks = results["label_leakage"] = {}
    for topology in ("vanilla", "u-shaped"):
        for name, protection in (("off", None), ("Marvell", MarvellNoise(power_scale=32.0))):
            r = ex.label_leakage(x, yb, topology=topology, label_protection=protection, epochs=2)
            leaks[f"{topology}/{name}"] = r
            say(f"  {topology:<9} protection {name:<8} norm AUC {r['norm_auc']:.3f}   "
                f"cosine AUC {r['cosine_auc']:.3f}")

    say("\ninput reconstruction from the activations the server received "
        "(MSE / MSE of the mean image; 1.0 = nothing learned)")
    inv = results["inversion"] = {}
    inv_epochs = 2 if args.quick else 3
    for name, kw in (("no protection", {}), ("NoPeek (weight 1.0)", {"nopeek": 1.0}),
                     (f"ActivationDP (eps {epsilon:g})", {"epsilon": epsilon})):
        r = ex.inversion(x, y, epochs=inv_epochs, **kw)
        inv[name] = r
        say(f"  {name:<28} ratio {r['mse_ratio']:.3f}   pixel correlation "
            f"{r['feature_correlation']:.3f}")

    results["privacy_scopes"] = {
        **{f"accuracy/{k}": v["privacy"] for k, v in runs.items() if "privacy" in v},
        **{f"label_leakage/{k}": v["privacy"] for k, v in leaks.items()},
        **{f"inversion/{k}": v["privacy"] for k, v in inv.items()},
    }
    results["seconds"] = time.perf_counter() - t_start
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "split.json", json.loads(json.dumps(results, default=float)))
    say(f"\nfinished in {results['seconds']:.0f} s; everything is in {out / 'split.json'}")
    if getattr(args, "json", False):
        print(json.dumps({
            "accuracy": {k: v["accuracy"] for k, v in runs.items()},
            "label_leakage": {k: [v["norm_auc"], v["cosine_auc"]] for k, v in leaks.items()},
            "inversion": {k: v["mse_ratio"] for k, v in inv.items()},
            "run_dir": str(out),
        }))
    return EXIT_OK
