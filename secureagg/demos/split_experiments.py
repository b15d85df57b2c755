"""Measured split-learning experiments: accuracy, attack success and cost of each protection.

Used by ``secureagg demo split`` and ``benchmarks/bench_split.py`` so that both report the same
numbers the same way. Every function takes plain arrays (``x_train, y_train, x_test, y_test``)
and returns a JSON-ready dict; nothing here loads data (the callers pass sklearn's digits).

* :func:`train_split` - train a split MLP (vanilla, U-shaped, optionally SplitFed) with the chosen
  protections and report test accuracy, ε, seconds and bytes per batch; :func:`train_unsplit`
  (the same model in one piece: the reference) and :func:`train_encrypted` (U-shaped with the
  encrypted cut layer) report the same keys.
* :func:`label_leakage` - run the vanilla or U-shaped exchange on a binary task and attack the
  gradients the non-label party received (:func:`~secureagg.split.attacks.norm_attack`,
  :func:`~secureagg.split.attacks.cosine_attack`), per batch, reporting the mean AUC.
* :func:`inversion` - how well the server can reconstruct inputs from what it received
  (:func:`~secureagg.split.attacks.inversion_probe`: ridge decoder on half of the released
  activations with their inputs - a strong, white-box probe - scored on the other half).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(200, 8)).astype(np.float32); y = (x[:, 0] > 0).astype(np.int64)
>>> r = train_split(x[:150], y[:150], x[150:], y[150:], topology="vanilla", epochs=5, seed=0)
>>> r["accuracy"] > 0.8
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.dp.torch_import import require_torch
from secureagg.errors import ConfigurationError
from secureagg.split.attacks import cosine_attack, inversion_probe, norm_attack
from secureagg.split.messages import Activations, CutGradients, OutputGradients
from secureagg.split.protections import ActivationDP, NoPeek, clip_rows
from secureagg.split.run import Exchange, SplitLearning

__all__ = [
    "digits_mlp",
    "inversion",
    "label_leakage",
    "train_encrypted",
    "train_split",
    "train_unsplit",
]

Array = npt.NDArray[Any]

#: The cuts of :func:`digits_mlp` per topology (U-shaped ``encrypted``: the server part is one
#: linear layer, the only thing it can evaluate on CKKS ciphertexts).
CUTS = {"vanilla": [2], "u-shaped": [2, 4], "u-shaped-linear": [2, 3]}


def digits_mlp(
    *, inputs: int = 64, hidden: int = 64, width: int = 64, classes: int = 10, seed: int = 0
) -> Any:
    """``Linear(inputs, hidden) ReLU | Linear(hidden, width) ReLU | Linear(width, classes)``."""
    torch = require_torch()
    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, width), nn.ReLU(),
        nn.Linear(width, classes),
    )


def _loaders(x: Array, y: Array, *, clients: int, batch_size: int, seed: int) -> list[Any]:
    torch = require_torch()
    data = torch.utils.data.TensorDataset(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
    )
    parts = np.array_split(np.arange(len(data)), clients)
    loaders = []
    for c, idx in enumerate(parts):
        g = torch.Generator().manual_seed(seed * 1000 + c)
        subset = torch.utils.data.Subset(data, idx.tolist())
        loaders.append(
            torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=True, generator=g)
        )
    return loaders


def _accuracy(model: Any, x: Array, y: Array, *, clip: float | None) -> float:
    """Test accuracy of the trained model; with ActivationDP the cut activations are clipped as
    in training (no noise: the test records are not the training records being protected)."""
    torch = require_torch()
    with torch.no_grad():
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        logits = model(xt) if clip is None else model[2:](clip_rows(model[:2](xt), clip))
        return float((logits.argmax(1).numpy() == y).mean())


def train_split(
    x_train: Array,
    y_train: Array,
    x_test: Array,
    y_test: Array,
    *,
    topology: str = "u-shaped",
    epochs: int = 10,
    clients: int = 1,
    aggregator: str | None = None,
    batch_size: int = 32,
    lr: float = 0.05,
    width: int = 64,
    cut_width: int = 64,
    optimizer: str = "sgd",
    epsilon: float | None = None,
    activation_clip: float = 1.0,
    nopeek: float | None = None,
    label_protection: Callable[[Any, Any], Any] | None = None,
    seed: int = 0,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train :func:`digits_mlp` split as ``topology``; report accuracy, ε, cost."""
    torch = require_torch()
    if topology not in CUTS:
        raise ConfigurationError(f"topology must be one of {sorted(CUTS)}, got {topology!r}")
    classes = int(max(y_train.max(), y_test.max())) + 1
    model = digits_mlp(inputs=math.prod(x_train.shape[1:]), hidden=cut_width, width=width,
                       classes=classes, seed=seed)
    dp: Callable[[int], ActivationDP] | None = None
    if epsilon is not None:
        def dp(c: int) -> ActivationDP:
            return ActivationDP(clip=activation_clip, epsilon=epsilon, epochs=epochs, party=c)

    loaders = _loaders(x_train, y_train, clients=clients, batch_size=batch_size, seed=seed)
    sl = SplitLearning(
        model, cuts=CUTS[topology], clients=loaders,
        optimizer=lambda p: torch.optim.Adam(p, lr=lr) if optimizer == "adam" else _sgd(p, lr),
        activation_dp=dp, nopeek=None if nopeek is None else NoPeek(nopeek),
        label_protection=label_protection, aggregator=aggregator,
    )
    t0 = time.perf_counter()
    sl.fit(epochs=epochs, progress=on_epoch)
    seconds = time.perf_counter() - t0
    stats = sl.stats.to_dict()
    steps = max(stats["steps"], 1)
    report = sl.report()
    dp_reports = report["protections"]["activation_dp"]
    return {
        "topology": topology,
        "clients": clients,
        "aggregator": sl.aggregator,
        "epochs": epochs,
        "accuracy": _accuracy(model, x_test, y_test,
                              clip=activation_clip if epsilon is not None else None),
        "final_loss": sl.history[-1]["loss"],
        "epsilon": None if not dp_reports else max(d["epsilon"] for d in dp_reports),
        "noise_multiplier": None if not dp_reports else dp_reports[0]["noise_multiplier"],
        "delta": None if not dp_reports else dp_reports[0]["delta"],
        "seconds": seconds,
        "seconds_per_batch": seconds / steps,
        "bytes_per_batch": (stats["bytes_up"] + stats["bytes_down"]) / steps,
        "aggregation_bytes": stats["aggregation_bytes"],
        "cost": stats,
        "history": sl.history,
        "privacy": report["privacy"],
    }


