"""Independent re-accounting (secureagg.audit.reaccount) of ledgers the library really writes.

* Gaussian streams: dp_accounting's RDP agrees with the library's (Opacus) RDP within 1%, the
  stated ε is at least dp_accounting's PLD ε, and a ledger whose ε was lowered below it fails.
* Integer streams (Skellam, distributed discrete Gaussian, with and without client sampling): the
  closed forms written in the module agree with secureagg.dp.rdp, order by order and in ε.
* Known answers: a hand-computed Skellam RDP value, the analytic Gaussian mechanism (Balle-Wang
  2018) for the PLD, and TensorFlow Privacy's published MNIST figure for the RDP.
* A federated run's privacy_ledger.json with both levels; malformed ledgers; streams that cannot
  be re-accounted are never "ok".
"""

from __future__ import annotations

import copy
import doctest
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from secureagg.audit import reaccount as module
from secureagg.audit.reaccount import RELATIVE_TOLERANCE, rdp_to_epsilon, reaccount, round_rdp
from secureagg.dp import rdp as library_rdp
from secureagg.dp.accounting import PrivacyAccountant, read_ledger
from secureagg.dp.events import DistributedNoiseRound, GaussianSteps, SeededNoise
from secureagg.dp.ledger import FEDERATED_LEDGER_FORMAT
from secureagg.errors import ConfigurationError, InvalidInputError

dpa = pytest.importorskip("dp_accounting")
pytest.importorskip("opacus")
from tests.dp.test_accounting import _tight_pld_epsilon  # noqa: E402  (the dp tests' reference)

DELTA = 1e-5


def _steps(sigma: float, q: float, steps: int, *, party: int | None = None,
           scope: str = "sample") -> GaussianSteps:
    return GaussianSteps(scope=scope, party=party, noise_multiplier=sigma,  # type: ignore[arg-type]
                         sample_rate=q, clip=1.0, steps=steps)


def _round(mechanism: str, *, variance: float, survivors: int, l2: float, l1: float,
           dimension: int, q: float = 1.0, rid: int = 0) -> DistributedNoiseRound:
    return DistributedNoiseRound(
        scope="user", party=None, mechanism=mechanism, round_id=rid,  # type: ignore[arg-type]
        clients=survivors, survivors=survivors, provisioned=survivors, client_variance=variance,
        l2_sensitivity=l2, l1_sensitivity=l1, dimension=dimension, sample_rate=q,
    )


def _ledger(*events: Any, accountant: str = "rdp") -> dict[str, Any]:
    acc = PrivacyAccountant(accountant=accountant, delta=DELTA)  # type: ignore[arg-type]
    for e in events:
        acc.emit(e)
    return acc.report()


def _stream(report: dict[str, Any], level: str, index: int = 0) -> dict[str, Any]:
    return report["levels"][level]["streams"][index]


# ------------------------------------------------------------------------------- Gaussian


@pytest.fixture(scope="module")
def dpsgd_ledger() -> dict[str, Any]:
    """The brief's run: DP-SGD σ=1.1, q=0.01, 1000 steps, δ=1e-5, by the library accountant."""
    return _ledger(_steps(1.1, 0.01, 1000))


def test_dpsgd_ledger_agrees_with_dp_accounting(dpsgd_ledger: dict[str, Any]) -> None:
    report = reaccount(dpsgd_ledger)
    s = _stream(report, "sample")
    stated = dpsgd_ledger["streams"][0]["epsilon"]
    assert s["stated_epsilon"] == stated == pytest.approx(1.71177, abs=1e-4)  # Opacus's RDP
    assert s["rdp_agrees_within_1pct"] is True
    # Same orders, same conversion, two implementations of the sampled Gaussian's RDP.
    assert s["rdp_epsilon"] == pytest.approx(stated, rel=1e-4)
    assert s["pld_epsilon"] == _tight_pld_epsilon(1.1, 0.01, 1000, DELTA)
    assert s["pld_epsilon"] == pytest.approx(1.51537, abs=1e-4)
    assert stated >= s["pld_epsilon"] and s["tight_source"] == "pld"
    assert s["abs_diff"] == pytest.approx(stated - s["pld_epsilon"])
    assert s["rel_diff"] == pytest.approx((stated - s["pld_epsilon"]) / s["pld_epsilon"])
    assert s["verdict"] == "ok" and report["verdict"] == "ok"
    assert s["steps"] == 1000 and s["delta"] == DELTA
    assert report["seeded"] is False and report["warning"] is None
    json.dumps(report, allow_nan=False)  # strict JSON


