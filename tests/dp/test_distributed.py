"""Distributed DP inside SecAgg: calibration, noise-sum variance, decoding with dropouts, budget."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import secureagg as sa
from secureagg.crypto import labels, prg
from secureagg.crypto.encoding import FixedPointEncoder
from secureagg.dp import DistributedDP, PrivacyAccountant
from secureagg.dp.distributed import hadamard, rotation_seed
from secureagg.dp.events import DistributedNoiseRound, MemorySink, SeededNoise
from secureagg.errors import ConfigurationError, PrivacyBudgetExceeded

pytestmark = pytest.mark.filterwarnings("ignore:seeded simulation:UserWarning")


def _stream(tag: bytes) -> prg.Keystream:
    return prg.Keystream(bytes(32), label=labels.TEST_VECTOR, context=b"ddp" + tag)


@pytest.mark.parametrize("mechanism", ["skellam", "ddgauss"])
@pytest.mark.parametrize("rotation", [False, True])
def test_plan_satisfies_the_encoder_headroom_proof(mechanism: str, rotation: bool) -> None:
    cfg = DistributedDP(
        l2_clip=2.0, noise_multiplier=0.8, dimension=300, mechanism=mechanism, rotation=rotation
    )
    plan = cfg.plan(num_clients=50)
    assert 50 * plan.linf_clip + plan.noise_headroom <= 2**31 - 1
    # The encoder SecAgg will use accepts exactly this configuration.
    FixedPointEncoder(
        clip=float(plan.linf_clip), scale=1.0, num_summands=50, bits=32,
        noise_headroom=plan.noise_headroom,
    )
    assert plan.l2_sensitivity / (plan.scale * 2.0) < 1.001  # rounding costs almost nothing
    assert plan.padded_dimension == (512 if rotation else 300)
    # Noise target: std noise_multiplier * Δ2 in the sum when the provisioned clients survive.
    total = plan.provisioned * plan.client_variance
    assert math.sqrt(total) == pytest.approx(0.8 * plan.l2_sensitivity, rel=1e-12)


def test_over_provisioning_for_expected_dropouts() -> None:
    base = DistributedDP(l2_clip=1.0, noise_multiplier=1.0, dimension=10).plan(num_clients=20)
    over = DistributedDP(
        l2_clip=1.0, noise_multiplier=1.0, dimension=10, expected_dropout=0.25
    ).plan(num_clients=20)
    assert over.provisioned == 15 and base.provisioned == 20
    assert over.noise_std(15) == pytest.approx(1.0 * over.l2_sensitivity / over.scale, rel=1e-9)
    assert over.noise_std(20) > over.noise_std(15)  # nobody dropped: more noise than needed
    # Fewer survivors than provisioned: the guarantee weakens, and ε says by how much.
    assert over.epsilon(survivors=10) > over.epsilon(survivors=15) > over.epsilon(survivors=20)


@pytest.mark.parametrize("mechanism", ["skellam", "ddgauss"])
def test_noise_sum_has_the_variance_the_accountant_assumes(mechanism: str) -> None:
    """Many simulated rounds: the survivors' summed shares have variance survivors * client_var."""
    cfg = DistributedDP(l2_clip=1.0, noise_multiplier=1.0, dimension=2000, mechanism=mechanism)
    plan = cfg.plan(num_clients=12)
    sums = []
    for r in range(25):
        survivors = 12 if r % 2 else 9  # with and without dropouts
        total = sum(
            plan.noise_share(2000, _stream(bytes([r, u]))).astype(np.float64)
            for u in range(survivors)
        )
        event = plan.round_event(round_id=r, survivors=survivors)
        assumed = event.survivors * event.client_variance
        sums.append(total / math.sqrt(assumed))  # standardised by what the accountant assumes
    z = np.concatenate(sums)
    assert abs(z.mean()) <= 6 / math.sqrt(z.size)
    assert abs(z.var() - 1.0) <= 6 * math.sqrt(2 / z.size)


