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

Everything lands in a run directory (``split.json``, written through
:class:`~secureagg.audit.rundir.RunDirectory`). ``--quick`` trains for fewer epochs. For
every configuration the record carries ``privacy``: the ε claimed (or ``None``) and its scope -
what that ε covers, what it does not (labels, output gradients, the client model trained on every
record, the averaged client parts), adjacency and what is public (:mod:`secureagg.split.scope`);
``privacy_scopes`` gathers them, and the demo prints each ε's scope in words.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import secureagg
from secureagg.audit.rundir import RunDirectory
from secureagg.demos import split_experiments as ex
from secureagg.demos.data import load_digits_federated
from secureagg.split.label_protection import MarvellNoise

__all__ = ["run_split_demo"]


def run_split_demo(
    *,
    clients: int,
    epochs: int,
    epsilon: float,
    aggregator: str,
    quick: bool,
    out: Path,
    quiet: bool,
) -> dict[str, Any]:
    """Split learning on digits: accuracy, attacks and cost, protections off and on; print them,
    write ``split.json`` into ``out`` and return the results."""

    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    torch.set_num_threads(1)
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
    enc_epochs = min(epochs, 2 if quick else 3)
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
    inv_epochs = 2 if quick else 3
    protections: list[tuple[str, dict[str, Any]]] = [
        ("no protection", {}), ("NoPeek (weight 1.0)", {"nopeek": 1.0}),
        (f"ActivationDP (eps {epsilon:g})", {"epsilon": epsilon}),
    ]
    for name, kw in protections:
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
    run = RunDirectory(out)
    run.write_json("config.json", {"command": "demo split", "protocol": aggregator,
                                   "settings": results["settings"], "quick": quick,
                                   "secureagg_version": secureagg.__version__})
    run.write_json("split.json", json.loads(json.dumps(results, default=float)))
    run.seal(kind="split")
    say(f"\nfinished in {results['seconds']:.0f} s; everything is in {out / 'split.json'}")
    return results
