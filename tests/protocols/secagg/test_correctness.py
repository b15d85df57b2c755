"""SecAgg / SecAgg+ correctness: every dropout pattern leaving enough survivors gives the sum."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import secureagg as sa
from secureagg.errors import InsufficientSurvivors
from tests.conftest import slow_scale
from tests.protocols.secagg.driver import drive, make_setup, plaintext_sum

STAGES = ("advertise", "share", "masked", "unmask")
CHOICES = (None, *STAGES)


def _aggs(n: int):
    """SecAgg on the complete graph, and SecAgg+ on a sparse ring when n allows one."""
    out = [
        sa.make_aggregator("secagg", num_clients=n, clip=4.0, dropout_rate=0.0, corrupt_rate=0.0)
    ]
    if n >= 5:
        out.append(
            sa.make_aggregator(
                "secagg+",
                num_clients=n,
                clip=4.0,
                degree=2,
                threshold=2,
                dropout_rate=0.0,
                corrupt_rate=0.0,
            )
        )
    return out


def _updates(n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    return [[rng.uniform(-3, 3, size=3), rng.uniform(-3, 3, size=(2,))] for _ in range(n)]


def _check_pattern(agg, updates, pattern):
    setup = make_setup(agg, updates)
    try:
        run = drive(setup, dropouts=pattern, stages=STAGES)
    except InsufficientSurvivors:
        return "aborted"
    res = setup.server.result()
    # The sum covers exactly the clients that sent a masked input.
    in_sum = {
        u
        for u in range(agg.num_clients)
        if u not in pattern or STAGES.index(pattern[u]) >= STAGES.index("unmask")
    }
    # ... minus those excluded for lack of live neighbours after advertise (server rule).
    assert set(res.survivor_ids) <= in_sum
    expected = plaintext_sum(updates, res.survivor_ids)
    bound = agg.error_bound(survivors=len(res.survivor_ids))
    for got, want in zip(res.aggregate, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=bound + 1e-12)
    assert not run.client_errors
    return "ok"


@pytest.mark.parametrize("n", [3, 4])
def test_every_dropout_pattern_small_n(n):
    """Exhaustive: all 5^n dropout patterns for n <= 4, SecAgg (complete graph)."""
    updates = _updates(n)
    for agg in _aggs(n):
        outcomes = {"ok": 0, "aborted": 0}
        for stages in itertools.product(CHOICES, repeat=n):
            pattern = {u: s for u, s in enumerate(stages) if s is not None}
            outcomes[_check_pattern(agg, updates, pattern)] += 1
        # Both outcomes occur: the test exercises recovery and aborts.
        assert outcomes["ok"] > 0 and outcomes["aborted"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("n", [5, 6])
def test_every_dropout_pattern_n5_n6(n):
    """Exhaustive for n = 5, 6 at full scale (5^n patterns); a random sample at small scale."""
    updates = _updates(n, seed=n)
    patterns = list(itertools.product(CHOICES, repeat=n))
    if slow_scale() == "small":
        rng = np.random.default_rng(n)
        patterns = [patterns[i] for i in rng.choice(len(patterns), size=60, replace=False)]
    for agg in _aggs(n):
        for stages in patterns:
            pattern = {u: s for u, s in enumerate(stages) if s is not None}
            _check_pattern(agg, updates, pattern)


def test_survivor_set_semantics():
    """Silent at masked or earlier: not in the sum. Silent only at unmask: in the sum."""
    n = 7
    agg = sa.make_aggregator("secagg", num_clients=n, clip=4.0, dropout_rate=0.0, corrupt_rate=0.0)
    updates = _updates(n)
    res = sa.simulate(
        agg, updates, dropouts={0: "advertise", 1: "share", 2: "masked", 3: "unmask"}, seed=1
    )
    assert res.survivors == (3, 4, 5, 6)
    expected = plaintext_sum(updates, (3, 4, 5, 6))
    for got, want in zip(res.aggregate, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=agg.error_bound())


@pytest.mark.filterwarnings("ignore::secureagg.transport.simulator.ClippingWarning")
@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_random_larger_cases(protocol):
    n, d = 24, 50
    rng = np.random.default_rng(7)
    agg = sa.make_aggregator(protocol, num_clients=n, clip=1.0)
    for trial in range(3):
        updates = [[rng.normal(0, 0.5, size=d)] for _ in range(n)]
        dropped = rng.choice(n, size=3, replace=False)
        dropouts = {int(u): STAGES[int(rng.integers(0, 4))] for u in dropped}
        res = sa.simulate(agg, updates, dropouts=dropouts, seed=trial)
        clipped = [[np.clip(a, -1, 1) for a in upd] for upd in updates]
        expected = plaintext_sum(clipped, res.survivors)
        np.testing.assert_allclose(res.aggregate[0], expected[0], atol=agg.error_bound())
        assert set(res.survivors) == set(range(n)) - {
            u for u, s in dropouts.items() if s != "unmask"
        }


@pytest.mark.filterwarnings("ignore::secureagg.transport.simulator.ClippingWarning")
def test_weighted_aggregation_masks_the_weight():
    n = 5
    agg = sa.make_aggregator(
        "secagg", num_clients=n, clip=2.0, max_weight=100, dropout_rate=0.0, corrupt_rate=0.0
    )
    updates = _updates(n)
    weights = [3, 10, 1, 100, 7]
    res = sa.simulate(agg, updates, weights=weights, dropouts={1: "masked"}, seed=2)
    assert res.total_weight == 3 + 1 + 100 + 7
    clipped = [[np.clip(a, -2, 2) for a in upd] for upd in updates]
    expected = plaintext_sum(clipped, res.survivors, weights)
    for got, want in zip(res.aggregate, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=agg.error_bound())


def test_zero_inputs_sum_exactly_to_zero():
    """Stochastic rounding of 0 is exactly 0, so masks must cancel to the bit."""
    n = 6
    agg = sa.make_aggregator("secagg", num_clients=n, clip=1.0, dropout_rate=0.0, corrupt_rate=0.0)
    updates = [[np.zeros(64)] for _ in range(n)]
    res = sa.simulate(agg, updates, dropouts={0: "share", 4: "masked", 2: "unmask"}, seed=3)
    assert np.all(res.aggregate[0] == 0.0)


def test_client_noise_hook_adds_integer_noise_before_masking():
    """The distributed-DP hook: each survivor's integer noise is in the sum, nobody else's."""
    n = 6
    calls = []

    def noise(count, stream):
        calls.append(count)
        return np.full(count, 7, dtype=np.int64)

    agg = sa.make_aggregator(
        "secagg",
        num_clients=n,
        clip=1.0,
        dropout_rate=0.0,
        corrupt_rate=0.0,
        noise_headroom=7 * n,
        client_noise=noise,
    )
    updates = [[np.zeros(16)] for _ in range(n)]
    res = sa.simulate(agg, updates, dropouts={2: "masked"}, seed=5)
    assert len(calls) == n - 1  # client 2 never built its masked input
    scale = agg.encoder.effective_scale
    np.testing.assert_array_equal(res.aggregate[0], np.full(16, 7 * (n - 1) / scale))


def test_client_noise_with_wrong_shape_aborts_the_client():
    agg = sa.make_aggregator(
        "secagg",
        num_clients=5,
        clip=1.0,
        dropout_rate=0.0,
        corrupt_rate=0.0,
        client_noise=lambda c, s: np.zeros(c + 1, np.int64),
    )
    with pytest.raises(InsufficientSurvivors):
        sa.simulate(agg, [[np.zeros(4)] for _ in range(5)], seed=1)
