"""Secure GNMax under CKKS, the key holder adding the noise: the released histogram is the exact
plaintext histogram of the parties in the sum plus discrete Gaussian noise of the stated variance
(one source, whatever the dropouts), the accounting is the discrete Gaussian mechanism's (closed
form, dp-accounting, replay, re-accounting), the budget stops answering, malformed votes are
refused, and a CKKS setting whose rounding would not be exact is refused.

Statistical checks run on a fixed seed (deterministic); their thresholds are set so that an
unseeded run would raise a false alarm with probability below 1e-6 per check."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

import secureagg.ensemble.ckks_votes as ckks_votes
from secureagg.audit.reaccount import reaccount
from secureagg.crypto import labels, prg
from secureagg.dp import noise, rdp
from secureagg.dp.accounting import PrivacyAccountant
from secureagg.dp.events import DistributedNoiseRound
from secureagg.ensemble.accounting import VoteAccountant
from secureagg.ensemble.ckks_votes import CkksVoteAggregator, KeyHolderNoise, round_to_integers
from secureagg.ensemble.votes import VoteSpec, encode_votes
from secureagg.errors import ConfigurationError

pytest.importorskip("tenseal")
pytestmark = pytest.mark.filterwarnings(
    "ignore::secureagg.transport.SeededRunWarning"
)

C = 10
# chi-square critical value, 20 degrees of freedom, p = 1e-6 (scipy.stats.chi2.isf(1e-6, 20))
CHI2_20_CRITICAL = 65.4207


def _dgauss_pmf(sigma: float, ks: np.ndarray) -> np.ndarray:
    """The N_Z(0, sigma²) pmf at ``ks`` (normalised over [-60 sigma, 60 sigma])."""
    support = np.arange(-math.ceil(60 * sigma), math.ceil(60 * sigma) + 1)
    norm = np.exp(-(support.astype(float) ** 2) / (2 * sigma**2)).sum()
    return np.exp(-(ks.astype(float) ** 2) / (2 * sigma**2)) / norm


def _chi_square(noise_values: np.ndarray, sigma: float) -> float:
    """Pearson's statistic of the noise against N_Z(0, sigma²): 19 cells for |k| <= 9 plus the
    two tails (df = 20)."""
    ks = np.arange(-9, 10)
    pmf = _dgauss_pmf(sigma, ks)
    tail = (1.0 - pmf.sum()) / 2
    expected = noise_values.size * np.concatenate([[tail], pmf, [tail]])
    observed = np.array(
        [np.sum(noise_values < -9)] + [np.sum(noise_values == k) for k in ks]
        + [np.sum(noise_values > 9)], dtype=float,
    )
    return float(np.sum((observed - expected) ** 2 / expected))


def test_histogram_is_exact_sum_plus_discrete_gaussian_of_the_stated_variance() -> None:
    n, q, sigma = 5, 600, 3.0  # 6000 noisy counts
    rng = np.random.default_rng(5)
    votes = {p: encode_votes("one-hot", rng.integers(0, C, size=q), C) for p in range(4)}
    votes[4] = encode_votes("one-hot", np.zeros(q, dtype=np.int64), C)  # drops: all class 0
    bad = np.zeros((q, C))
    bad[:, 1] = 2.0  # a vote of weight 2: refused, absent
    agg = CkksVoteAggregator(n + 1, C, sigma=sigma, min_survivors=2, seed=b"ckks-stat")
    res = agg.aggregate({**votes, 5: bad}, dropouts={4: "upload"})
    assert res.answered and res.noisy_histogram is not None and res.labels is not None
    assert res.survivors == (0, 1, 2, 3) and set(res.refused) == {5}
    true = sum(votes[p] for p in res.survivors)
    diff = (res.noisy_histogram - true).reshape(-1)
    assert np.all(diff == np.round(diff))  # exact rounding: integer noise on the exact sum
    assert res.noise_std == sigma  # one noise source: sigma whatever the survivors
    m = diff.size
    # mean 0 and the stated variance, 5 standard errors (two-sided false alarm 5.7e-7 each);
    # the variance of N_Z(0, 9) is 9 to within 1e-80, its kurtosis 3: sd(s²) = 9 sqrt(2/m).
    # Noise over-provisioned as in SecAgg (4 of 5 shares: 7.2) or the CKKS flooding alone
    # (std ~2e-4) would be tens of standard errors off.
    assert abs(diff.mean()) < 5 * math.sqrt(sigma**2 / m)
    assert abs(diff.var(ddof=1) - sigma**2) < 5 * sigma**2 * math.sqrt(2.0 / m)
    # the shape too: Pearson's chi-square against the discrete Gaussian pmf
    assert _chi_square(diff, sigma) < CHI2_20_CRITICAL
    # the dropped party's class-0 votes (1 per query) are not in the histogram
    assert abs(float((res.noisy_histogram[:, 0] - true[:, 0]).mean())) < 5 * sigma / math.sqrt(q)
    assert np.array_equal(res.labels, np.argmax(res.noisy_histogram, axis=1))
    entry = agg.ledger()[0]
    assert entry["survivors"] == 4 and entry["noise_shares"] == 1 and entry["dropped"] == [4]
    assert entry["refused"] == [5] and entry["noise_std_votes"] == sigma
    assert res.metrics["ckks_error_bound"] < 0.5


def test_noise_is_independent_across_batches_and_of_the_survivor_count() -> None:
    agg = CkksVoteAggregator(3, C, sigma=2.0, min_survivors=2, seed=b"ckks-batches")
    votes = {p: encode_votes("one-hot", np.arange(100) % C, C) for p in range(3)}
    a = agg.aggregate(votes)
    b = agg.aggregate(votes, dropouts={2: "upload"})
    assert a.noisy_histogram is not None and b.noisy_histogram is not None
    na = (a.noisy_histogram - sum(votes.values())).reshape(-1)
    nb = (b.noisy_histogram - sum(votes[p] for p in (0, 1))).reshape(-1)
    assert not np.array_equal(na, nb)  # a fresh draw per batch
    # both carry the one N_Z(0, 4): pooled variance within 5 standard errors
    pooled = np.concatenate([na, nb])
    assert abs(pooled.var(ddof=1) - 4.0) < 5 * 4.0 * math.sqrt(2.0 / pooled.size)


def test_rounding_is_exact_within_half_a_unit() -> None:
    rng = np.random.default_rng(1)
    ints = rng.integers(-50, 1000, size=5000).astype(np.float64)
    errors = rng.uniform(-0.5, 0.5, size=5000) * (1 - 1e-9)
    np.testing.assert_array_equal(round_to_integers(ints + errors), ints)
    # ties go up, so the rounding of h + e is h + round(e) whatever the integer h
    assert round_to_integers(np.array([0.5, 1.5, -0.5])).tolist() == [1.0, 2.0, 0.0]
    # the key holder's post-processing: rounded sum + exactly the sampler's draws
    hook = KeyHolderNoise(4.0)

    def stream() -> prg.Keystream:
        return prg.Keystream(bytes(32), label=labels.TEST_VECTOR, context=b"ckks-votes")

    out, std = hook(ints + errors, 3, stream())
    assert std == 4.0 and out.dtype == np.float64
    np.testing.assert_array_equal(out - ints, noise.discrete_gaussian(4.0, ints.size, stream()))


def _by_hand(per_order, delta: float) -> float:
    """RDP -> (ε, δ) by Balle et al. 2020 Thm 21, the conversion used everywhere here."""
    return max(0.0, min(
        per_order(a) + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1)
        for a in rdp.ORDERS
    ))


def _accountant(sigma: float, *, n: int = 10, **kw: object) -> VoteAccountant:
    return VoteAccountant(spec=VoteSpec("one-hot", C), mechanism="keyholder-dgauss",
                          num_parties=n, provisioned=1, min_survivors=2,
                          client_variance=sigma**2, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sigma", "queries", "batches"),
    [(40.0, 1000, 1), (40.0, 50, 20), (10.0, 20, 5), (100.0, 1000, 10), (3.0, 1, 3)],
)
def test_accounting_is_the_discrete_gaussian_closed_form_and_never_below_dp_accounting(
    sigma: float, queries: int, batches: int
) -> None:
    dp_accounting = pytest.importorskip("dp_accounting")
    acc = _accountant(sigma)
    for b in range(batches):
        acc.record(batch=b, queries=queries, survivors=2 + b % 8)  # survivors do not matter
    # CKS20: (α, α Δ2² / (2 σ²)) per batch, Δ2² = 2Q (one-hot, REPLACE one party)
    expected = _by_hand(lambda a: batches * a * 2 * queries / (2 * sigma**2), 1e-5)
    assert acc.epsilon() == pytest.approx(expected, rel=1e-12)
    z = sigma / math.sqrt(2 * queries)  # the Gaussian mechanism with the same Δ2 and variance
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), batches)
    rdp_acc = dp_accounting.rdp.RdpAccountant()
    rdp_acc.compose(event)
    pld_acc = dp_accounting.pld.PLDAccountant()
    pld_acc.compose(event)
    assert acc.epsilon() >= rdp_acc.get_epsilon(1e-5) - 1e-12
    assert acc.epsilon() >= pld_acc.get_epsilon(1e-5) - 1e-12
    assert acc.epsilon() <= 1.35 * pld_acc.get_epsilon(1e-5) + 0.05  # and not absurdly loose


def test_events_replay_and_reaccount_to_the_same_epsilon() -> None:
    agg = CkksVoteAggregator(4, C, sigma=20.0, min_survivors=2, seed=b"ckks-replay")
    votes = {p: encode_votes("one-hot", np.arange(40) % C, C) for p in range(4)}
    agg.aggregate(votes)
    agg.aggregate(votes, dropouts={0: "upload", 1: "upload"})
    report = agg.report()
    events = [e for e in agg.accountant.privacy.events if isinstance(e, DistributedNoiseRound)]
    assert len(events) == 2
    for e in events:  # one share: the key holder's, its variance sigma²
        assert (e.mechanism, e.clients, e.survivors, e.provisioned) == ("ddgauss", 1, 1, 1)
        assert e.client_variance == 400.0 and e.l2_sensitivity == math.sqrt(80)
    replay = PrivacyAccountant.from_ledger(report["privacy_ledger"])
    assert replay.epsilon(scope="user", party=None) == pytest.approx(agg.epsilon(), rel=1e-12)
    stream = reaccount(agg.run_ledger())["levels"]["user"]["streams"][0]
    assert stream["verdict"] == "ok"
    assert stream["closed_form_epsilon"] == pytest.approx(agg.epsilon(), rel=1e-9)
    assert report["epsilon_party_level"] == report["epsilon_record_level"] == agg.epsilon()
    assert "Canonne" in report["method"] and "REPLACE" in report["adjacency"]
    assert report["seeded"] and "NOT private" in report["warning"]
    assert "key holder sees the noiseless histogram" in report["protocol"]["trust"]
    rounding = report["protocol"]["rounding"]
    assert rounding["error_bound_integer_units"] < 0.5
    assert rounding["delta_rounding_failure"] < 1e-12
    scope = agg.run_ledger()["user_level_scope"]
    assert "trusted for DP" in scope["protects"]


def test_budget_stops_answering_before_epsilon_is_exceeded() -> None:
    budget, q = 3.0, 10
    agg = CkksVoteAggregator(3, C, sigma=15.0, budget_epsilon=budget, seed=b"ckks-budget")
    predicted = agg.batches_remaining(q)
    assert predicted is not None and 2 <= predicted <= 6
    votes = {p: encode_votes("one-hot", np.arange(q) % C, C) for p in range(3)}
    answered = 0
    for _ in range(predicted + 2):
        res = agg.aggregate(votes)
        assert res.epsilon_after <= budget
        if res.answered:
            answered += 1
        else:
            assert res.stopped_by_budget and res.noisy_histogram is None and res.labels is None
    assert answered == predicted and agg.batches_remaining(q) == 0
    stops = [e for e in agg.ledger() if e["status"] == "stopped_by_budget"]
    assert len(stops) == 2 and all(e["epsilon_worst_case_if_answered"] > budget for e in stops)
    assert all("NOT answered" in e["note"] for e in stops)
    assert agg.epsilon() <= budget < stops[0]["epsilon_worst_case_if_answered"]
    assert len(agg.report()["privacy_ledger"]["streams"][0]["budget_stops"]) == 2


@pytest.mark.parametrize(
    ("bad", "rule"),
    [
        (np.eye(C)[np.arange(7) % C], "wrong shape"),  # 7 rows, 8 queries
        (np.where(np.eye(C)[np.arange(8) % C] == 1, np.nan, 0.0), "non-finite"),
        (2 * np.eye(C)[np.arange(8) % C], "not one-hot"),  # weight 2
    ],
)
def test_malformed_votes_are_refused_and_counted_absent(bad: np.ndarray, rule: str) -> None:
    votes = {p: encode_votes("one-hot", np.full(8, p, dtype=np.int64), C) for p in range(3)}
    agg = CkksVoteAggregator(4, C, sigma=1.0, min_survivors=2, seed=b"ckks-malformed")
    res = agg.aggregate({**votes, 3: bad}, num_queries=8)
    assert res.answered and res.survivors == (0, 1, 2)
    assert 3 in res.refused and rule in res.refused[3]
    assert agg.ledger()[0]["refused"] == [3]
    abstain = CkksVoteAggregator(4, C, sigma=1.0, malformed="abstain", seed=b"ckks-abstain")
    res = abstain.aggregate({**votes, 3: bad}, num_queries=8)
    assert res.survivors == (0, 1, 2, 3) and 3 in res.refused  # a zero vote: the server can't tell


def test_too_few_uploads_abort_and_spend_nothing() -> None:
    agg = CkksVoteAggregator(4, C, sigma=2.0, min_survivors=3, seed=b"ckks-abort")
    votes = {p: encode_votes("one-hot", np.zeros(5, dtype=np.int64), C) for p in range(4)}
    res = agg.aggregate(votes, dropouts={0: "upload", 1: "upload"})
    assert not res.answered and res.aborted is not None and res.noisy_histogram is None
    assert agg.epsilon() == 0.0 and agg.ledger()[0]["status"] == "aborted"


def test_a_ckks_setting_whose_rounding_is_not_exact_is_refused() -> None:
    ok = CkksVoteAggregator(10, C, sigma=5.0)
    assert ok.rounding_error_bound < 0.5
    # 2^23 x the decryption-noise bound of flooding: error bound ~4.7 integer units
    with pytest.raises(ConfigurationError, match=r"error bound .* >= 1/2"):
        CkksVoteAggregator(10, C, sigma=5.0, ckks_options={"flooding_bits": 23})


def test_invalid_parameters_are_listed_together() -> None:
    with pytest.raises(ConfigurationError) as info:
        CkksVoteAggregator(1, C, sigma=-1.0, malformed="drop",  # type: ignore[arg-type]
                           ckks_options={"clip": 2.0, "encoding": "fixed"})
    text = str(info.value)
    for word in ("num_parties", "sigma", "malformed", "ckks_options"):
        assert word in text
    with pytest.raises(ConfigurationError, match="1/2"):
        CkksVoteAggregator(3, C, sigma=0.25)  # below the replay's hypothesis


def test_docstring_examples_hold() -> None:
    result = doctest.testmod(ckks_votes)
    assert result.attempted > 0 and result.failed == 0