def _sgd(params: Any, lr: float = 0.05) -> Any:
    return require_torch().optim.SGD(params, lr=lr, momentum=0.9)


def train_unsplit(
    x_train: Array, y_train: Array, x_test: Array, y_test: Array, *, epochs: int = 6,
    width: int = 64, seed: int = 0,
) -> dict[str, Any]:
    """:func:`digits_mlp` trained in one piece with the same optimizer and batches: the
    reference for accuracy and for the cost of splitting."""
    torch = require_torch()
    model = digits_mlp(width=width, seed=seed)
    opt = _sgd(model.parameters())
    loader = _loaders(x_train, y_train, clients=1, batch_size=32, seed=seed)[0]
    steps, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            steps += 1
    seconds = time.perf_counter() - t0
    return {"accuracy": _accuracy(model, x_test, y_test, clip=None),
            "seconds_per_batch": seconds / steps, "bytes_per_batch": 0.0, "steps": steps}


def train_encrypted(
    x_train: Array, y_train: Array, x_test: Array, y_test: Array, *, epochs: int = 2,
    width: int = 64, seed: int = 0,
) -> dict[str, Any]:
    """U-shaped training whose server part is the CKKS cut layer
    (:class:`~secureagg.split.encrypted.EncryptedSplitLearning`; needs the ``he`` extra)."""
    torch = require_torch()
    from secureagg.split.encrypted import EncryptedSplitLearning

    model = digits_mlp(width=width, seed=seed)
    data = torch.utils.data.TensorDataset(
        torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(y_train, dtype=np.int64)),
    )
    loader = torch.utils.data.DataLoader(
        data, batch_size=32, shuffle=True, drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
    sl = EncryptedSplitLearning(model, cuts=CUTS["u-shaped-linear"], client=loader,
                                optimizer=_sgd, server_lr=0.05)
    t0 = time.perf_counter()
    sl.fit(epochs=epochs)
    seconds = time.perf_counter() - t0
    stats = sl.stats.to_dict()
    return {
        "accuracy": _accuracy(model, x_test, y_test, clip=None),
        "seconds_per_batch": seconds / max(stats["steps"], 1),
        "bytes_per_batch": stats["bytes_per_step"],
        "steps": stats["steps"],
        "cost": stats,
        "server_received": sorted({e.kind for e in sl.transcript}),
        "noise_multiplier_on_weight_gradient": sl.options["noise_multiplier"],
        "epsilon": sl.privacy()["epsilon"],
        "privacy": sl.privacy(),
    }


def _pooled(grads: list[Array], labels: list[Array]) -> dict[str, float]:
    g, y = np.concatenate(grads), np.concatenate(labels)
    return {
        "norm_auc": norm_attack(g, y).auc_either_orientation,
        "cosine_auc": cosine_attack(g, y).auc_either_orientation,
        "examples": int(y.size),
    }


def label_leakage(
    x: Array,
    y_binary: Array,
    *,
    topology: str = "vanilla",
    label_protection: Callable[[Any, Any], Any] | None = None,
    epochs: int = 2,
    batch_size: int = 64,
    lr: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Attack the gradients the non-label party receives on a binary task (labels 0/1).

    Vanilla: the client receives the cut gradients; U-shaped: the server receives the output
    gradients. The attacker pools every gradient it received (a batch alone holds too few
    positives for a stable AUC) and is scored in either orientation (``max(auc, 1 - auc)``, the
    stronger attacker); ``per_epoch`` has the same per epoch.
    """
    torch = require_torch()
    if topology not in ("vanilla", "u-shaped"):
        raise ConfigurationError("label leakage is measured for 'vanilla' or 'u-shaped'")
    target = CutGradients if topology == "vanilla" else OutputGradients
    grads: list[Array] = []
    labels: list[Array] = []

    def observe(ex: Exchange) -> None:
        if isinstance(ex.message, target):
            grads.append(np.asarray(ex.message.values).reshape(ex.message.shape[0], -1))
            labels.append(np.asarray(ex.labels, dtype=np.int64))

    model = digits_mlp(inputs=math.prod(x.shape[1:]), classes=2, seed=seed)
    loaders = _loaders(x, y_binary, clients=1, batch_size=batch_size, seed=seed)
    sl = SplitLearning(
        model, cuts=CUTS[topology], clients=loaders,
        optimizer=lambda p: torch.optim.SGD(p, lr=lr),
        label_protection=label_protection, observe=observe,
    )
    per_epoch = []
    for _ in range(epochs):
        start = len(grads)
        sl.fit(epochs=1)
        per_epoch.append(_pooled(grads[start:], labels[start:]))
    everything = _pooled(grads, labels)
    return {
        "topology": topology,
        "protection": None
        if label_protection is None
        else getattr(label_protection, "method", type(label_protection).__name__),
        "positives": float(np.mean(y_binary)),
        "norm_auc": everything["norm_auc"],
        "cosine_auc": everything["cosine_auc"],
        "examples": everything["examples"],
        "per_epoch": per_epoch,
        "final_loss": sl.history[-1]["loss"],
        "privacy": sl.privacy(),
    }


def inversion(
    x: Array,
    y: Array,
    *,
    epsilon: float | None = None,
    nopeek: float | None = None,
    epochs: int = 5,
    activation_clip: float = 1.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Train U-shaped with the given protection; probe the activations the server received.

    The probe sees the activations of the last epoch *as released* (clipped and noised under
    ActivationDP) and the true inputs of half of them, fits a ridge decoder, and reconstructs the
    other half. ``mse_ratio`` 1.0 means no better than guessing the mean input.
    """
    torch = require_torch()
    released: list[tuple[Array, tuple[int, ...]]] = []
    epoch_marker: list[int] = []

    def observe(ex: Exchange) -> None:
        if isinstance(ex.message, Activations):
            values = np.asarray(ex.message.values).reshape(ex.message.shape)
            released.append((values, ex.example_ids))

    model = digits_mlp(inputs=math.prod(x.shape[1:]), classes=int(y.max()) + 1, seed=seed)
    dp = None
    if epsilon is not None:
        dp = ActivationDP(clip=activation_clip, epsilon=epsilon, epochs=epochs)
    loaders = _loaders(x, y, clients=1, batch_size=32, seed=seed)
    sl = SplitLearning(
        model, cuts=CUTS["u-shaped"], clients=loaders,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        activation_dp=dp, nopeek=None if nopeek is None else NoPeek(nopeek), observe=observe,
    )
    for _ in range(epochs):
        epoch_marker.append(len(released))
        sl.fit(epochs=1)
    last = released[epoch_marker[-1]:]
    acts = np.concatenate([a for a, _ in last])
    ids = np.concatenate([np.asarray(i, dtype=np.int64) for _, i in last])
    subset = loaders[0].dataset
    inputs = np.asarray(x, dtype=np.float64)[np.asarray(subset.indices)[ids]]
    result = inversion_probe(acts, inputs)
    return {
        "epsilon": None if dp is None else dp.epsilon,
        "nopeek": nopeek,
        "privacy": sl.privacy(),
        **result.to_dict(),
    }
