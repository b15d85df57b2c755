"""Secure GNMax: the released histogram is the survivors' plaintext histogram plus noise of the
stated variance, one SecAgg+ round per batch, dropouts handled, the label its noisy argmax."""

from __future__ import annotations

import math

import numpy as np
import pytest

from secureagg.ensemble.aggregate import SecureVoteAggregator
from secureagg.ensemble.votes import encode_votes
from secureagg.errors import ConfigurationError
from tests.vectors import load_vectors

N, C, Q = 10, 10, 600  # Q*C = 6000 noisy values per batch


def _votes(rng: np.random.Generator) -> dict[int, np.ndarray]:
    votes = {p: encode_votes("one-hot", rng.integers(0, C, size=Q), C) for p in range(7)}
    for p in (7, 8):  # they will drop before their masked input is sent: all vote class 0
        votes[p] = encode_votes("one-hot", np.zeros(Q, dtype=np.int64), C)
    votes[9] = encode_votes("one-hot", np.full(Q, 9, dtype=np.int64), C)  # drops at unmask
    return votes


@pytest.mark.parametrize("mechanism", ["ddgauss", "skellam"])
def test_histogram_is_survivors_sum_plus_noise_of_the_stated_variance(mechanism: str) -> None:
    rng = np.random.default_rng(7)
    votes = _votes(rng)
    sigma = 3.0  # vote units, provisioned for 7 survivors
    agg = SecureVoteAggregator(
        N,
        C,
        sigma=sigma,
        mechanism=mechanism,
        expected_dropout=0.3,
        seed=b"stat-" + mechanism.encode(),
    )
    assert agg.provisioned == 7 and agg.min_survivors == 7
    res = agg.aggregate(votes, dropouts={7: "masked", 8: "share", 9: "unmask"})
    assert res.answered and res.noisy_histogram is not None and res.labels is not None
    # 7 and 8 went silent before their masked input: not in the sum. 9 was silent only at
    # unmask: in the sum (its masks recovered), with its noise share.
    assert res.survivors == (0, 1, 2, 3, 4, 5, 6, 9)
    true = sum(votes[p] for p in res.survivors)
    diff = (res.noisy_histogram - true).reshape(-1)
    assert np.all(diff == np.round(diff))  # integer votes, integer noise: exact arithmetic
    stated = sigma**2 * 8 / 7  # 8 shares of sigma²/7 each
    assert res.noise_std == pytest.approx(math.sqrt(stated))
    n_values = diff.size
    # mean ~ 0: 5 standard errors
    assert abs(diff.mean()) < 5 * math.sqrt(stated / n_values)
    # sample variance within 5 standard errors of the stated variance (normal approximation,
    # kurtosis ~3 for these near-Gaussian sums: sd of s² ~ stated * sqrt(2 / N)). Noise
    # provisioned for all 10 parties or for the 7 expected would be 25% or 12.5% off: >5 sd.
    assert abs(diff.var(ddof=1) - stated) < 5 * stated * math.sqrt(2.0 / n_values)
    # the dropped parties' class-0 votes (2 per query) are not in the histogram
    assert abs(float((res.noisy_histogram[:, 0] - true[:, 0]).mean())) < 5 * math.sqrt(stated / Q)
    assert abs(float(res.noisy_histogram[:, 0].mean() - (true[:, 0].mean() + 2))) > 1.0
    # GNMax: the label is the argmax of the released histogram
    assert np.array_equal(res.labels, np.argmax(res.noisy_histogram, axis=1))
    entry = agg.ledger()[0]
    assert entry["survivors"] == 8 and entry["dropped"] == [7, 8, 9]
    assert entry["noise_std_votes"] == pytest.approx(math.sqrt(stated))


def test_one_secure_round_carries_the_whole_batch() -> None:
    agg = SecureVoteAggregator(4, C, sigma=1.0, mechanism="skellam", seed=b"one-round")
    votes = {p: encode_votes("one-hot", np.arange(50) % C, C) for p in range(4)}
    res = agg.aggregate(votes)
    assert res.answered
    # one round: each party's masked input arrives once, holding all Q*C values
    kinds = res.metrics["stages"]
    assert sum(s["messages_up"] for s in kinds.values()) == 4 * 4  # 4 stages x 4 parties
    assert res.labels is not None and (res.labels == np.arange(50) % C).mean() > 0.9


def test_too_few_survivors_abort_and_release_nothing() -> None:
    agg = SecureVoteAggregator(5, C, sigma=2.0, seed=b"abort", expected_dropout=0.2)
    votes = {p: encode_votes("one-hot", np.zeros(10, dtype=np.int64), C) for p in range(5)}
    res = agg.aggregate(votes, dropouts={0: "advertise", 1: "masked"})
    assert not res.answered and res.aborted is not None and res.noisy_histogram is None
    assert agg.epsilon() == 0.0
    assert agg.ledger()[0]["status"] == "aborted"


def test_encoding_vector_known_answer() -> None:
    """protocols/ensemble/vectors/encoding.json: votes -> the integer vector SecAgg sums."""
    for v in load_vectors("ensemble", "encoding"):
        agg = SecureVoteAggregator(
            3,
            v["num_classes"],
            sigma=8.0,
            vote=v["kind"],
            top_k=v.get("top_k", 1),
            clip=v.get("clip", 1.0),
            resolution=v.get("resolution", 1024),
        )
        outputs = np.array(v["outputs"], dtype=np.float64)
        votes = agg.encode(outputs)
        ints, reason = agg.spec.validate(votes, num_queries=outputs.shape[0])
        assert reason is None and ints is not None
        assert ints.reshape(-1).tolist() == v["integer_vector"], v["name"]


def test_softmax_votes_sum_exactly_at_their_resolution() -> None:
    rng = np.random.default_rng(3)
    n, q, sigma, r = 5, 400, 0.5, 100
    agg = SecureVoteAggregator(
        n, C, sigma=sigma, vote="softmax", clip=0.6, resolution=r, seed=b"softmax"
    )
    probs = {p: rng.dirichlet(np.ones(C), size=q) for p in range(n)}
    votes = {p: agg.encode(probs[p]) for p in range(n)}
    res = agg.aggregate(votes)
    assert res.answered and res.noisy_histogram is not None and res.noise_std == sigma
    true = sum(agg.spec.to_integers(votes[p]) for p in range(n)) / r  # rounded down, exact
    diff = (res.noisy_histogram - true).reshape(-1)
    assert np.allclose(diff * r, np.round(diff * r))
    assert abs(diff.mean()) < 5 * sigma / math.sqrt(diff.size)
    assert abs(diff.var(ddof=1) - sigma**2) < 5 * sigma**2 * math.sqrt(2.0 / diff.size)


def test_invalid_parameters_are_listed_together() -> None:
    with pytest.raises(ConfigurationError) as info:
        SecureVoteAggregator(1, 1, sigma=-1.0, mechanism="laplace")  # type: ignore[arg-type]
    assert len(info.value.problems) == 4
    # each party's discrete Gaussian sigma below 1/2: outside Kairouz et al. Thm 1, refused
    with pytest.raises(ConfigurationError, match="outside Kairouz"):
        SecureVoteAggregator(10, C, sigma=1.0)
