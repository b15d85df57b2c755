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

Everything lands in a run directory (``split.json``). ``--quick`` trains for fewer epochs.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from secureagg.cli.common import EXIT_OK, _CliError, _write_json

__all__ = ["cmd_demo_split"]


def _run_dir(out: str | None) -> Path:
    if out is not None:
        return Path(out)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = Path.cwd() / "runs" / f"{stamp}-split"
    path, k = base, 0
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def _unsplit(x: Any, y: Any, xt: Any, yt: Any, *, epochs: int, seed: int) -> dict[str, Any]:
    """The same model and optimizer trained in one piece: the accuracy and cost reference."""
    import torch

    from secureagg.split.experiments import _loaders, digits_mlp

    model = digits_mlp(seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = _loaders(x, y, clients=1, batch_size=32, seed=seed)[0]
    steps, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            steps += 1
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        acc = float((model(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean())
    return {"accuracy": acc, "seconds_per_batch": seconds / steps, "bytes_per_batch": 0.0}


def _encrypted(x: Any, y: Any, xt: Any, yt: Any, *, epochs: int, seed: int) -> dict[str, Any]:
    import torch

    from secureagg.split.encrypted import EncryptedSplitLearning
    from secureagg.split.experiments import CUTS, digits_mlp

    model = digits_mlp(seed=seed)
    data = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    loader = torch.utils.data.DataLoader(
        data, batch_size=32, shuffle=True, drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
    sl = EncryptedSplitLearning(
        model, cuts=CUTS["u-shaped-linear"], client=loader,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), server_lr=0.05,
    )
    t0 = time.perf_counter()
    sl.fit(epochs=epochs)
    seconds = time.perf_counter() - t0
    stats = sl.stats.to_dict()
    with torch.no_grad():
        acc = float((model(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean())
    return {
        "accuracy": acc,
        "seconds_per_batch": seconds / max(stats["steps"], 1),
        "bytes_per_batch": stats["bytes_per_step"],
        "server_received": sorted({e.kind for e in sl.transcript}),
        "noise_multiplier_on_weight_gradient": sl.options["noise_multiplier"],
    }


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
    out = _run_dir(args.out)
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
    runs["unsplit"] = _unsplit(x, y, xt, yt, epochs=epochs, seed=0)
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
    r = _encrypted(x, y, xt, yt, epochs=enc_epochs, seed=0)
    runs["u-shaped-encrypted-cut"] = r
    row(f"u-shaped, encrypted cut layer ({enc_epochs} epochs)", r)
    say(f"    the server received only {', '.join(r['server_received'])}")

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