def test_lowered_epsilon_fails(dpsgd_ledger: dict[str, Any]) -> None:
    pld = _stream(reaccount(dpsgd_ledger), "sample")["pld_epsilon"]
    tampered = copy.deepcopy(dpsgd_ledger)
    tampered["streams"][0]["epsilon"] = pld * 0.99
    report = reaccount(tampered)
    s = _stream(report, "sample")
    assert s["verdict"] == "fail" and "below the independent tight" in s["reason"]
    assert s["abs_diff"] == pytest.approx(-0.01 * pld)
    assert report["verdict"] == "fail" and report["levels"]["sample"]["verdict"] == "fail"
    # The tolerance is relative 1e-6: just inside passes, just outside fails.
    tampered["streams"][0]["epsilon"] = pld * (1 - RELATIVE_TOLERANCE / 10)
    assert _stream(reaccount(tampered), "sample")["verdict"] == "ok"
    tampered["streams"][0]["epsilon"] = pld * (1 - RELATIVE_TOLERANCE * 10)
    assert _stream(reaccount(tampered), "sample")["verdict"] == "fail"


def test_events_that_disagree_with_the_stated_counts_fail(dpsgd_ledger: dict[str, Any]) -> None:
    tampered = copy.deepcopy(dpsgd_ledger)
    tampered["events"][0]["steps"] = 3000  # the events now hold more than was accounted
    s = _stream(reaccount(tampered), "sample")
    assert s["verdict"] == "fail"
    assert "states 1000 steps but its events hold 3000" in s["reason"]
    assert "below the independent tight" in s["reason"]


def test_prv_ledger_is_checked_against_pld_not_rdp() -> None:
    ledger = _ledger(_steps(1.5, 0.04, 2250), accountant="prv")
    s = _stream(reaccount(ledger), "sample")
    assert s["stated_epsilon"] == pytest.approx(6.7774, abs=0.02)  # Opacus's PRV figure
    assert s["rdp_agrees_within_1pct"] is None  # the run did not use RDP
    assert s["rdp_epsilon"] == pytest.approx(7.32911, rel=1e-4)  # Opacus's RDP figure
    assert s["pld_epsilon"] <= s["stated_epsilon"] and s["verdict"] == "ok"


def test_pld_is_the_analytic_gaussian_mechanism() -> None:
    """Without sampling the PLD ε is exact: Balle & Wang 2018 (Thm 8), and 4 releases at σ=20
    are one release at σ=10."""
    stats = pytest.importorskip("scipy.stats")
    optimize = pytest.importorskip("scipy.optimize")

    def analytic(sigma: float) -> float:
        def delta(eps: float) -> float:
            return float(stats.norm.cdf(0.5 / sigma - eps * sigma)
                         - math.exp(eps) * stats.norm.cdf(-0.5 / sigma - eps * sigma))
        return float(optimize.brentq(lambda e: delta(e) - DELTA, 0.0, 10.0))

    exact = analytic(10.0)
    assert exact == pytest.approx(0.34067, abs=1e-5)
    for events in ([_steps(10.0, 1.0, 1, scope="user")], [_steps(20.0, 1.0, 4, scope="user")]):
        s = _stream(reaccount(_ledger(*events)), "user")
        assert s["pld_epsilon"] == pytest.approx(exact, rel=1e-3)
        assert s["pld_epsilon"] >= exact * (1 - 1e-9)  # pessimistic: never below the truth


