"""SecAgg's ``integer_noise`` option: the distributed noise share as a public option of the round
spec, so that a party rebuilt from the spec alone (on its own machine) adds exactly the share the
in-process round adds - the same share the ``client_noise`` callable gave before."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import secureagg as sa
from secureagg.aggregators import aggregator_for
from secureagg.crypto import labels, prg
from secureagg.dp import noise
from secureagg.errors import ConfigurationError
from secureagg.protocols.spec import RoundSpec
from secureagg.transport.round_spec import spec_from_bytes, spec_to_bytes

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

N = 5
BASE: dict[str, Any] = {"num_clients": N, "clip": 1.0, "scale": 1.0, "noise_headroom": 1000}


def _updates(width: int = 40) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(4)
    return [[rng.integers(0, 2, width).astype(np.float64)] for _ in range(N)]


@pytest.mark.parametrize("mechanism", ["ddgauss", "skellam"])
def test_the_option_adds_what_the_callable_added_bit_for_bit(mechanism: str) -> None:
    variance = 6.25

    def share(count: int, stream: Any) -> Any:  # what SecureVoteAggregator passed before
        if mechanism == "skellam":
            return noise.skellam(variance, count, stream)
        return noise.discrete_gaussian(math.sqrt(variance), count, stream)

    by_option = sa.make_aggregator(
        "secagg+", **BASE, integer_noise={"mechanism": mechanism, "variance": variance})
    by_callable = sa.make_aggregator("secagg+", **BASE, client_noise=share)
    plain = sa.make_aggregator("secagg+", **BASE)
    updates = _updates()
    a = sa.simulate(by_option, updates, dropouts={4: "masked"}, seed=b"same")
    b = sa.simulate(by_callable, updates, dropouts={4: "masked"}, seed=b"same")
    c = sa.simulate(plain, updates, dropouts={4: "masked"}, seed=b"same")
    assert np.array_equal(a.aggregate[0], b.aggregate[0])
    assert a.survivors == b.survivors == (0, 1, 2, 3)
    true = sum(updates[p][0] for p in a.survivors)
    assert np.array_equal(c.aggregate[0], true)  # no option: no noise
    diff = a.aggregate[0] - true
    assert np.all(diff == np.round(diff)) and np.any(diff != 0)


def test_the_option_is_in_the_spec_and_a_party_rebuilt_from_it_adds_the_same_share() -> None:
    option = {"mechanism": "skellam", "variance": 2.5}
    agg = sa.make_aggregator("secagg+", **BASE, integer_noise=option)
    assert agg.parameters()["integer_noise"] == option
    spec = agg.round_spec(shapes=[(8,)], weighted=False, session_id=b"s" * 16, round_id=3)
    back = spec_from_bytes(spec_to_bytes(spec))
    assert back.option_values["integer_noise"] == option
    rebuilt = aggregator_for(back)
    assert rebuilt.integer_noise == option  # type: ignore[attr-defined]
    stream_a = prg.Keystream(b"k" * 32, label=labels.NOISE)
    stream_b = prg.Keystream(b"k" * 32, label=labels.NOISE)
    ours = agg.client_noise(100, stream_a)  # type: ignore[attr-defined]
    theirs = rebuilt.client_noise(100, stream_b)  # type: ignore[attr-defined]
    assert np.array_equal(ours, theirs) and np.any(ours != 0)


def test_without_the_option_the_spec_is_unchanged() -> None:
    agg = sa.make_aggregator("secagg+", **BASE)
    assert "integer_noise" not in agg.spec_options()
    assert "integer_noise" not in agg.parameters()
    spec = agg.round_spec(shapes=[(8,)], weighted=False, session_id=b"s" * 16, round_id=0)
    assert "integer_noise" not in spec.options


@pytest.mark.parametrize(("option", "extra", "match"), [
    ({"mechanism": "laplace", "variance": 1.0}, {}, "'ddgauss' or 'skellam'"),
    ({"mechanism": "ddgauss", "variance": -1.0}, {}, "finite number in"),
    ({"mechanism": "ddgauss", "variance": float("nan")}, {}, "finite number in"),
    ({"mechanism": "skellam", "variance": float("inf")}, {}, "finite number in"),
    ({"mechanism": "skellam", "variance": 2.0**51}, {}, "finite number in"),
    ({"mechanism": "ddgauss", "variance": True}, {}, "finite number in"),
    ({"mechanism": "ddgauss"}, {}, "exactly the keys"),
    ({"mechanism": "ddgauss", "variance": 1.0, "seed": 3}, {}, "exactly the keys"),
    ("ddgauss", {}, "exactly the keys"),
    ({"mechanism": "ddgauss", "variance": 1.0},
     {"client_noise": lambda c, s: np.zeros(c, np.int64)}, "not both"),
    ({"mechanism": "ddgauss", "variance": 1.0}, {"noise_headroom": 0}, "noise_headroom"),
])
def test_bad_options_are_refused_at_construction(option: Any, extra: dict[str, Any],
                                                 match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        sa.make_aggregator("secagg+", **{**BASE, **extra}, integer_noise=option)


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(ConfigurationError) as info:
        sa.make_aggregator("secagg+", **BASE, client_noise=lambda c, s: np.zeros(c, np.int64),
                           integer_noise={"mechanism": "uniform", "variance": -2})
    assert len(info.value.problems) == 3


def test_a_spec_with_a_bad_option_is_refused_by_the_party_rebuilding_it() -> None:
    agg = sa.make_aggregator("secagg+", **BASE,
                             integer_noise={"mechanism": "ddgauss", "variance": 1.0})
    spec = agg.round_spec(shapes=[(8,)], weighted=False, session_id=b"s" * 16, round_id=0)
    forged = RoundSpec.build(
        protocol=spec.protocol,
        options={**spec.option_values, "integer_noise": {"mechanism": "ddgauss", "variance": -4}},
        session_id=spec.session_id, round_id=0, num_clients=N, shapes=[(8,)], weighted=False)
    with pytest.raises(ConfigurationError, match="variance"):
        aggregator_for(forged)


def test_the_vote_aggregator_runs_on_the_spec_option() -> None:
    from secureagg.ensemble.aggregate import SecureVoteAggregator

    agg = SecureVoteAggregator(4, 3, sigma=2.0, mechanism="skellam")
    options = agg._agg.spec_options()
    assert options["integer_noise"] == {"mechanism": "skellam", "variance": agg.client_variance}
    assert options["scale"] == 1.0 and options["noise_headroom"] > 0
    assert agg.report()["protocol"]["integer_noise"]["variance"] == agg.client_variance


def test_distributed_dp_refuses_the_option_by_name() -> None:
    """Distributed DP sets its own noise share (its plan): an inner aggregator that already
    carries ``integer_noise`` is refused, and the message names the option, not a conflict the
    user did not create."""
    from secureagg.aggregators.dp import with_distributed_dp
    from secureagg.dp.distributed import DistributedDP

    inner = sa.make_aggregator(
        "secagg+", **BASE, integer_noise={"mechanism": "ddgauss", "variance": 4.0})
    with pytest.raises(ConfigurationError, match="integer_noise") as info:
        with_distributed_dp(inner, DistributedDP(l2_clip=1.0, noise_multiplier=1.0, dimension=8))
    assert "not both" not in str(info.value)