def test_noise_shares_differ_between_clients_and_use_the_csprng() -> None:
    plan = DistributedDP(l2_clip=1.0, noise_multiplier=1.0, dimension=64).plan(num_clients=4)
    a, b = plan.noise_share(64, None), plan.noise_share(64, None)
    assert a.dtype == np.int64 and not np.array_equal(a, b)
    same = [plan.noise_share(64, _stream(b"same")) for _ in range(2)]
    assert np.array_equal(same[0], same[1])  # a given keystream is deterministic


def test_hadamard_is_orthogonal_and_its_own_inverse() -> None:
    x = np.arange(16, dtype=np.float64) - 3.0
    y = hadamard(x)
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x))
    np.testing.assert_allclose(hadamard(y), x, atol=1e-12)
    with pytest.raises(ConfigurationError):
        hadamard(np.ones(12))


@pytest.mark.parametrize("rotation", [False, True])
def test_conditional_rounding_respects_the_sensitivity_bound(rotation: bool) -> None:
    cfg = DistributedDP(
        l2_clip=1.0, noise_multiplier=1.0, dimension=256, rotation=rotation, bits=32
    )
    plan = cfg.plan(num_clients=10_000)  # a coarse grid: rounding matters
    seed = rotation_seed(b"session", 0)
    x = np.full(256, 10.0)  # far above the clip; after clipping every coordinate is 1/16
    for t in range(30):
        q = plan.prepare(x, rotation_seed=seed, stream=_stream(bytes([t])))
        assert np.array_equal(q, np.round(q))
        assert float(np.dot(q, q)) <= plan.l2_sensitivity**2
        assert np.abs(q).max() <= plan.linf_clip or rotation


@pytest.mark.parametrize("rotation", [False, True])
def test_prepare_then_decode_returns_the_clipped_sum(rotation: bool) -> None:
    rng = np.random.default_rng(0)
    cfg = DistributedDP(l2_clip=1.0, noise_multiplier=1.0, dimension=100, rotation=rotation)
    plan = cfg.plan(num_clients=6)
    seed = rotation_seed(b"s", 3)
    updates = [rng.normal(size=100) * s for s in (0.01, 0.05, 0.3, 1.0, 2.0, 0.001)]
    total = sum(
        plan.prepare(u, rotation_seed=seed, stream=_stream(bytes([i])))
        for i, u in enumerate(updates)
    )
    decoded = plan.decode(total, rotation_seed=seed)
    exact = sum(u * min(1.0, 1.0 / np.linalg.norm(u)) for u in updates)
    bound = 6 * math.sqrt(plan.padded_dimension) / plan.scale  # rounding error, all clients
    assert np.linalg.norm(decoded - exact) <= bound


def _updates(n: int, d: int, seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=d) * (0.3 if u % 3 else 0.01)] for u in range(n)]


def _clipped_sum(updates, ids) -> np.ndarray:
    parts = [np.asarray(updates[u][0]) for u in ids]
    return sum(x * min(1.0, 1.0 / np.linalg.norm(x)) for x in parts)


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
@pytest.mark.parametrize(
    "dropouts", [None, {1: "masked", 4: "advertise", 6: "unmask"}], ids=["all", "dropouts"]
)
def test_noisy_sum_decodes_correctly_through_secagg(protocol: str, dropouts) -> None:
    n, d = 10, 1024
    updates = _updates(n, d)
    # Almost no noise: the decoded sum is the survivors' clipped sum up to rounding.
    acc = PrivacyAccountant()
    cfg = DistributedDP(l2_clip=1.0, noise_multiplier=1e-6, dimension=d, expected_dropout=0.2)
    agg = sa.make_aggregator(
        protocol, num_clients=n, distributed_dp=cfg, privacy=acc, dropout_rate=0.2,
        corrupt_rate=0.0,
    )
    res = sa.simulate(agg, updates, dropouts=dropouts, seed=11)
    expected_ids = [u for u in range(n) if u not in (1, 4)] if dropouts else list(range(n))
    assert list(res.survivors) == expected_ids  # the client silent at "unmask" is in the sum
    exact = _clipped_sum(updates, res.survivors)
    tol = n * 1.0 / agg.plan.scale + 8 * agg.plan.noise_std(len(res.survivors))
    np.testing.assert_allclose(res.aggregate[0], exact, atol=tol)
    # With real noise the error has the standard deviation the accountant assumes.
    cfg = DistributedDP(l2_clip=1.0, noise_multiplier=0.5, dimension=d, expected_dropout=0.2)
    agg = sa.make_aggregator(
        protocol, num_clients=n, distributed_dp=cfg, privacy=acc, dropout_rate=0.2,
        corrupt_rate=0.0,
    )
    res = sa.simulate(agg, updates, dropouts=dropouts, seed=12, round_id=1)
    err = res.aggregate[0] - _clipped_sum(updates, res.survivors)
    m = len(res.survivors)
    assert err.std() == pytest.approx(agg.plan.noise_std(m), rel=0.12)
    assert abs(err.mean()) <= 5 * agg.plan.noise_std(m) / math.sqrt(d)
    event = [e for e in acc.events if isinstance(e, DistributedNoiseRound)][-1]
    assert event.survivors == m and event.provisioned == 8
    assert math.sqrt(m * event.client_variance) / agg.plan.scale == pytest.approx(
        agg.plan.noise_std(m)
    )
    assert res.details["distributed_dp"]["survivors"] == m


