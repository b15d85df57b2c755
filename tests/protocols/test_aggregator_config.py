"""make_aggregator refuses misuse with a ConfigurationError that names the user's own mistakes.

A misspelt keyword lists the accepted names (never a raw TypeError); every numeric parameter is a
real number of the right kind (no bool, no str, no NaN/Inf); explicit SecAgg parameters are
checked for what the user passed - not for quantities derived from an already invalid setting -
and no "probability" above 1 is ever printed.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

import secureagg as sa
from secureagg.errors import ConfigurationError

SECAGG = ["secagg", "secagg+"]


def _problems(name: str, **kwargs) -> tuple[str, ...]:
    with pytest.raises(ConfigurationError) as info:
        sa.make_aggregator(name, **kwargs)
    return info.value.problems


# ---------------------------------------------------------------------------- keyword names


@pytest.mark.parametrize("name", SECAGG)
@pytest.mark.parametrize("typo", ["dropout", "degre", "treshold", "corrupt", "complete_graph"])
def test_misspelt_secagg_keyword_is_a_configuration_error_listing_accepted_names(name, typo):
    (problem,) = _problems(name, num_clients=10, clip=1.0, **{typo: 4})
    assert repr(typo) in problem
    for accepted in ("dropout_rate", "degree", "threshold", "min_survivors", "distributed_dp",
                     "privacy", "threat"):
        assert accepted in problem
    assert "complete_graph" not in problem.split("accepts", 1)[1]  # fixed by the name


@pytest.mark.parametrize("name", ["plain", "ckks", "paillier"])
def test_misspelt_keyword_of_other_aggregators_lists_accepted_names(name):
    (problem,) = _problems(name, num_clients=4, clip=1.0, dropout=0.1)
    assert "'dropout'" in problem and "num_clients" in problem


def test_secagg_with_distributed_dp_keyword_typo_is_a_configuration_error():
    from secureagg.dp import DistributedDP

    dp = DistributedDP(l2_clip=1.0, noise_multiplier=1.0, dimension=3)
    (problem,) = _problems("secagg", num_clients=4, distributed_dp=dp, dropout=0.1)
    assert "'dropout'" in problem and "distributed_dp" in problem


# ---------------------------------------------------------------------------- numeric kinds

BAD_REALS = ["1", True, float("nan"), float("inf"), -1.0, 0]


@pytest.mark.parametrize("name", ["plain", *SECAGG, "ckks", "paillier"])
@pytest.mark.parametrize("clip", BAD_REALS, ids=repr)
def test_clip_must_be_a_positive_finite_real_number(name, clip):
    problems = _problems(name, num_clients=4, clip=clip)
    assert any("clip" in p and repr(clip) in p for p in problems)


@pytest.mark.parametrize("name", ["plain", *SECAGG, "ckks", "paillier"])
def test_a_numpy_float_clip_is_a_real_number(name):
    agg = sa.make_aggregator(name, num_clients=4, clip=np.float32(0.5))
    assert agg.parameters()["clip"] == 0.5
    json.dumps(agg.parameters())  # still JSON for the run record


@pytest.mark.parametrize("name", SECAGG)
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("dropout_rate", False),
        ("dropout_rate", "0.1"),
        ("dropout_rate", float("nan")),
        ("corrupt_rate", True),
        ("corrupt_rate", float("inf")),
        ("degree", 4.0),
        ("threshold", True),
        ("min_survivors", 3.0),
        ("max_weight", True),
        ("bits", True),
        ("scale", "2"),
        ("noise_headroom", 1.5),
        ("model_digest", "digest"),
        ("threat", "evil"),
    ],
    ids=lambda v: repr(v),
)
def test_secagg_numeric_and_typed_parameters_refuse_the_wrong_kind(name, key, value):
    problems = _problems(name, num_clients=10, clip=1.0, **{key: value})
    assert any(key.split("_")[0] in p and repr(value) in p for p in problems), problems


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("ckks", "allow_unsafe_release", "yes"),
        ("ckks", "precompute_encryption", 1),
        ("ckks", "max_weight", True),
        ("paillier", "quant_bits", 16.0),
        ("paillier", "quant_bits", True),
        ("paillier", "max_weight", 1.0),
        ("paillier", "precompute_blinding", "no"),
        ("plain", "min_clients", True),
    ],
    ids=lambda v: repr(v),
)
def test_other_aggregators_refuse_the_wrong_kind(name, key, value):
    problems = _problems(name, num_clients=4, clip=1.0, **{key: value})
    assert any(key in p and repr(value) in p for p in problems), problems


# ------------------------------------------------------------------ the user's real mistakes


def test_degree_1_threshold_50_reports_the_users_mistakes_only():
    problems = _problems("secagg+", num_clients=10, clip=1.0, degree=1, threshold=50)
    text = "\n".join(problems)
    assert "degree k=1 must be even" in text
    assert "threshold t=50 exceeds the number of clients n=10" in text
    assert "min_survivors" not in text  # the user never passed it
    assert "probability" not in text  # derived from an invalid degree: not the user's mistake
    assert len(problems) == 2


def test_threshold_above_degree_is_reported_with_the_degree():
    problems = _problems("secagg+", num_clients=100, clip=1.0, degree=4, threshold=50,
                         dropout_rate=0.0, corrupt_rate=0.0)
    assert problems == ("threshold t=50 exceeds the degree k=4: a client's shares go to its k "
                        "neighbours and itself, and a dropped client's to its k neighbours",)


@pytest.mark.parametrize("degree", [0, -2, 10, 2.0])
def test_degree_out_of_range_is_the_only_degree_problem(degree):
    problems = _problems("secagg+", num_clients=10, clip=1.0, degree=degree, threshold=2)
    assert len(problems) == 1 and "degree" in problems[0] and repr(degree) in problems[0]


def _printed_probabilities(problems: tuple[str, ...]) -> list[float]:
    found = []
    for p in problems:
        for match in re.finditer(r"probab\w*[^0-9]{0,40}?([0-9.]+(?:e[-+]?[0-9]+)?)", p):
            found.append(float(match.group(1)))
    return found


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_clients": 100, "degree": 2, "threshold": 2, "dropout_rate": 0.5},
        {"num_clients": 1000, "degree": 4, "threshold": 3, "dropout_rate": 0.3,
         "corrupt_rate": 0.1},
        {"num_clients": 10, "degree": 2, "threshold": 2, "dropout_rate": 0.9},
    ],
)
def test_no_probability_above_one_is_printed(kwargs):
    problems = _problems("secagg+", clip=1.0, **kwargs)
    assert any("disconnect" in p for p in problems)
    values = _printed_probabilities(problems)
    assert values and all(0 <= v <= 1 for v in values), problems


def test_min_survivors_given_out_of_range_is_reported_once():
    problems = _problems("secagg", num_clients=5, clip=1.0, min_survivors=9,
                         dropout_rate=0.0, corrupt_rate=0.0)
    assert len(problems) == 1 and "min_survivors=9" in problems[0]


def test_all_problems_are_reported_at_once():
    problems = _problems("secagg+", num_clients=10, clip="1", dropout_rate=2.0, degree=3,
                         threshold=1)
    text = "\n".join(problems)
    for needle in ("clip", "dropout_rate"):
        assert needle in text
    assert math.isfinite(len(problems)) and len(problems) >= 2


@pytest.mark.parametrize(("protocol", "n", "threat"),
                         [("secagg", 3000, "malicious"), ("secagg", 100_000, "curious"),
                          ("secagg+", 100_000, "malicious")])
def test_large_cohorts_choose_parameters_without_overflow(
    protocol: str, n: int, threat: str
) -> None:
    """C(k, i) overflowed a float (raw OverflowError) from n = 3000 in malicious mode."""
    agg = sa.make_aggregator(protocol, num_clients=n, clip=1.0, threat=threat)
    p = agg.params
    assert 2 <= p.threshold <= p.degree + 1
    assert 0.0 <= p.failure_probability <= 1.0
