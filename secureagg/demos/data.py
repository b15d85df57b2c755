"""Data for federated experiments: a Dirichlet label-skew split and sklearn's digits data set.

Every random choice here (the train/test split, the per-class shuffles, the Dirichlet draws) comes
from a CSPRNG keystream (:class:`~secureagg.crypto.prg.Keystream`, label
``secureagg/v1/fl/data-split``) keyed by the caller's ``seed``: the same seed gives the same split
on every machine, which is what a comparison between protocols needs. The split is not a secret
(the seed is stored in run directories); it only decides which silo holds which example.

Dirichlet label skew (Hsu et al. 2019): for each class ``c``, proportions
``p_c ~ Dirichlet(alpha, ..., alpha)`` over the ``K`` clients; the class's examples, shuffled, are
cut at the cumulative proportions. Small ``alpha`` (0.1) gives each client a few classes; large
``alpha`` (100) is close to IID. Splits where a client holds fewer than ``min_size`` examples are
redrawn (up to ``max_attempts`` times, then :class:`~secureagg.errors.ConfigurationError`).

Gamma variates use Marsaglia and Tsang (2000) with normals from Box-Muller, all from the keystream;
``Gamma(a)`` for ``a < 1`` is ``Gamma(a + 1) * U^(1/a)``.

>>> import numpy as np
>>> labels_ = np.repeat(np.arange(3), 20)
>>> parts = dirichlet_split(labels_, num_clients=4, alpha=0.5, seed=1, min_size=2)
>>> sorted(int(i) for p in parts for i in p) == list(range(60))
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from secureagg.crypto import labels, prg
from secureagg.errors import ConfigurationError, MissingDependencyError
from secureagg.transport import derive_sim_seed

if TYPE_CHECKING:
    import torch

__all__ = [
    "FederatedData",
    "dirichlet_split",
    "load_digits_federated",
    "make_loaders",
    "split_stream",
]


def split_stream(seed: bytes | int, *, context: bytes) -> prg.Keystream:
    """The CSPRNG keystream of data splitting for ``seed`` and a purpose ``context``."""
    key = derive_sim_seed(seed, context=b"fl/data-split")
    return prg.Keystream(key, label=labels.FL_DATA_SPLIT, context=context)


def permutation(count: int, stream: prg.Keystream) -> npt.NDArray[np.int64]:
    """A uniform permutation of ``range(count)`` (Fisher-Yates with rejection-sampled indices)."""
    out = np.arange(count, dtype=np.int64)
    for i in range(count - 1, 0, -1):
        j = stream.below(i + 1)
        out[i], out[j] = out[j], out[i]
    return out


def _normal(stream: prg.Keystream) -> float:
    u1, u2 = stream.uniform(2)
    u1 = 1.0 - u1  # in (0, 1]: log is finite
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def gamma_variate(shape: float, stream: prg.Keystream) -> float:
    """One ``Gamma(shape, 1)`` variate from the keystream (Marsaglia-Tsang)."""
    if not (math.isfinite(shape) and shape > 0):
        raise ConfigurationError(f"the gamma shape must be positive and finite, got {shape!r}")
    if shape < 1.0:
        u = 1.0 - float(stream.uniform(1)[0])  # (0, 1]
        return float(gamma_variate(shape + 1.0, stream) * u ** (1.0 / shape))
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = _normal(stream)
        v = (1.0 + c * x) ** 3
        if v <= 0.0:
            continue
        u = 1.0 - float(stream.uniform(1)[0])
        if math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v):
            return d * v


def dirichlet(alpha: float, count: int, stream: prg.Keystream) -> npt.NDArray[np.float64]:
    """One draw of ``Dirichlet(alpha, ..., alpha)`` over ``count`` categories."""
    draws = np.array([gamma_variate(alpha, stream) for _ in range(count)], dtype=np.float64)
    total = float(draws.sum())
    if total <= 0.0:  # astronomically unlikely underflow for tiny alpha: fall back to one-hot
        draws[stream.below(count)] = 1.0
        total = 1.0
    return draws / total


def dirichlet_split(
    labels_: npt.ArrayLike,
    *,
    num_clients: int,
    alpha: float,
    seed: bytes | int,
    min_size: int = 1,
    max_attempts: int = 100,
) -> list[npt.NDArray[np.int64]]:
    """Split example indices across ``num_clients`` by Dirichlet(``alpha``) label skew.

    Returns one sorted index array per client; together they are a partition of
    ``range(len(labels_))``.
    """
    y = np.asarray(labels_)
    problems: list[str] = []
    if y.ndim != 1 or y.size == 0:
        problems.append("labels must be a non-empty 1-D array")
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        problems.append(f"num_clients must be a positive integer, got {num_clients!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not (
        math.isfinite(alpha) and alpha > 0
    ):
        problems.append(f"alpha must be positive and finite, got {alpha!r}")
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
        problems.append(f"min_size must be a non-negative integer, got {min_size!r}")
    if not problems and num_clients * min_size > y.size:
        problems.append(
            f"{num_clients} clients with at least {min_size} examples each need "
            f"{num_clients * min_size} examples; there are {y.size}"
        )
    if problems:
        raise ConfigurationError(problems)
    stream = split_stream(seed, context=b"dirichlet")
    classes = np.unique(y)
    by_class = [np.flatnonzero(y == c) for c in classes]
    for _ in range(max_attempts):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for idx in by_class:
            shuffled = idx[permutation(idx.size, stream)]
            p = dirichlet(float(alpha), num_clients, stream)
            cuts = (np.cumsum(p)[:-1] * idx.size).astype(np.int64)
            for client, chunk in enumerate(np.split(shuffled, cuts)):
                parts[client].extend(int(i) for i in chunk)
        if min(len(p) for p in parts) >= min_size:
            return [np.array(sorted(p), dtype=np.int64) for p in parts]
    raise ConfigurationError(
        f"no Dirichlet(alpha={alpha}) split gave every one of {num_clients} clients at least "
        f"{min_size} examples in {max_attempts} attempts; raise alpha or lower min_size"
    )


@dataclass(frozen=True)
class FederatedData:
    """A train set split across clients plus a held-out test set (numpy, float32 features)."""

    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]
    client_indices: tuple[npt.NDArray[np.int64], ...]
    alpha: float
    seed_note: str

    @property
    def num_clients(self) -> int:
        return len(self.client_indices)

    def client_sizes(self) -> list[int]:
        return [int(idx.size) for idx in self.client_indices]

    def label_histograms(self) -> list[list[int]]:
        """Examples per class, per client (to show the skew)."""
        k = int(self.y_train.max()) + 1
        return [np.bincount(self.y_train[idx], minlength=k).tolist() for idx in self.client_indices]

    def describe(self) -> dict[str, Any]:
        return {
            "train_examples": int(self.y_train.size),
            "test_examples": int(self.y_test.size),
            "features": int(self.x_train.shape[1]),
            "clients": self.num_clients,
            "dirichlet_alpha": self.alpha,
            "client_sizes": self.client_sizes(),
            "label_histograms": self.label_histograms(),
            "split_seed": self.seed_note,
        }


def load_digits_federated(
    *,
    num_clients: int = 10,
    alpha: float = 0.5,
    seed: bytes | int = 0,
    test_fraction: float = 0.2,
    min_size: int = 10,
) -> FederatedData:
    """sklearn's digits (1797 8x8 images, shipped with scikit-learn: nothing is downloaded).

    Features are scaled to [0, 1] (pixel / 16). A stratified ``test_fraction`` is held out (the
    same for every client count), the rest split by :func:`dirichlet_split`.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise MissingDependencyError(
            "scikit-learn", "all", purpose="the digits data set of the demo"
        ) from None
    if not (isinstance(test_fraction, float) and 0.0 < test_fraction < 1.0):
        raise ConfigurationError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).astype(np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    stream = split_stream(seed, context=b"train-test")
    test_parts, train_parts = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[permutation(idx.size, stream)]
        n_test = round(test_fraction * idx.size)
        test_parts.append(idx[:n_test])
        train_parts.append(idx[n_test:])
    test_idx = np.sort(np.concatenate(test_parts))
    train_idx = np.sort(np.concatenate(train_parts))
    y_train = y[train_idx]
    parts = dirichlet_split(
        y_train, num_clients=num_clients, alpha=alpha, seed=seed, min_size=min_size
    )
    return FederatedData(
        x_train=x[train_idx],
        y_train=y_train,
        x_test=x[test_idx],
        y_test=y[test_idx],
        client_indices=tuple(parts),
        alpha=float(alpha),
        seed_note=repr(seed),
    )


def make_loaders(
    data: FederatedData, *, batch_size: int = 32, shuffle: bool = True
) -> tuple[list[torch.utils.data.DataLoader[Any]], torch.utils.data.DataLoader[Any]]:
    """One torch ``DataLoader`` per client (``TensorDataset``) and one for the test set.

    Client loaders shuffle with torch's global RNG, which a seeded federated run seeds per
    (round, client) so that runs and resumes are reproducible.
    """
    from secureagg.dp.torch_import import require_torch

    torch_ = require_torch()
    data_mod = torch_.utils.data
    loaders = []
    for idx in data.client_indices:
        ds = data_mod.TensorDataset(
            torch_.from_numpy(data.x_train[idx]), torch_.from_numpy(data.y_train[idx])
        )
        loaders.append(data_mod.DataLoader(ds, batch_size=batch_size, shuffle=shuffle))
    test = data_mod.DataLoader(
        data_mod.TensorDataset(torch_.from_numpy(data.x_test), torch_.from_numpy(data.y_test)),
        batch_size=512,
        shuffle=False,
    )
    return loaders, test


def class_counts(labels_: Sequence[int] | npt.NDArray[np.int64], num_classes: int) -> list[int]:
    """Examples per class (a small helper for reports)."""
    counts = np.bincount(np.asarray(labels_, dtype=np.int64), minlength=num_classes)
    return [int(c) for c in counts]
