"""Votes: encoding, the admissible set, and refusal of malformed votes (counted as absent)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from secureagg.ensemble.aggregate import SecureVoteAggregator
from secureagg.ensemble.votes import VoteSpec, encode_votes
from secureagg.errors import ConfigurationError, InvalidInputError

C = 4


def test_one_hot_from_scores_and_labels() -> None:
    scores = np.array([[0.1, 0.7, 0.2, 0.0], [0.5, 0.5, 0.0, 0.0]])
    assert encode_votes("one-hot", scores, C).tolist() == [[0, 1, 0, 0], [1, 0, 0, 0]]
    assert encode_votes("one-hot", np.array([3, 0]), C).tolist() == [[0, 0, 0, 1], [1, 0, 0, 0]]
    with pytest.raises(InvalidInputError):
        encode_votes("one-hot", np.array([4]), C)
    with pytest.raises(InvalidInputError):
        encode_votes("one-hot", np.array([[np.nan, 0, 0, 0]]), C)


def test_top_k_has_k_ones_at_the_largest_scores() -> None:
    v = encode_votes("top-k", np.array([[0.1, 0.4, 0.3, 0.2]]), C, top_k=2)
    assert v.tolist() == [[0, 1, 1, 0]]


def test_softmax_is_clipped_per_row_and_rounded_down() -> None:
    spec = VoteSpec("softmax", C, clip=0.5, resolution=100)
    p = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    v = spec.encode(p)
    assert np.linalg.norm(v, axis=1) == pytest.approx([0.5, 0.5])
    q = spec.to_integers(v)
    assert q.tolist() == [[49, 0, 0, 0], [24, 24, 24, 24]]  # rounded down after the clip
    assert (q * q).sum(axis=1).max() <= spec.l2_squared_bound == 2500
    ints, reason = spec.validate(v, num_queries=2)
    assert reason is None and ints is not None and ints.tolist() == q.tolist()
    # the L1 variant
    l1 = VoteSpec("softmax", C, clip=0.5, clip_norm="l1", resolution=100)
    assert l1.l1_bound == 50 and l1.l2_squared_bound == 2500
    assert np.abs(l1.encode(p)).sum(axis=1) == pytest.approx([0.5, 0.5])


def test_bounds_of_the_admissible_set() -> None:
    assert (VoteSpec("one-hot", C).l2_squared_bound, VoteSpec("one-hot", C).l1_bound) == (1, 1)
    top3 = VoteSpec("top-k", 10, top_k=3)
    assert (top3.l2_squared_bound, top3.l1_bound) == (3, 3)
    soft = VoteSpec("softmax", 10, clip=0.3, resolution=1000)
    # floor((1000 * 0.3)^2) computed exactly: the float 0.3 is just below 3/10
    assert soft.l2_squared_bound == 89999
    assert soft.l1_bound == min(89999, math.isqrt(10 * 89999))
    edge = soft.encode(np.array([[1.0] + [0.0] * 9]))
    assert soft.validate(edge, num_queries=1)[1] is None  # the clipped vote stays admissible
    with pytest.raises(ConfigurationError):
        VoteSpec("top-k", 3, top_k=3)
    with pytest.raises(ConfigurationError):
        VoteSpec("softmax", 3, clip=0.0001, resolution=10)


@pytest.mark.parametrize(
    ("votes", "fragment"),
    [
        (np.zeros((2, C + 1)), "wrong shape"),
        (np.zeros((3, C)), "wrong shape"),
        (np.array([[1, 0, 0, 0], [np.nan, 0, 0, 0]]), "non-finite"),
        (np.array([[1, 0, 0, 0], [0, 2, 0, 0]]), "value other than 0 or 1"),
        (np.array([[1, 0, 0, 0], [0, 1, 1, 0]]), "exactly 1 one"),
        (np.array([[1, 0, 0, 0], [0, 0, 0, 0]]), "exactly 1 one"),
        (np.array([[1, 0, 0, 0], [0, -1, 1, 1]]), "negative"),
        (np.array([[1, 0, 0, 0], [0, 0.5, 0.5, 0]]), "value other than 0 or 1"),
        ("not a vote", "not a numeric array"),
    ],
)
def test_malformed_one_hot_votes_are_refused(votes: object, fragment: str) -> None:
    ints, reason = VoteSpec("one-hot", C).validate(votes, num_queries=2)
    assert ints is None and reason is not None and fragment in reason


def test_softmax_vote_above_its_bound_is_refused() -> None:
    spec = VoteSpec("softmax", C, clip=0.5, resolution=100)
    ints, reason = spec.validate(np.array([[0.6, 0.0, 0.0, 0.0]]), num_queries=1)
    assert ints is None and reason == "a row exceeds the L2 bound"
    ints, reason = spec.validate(np.array([[0.4, 0.3, 0.0, 0.0]]), num_queries=1)  # norm 0.5
    assert reason is None
    ints, reason = spec.validate(np.array([[1.5, 0.0, 0.0, 0.0]]), num_queries=1)
    assert reason == "a probability above 1"


def test_a_malformed_party_is_refused_and_counted_as_absent() -> None:
    n, q = 5, 200
    agg = SecureVoteAggregator(n, C, sigma=2.0, seed=b"malformed", min_survivors=2)
    good = encode_votes("one-hot", np.ones(q, dtype=np.int64), C)  # everyone votes class 1
    bad_nan = good.copy()
    bad_nan[3, 1] = np.nan
    bad_weight = good.copy()
    bad_weight[0, 1] = 2.0  # a vote of weight 2
    votes = {0: good, 1: good[:-1], 2: bad_nan, 3: bad_weight, 4: good}
    res = agg.aggregate(votes, num_queries=q)
    assert res.answered
    assert sorted(res.refused) == [1, 2, 3]
    assert "wrong shape" in res.refused[1] and "non-finite" in res.refused[2]
    assert "other than 0 or 1" in res.refused[3]
    assert res.survivors == (0, 4)
    assert res.noisy_histogram is not None
    # Only the two valid votes are in the sum: class 1 counts are 2 + noise (std 2*sqrt(2/5)).
    assert abs(float(res.noisy_histogram[:, 1].mean()) - 2.0) < 0.5
    entry = agg.ledger()[0]
    assert entry["refused"] == [1, 2, 3] and entry["survivors"] == 2


def test_abstain_mode_submits_a_zero_vote_that_the_server_cannot_tell() -> None:
    n, q = 4, 200
    agg = SecureVoteAggregator(n, C, sigma=2.0, seed=b"abstain", malformed="abstain")
    good = encode_votes("one-hot", np.ones(q, dtype=np.int64), C)
    votes = {0: good, 1: good, 2: good, 3: np.full((q, C), np.nan)}
    res = agg.aggregate(votes)
    assert res.answered and sorted(res.refused) == [3]
    assert res.survivors == (0, 1, 2, 3)  # party 3 took part, with the all-zero vote
    assert res.noisy_histogram is not None
    assert abs(float(res.noisy_histogram[:, 1].mean()) - 3.0) < 0.5
