"""Data splitting for the demo: Dirichlet label skew from a CSPRNG, and the digits data set."""

from __future__ import annotations

import numpy as np
import pytest

from secureagg.demos.data import dirichlet_split, gamma_variate, permutation, split_stream
from secureagg.errors import ConfigurationError


def test_split_is_a_reproducible_partition() -> None:
    labels = np.repeat(np.arange(5), 40)
    parts = dirichlet_split(labels, num_clients=6, alpha=0.5, seed=3, min_size=5)
    joined = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(joined, np.arange(200))
    assert min(p.size for p in parts) >= 5
    again = dirichlet_split(labels, num_clients=6, alpha=0.5, seed=3, min_size=5)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = dirichlet_split(labels, num_clients=6, alpha=0.5, seed=4, min_size=5)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def _skew(alpha: float) -> float:
    """Mean over clients of the largest class share: 1/classes when IID, 1 when one class."""
    labels = np.repeat(np.arange(10), 100)
    parts = dirichlet_split(labels, num_clients=10, alpha=alpha, seed=1, min_size=1)
    return float(np.mean([np.bincount(labels[p], minlength=10).max() / p.size for p in parts]))


def test_small_alpha_skews_labels_large_alpha_does_not() -> None:
    assert _skew(0.1) > 0.6
    assert _skew(100.0) < 0.2


def test_gamma_and_permutation_are_distributed_as_claimed() -> None:
    stream = split_stream(7, context=b"test")
    for shape in (0.5, 2.0):
        draws = np.array([gamma_variate(shape, stream) for _ in range(4000)])
        assert abs(draws.mean() - shape) < 0.1 * shape + 0.05  # mean = shape
        assert abs(draws.var() - shape) < 0.25 * shape  # variance = shape
    firsts = np.bincount([permutation(4, stream)[0] for _ in range(2000)], minlength=4)
    assert firsts.min() > 400  # uniform: 500 each


def test_impossible_splits_are_refused() -> None:
    labels = np.repeat(np.arange(2), 5)
    with pytest.raises(ConfigurationError, match="need 20 examples"):
        dirichlet_split(labels, num_clients=4, alpha=1.0, seed=0, min_size=5)
    with pytest.raises(ConfigurationError) as info:
        dirichlet_split(labels, num_clients=0, alpha=-1.0, seed=0)
    assert len(info.value.problems) == 2


def test_digits_split_for_the_demo() -> None:
    pytest.importorskip("sklearn")
    from secureagg.demos.data import load_digits_federated

    data = load_digits_federated(num_clients=10, alpha=0.5, seed=0)
    assert data.x_train.shape[1] == 64
    assert data.x_train.dtype == np.float32
    assert data.x_train.min() >= 0.0
    assert data.x_train.max() <= 1.0
    assert data.y_train.size + data.y_test.size == 1797
    assert abs(data.y_test.size - 0.2 * 1797) < 10
    assert sum(data.client_sizes()) == data.y_train.size
    assert min(data.client_sizes()) >= 10
    again = load_digits_federated(num_clients=10, alpha=0.5, seed=0)
    assert again.client_sizes() == data.client_sizes()


def test_without_torch_the_error_names_the_extra() -> None:
    import subprocess
    import sys

    probe = (
        "import sys; sys.modules['torch'] = None\n"
        "import secureagg, secureagg.fl as fl\n"
        "from secureagg.errors import MissingDependencyError\n"
        "try:\n    fl.FederatedRun\nexcept MissingDependencyError as exc:\n"
        "    print(exc.package, exc.extra)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["torch", "dp"]