def test_published_mnist_figure() -> None:
    """TensorFlow Privacy's MNIST tutorial (tutorials/README.md; mnist_dpsgd_tutorial.py):
    noise 1.12, batch 256 of 60000, 60 epochs of 60000 // 256 steps, δ=1e-5 -> ε = 2.92 with the
    RDP accountant at orders 1.1..10.9, 12..63 and the conversion of Mironov 2017 (Prop 3),
    ε = min_α RDP(α) - log δ / (α - 1). Today's conversion (Balle et al. 2020) on the same curve
    gives the smaller figure both the library and dp_accounting state."""
    opacus_rdp = pytest.importorskip("opacus.accountants.analysis.rdp")
    q, steps = 256 / 60000, 60 * (60000 // 256)
    orders = list(module.GAUSSIAN_RDP_ORDERS)
    curve = opacus_rdp.compute_rdp(q=q, noise_multiplier=1.12, steps=steps, orders=orders)
    published = min(r - math.log(DELTA) / (a - 1) for a, r in zip(orders, curve, strict=True))
    assert round(published, 2) == 2.92
    s = _stream(reaccount(_ledger(_steps(1.12, q, steps))), "sample")
    assert s["rdp_epsilon"] == pytest.approx(dpa.rdp.compute_epsilon(orders, curve, DELTA)[0],
                                             rel=1e-6)
    assert s["rdp_epsilon"] == pytest.approx(2.5165, abs=1e-4)
    assert s["rdp_epsilon"] < published
    assert s["rdp_agrees_within_1pct"] is True and s["verdict"] == "ok"
    assert s["pld_epsilon"] == pytest.approx(2.3082, abs=1e-3)


def test_non_private_steps_give_infinity_and_strict_json() -> None:
    report = reaccount(_ledger(_steps(0.0, 1.0, 1)))
    s = _stream(report, "sample")
    assert s["stated_epsilon"] == s["pld_epsilon"] == "inf" and s["verdict"] == "ok"
    json.dumps(report, allow_nan=False)


# ------------------------------------------------------------------------------- integers


def test_skellam_closed_form_known_answer() -> None:
    """α=5, Δ2=3, Δ1=7, μ=20 by hand: 5·9/40 + min(123/1600, 21/40) = 1.125 + 0.076875."""
    event = _round("skellam", variance=20.0, survivors=1, l2=3.0, l1=7.0, dimension=4)
    assert round_rdp(event, [5])[0] == pytest.approx(1.201875, rel=1e-12)
    # Two shares of variance 10 sum to Skellam of variance 20.
    two = _round("skellam", variance=10.0, survivors=2, l2=3.0, l1=7.0, dimension=4)
    assert round_rdp(two, [5])[0] == pytest.approx(1.201875, rel=1e-12)


# (mechanism, client variance, survivors, Δ2, Δ1, d): fine grids, and small local σ where the
# Skellam surcharge and the discrete Gaussian's τ terms matter.
_INTEGER = [
    ("skellam", 1e11, 10, 1e6, 1e9, 1000),
    ("skellam", 20.0, 3, 3.0, 7.0, 16),
    ("ddgauss", 1e11, 10, 1e6, 1e9, 1000),
    ("ddgauss", 0.36, 3, 3.0, 7.0, 16),
    ("ddgauss", 0.3, 8, 40.0, 200.0, 64),
]


@pytest.mark.parametrize("q", [1.0, 0.1])
@pytest.mark.parametrize(("mech", "var", "n", "l2", "l1", "d"), _INTEGER)
def test_integer_closed_forms_agree_with_the_library(
    mech: str, var: float, n: int, l2: float, l1: float, d: int, q: float
) -> None:
    event = _round(mech, variance=var, survivors=n, l2=l2, l1=l1, dimension=d, q=q)
    orders = list(library_rdp.ORDERS)
    if mech == "skellam":
        def plain(a: int) -> float:
            return float(library_rdp.skellam_rdp([a], l2=l2, l1=l1, variance=n * var)[0])
    else:
        def plain(a: int) -> float:
            return float(library_rdp.ddgauss_rdp([a], l2=l2, l1=l1, local_sigma=math.sqrt(var),
                                                 clients=n, dimension=d)[0])
    theirs = library_rdp.poisson_subsampled_rdp(orders, sample_rate=q, rdp=plain)
    np.testing.assert_allclose(round_rdp(event, orders), theirs, rtol=1e-9)
    # And in ε, through the ledger the library writes (five rounds).
    ledger = _ledger(*(_round(mech, variance=var, survivors=n, l2=l2, l1=l1, dimension=d, q=q,
                              rid=r) for r in range(5)))
    s = _stream(reaccount(ledger), "user")
    assert s["closed_form_epsilon"] == pytest.approx(s["stated_epsilon"], rel=0.01)
    assert s["rdp_agrees_within_1pct"] is True and s["tight_source"] == "closed_form"
    assert s["verdict"] == "ok", s["reason"]
    assert ("Agarwal" if mech == "skellam" else "Kairouz") in s["method"]
    assert ("Zhu-Wang" in s["method"]) == (q < 1)
    if q < 1:  # the server's view (no amplification) is re-accounted too
        without = s["epsilon_without_sampling"]
        assert without["tight"] > s["closed_form_epsilon"]
        assert without["stated"] == pytest.approx(without["tight"], rel=0.01)


def test_gaussian_reference_is_the_continuous_gaussian_of_the_same_variance() -> None:
    """Huge variance: Skellam ≈ Gaussian with z = √μ/Δ2; the reference is its PLD ε (here 3
    rounds at z=2, i.e. one Gaussian at z=2/√3), below the closed form, and labelled."""
    rounds = [_round("skellam", variance=4e12 / 5, survivors=5, l2=1e6, l1=1e9, dimension=1000,
                     rid=r) for r in range(3)]
    s = _stream(reaccount(_ledger(*rounds)), "user")
    one = _stream(reaccount(_ledger(_steps(2 / math.sqrt(3), 1.0, 1, scope="user"))), "user")
    assert s["gaussian_reference_epsilon"] == pytest.approx(one["pld_epsilon"], rel=1e-3)
    assert s["gaussian_reference_epsilon"] < s["closed_form_epsilon"]
    assert "NOT a bound" in s["method"]


def test_conversion_is_the_standard_one() -> None:
    orders = list(module.INTEGER_RDP_ORDERS)
    curve = [a / (2 * 1.3**2) * 40 for a in orders]
    ours = rdp_to_epsilon(orders, curve, DELTA)
    assert ours == pytest.approx(dpa.rdp.compute_epsilon(orders, curve, DELTA)[0], rel=1e-12)
    assert ours == pytest.approx(library_rdp.rdp_to_epsilon(orders, curve, DELTA)[0], rel=1e-12)


def test_worst_case_checks_are_counted_not_spent() -> None:
    event = _round("skellam", variance=1e11, survivors=10, l2=1e6, l1=1e9, dimension=1000)
    worst = DistributedNoiseRound(**{**event.__dict__, "worst_case": True, "survivors": 6})
    s = _stream(reaccount(_ledger(worst, event)), "user")
    assert s["worst_case_checks"] == 1 and s["rounds"] == 1 and s["verdict"] == "ok"


# ---------------------------------------------------------------------- not re-accountable


def test_discrete_gaussian_below_half_is_not_re_accounted() -> None:
    """Kairouz-Liu-Steinke 2021 Thm 1 needs the local σ >= 1/2: the library states no finite ε
    there, and the re-accounting does not claim one either."""
    ledger = _ledger(_round("ddgauss", variance=0.2, survivors=3, l2=3.0, l1=7.0, dimension=16))
    report = reaccount(ledger)
    s = _stream(report, "user")
    assert ledger["streams"][0]["epsilon"] in ("inf", float("inf"))
    assert s["verdict"] == "not re-accounted" and "< 1/2" in s["reason"]
    assert report["verdict"] == "not re-accounted"


def test_mixed_and_unknown_streams_are_never_ok() -> None:
    mixed = _ledger(_steps(1.0, 1.0, 3, scope="user"),
                    _round("skellam", variance=1e11, survivors=10, l2=1e6, l1=1e9, dimension=10))
    s = _stream(reaccount(mixed), "user")
    assert s["verdict"] == "not re-accounted" and "mixes" in s["reason"]
    unknown = _ledger(_steps(1.1, 0.01, 10))
    unknown["events"].append({"kind": "laplace_release", "scope": "sample", "party": None,
                              "epsilon": 0.1})
    s = _stream(reaccount(unknown), "sample")
    assert s["verdict"] == "not re-accounted" and "laplace_release" in s["reason"]


def test_spending_events_without_a_stated_stream_fail() -> None:
    ledger = _ledger(_steps(1.1, 0.01, 100, party=1), _steps(1.1, 0.01, 100, party=2))
    ledger["streams"] = [s for s in ledger["streams"] if s["party"] != 2]
    report = reaccount(ledger)
    missing = next(s for s in report["levels"]["sample"]["streams"] if s["party"] == 2)
    assert missing["verdict"] == "fail" and "states no ε" in missing["reason"]
    assert report["verdict"] == "fail"


def test_a_stated_epsilon_above_the_budget_fails(dpsgd_ledger: dict[str, Any]) -> None:
    tampered = {**copy.deepcopy(dpsgd_ledger), "max_epsilon": 1.6}
    s = _stream(reaccount(tampered), "sample")
    assert s["verdict"] == "fail" and "exceeds the ledger's max_epsilon" in s["reason"]


def test_seeded_runs_are_flagged() -> None:
    report = reaccount(_ledger(_steps(1.1, 0.01, 10), SeededNoise(scope="sample", party=None,
                                                                   source="test")))
    assert report["seeded"] is True and "NOT private" in report["warning"]
    assert _stream(report, "sample")["seeded"] is True


# ------------------------------------------------------------------------------ federated


def test_federated_run_ledger_with_both_levels(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from secureagg.fl import FederatedDP, FederatedRun
    from tests.fl.conftest import dp_train, make_loaders, make_model, sgd

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        FederatedRun(
            make_model(), train=dp_train, optimizer=sgd, client_loaders=make_loaders(),
            aggregator="secagg+", rounds=2, seed=8, progress=False, run_dir=tmp_path / "run",
            dp=FederatedDP(noise_multiplier=1.0, distributed_noise_multiplier=0.8),
        ).run()
    finally:
        torch.set_num_threads(threads)
    ledger = read_ledger(tmp_path / "run" / "privacy_ledger.json")
    assert ledger["format"] == FEDERATED_LEDGER_FORMAT
    report = reaccount(ledger)
    assert set(report["levels"]) == {"sample", "user"} and report["verdict"] == "ok"
    sample = report["levels"]["sample"]
    assert sample["source"] == "sample_level"
    assert sorted(s["party"] for s in sample["streams"]) == [0, 1, 2, 3, 4]
    for s, stated in zip(sample["streams"], ledger["sample_level"]["streams"], strict=True):
        assert s["stated_epsilon"] == stated["epsilon"] >= s["pld_epsilon"] > 0
        assert s["rdp_agrees_within_1pct"] is True and s["verdict"] == "ok"
    user = _stream(report, "user")
    assert user["mechanisms"] == ["skellam"] and user["rounds"] == 2
    assert user["closed_form_epsilon"] == pytest.approx(user["stated_epsilon"], rel=0.01)
    assert user["gaussian_reference_epsilon"] < user["closed_form_epsilon"]
    assert report["seeded"] is True  # a seeded test run
    json.dumps(report, allow_nan=False)
    # Lower the user-level figure only: that level fails, the other stays ok.
    ledger["user_level"]["streams"][0]["epsilon"] = user["closed_form_epsilon"] * 0.9
    tampered = reaccount(ledger)
    assert tampered["levels"]["user"]["verdict"] == "fail"
    assert tampered["levels"]["sample"]["verdict"] == "ok" and tampered["verdict"] == "fail"


def test_federated_ledger_without_dp_is_not_re_accounted() -> None:
    report = reaccount({"format": FEDERATED_LEDGER_FORMAT, "differential_privacy": False,
                        "sample_level": None, "user_level": None})
    assert report["levels"] == {} and report["verdict"] == "not re-accounted"


def test_plain_ledger_with_both_scopes_is_split_into_levels() -> None:
    report = reaccount(_ledger(_steps(1.1, 0.01, 10, party=3), _steps(2.0, 1.0, 5, scope="user")))
    assert report["levels"]["sample"]["streams"][0]["party"] == 3
    assert report["levels"]["user"]["streams"][0]["scope"] == "user"
    assert report["levels"]["user"]["source"] == "ledger" and report["verdict"] == "ok"


# ------------------------------------------------------------------------------ malformed


def _bad(mutate: Any) -> dict[str, Any]:
    ledger = _ledger(_steps(1.1, 0.01, 10))
    mutate(ledger)
    return ledger


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(format="other"), "format"),
        (lambda d: d.pop("delta"), "delta"),
        (lambda d: d.update(delta=2.0), "delta"),
        (lambda d: d.update(accountant=None), "accountant"),
        (lambda d: d.update(streams={}), "streams"),
        (lambda d: d["streams"][0].update(epsilon="small"), "streams[0].epsilon"),
        (lambda d: d["streams"][0].pop("epsilon"), "streams[0].epsilon"),
        (lambda d: d["streams"][0].update(scope="world"), "streams[0]"),
        (lambda d: d["streams"].append(dict(d["streams"][0])), "streams[1]"),
        (lambda d: d["streams"][0].update(steps=-1), "streams[0].steps"),
        (lambda d: d.update(events=None), "events"),
        (lambda d: d["events"][0].pop("kind"), "events[0]"),
        (lambda d: d["events"][0].update(noise_multiplier=-1.0), "events[0]"),
        (lambda d: d["events"][0].update(color="red"), "events[0]"),
        (lambda d: d["events"][0].pop("sample_rate"), "events[0]"),
        (lambda d: d.update(max_epsilon="big"), "max_epsilon"),
    ],
)
def test_malformed_ledgers_raise_naming_the_field(mutate: Any, field: str) -> None:
    with pytest.raises(InvalidInputError, match=field.replace("[", r"\[").replace("]", r"\]")):
        reaccount(_bad(mutate))


def test_malformed_federated_ledgers_raise() -> None:
    with pytest.raises(InvalidInputError, match="a ledger is a JSON object"):
        reaccount([])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="user_level is missing"):
        reaccount({"format": FEDERATED_LEDGER_FORMAT, "sample_level": None})
    with pytest.raises(InvalidInputError, match="sample_level must be null or"):
        reaccount({"format": FEDERATED_LEDGER_FORMAT, "sample_level": {"format": "x"},
                   "user_level": None})


def test_missing_dp_accounting_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, dpsgd_ledger: dict[str, Any]
) -> None:
    monkeypatch.setitem(sys.modules, "dp_accounting", None)
    with pytest.raises(ConfigurationError, match=r"secureagg\[audit\]"):
        reaccount(dpsgd_ledger)


def test_module_doctest() -> None:
    assert doctest.testmod(module).failed == 0
