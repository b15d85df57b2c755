"""Flower's own SecAgg+ as a peer column (secureagg.bench.flower_peer), at tiny sizes.

One round of Flower's SecAggPlusWorkflow + secaggplus_mod in this process: the released
aggregate is the mean of the survivors' updates within Flower's quantization step, the dropped
node is not in it, and the figures are finite and positive. No timing assertions.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

pytest.importorskip("flwr")

from secureagg.bench.flower_peer import (
    flower_available,
    flower_share_params,
    measure_flower_secaggplus,
)

N, D = 5, 100


def _updates(dropped_value: float = 0.0) -> np.ndarray:
    data = 0.5 * np.sin(np.arange(N * D, dtype=np.float64) * 0.7).reshape(N, D)
    data[3] = dropped_value  # node 3: far from the others when it should be excluded
    return data


def _check_figures(res: dict) -> None:
    assert res["available"] is True and res["completed"] is True
    assert res["errors"] == []
    for key in (
        "server_seconds",
        "client_seconds_total",
        "client_seconds_max",
        "total_compute_seconds",
        "serde_seconds",
    ):
        assert math.isfinite(res[key]) and res[key] > 0, key
    assert res["client_seconds_max"] <= res["client_seconds_total"]
    for key in ("bytes_up_per_client", "bytes_down_per_client"):
        assert isinstance(res[key], int) and res[key] > 0, key
    # the masked input alone is d values of Flower's int64 masked vector
    assert res["bytes_up_per_client"] > 8 * D
    # the global model Flower sends down in the FitIns (d float32 zeros)
    assert res["model_bytes_down_per_client"] == 4 * D
    assert set(res["stages"]) == {"setup", "share_keys", "collect_masked_vectors", "unmask"}


def test_available_and_mapping() -> None:
    assert flower_available() is None
    assert flower_share_params(36, 19) == (37, 19)
    assert flower_share_params(N - 1, 2) == (N, 2)


def test_no_dropout_releases_the_mean() -> None:
    data = _updates(0.9)
    res = measure_flower_secaggplus(
        N, D, num_shares=N, threshold=2, updates=data, keep_aggregate=True
    )
    _check_figures(res)
    assert res["survivors"] == list(range(N)) and res["dropped"] == []
    step = 2.0 / 2**22  # clip 1.0 over Flower's 2^22 quantization levels
    assert res["error_bound"] == pytest.approx(step)
    aggregate = np.asarray(res["aggregate"])
    assert np.max(np.abs(aggregate - data.mean(axis=0))) <= step
    assert res["max_abs_error"] <= step
    assert res["stages"]["collect_masked_vectors"]["replies"] == N


def test_dropped_node_is_excluded() -> None:
    data = _updates(0.9)
    res = measure_flower_secaggplus(
        N, D, num_shares=N, threshold=2, dropped={3: "masked"}, updates=data, keep_aggregate=True
    )
    _check_figures(res)
    survivors = [0, 1, 2, 4]
    assert res["dropped"] == [3] and res["survivors"] == survivors
    aggregate = np.asarray(res["aggregate"])
    step = 2.0 / 2**22
    assert np.max(np.abs(aggregate - data[survivors].mean(axis=0))) <= step
    # with node 3 the mean would be off by about 0.9 / 5 in every value
    assert np.min(np.abs(aggregate - data.mean(axis=0))) > 0.1
    assert res["max_abs_error"] <= step
    stages = res["stages"]
    # it shared its keys, then went silent: the server recovered its pairwise masks
    assert stages["share_keys"]["replies"] == N
    assert stages["collect_masked_vectors"]["replies"] == N - 1
    assert stages["unmask"]["replies"] == N - 1


def test_flower_logger_restored_and_inputs_checked() -> None:
    logger = logging.getLogger("flwr")
    before = (logger.level, logger.propagate)
    measure_flower_secaggplus(N, 10, num_shares=N, threshold=2, seed=1)
    assert (logger.level, logger.propagate) == before
    with pytest.raises(ValueError, match="num_shares"):
        measure_flower_secaggplus(N + 2, 10, num_shares=4, threshold=2)
    with pytest.raises(ValueError, match="threshold"):
        measure_flower_secaggplus(N, 10, num_shares=N, threshold=1)
    with pytest.raises(ValueError, match="dropped"):
        measure_flower_secaggplus(N, 10, num_shares=N, threshold=2, dropped=[N])
