"""Accounting of secure GNMax: sensitivities, closed forms, Google's dp-accounting (our ε is never
below its Gaussian-mechanism ε), the hard budget, the ledger and its replay."""

from __future__ import annotations

import math

import numpy as np
import pytest

from secureagg.dp import rdp
from secureagg.dp.accounting import PrivacyAccountant
from secureagg.ensemble.accounting import VoteAccountant, batch_sensitivity
from secureagg.ensemble.aggregate import SecureVoteAggregator
from secureagg.ensemble.votes import VoteSpec, encode_votes
from tests.vectors import load_vectors

C = 10


def test_sensitivities_of_the_replace_relation() -> None:
    s = batch_sensitivity(VoteSpec("one-hot", C), 50)
    assert (s.l2_squared, s.l1) == (100, 100.0) and s.l2 == 10.0  # sqrt(2Q), 2Q
    s = batch_sensitivity(VoteSpec("top-k", C, top_k=3), 50)
    assert s.l2_squared == 300 and s.l2 >= math.sqrt(300) and s.l1 == 300.0
    soft = VoteSpec("softmax", C, clip=0.5, resolution=100)  # B2 = 2500
    s = batch_sensitivity(soft, 4)
    assert s.l2_squared == 2 * 2500 * 4  # sqrt(2Q) r c, not 2 r c sqrt(Q)
    assert s.l1 <= math.sqrt(4 * C) * s.l2 * (1 + 1e-15)
    # brute force over all one-hot pairs, Q = 3, C = 3: max ||x - x'||² = 2Q
    q, c = 3, 3
    rows = np.eye(c)
    best = max(
        float(np.sum((rows[list(a)] - rows[list(b)]) ** 2))
        for a in np.ndindex(*(c,) * q)
        for b in np.ndindex(*(c,) * q)
    )
    assert best == batch_sensitivity(VoteSpec("one-hot", c), q).l2_squared


def _accountant(
    mechanism: str, *, n: int = 10, sigma: float = 40.0, **kw: object
) -> VoteAccountant:
    return VoteAccountant(
        spec=VoteSpec("one-hot", C),
        mechanism=mechanism,
        num_parties=n,  # type: ignore[arg-type]
        provisioned=n,
        min_survivors=kw.pop("min_survivors", n),  # type: ignore[arg-type]
        client_variance=sigma**2 / n,
        **kw,  # type: ignore[arg-type]
    )


def _by_hand(per_order: object, delta: float) -> float:
    """RDP -> (ε, δ) by Balle et al. 2020 Thm 21, evaluated independently of the library."""
    best = math.inf
    for a in rdp.ORDERS:
        value = per_order(a)  # type: ignore[operator]
        best = min(best, value + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1))
    return max(best, 0.0)


@pytest.mark.parametrize(("queries", "batches", "survivors"), [(1000, 1, 10), (100, 7, 8)])
def test_ddgauss_against_the_gaussian_closed_form(
    queries: int, batches: int, survivors: int
) -> None:
    acc = _accountant("ddgauss", min_survivors=8)
    for b in range(batches):
        acc.record(batch=b, queries=queries, survivors=survivors)
    variance = survivors * 40.0**2 / 10  # sum of the survivors' shares (local sigma 12.6: tau ~ 0)
    expected = _by_hand(lambda a: batches * a * 2 * queries / (2 * variance), 1e-5)
    assert acc.epsilon() == pytest.approx(expected, rel=1e-9)


def test_skellam_against_its_closed_form() -> None:
    acc = _accountant("skellam", sigma=20.0)
    q, mu = 200, 20.0**2
    for b in range(3):
        acc.record(batch=b, queries=q, survivors=10)
    d2, d1 = 2.0 * q, 2.0 * q  # Δ2², Δ1 for one-hot votes

    def skellam(a: int) -> float:
        return 3 * (
            a * d2 / (2 * mu) + min(((2 * a - 1) * d2 + 6 * d1) / (4 * mu * mu), 3 * d1 / (2 * mu))
        )

    assert acc.epsilon() == pytest.approx(_by_hand(skellam, 1e-5), rel=1e-9)


@pytest.mark.parametrize("mechanism", ["ddgauss", "skellam"])
@pytest.mark.parametrize(
    ("sigma", "queries", "batches"),
    [(40.0, 1000, 1), (40.0, 50, 20), (10.0, 20, 5), (100.0, 1000, 10)],
)
def test_never_below_dp_accounting_gaussian(
    mechanism: str, sigma: float, queries: int, batches: int
) -> None:
    dp_accounting = pytest.importorskip("dp_accounting")
    acc = _accountant(mechanism, sigma=sigma)
    for b in range(batches):
        acc.record(batch=b, queries=queries, survivors=10)
    ours = acc.epsilon()
    z = sigma / math.sqrt(2 * queries)  # the Gaussian analogue: same Δ2 and variance
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), batches)
    rdp_acc = dp_accounting.rdp.RdpAccountant()
    rdp_acc.compose(event)
    pld_acc = dp_accounting.pld.PLDAccountant()
    pld_acc.compose(event)
    google_rdp, google_pld = rdp_acc.get_epsilon(1e-5), pld_acc.get_epsilon(1e-5)
    assert ours >= google_rdp - 1e-12
    assert ours >= google_pld - 1e-12
    assert ours <= 1.35 * google_pld + 0.05  # and not absurdly loose