def test_rotation_and_discrete_gaussian_through_secagg() -> None:
    n, d = 6, 200
    updates = _updates(n, d, seed=3)
    cfg = DistributedDP(
        l2_clip=1.0, noise_multiplier=1e-6, dimension=d, rotation=True, mechanism="ddgauss"
    )
    agg = sa.make_aggregator("secagg", num_clients=n, distributed_dp=cfg, dropout_rate=0.0,
                             corrupt_rate=0.0)
    res = sa.simulate(agg, updates, seed=2)
    assert res.aggregate[0].shape == (d,)
    np.testing.assert_allclose(
        res.aggregate[0], _clipped_sum(updates, range(n)), atol=n * 16 / agg.plan.scale + 1e-5
    )
    assert res.parameters["distributed_dp"]["padded_dimension"] == 256


def test_multi_tensor_updates_keep_their_shapes() -> None:
    rng = np.random.default_rng(1)
    updates = [[rng.normal(size=(3, 4)) * 0.1, rng.normal(size=5) * 0.1] for _ in range(4)]
    cfg = DistributedDP(l2_clip=10.0, noise_multiplier=1e-6, dimension=17)
    agg = sa.make_aggregator("secagg", num_clients=4, distributed_dp=cfg, dropout_rate=0.0,
                             corrupt_rate=0.0)
    res = sa.simulate(agg, updates, seed=4)
    assert [a.shape for a in res.aggregate] == [(3, 4), (5,)]
    np.testing.assert_allclose(res.aggregate[0], sum(u[0] for u in updates), atol=1e-4)


def test_budget_stops_a_round_before_it_runs() -> None:
    n, d = 5, 16
    cfg = DistributedDP(l2_clip=1.0, noise_multiplier=2.0, dimension=d)
    one = cfg.plan(num_clients=n)
    sink = MemorySink()
    acc = PrivacyAccountant(max_epsilon=one.epsilon(rounds=3) * 1.0001, sink=sink)
    agg = sa.make_aggregator("secagg", num_clients=n, distributed_dp=cfg, privacy=acc,
                             dropout_rate=0.0, corrupt_rate=0.0, min_survivors=n)
    assert agg.inner.params.min_survivors == n  # worst case = all survive: checks are exact
    for r in range(3):
        sa.simulate(agg, _updates(n, d), seed=r, round_id=r)
    with pytest.raises(PrivacyBudgetExceeded) as info:
        sa.simulate(agg, _updates(n, d), seed=9, round_id=3)
    assert info.value.unit == "round" and info.value.index == 3
    rounds = [e for e in sink.events if isinstance(e, DistributedNoiseRound)]
    assert len(rounds) == 3
    assert acc.epsilon(scope="user") == pytest.approx(one.epsilon(rounds=3))
    assert any(isinstance(e, SeededNoise) for e in sink.events)  # seeded runs are flagged


