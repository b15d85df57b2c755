"""Known-answer vectors: a full 5-client SecAgg round, one client dropped after share keys.

Everything is derived from a fixed seed (keys, self-mask seeds, Shamir coefficients, AEAD nonces,
stochastic rounding and the session id), so every message the server sends and receives, and the
final aggregate, must reproduce bit for bit. Any change of output - codec, derivation, label,
PRG, encoding - fails here, and must come with a new version label and regenerated vectors
(``SECUREAGG_REGENERATE_VECTORS=1 python -m pytest tests/protocols/secagg/test_vectors.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

import secureagg as sa
from tests.vectors import load_vectors, regenerate, write_vectors

D = 6


def _updates(n: int) -> list[list[np.ndarray]]:
    # A fixed, non-random input: x_u[i] = ((7u + 3i) mod 11 - 5) / 10.
    return [[np.array([((7 * u + 3 * i) % 11 - 5) / 10 for i in range(D)])] for u in range(n)]


def _run(case: dict) -> dict:
    agg = sa.make_aggregator(
        case["protocol"],
        num_clients=case["num_clients"],
        clip=case["clip"],
        dropout_rate=0.0,
        corrupt_rate=0.0,
        threat=case["threat"],
    )
    res = sa.simulate(
        agg,
        _updates(case["num_clients"]),
        dropouts={int(k): v for k, v in case["dropouts"].items()},
        seed=case["seed"].encode(),
        round_id=case["round_id"],
    )
    return {
        "parameters": {k: agg.parameters()[k] for k in ("degree", "threshold", "bits", "scale")},
        "session_id": res.session_id.hex(),
        "survivors": list(res.survivors),
        "uplink": [[e.stage, e.kind, e.sender, e.size, e.sha256] for e in res.transcript],
        "downlink": [[e.stage, e.kind, e.recipient, e.size, e.sha256] for e in res.downlink],
        "aggregate_f64_hex": np.ascontiguousarray(res.aggregate[0], dtype="<f8").tobytes().hex(),
    }


CASES = [
    {
        "name": "secagg-5-clients-dropout-after-share",
        "protocol": "secagg",
        "num_clients": 5,
        "clip": 1.0,
        "threat": "curious",
        "dropouts": {"3": "masked"},
        "seed": "secagg-kat-1",
        "round_id": 0,
    },
    {
        "name": "secagg-malicious-5-clients-dropout-after-share",
        "protocol": "secagg",
        "num_clients": 5,
        "clip": 1.0,
        "threat": "malicious",
        "dropouts": {"3": "masked"},
        "seed": "secagg-kat-2",
        "round_id": 4,
    },
]


def test_regenerate_vectors():
    if not regenerate():
        pytest.skip("set SECUREAGG_REGENERATE_VECTORS=1 to rewrite secagg vectors")
    vectors = [{**case, "expected": _run(case)} for case in CASES]
    write_vectors(
        "secagg",
        "round",
        vectors=vectors,
        description="Full SecAgg rounds from fixed seeds: every message digest and the "
        "aggregate (float64 little-endian hex). Inputs: x_u[i] = "
        "((7u + 3i) mod 11 - 5) / 10, d = 6.",
        generated_by="tests/protocols/secagg/test_vectors.py",
    )


@pytest.mark.parametrize("vector", load_vectors("secagg", "round"), ids=lambda v: v["name"])
def test_round_reproduces_bit_for_bit(vector):
    got = _run(vector)
    want = vector["expected"]
    assert got["parameters"] == want["parameters"]
    assert got["session_id"] == want["session_id"]
    assert got["survivors"] == want["survivors"]
    assert got["uplink"] == want["uplink"]
    assert got["downlink"] == want["downlink"]
    assert got["aggregate_f64_hex"] == want["aggregate_f64_hex"]
    # And the aggregate is right: the sum of the survivors' inputs within the stated bound.
    ups = _updates(vector["num_clients"])
    expected = sum(ups[u][0] for u in want["survivors"])
    agg = np.frombuffer(bytes.fromhex(want["aggregate_f64_hex"]), dtype="<f8")
    assert np.max(np.abs(agg - expected)) <= len(want["survivors"]) / want["parameters"]["scale"]
