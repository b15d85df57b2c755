"""Secure ensemble inference: the querier gets the survivors' mean prediction (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest

from secureagg.ensemble.inference import combine_predictions
from secureagg.errors import ConfigurationError, InvalidInputError


def _probs(parties: int, queries: int = 20, classes: int = 5) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(1)
    out = {}
    for p in range(parties):
        raw = rng.random((queries, classes))
        out[p + 10] = raw / raw.sum(axis=1, keepdims=True)  # party ids need not be 0..n-1
    return out


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("protocol", ["secagg+", "ckks"])
def test_mean_of_the_survivors_within_the_bound(protocol: str) -> None:
    if protocol == "ckks":
        pytest.importorskip("tenseal")
    probs = _probs(5)
    res = combine_predictions(probs, protocol=protocol, dropouts={12: res_stage(protocol)},
                              seed=3)
    assert 12 not in res.survivors and len(res.survivors) == 4
    expected = np.mean([probs[p] for p in res.survivors], axis=0)
    assert np.max(np.abs(res.mean - expected)) <= res.error_bound
    assert res.error_bound < 1e-3
    # a mean of all five would differ: the dropped party's vector is really out
    assert np.max(np.abs(res.mean - np.mean(list(probs.values()), axis=0))) > res.error_bound
    assert res.labels.shape == (20,) and res.bytes_up_per_party > 0


def res_stage(protocol: str) -> str:
    return "masked" if protocol.startswith("secagg") else "upload"


@pytest.mark.filterwarnings("ignore")
def test_malformed_predictions_are_refused_and_the_rest_combined() -> None:
    probs = _probs(4)
    probs[11] = probs[11][:5]  # wrong shape
    bad = probs[12].copy()
    bad[0, 0] = np.nan
    probs[12] = bad
    probs[13] = probs[13] * 2  # values above 1
    probs[14] = _probs(1)[10]
    probs[15] = _probs(1)[10]
    res = combine_predictions(probs, seed=1)
    assert set(res.refused) == {11, 12, 13}
    assert "shape" in res.refused[11] and "NaN" in res.refused[12]
    assert set(res.survivors) == {10, 14, 15}


def test_bad_arguments() -> None:
    with pytest.raises(ConfigurationError):
        combine_predictions(_probs(3), protocol="paillier")
    with pytest.raises(ConfigurationError):
        combine_predictions(_probs(3), clip=0)
    with pytest.raises(InvalidInputError):
        combine_predictions({0: np.full((2, 2), np.nan), 1: np.ones((2, 2)) / 2})
