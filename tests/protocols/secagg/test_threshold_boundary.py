"""The survivor boundary: t survivors complete a round, t - 1 abort, at every stage that counts.

Each client Shamir-shares its secrets among its live neighbours *and itself* (Bonawitz et al.
2017, section 4: the shares go to every member of U1, the sharer included), so t surviving
clients hold t shares of every surviving client's self-mask seed: t is enough. The message of the
abort names the real number of clients that remain.
"""

from __future__ import annotations

import numpy as np
import pytest

import secureagg as sa
from secureagg.errors import ConfigurationError, InsufficientSurvivors
from tests.protocols.secagg.driver import plaintext_sum

N = 6
#: The smallest safe threshold per threat model at n = 6 with no corruption: curious t >= 2 (we
#: take 3), malicious t > n / 2.
T = {"curious": 3, "malicious": 4}
STAGES = {
    "curious": ("advertise", "share", "masked", "unmask"),
    "malicious": ("advertise", "share", "masked", "consistency", "unmask"),
}
CASES = [(threat, stage) for threat, stages in STAGES.items() for stage in stages]


def _agg(threat: str, **kw):
    kw.setdefault("threshold", T[threat])
    return sa.make_aggregator(
        "secagg",
        num_clients=N,
        clip=1.0,
        threat=threat,
        dropout_rate=0.0,
        corrupt_rate=0.0,
        degree=N - 1,
        **kw,
    )


def _updates(n: int = N) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(5)
    return [[rng.uniform(-1, 1, size=7)] for _ in range(n)]


def _in_sum(stage: str, dropped: set[int]) -> tuple[int, ...]:
    # A client silent from "consistency" or "unmask" sent its masked input: it is in the sum.
    late = stage in ("consistency", "unmask")
    return tuple(u for u in range(N) if late or u not in dropped)


@pytest.mark.parametrize(("threat", "stage"), CASES)
def test_exactly_t_survivors_complete_the_round(threat, stage):
    agg, ups, t = _agg(threat), _updates(), T[threat]
    dropped = set(range(N - t))  # exactly t remain
    res = sa.simulate(agg, ups, dropouts=dict.fromkeys(dropped, stage), seed=21)
    assert res.survivors == _in_sum(stage, dropped)
    np.testing.assert_allclose(
        res.aggregate[0],
        plaintext_sum(ups, res.survivors)[0],
        atol=agg.error_bound(survivors=len(res.survivors)),
    )
    assert res.metrics["client_aborts"] == []


@pytest.mark.parametrize(("threat", "stage"), CASES)
def test_t_minus_one_survivors_abort_and_the_message_counts_them(threat, stage):
    agg, ups, t = _agg(threat), _updates(), T[threat]
    dropped = set(range(N - t + 1))  # exactly t - 1 remain
    with pytest.raises(InsufficientSurvivors) as info:
        sa.simulate(agg, ups, dropouts=dict.fromkeys(dropped, stage), seed=22)
    err = info.value
    assert (err.survivors, err.threshold) == (t - 1, t)
    assert err.stage == stage
    assert f"only {t - 1} clients remain, fewer than the threshold {t}" in str(err)


@pytest.mark.parametrize("threat", ["curious", "malicious"])
def test_min_survivors_above_t_is_the_boundary_and_is_reported(threat):
    t = T[threat]
    agg, ups = _agg(threat, min_survivors=t + 1), _updates()
    assert agg.parameters()["min_survivors"] == t + 1
    res = sa.simulate(agg, ups, dropouts=dict.fromkeys(range(N - t - 1), "masked"), seed=23)
    assert len(res.survivors) == t + 1
    with pytest.raises(InsufficientSurvivors) as info:
        sa.simulate(agg, ups, dropouts=dict.fromkeys(range(N - t), "masked"), seed=24)
    assert (info.value.survivors, info.value.threshold) == (t, t + 1)


def test_min_survivors_below_t_is_refused_at_construction():
    """Fewer than t clients can never reconstruct a self-mask: such a setting would be a lie."""
    with pytest.raises(ConfigurationError, match=r"min_survivors=2 is below the threshold t=3"):
        _agg("curious", min_survivors=2)


@pytest.mark.parametrize("threat", ["curious", "malicious"])
def test_default_min_survivors_is_t(threat):
    assert _agg(threat).parameters()["min_survivors"] == T[threat]


def test_sparse_graph_client_with_t_minus_one_live_neighbours_stays_in():
    """SecAgg+: a client whose live neighbours are t - 1 shares among them and itself: t shares.

    n = 8, k = 4, t = 3. Dropping two of client 0's four neighbours at advertise leaves it with
    exactly t - 1 = 2 live neighbours; it stays in the round and in the sum.
    """
    agg = sa.make_aggregator(
        "secagg+", num_clients=8, clip=1.0, degree=4, threshold=3,
        dropout_rate=0.0, corrupt_rate=0.0,
    )
    ups = _updates(8)
    probe = agg.setup_round(ups, weights=None, session_id=b"Q" * 16, round_id=0, seed=b"g")
    neighbours = sorted(probe.server.ctx.neighbours[0])
    dropped = dict.fromkeys(neighbours[:2], "advertise")
    res = sa.simulate(agg, ups, dropouts=dropped, seed=25, session_id=b"Q" * 16)
    assert 0 in res.survivors
    assert set(res.survivors) == set(range(8)) - set(dropped)
    np.testing.assert_allclose(
        res.aggregate[0], plaintext_sum(ups, res.survivors)[0],
        atol=agg.error_bound(survivors=len(res.survivors)),
    )