def test_the_budget_assumes_the_fewest_survivors() -> None:
    n, d = 10, 16
    cfg = DistributedDP(l2_clip=1.0, noise_multiplier=2.0, dimension=d)
    agg = sa.make_aggregator("secagg", num_clients=n, distributed_dp=cfg, dropout_rate=0.3,
                             corrupt_rate=0.0, privacy=PrivacyAccountant())
    worst = agg.inner.params.min_survivors
    assert worst < n
    plan = agg.plan
    budget = plan.epsilon(rounds=1, survivors=worst) * 0.999
    agg.privacy = PrivacyAccountant(max_epsilon=budget)
    assert plan.epsilon(survivors=n) < budget  # would fit if everyone survived ...
    with pytest.raises(PrivacyBudgetExceeded):  # ... but the budget cannot rely on that
        sa.simulate(agg, _updates(n, d), seed=1)


def test_misconfigurations_are_refused() -> None:
    cfg = DistributedDP(l2_clip=1.0, noise_multiplier=1.0, dimension=4)
    with pytest.raises(ConfigurationError, match="clip"):
        sa.make_aggregator("secagg", num_clients=4, clip=2.0, distributed_dp=cfg)
    with pytest.raises(ConfigurationError, match="set by distributed_dp"):
        sa.make_aggregator("secagg", num_clients=4, bits=64, distributed_dp=cfg)
    agg = sa.make_aggregator("secagg", num_clients=4, distributed_dp=cfg, dropout_rate=0.0,
                             corrupt_rate=0.0)
    with pytest.raises(ConfigurationError, match="unweighted"):
        sa.simulate(agg, [[np.zeros(4)]] * 4, weights=[1, 2, 1, 1], seed=1)
    with pytest.raises(ConfigurationError) as info:
        DistributedDP(l2_clip=0, noise_multiplier=0, dimension=0, mechanism="laplace",
                      expected_dropout=1.0, bits=16)  # type: ignore[arg-type]
    assert len(info.value.problems) == 6
    with pytest.raises(ConfigurationError, match=r"no scale fits|too coarse"):
        DistributedDP(l2_clip=1.0, noise_multiplier=1.0, dimension=10**8).plan(
            num_clients=2**20
        )


def test_plain_secagg_is_unchanged_without_distributed_dp() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agg = sa.make_aggregator("secagg", num_clients=3, clip=1.0, dropout_rate=0.0,
                                 corrupt_rate=0.0, distributed_dp=None)
        res = sa.simulate(agg, [[np.full(2, 0.25)] for _ in range(3)], seed=1)
    assert type(agg).__name__ == "SecAggAggregator"
    np.testing.assert_allclose(res.aggregate[0], 0.75, atol=agg.error_bound())


def test_declared_client_sampling_is_carried_out_inside_secagg() -> None:
    """DistributedDP.client_sampling_rate was trusted, not carried out: every client was in
    every sum. Each client now joins with probability q (CSPRNG); one that is not sampled still
    runs the protocol (and adds its noise share) with a zero update, so nobody learns the cohort
    from the traffic."""
    import secureagg as sa

    n, rounds, q = 6, 40, 0.25
    cfg = DistributedDP(l2_clip=1.0, noise_multiplier=1e-3, dimension=n,
                        client_sampling_rate=q)
    agg = sa.make_aggregator("secagg", num_clients=n, dropout_rate=0.0, corrupt_rate=0.0,
                             distributed_dp=cfg)
    updates = [[np.eye(n)[u]] for u in range(n)]
    total = 0
    for r in range(rounds):
        res = sa.simulate(agg, updates, round_id=r)
        assert res.survivors == tuple(range(n))  # everyone took part in the protocol
        included = np.round(res.aggregate[0]).astype(int)
        assert set(included.tolist()) <= {0, 1}
        total += int(included.sum())
    assert 25 <= total <= 95  # Binomial(240, 0.25): mean 60, sd 6.7


def test_an_absurd_noise_multiplier_is_a_configuration_error_not_an_overflow() -> None:
    """`secureagg demo --user-noise 1e300` raised a bare OverflowError from the calibration."""
    with pytest.raises(ConfigurationError, match="no scale fits"):
        DistributedDP(l2_clip=1.0, noise_multiplier=1e300, dimension=10).plan(num_clients=10)
