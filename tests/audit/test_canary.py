"""The one-run canary audit (issue 14, item 6): its statistics against hand computations, and the
audit through the real federated DP-SGD path on the digits data.

* The bound: all-correct and one-wrong answers solved independently (closed form / bisection on
  q), chance level gives 0, the p-value at the bound is the level, Theorem 3's δ term against a
  plain re-implementation, monotone in the correct count, the confidence and δ, the union bound.
* The audit's mechanics with a stand-in run (no torch): an oracle scorer gets every guess right
  and the largest bound the guesses allow; a blind one shows nothing; the canaries go to the
  named client; the claim comes from the ledger; misuse is refused with every problem named.
* Digits, 5 clients, SecAgg+, FedAvg (test sizes; the full sizes are in
  ``benchmarks/bench_canary.py``): without DP the audit proves ε > 1; with DP-SGD at ε ∈ {1, 8}
  its lower bound stays below the ledger's ε for the canary client.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from secureagg.audit.canary import (
    CanaryAudit,
    CanaryPlacement,
    canary_audit,
    canary_stream,
    default_choices,
    logit_margins,
    random_canaries,
)
from secureagg.audit.canary_bound import (
    best_guesses,
    count_correct,
    epsilon_lower_bound,
    p_value,
)
from secureagg.errors import ConfigurationError, InvalidInputError
from secureagg.transport import SeededRunWarning

pytestmark = [
    pytest.mark.filterwarnings("ignore::secureagg.transport.SeededRunWarning"),
    pytest.mark.filterwarnings("ignore:.*seed.*:UserWarning"),  # seeded DP noise, on purpose
]


def _logit(q: float) -> float:
    return math.log(q / (1.0 - q))


def _solve_q(tail: Callable[[float], float], level: float = 0.05) -> float:
    """The q in (0, 1) with tail(q) = level, tail increasing (plain bisection, 200 steps)."""
    lo, hi = 1e-12, 1.0 - 1e-15
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if tail(mid) <= level else (lo, mid)
    return lo


# ------------------------------------------------------------------------------ the bound


@pytest.mark.parametrize("r", [10, 20, 100])
def test_all_correct_gives_the_closed_form(r: int) -> None:
    # P[Bin(r, q) >= r] = q^r <= 0.05  <=>  q <= 0.05^(1/r); ε = logit(q)
    expected = _logit(0.05 ** (1.0 / r))
    assert epsilon_lower_bound(r, r) == pytest.approx(expected, abs=1e-6)
    assert epsilon_lower_bound(100, 100) == pytest.approx(3.49297, abs=1e-4)
    assert epsilon_lower_bound(10, 10) == pytest.approx(1.05187, abs=1e-4)


@pytest.mark.parametrize("r", [20, 60])
def test_one_wrong_matches_an_independent_solution(r: int) -> None:
    q = _solve_q(lambda q: q**r + r * q ** (r - 1) * (1.0 - q))
    assert epsilon_lower_bound(r, r - 1) == pytest.approx(_logit(q), abs=1e-6)


def test_chance_level_and_empty_guesses_show_nothing() -> None:
    assert epsilon_lower_bound(100, 50) == 0.0
    assert epsilon_lower_bound(100, 58) == 0.0  # P[Bin(100, 1/2) >= 58] = 0.067 > 0.05
    assert epsilon_lower_bound(100, 59) > 0.0  # 0.044 <= 0.05
    assert epsilon_lower_bound(0, 0) == 0.0
    assert epsilon_lower_bound(10, 0) == 0.0


def test_p_value_at_the_bound_is_the_level() -> None:
    for r, v in [(100, 80), (40, 37), (500, 300)]:
        eps = epsilon_lower_bound(r, v)
        assert p_value(r, v, eps) <= 0.05 < p_value(r, v, eps + 1e-6)
        # the binomial tail computed term by term with exact integers
        q = 1.0 / (1.0 + math.exp(-eps))
        tail = sum(math.comb(r, k) * q**k * (1.0 - q) ** (r - k) for k in range(v, r + 1))
        assert p_value(r, v, eps) == pytest.approx(tail, rel=1e-9)


def _theorem3(r: int, v: int, m: int, delta: float, eps: float) -> float:
    """Steinke-Nasr-Jagielski Theorem 3 written out plainly."""
    q = 1.0 / (1.0 + math.exp(-eps))

    def f(w: int) -> float:
        return sum(math.comb(r, k) * q**k * (1.0 - q) ** (r - k) for k in range(max(w, 0), r + 1))

    ratio = max((f(v - i) - f(v)) / i for i in range(1, m + 1))
    return min(1.0, f(v) + 2 * m * delta * ratio)


def test_delta_version_is_theorem_3() -> None:
    r, v, m, delta = 50, 45, 500, 1e-4
    for eps in (0.0, 0.7, 1.5, 3.0):
        assert p_value(r, v, eps, delta=delta, canaries=m) == pytest.approx(
            _theorem3(r, v, m, delta, eps), rel=1e-9
        )
    bound = epsilon_lower_bound(r, v, delta=delta, canaries=m)
    assert 0.0 < bound < epsilon_lower_bound(r, v)
    assert _theorem3(r, v, m, delta, bound) <= 0.05 < _theorem3(r, v, m, delta, bound + 0.011)
    with pytest.raises(ConfigurationError, match="canaries"):
        epsilon_lower_bound(r, v, delta=1e-5)  # m is part of the theorem


def test_the_bound_is_monotone() -> None:
    r = 100
    for delta in (0.0, 1e-5, 1e-3):
        bounds = [epsilon_lower_bound(r, v, delta=delta, canaries=1000) for v in range(r + 1)]
        assert all(a <= b for a, b in itertools.pairwise(bounds)), delta
        assert bounds[50] == 0.0 and bounds[-1] > 0.8
    # a higher confidence or a larger δ claims less
    by_confidence = [epsilon_lower_bound(r, 90, confidence=c) for c in (0.5, 0.9, 0.95, 0.99)]
    assert by_confidence == sorted(by_confidence, reverse=True)
    by_delta = [epsilon_lower_bound(r, 95, delta=d, canaries=1000) for d in (0, 1e-6, 1e-4, 1e-3)]
    assert by_delta == sorted(by_delta, reverse=True) and by_delta[0] > by_delta[-1]


def test_the_p_value_need_not_be_monotone_under_delta_and_the_bound_still_holds() -> None:
    r, v, m, delta = 200, 150, 1000, 1e-4
    grid = [p_value(r, v, e, delta=delta, canaries=m) for e in np.linspace(0, 4, 401)]
    assert any(b < a for a, b in itertools.pairwise(grid))  # dips exist
    bound = epsilon_lower_bound(r, v, delta=delta, canaries=m)
    assert p_value(r, v, bound, delta=delta, canaries=m) <= 0.05
    # no ε above the bound + one grid step passes
    above = np.linspace(bound + 0.011, epsilon_lower_bound(r, v) + 0.01, 200)
    assert all(p_value(r, v, e, delta=delta, canaries=m) > 0.05 for e in above)


def test_bound_refuses_misuse_naming_every_problem() -> None:
    with pytest.raises(ConfigurationError) as err:
        epsilon_lower_bound(10, 11, delta=1.5, confidence=1.0)
    assert len(err.value.problems) == 3
    with pytest.raises(ConfigurationError):
        epsilon_lower_bound(-1, 0)
    with pytest.raises(ConfigurationError):
        p_value(10, 5, -1.0)


# ---------------------------------------------------------------------------- the guesses


def test_count_correct_guesses_top_and_bottom_with_ties_by_index() -> None:
    scores = [0.9, 0.1, 0.5, 0.2, 0.5, 0.5]
    included = np.array([True, False, True, True, False, True])
    assert count_correct(scores, included, k_plus=1, k_minus=1) == (2, 2)
    assert count_correct(scores, included, k_plus=2, k_minus=2) == (4, 3)  # 0.2 is included
    # three tie at 0.5: the later index ranks higher, so k_plus = 2 takes 0.9 and index 5
    assert count_correct(scores, included, k_plus=2, k_minus=0) == (2, 2)
    assert count_correct(scores, included, k_plus=3, k_minus=0) == (3, 2)  # then index 4
    with pytest.raises(InvalidInputError):
        count_correct([0.1, float("nan")], np.array([True, False]), k_plus=1, k_minus=0)
    with pytest.raises(InvalidInputError):
        count_correct([0.1, 0.2], np.array([True, False]), k_plus=2, k_minus=1)


def test_best_guesses_pays_a_union_bound() -> None:
    rng = np.random.default_rng(5)
    included = rng.integers(0, 2, 400).astype(bool)
    scores = included + rng.normal(scale=0.6, size=400)
    choices = default_choices(400)
    assert choices == ((20, 20), (40, 40), (100, 100))
    best = best_guesses(scores, included, choices)
    assert best.confidence == pytest.approx(1 - 0.05 / 3)
    r, v = count_correct(scores, included, k_plus=best.k_plus, k_minus=best.k_minus)
    assert (best.guesses, best.correct) == (r, v)
    assert best.epsilon_lower_bound == epsilon_lower_bound(r, v, confidence=1 - 0.05 / 3)
    others = [count_correct(scores, included, k_plus=k, k_minus=k) for k, _ in choices]
    assert best.epsilon_lower_bound == max(
        epsilon_lower_bound(g, c, confidence=1 - 0.05 / 3) for g, c in others
    )
    assert best.epsilon_lower_bound < epsilon_lower_bound(r, v)  # the price of trying three


# ----------------------------------------------------------- the audit, with a stand-in run


class _Ledger:
    def __init__(self, eps: dict[int, float]) -> None:
        self.eps = eps

    def ledger(self) -> dict[str, Any]:
        streams = [{"scope": "sample", "party": c, "epsilon": e} for c, e in self.eps.items()]
        return {"settings": {"delta": 1e-5}, "sample_level": {"streams": streams},
                "user_level": None}


class _StandInRun:
    """Duck-typed like FederatedRun: its 'model' remembers the canaries it trained on."""

    def __init__(self, placement: CanaryPlacement, privacy: Any) -> None:
        self.placement = placement
        self.model: set[bytes] = set()
        self.privacy = privacy
        self.history: list[dict[str, Any]] = []

    def run(self) -> list[dict[str, Any]]:
        self.model.update(x.tobytes() for x in self.placement.inputs)
        self.history.append({"status": "completed", "metrics": {"accuracy": 1.0}})
        return self.history


def _oracle(model: set[bytes], inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.array([1.0 if x.tobytes() in model else 0.0 for x in inputs])


def _stand_in(privacy: Any = None) -> tuple[Callable[[CanaryPlacement], _StandInRun], list[Any]]:
    made: list[_StandInRun] = []

    def build(placement: CanaryPlacement) -> _StandInRun:
        made.append(_StandInRun(placement, privacy))
        return made[-1]

    return build, made


def test_an_oracle_gets_every_guess_right_and_the_largest_bound() -> None:
    build, made = _stand_in(_Ledger({0: 1.0, 2: 5.0}))
    audit = canary_audit(build, _oracle, canaries=400, input_shape=(16,), num_classes=4,
                         client=2, seed=11)
    placement = made[0].placement
    assert placement.client == 2 and audit.client == 2
    assert audit.included == placement.count and 160 < placement.count < 240
    assert audit.correct == audit.guesses == 200  # k = m/4 on each side, all right
    assert audit.epsilon_lower_bound == pytest.approx(
        epsilon_lower_bound(200, 200, delta=1e-5, canaries=400, confidence=1 - 0.05 / 3)
    )
    assert audit.epsilon_lower_bound == pytest.approx(3.86, abs=0.01)
    assert audit.claimed_epsilon == 5.0 and "client 2" in audit.claim_source  # not client 0's
    assert audit.delta == 1e-5 and audit.refutes_claim is False
    assert audit.final_metrics == {"accuracy": 1.0} and audit.rounds_completed == 1
    assert isinstance(audit, CanaryAudit) and audit.to_dict()["choices"] == [[20, 20], [40, 40],
                                                                            [100, 100]]
    # a claim below what the oracle shows is refuted
    build, _ = _stand_in(_Ledger({0: 3.5}))
    assert canary_audit(build, _oracle, canaries=400, input_shape=(16,), num_classes=4,
                        seed=11).refutes_claim


def test_a_blind_scorer_shows_nothing_and_no_dp_claims_nothing() -> None:
    build, _ = _stand_in()
    audit = canary_audit(build, lambda model, x, y: np.zeros(len(y)), canaries=400,
                         input_shape=(16,), num_classes=4, seed=3)
    assert audit.epsilon_lower_bound == 0.0
    assert math.isinf(audit.claimed_epsilon) and audit.delta == 0.0
    assert audit.to_dict()["claimed_epsilon"] is None


def test_the_seed_fixes_canaries_and_bits_and_warns() -> None:
    placements = []
    for seed in (7, 7, 8):
        build, made = _stand_in()
        with pytest.warns(SeededRunWarning, match="seeded canary audit"):
            canary_audit(build, _oracle, canaries=64, input_shape=(8,), num_classes=3, seed=seed)
        placements.append(made[0].placement)
    a, b, c = placements
    assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.labels, b.labels)
    assert not (a.count == c.count and np.array_equal(a.inputs, c.inputs))
    assert set(np.unique(a.inputs)) <= {0.0, 1.0} and a.labels.max() <= 2
    build, made = _stand_in()
    canary_audit(build, _oracle, canaries=64, input_shape=(8,), num_classes=3)  # CSPRNG
    assert made[0].placement.inputs.shape[1:] == (8,)


def test_the_audit_refuses_misuse() -> None:
    build, _ = _stand_in()
    with pytest.raises(ConfigurationError) as err:
        canary_audit(build, _oracle, canaries=1, input_shape=(), num_classes=1, client=-1,
                     confidence=2.0, choices=[(5, 5)])
    assert len(err.value.problems) == 6
    with pytest.raises(InvalidInputError, match="one per canary"):
        canary_audit(build, lambda m, x, y: np.zeros(3), canaries=10, input_shape=(2,),
                     num_classes=2, seed=1)

    def started(placement: CanaryPlacement) -> _StandInRun:
        run = _StandInRun(placement, None)
        run.run()
        return run

    with pytest.raises(ConfigurationError, match="already trained"):
        canary_audit(started, _oracle, canaries=10, input_shape=(2,), num_classes=2, seed=1)

    def two_clients(placement: CanaryPlacement) -> _StandInRun:
        run = _StandInRun(placement, None)
        run.num_clients = 2  # type: ignore[attr-defined]
        return run

    with pytest.raises(ConfigurationError, match="client 2, but the run has 2 clients"):
        canary_audit(two_clients, _oracle, canaries=10, input_shape=(2,), num_classes=2,
                     client=2, seed=1)
    with pytest.raises(ConfigurationError, match="choices"):
        canary_audit(build, _oracle, canaries=10, input_shape=(2,), num_classes=2,
                     choices=[(1, 2, 3)])  # type: ignore[list-item]


def test_random_canaries_and_margins() -> None:
    x, y = random_canaries(canary_stream(0), 1000, input_shape=(4, 2), num_classes=10,
                           value_range=(-1.0, 2.0))
    assert x.shape == (1000, 4, 2) and x.dtype == np.float32 and set(np.unique(x)) == {-1.0, 2.0}
    assert set(np.unique(y)) == set(range(10)) and y.dtype == np.int64
    logits = np.array([[1.0, 3.0, 2.0], [5.0, 0.0, 5.0]])
    assert logit_margins(logits, np.array([1, 0])).tolist() == [1.0, 0.0]
    with pytest.raises(InvalidInputError):
        logit_margins(np.zeros(3), np.zeros(3, dtype=int))


# ------------------------------------------------------------- the real path, on digits


def _digits(epsilon: float | None, *, runs: list[Any], rounds: int, local_epochs: int) -> Any:
    """build_run for digits: 5 clients, a 64-128-10 MLP, SGD (DP-SGD under DP), SecAgg+."""
    pytest.importorskip("torch")
    pytest.importorskip("opacus")
    pytest.importorskip("sklearn")
    from secureagg.canary.digits import digits_build_run

    return digits_build_run(epsilon, canaries=200, rounds=rounds, local_epochs=local_epochs,
                            run_seed=1, evaluate=False, runs=runs)


def _margins(model: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from secureagg.canary.digits import margins

    return margins(model, x, y)


def test_without_dp_the_audit_proves_epsilon_above_one() -> None:
    """The leak detector: a non-private model memorises random-label noise patterns."""
    runs: list[Any] = []
    audit = canary_audit(_digits(None, runs=runs, rounds=10, local_epochs=5), _margins,
                         canaries=200, input_shape=(64,), num_classes=10, seed=0)
    assert audit.epsilon_lower_bound > 1.0
    assert audit.correct >= 0.9 * audit.guesses and audit.guesses >= 40
    assert math.isinf(audit.claimed_epsilon) and audit.dp_settings is None
    assert audit.rounds_completed == 10 and audit.run_configuration["protocol"] == "secagg+"
    run, placement, data = runs[0]
    held = run.client_loaders[0].dataset.tensors[0].numpy()
    assert len(held) == data.client_indices[0].size + audit.included  # client 0 holds them
    assert np.array_equal(held[-audit.included:], placement.inputs)
    assert all(len(run.client_loaders[i].dataset) == data.client_indices[i].size
               for i in range(1, 5))


@pytest.mark.parametrize("epsilon", [1.0, 8.0])
def test_with_dp_the_lower_bound_stays_below_the_ledger(epsilon: float) -> None:
    runs: list[Any] = []
    audit = canary_audit(_digits(epsilon, runs=runs, rounds=5, local_epochs=2), _margins,
                         canaries=200, input_shape=(64,), num_classes=10, seed=0)
    run = runs[0][0]
    ledger_eps = run.privacy.sample.epsilon(scope="sample", party=0)
    assert audit.claimed_epsilon == pytest.approx(ledger_eps)
    assert 0.9 * epsilon < audit.claimed_epsilon <= epsilon
    assert audit.epsilon_lower_bound < audit.claimed_epsilon and not audit.refutes_claim
    assert audit.delta == 1e-5 and audit.dp_settings is not None
    assert audit.dp_settings["sample_level"]["record_counts"] == "not released"
    assert audit.rounds_completed == 5
