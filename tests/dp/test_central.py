"""Central DP: the trusted server's Gaussian noise, around the plain and the SecAgg aggregators."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import secureagg as sa
from secureagg.aggregators.dp import with_central_dp
from secureagg.dp import CentralDP, CentralGaussian, CsprngGaussian, PrivacyAccountant
from secureagg.dp.central import l2_clip
from secureagg.dp.events import GaussianSteps, SeededNoise
from secureagg.errors import ConfigurationError, NonFiniteInputError, PrivacyBudgetExceeded

pytestmark = pytest.mark.filterwarnings("ignore:seeded simulation:UserWarning")


def _updates(n: int, d: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(7)
    return [[rng.normal(size=d) * (2.0 if u % 2 else 0.1)] for u in range(n)]


def _clipped_sum(updates, ids, bound: float) -> np.ndarray:
    return sum(l2_clip(updates[u][0], bound) for u in ids)


def test_clip_bounds_the_l2_norm_and_keeps_small_updates() -> None:
    big = l2_clip(np.array([30.0, 40.0]), 1.0)
    assert np.linalg.norm(big) <= 1.0 and np.linalg.norm(big) == pytest.approx(1.0)
    np.testing.assert_array_equal(l2_clip(np.array([0.3, 0.4]), 1.0), [0.3, 0.4])
    with pytest.raises(NonFiniteInputError):
        l2_clip(np.array([np.nan]), 1.0)


def test_release_adds_noise_of_the_configured_std() -> None:
    mech = CentralGaussian(CentralDP(l2_clip=0.5, noise_multiplier=3.0))
    noisy = mech.release(np.zeros(200_000))
    assert noisy.std() == pytest.approx(1.5, rel=0.01)
    assert abs(noisy.mean()) <= 6 * 1.5 / math.sqrt(200_000)


@pytest.mark.parametrize("protocol", ["plain", "secagg"])
def test_central_dp_around_an_aggregator(protocol: str) -> None:
    n, d = 6, 4000
    updates = _updates(n, d)
    inner = sa.make_aggregator(protocol, num_clients=n, **(
        {"clip": 1.0, "dropout_rate": 0.0, "corrupt_rate": 0.0} if protocol == "secagg" else {}
    ))
    acc = PrivacyAccountant()
    agg = with_central_dp(inner, CentralDP(l2_clip=1.0, noise_multiplier=0.7), privacy=acc)
    drop = {2: "masked"} if protocol == "secagg" else {2: "upload"}
    res = sa.simulate(agg, updates, dropouts=drop, seed=3)
    err = res.aggregate[0] - _clipped_sum(updates, res.survivors, 1.0)
    assert 2 not in res.survivors
    assert err.std() == pytest.approx(0.7, rel=0.05)  # the server's noise, whoever dropped
    steps = [e for e in acc.events if isinstance(e, GaussianSteps)]
    assert len(steps) == 1 and steps[0].scope == "user" and steps[0].noise_multiplier == 0.7
    from opacus.accountants import RDPAccountant

    opacus = RDPAccountant()
    opacus.step(noise_multiplier=0.7, sample_rate=1.0)
    assert acc.epsilon(scope="user") == opacus.get_epsilon(delta=1e-5)
    assert res.parameters["central_dp"]["noise_std"] == pytest.approx(0.7)


def test_central_budget_stops_the_round_before_it_runs() -> None:
    acc = PrivacyAccountant(max_epsilon=1.0)
    agg = with_central_dp(
        sa.make_aggregator("plain", num_clients=3), CentralDP(l2_clip=1.0, noise_multiplier=0.5),
        privacy=acc,
    )
    with pytest.raises(PrivacyBudgetExceeded):
        sa.simulate(agg, _updates(3, 5), seed=1)
    assert not [e for e in acc.events if isinstance(e, GaussianSteps)]


def test_seeded_central_noise_is_flagged() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = CsprngGaussian(seed=b"t", test_mode=True)
    acc = PrivacyAccountant()
    with_central_dp(
        sa.make_aggregator("plain", num_clients=2), CentralDP(l2_clip=1.0, noise_multiplier=1.0),
        privacy=acc, noise=source,
    )
    assert any(isinstance(e, SeededNoise) for e in acc.events) and acc.seeded


def test_central_dp_validation() -> None:
    with pytest.raises(ConfigurationError) as info:
        CentralDP(l2_clip=-1.0, noise_multiplier=0.0, client_sampling_rate=2.0)
    assert len(info.value.problems) == 3


def _inclusions(agg, n: int, rounds: int) -> np.ndarray:
    """How often each client's input was in the released sum: client u sends 1 at coordinate u
    (norm 1 = the clip), the noise is negligible, so coordinate u of the sum is 0 or 1."""
    updates = [[np.eye(n)[u]] for u in range(n)]
    counts = np.zeros(n)
    for r in range(rounds):
        res = sa.simulate(agg, updates, round_id=r)
        included = np.round(res.aggregate[0]).astype(int)
        assert set(included.tolist()) <= {0, 1}
        counts += included
    return counts


def test_declared_client_sampling_is_carried_out_at_the_declared_rate() -> None:
    """Review: with CentralDP(client_sampling_rate=0.1) all 8 clients were in every sum, while
    the ε claimed amplification by sampling (12.26 instead of 97.65)."""
    n, rounds, q = 8, 60, 0.1
    acc = PrivacyAccountant()
    agg = with_central_dp(sa.make_aggregator("plain", num_clients=n),
                          CentralDP(l2_clip=1.0, noise_multiplier=1e-6, client_sampling_rate=q),
                          privacy=acc)
    counts = _inclusions(agg, n, rounds)
    total = counts.sum()  # Binomial(480, 0.1): mean 48, sd 6.6
    assert 20 <= total <= 80
    assert (counts < rounds).all()  # nobody is in every sum
    steps = [e for e in acc.events if isinstance(e, GaussianSteps)]
    assert {e.sample_rate for e in steps} == {q}


def test_without_declared_sampling_every_client_is_in_every_sum() -> None:
    n = 5
    agg = with_central_dp(sa.make_aggregator("plain", num_clients=n),
                          CentralDP(l2_clip=1.0, noise_multiplier=1e-6))
    assert (_inclusions(agg, n, 3) == 3).all()