def test_budget_stops_before_epsilon_is_exceeded() -> None:
    budget, q = 2.0, 50
    agg = SecureVoteAggregator(10, C, sigma=40.0, budget_epsilon=budget, seed=b"budget")
    predicted = agg.batches_remaining(q)
    assert predicted is not None and predicted >= 1
    votes = {p: encode_votes("one-hot", np.arange(q) % C, C) for p in range(10)}
    answered = 0
    for _ in range(predicted + 3):
        res = agg.aggregate(votes)
        assert res.epsilon_after <= budget
        if res.answered:
            answered += 1
        else:
            assert res.stopped_by_budget and res.labels is None and res.noisy_histogram is None
    assert answered == predicted and agg.batches_remaining(q) == 0
    ledger = agg.ledger()
    stops = [e for e in ledger if e["status"] == "stopped_by_budget"]
    assert len(stops) == 3 and all(e["epsilon_worst_case_if_answered"] > budget for e in stops)
    assert all("NOT answered" in e["note"] for e in stops)
    assert agg.epsilon() <= budget < stops[0]["epsilon_worst_case_if_answered"]
    report = agg.report()
    assert len(report["privacy_ledger"]["streams"][0]["budget_stops"]) == 3
    assert report["queries_answered"] == answered * q


def test_budget_assumes_the_fewest_survivors() -> None:
    budget, q = 3.0, 40
    agg = SecureVoteAggregator(
        10,
        C,
        sigma=40.0,
        expected_dropout=0.2,
        min_survivors=6,
        budget_epsilon=budget,
        seed=b"worst",
    )
    assert (agg.provisioned, agg.min_survivors) == (8, 6)
    votes = {p: encode_votes("one-hot", np.arange(q) % C, C) for p in range(10)}
    while agg.aggregate(votes, dropouts={0: "masked", 1: "masked"}).answered:
        pass
    answered = [e for e in agg.ledger() if e["status"] == "answered"]
    assert answered and all(e["survivors"] == 8 for e in answered)
    for e in answered:  # the check assumed 6 survivors: at least the ε that 8 gave
        assert e["epsilon_after"] <= e["epsilon_worst_case_checked"] <= budget
    # the worst case is really the smaller survivor count
    acc = agg.accountant
    assert np.all(acc.worst_case_rdp(q) >= acc.batch_rdp(q, 6))
    assert np.all(acc.batch_rdp(q, 6) > acc.batch_rdp(q, 10))


def test_ledger_replays_to_the_same_epsilon_and_states_the_adjacency() -> None:
    agg = SecureVoteAggregator(6, C, sigma=20.0, seed=b"replay", expected_dropout=0.2)
    votes = {p: encode_votes("one-hot", np.arange(30) % C, C) for p in range(6)}
    agg.aggregate(votes)
    agg.aggregate(votes, dropouts={5: "share"})
    report = agg.report()
    assert report["epsilon_party_level"] == report["epsilon_record_level"] == agg.epsilon() > 0
    assert "REPLACE" in report["adjacency"] and "Kairouz" in report["method"]
    assert report["seeded"] and "NOT private" in report["warning"]
    replay = PrivacyAccountant.from_ledger(report["privacy_ledger"])
    assert replay.epsilon(scope="user", party=None) == pytest.approx(agg.epsilon(), rel=1e-12)
    assert [e["survivors"] for e in report["batches"]] == [6, 5]


def test_accounting_vectors() -> None:
    """protocols/ensemble/vectors/accounting.json: parameters -> ε (upper bound)."""
    for v in load_vectors("ensemble", "accounting"):
        spec = VoteSpec(v["vote"], v["num_classes"], top_k=v.get("top_k", 1))
        acc = VoteAccountant(
            spec=spec,
            mechanism=v["mechanism"],
            num_parties=v["num_parties"],
            provisioned=v["num_parties"],
            min_survivors=v["survivors"],
            client_variance=v["sigma"] ** 2 / v["num_parties"],
            delta=v["delta"],
        )
        for b in range(v["batches"]):
            acc.record(batch=b, queries=v["queries_per_batch"], survivors=v["survivors"])
        assert acc.epsilon() == pytest.approx(v["epsilon"], rel=1e-9), v["name"]
