"""Known-answer vectors for the HE aggregators (``protocols/{paillier,ckks}/vectors/*.json``).

* ``paillier/packed``: packing, encryption with fixed blinding ``r`` (from a test keystream),
  homomorphic addition and CRT decryption under a fixed 2048-bit key - exact, byte for byte.
* ``paillier/round``: a seeded round (keys, blinding, rounding all from the seed): the sha256 of
  every message the server received and the exact released integer sums.
* ``ckks/round``: inputs and expected sums. CKKS ciphertexts draw SEAL's own randomness, so the
  float encoding is checked within its stated bound; the fixed-point encoding is exact, so its
  released integer sums are known answers.

Regenerate (after an intended, versioned change only):
``SECUREAGG_REGENERATE_VECTORS=1 pytest tests/he/test_vectors.py -k regenerate``.
"""

from __future__ import annotations

import numpy as np
import pytest

import secureagg as sa
from secureagg.crypto import labels, prg
from secureagg.he.paillier import PaillierPublicKey, PaillierSecretKey
from secureagg.he.paillier_packing import SlotPacking
from tests.vectors import h, load_vectors, regenerate, write_vectors

GENERATED_BY = "tests/he/test_vectors.py::test_regenerate_vectors"


def _kat_stream(context: bytes) -> prg.Keystream:
    return prg.Keystream(bytes(32), label=labels.TEST_VECTOR, context=b"he/kat/" + context)


def _round_updates(n: int, d: int) -> list[list[np.ndarray]]:
    stream = _kat_stream(b"updates")
    raw = stream.uniform(n * d).reshape(n, d) * 2.4 - 1.2  # some values beyond clip = 1
    return [[np.round(raw[i], 6)] for i in range(n)]


# ------------------------------------------------------------------------------ generation


def make_packed_vector() -> dict:
    key = PaillierSecretKey.generate(2048, rng=_kat_stream(b"key"))
    pk = key.public_key
    packing = SlotPacking.for_values(key_bits=2048, max_value=65534, summands=3)
    contributions = []
    for i in range(2):
        values = _kat_stream(b"values%d" % i).words(40, 16).astype(np.uint64) % np.uint64(65535)
        r = _kat_stream(b"r%d" % i).below(pk.n - 1) + 1
        m = packing.pack(values)
        c = pk.encrypt_with(m, pk.blinding_factor(r))
        contributions.append({
            "values": [int(v) for v in values],
            "r": format(r, "x"),
            "plaintext": format(m, "x"),
            "ciphertext": pk.to_wire(c).hex(),
        })
    c0, c1 = (pk.from_wire(h(c["ciphertext"])) for c in contributions)
    product = pk.multiply(c0, c1)
    plaintext = key.decrypt_raw(product)
    return {
        "key_bits": 2048,
        "p": format(key._phe_private.p, "x"),
        "q": format(key._phe_private.q, "x"),
        "n": format(pk.n, "x"),
        "fingerprint": pk.key_fingerprint.hex(),
        "packing": {"slot_bits": packing.slot_bits, "max_value": 65534, "summands": 3,
                    "slots": packing.slots},
        "contributions": contributions,
        "product": pk.to_wire(product).hex(),
        "sum_plaintext": format(plaintext, "x"),
        "slot_sums": [int(v) for v in packing.unpack(plaintext, 40)],
    }


PAILLIER_ROUND = {"num_clients": 3, "dim": 60, "clip": 1.0, "quant_bits": 16, "key_bits": 2048,
                  "seed": 2024, "dropouts": {"1": "upload"}}


def _paillier_round(case: dict) -> sa.SimulationResult:
    agg = sa.make_aggregator("paillier", num_clients=case["num_clients"], clip=case["clip"],
                             quant_bits=case["quant_bits"], key_bits=case["key_bits"])
    return sa.simulate(agg, _round_updates(case["num_clients"], case["dim"]),
                       dropouts={int(k): v for k, v in case["dropouts"].items()},
                       seed=case["seed"], keep_raw=True)


def make_paillier_round_vector() -> dict:
    res = _paillier_round(PAILLIER_ROUND)
    [release] = [raw for e, raw in zip(res.transcript, res.raw_uplink or [], strict=True)
                 if e.kind == "paillier/release"]
    scale = (2**15 - 1) / PAILLIER_ROUND["clip"]
    return {
        **PAILLIER_ROUND,
        "survivors": list(res.survivors),
        "transcript": [{"kind": e.kind, "sender": e.sender, "sha256": e.sha256}
                       for e in res.transcript],
        "released_sums": [int(np.rint(v * scale)) for v in res.aggregate[0]],
        "release_bytes": len(release),
    }


CKKS_ROUND = {"num_clients": 4, "dim": 70, "clip": 1.0, "seed": 99, "dropouts": {"2": "upload"},
              "precision_bits": 20}


def _ckks_round(case: dict, encoding: str) -> tuple[sa.SimulationResult, object]:
    kw = {"precision_bits": case["precision_bits"]} if encoding == "fixed" else {}
    agg = sa.make_aggregator("ckks", num_clients=case["num_clients"], clip=case["clip"],
                             encoding=encoding, **kw)
    res = sa.simulate(agg, _round_updates(case["num_clients"], case["dim"]),
                      dropouts={int(k): v for k, v in case["dropouts"].items()},
                      seed=case["seed"])
    return res, agg


def make_ckks_round_vector() -> dict:
    ups = _round_updates(CKKS_ROUND["num_clients"], CKKS_ROUND["dim"])
    survivors = [i for i in range(CKKS_ROUND["num_clients"])
                 if str(i) not in CKKS_ROUND["dropouts"]]
    plain = sum(np.clip(ups[i][0], -1.0, 1.0) for i in survivors)
    fixed, agg = _ckks_round(CKKS_ROUND, "fixed")
    _, float_agg = _ckks_round(CKKS_ROUND, "float")
    return {
        **CKKS_ROUND,
        "survivors": survivors,
        "updates": [[float(v) for v in u[0]] for u in ups],
        "plaintext_sum": [float(v) for v in plain],
        "float_tolerance": float_agg.error_bound(survivors=len(survivors)),
        "fixed_released_sums": [int(np.rint(v * 2**CKKS_ROUND["precision_bits"]))
                                for v in fixed.aggregate[0]],
        "fixed_tolerance": agg.error_bound(survivors=len(survivors)),
    }


def test_regenerate_vectors() -> None:
    if not regenerate():
        pytest.skip("set SECUREAGG_REGENERATE_VECTORS=1 to rewrite the HE vectors")
    write_vectors(
        "paillier", "packed",
        description="Packed Paillier, g = n + 1, 2048-bit key and blinding r from "
        "prg.Keystream(0^32, label=secureagg/v1/test/vector, context=he/kat/...): pack, encrypt "
        "(1 + m n) r^n mod n^2, multiply, CRT-decrypt, unpack",
        generated_by=GENERATED_BY, vectors=[make_packed_vector()],
    )
    write_vectors(
        "paillier", "round",
        description="Seeded Paillier round through sa.simulate: sha256 of every message the "
        "server received (pins keys, blinding, rounding and the wire format) and the exact "
        "released sums of the quantised values",
        generated_by=GENERATED_BY, vectors=[make_paillier_round_vector()],
    )
    write_vectors(
        "ckks", "round",
        description="CKKS round through sa.simulate: the float encoding must land within "
        "float_tolerance (its stated error bound, flooding included) of plaintext_sum; the "
        "fixed-point encoding's released integer sums (x 2^precision_bits) are exact",
        generated_by=GENERATED_BY, vectors=[make_ckks_round_vector()],
    )


# ------------------------------------------------------------------------------ checks

PACKED = [] if regenerate() else load_vectors("paillier", "packed")
PAILLIER_ROUNDS = [] if regenerate() else load_vectors("paillier", "round")
CKKS_ROUNDS = [] if regenerate() else load_vectors("ckks", "round")


@pytest.mark.parametrize("vector", PACKED)
def test_paillier_packed_known_answers(vector) -> None:
    key = PaillierSecretKey.from_primes(int(vector["p"], 16), int(vector["q"], 16))
    pk = key.public_key
    assert pk.n == int(vector["n"], 16) and pk.key_fingerprint.hex() == vector["fingerprint"]
    assert PaillierPublicKey.from_bytes(pk.public_material()) == pk
    packing = SlotPacking.for_values(key_bits=2048, max_value=vector["packing"]["max_value"],
                                     summands=vector["packing"]["summands"])
    assert packing.slot_bits == vector["packing"]["slot_bits"]
    for c in vector["contributions"]:
        m = packing.pack(np.array(c["values"], dtype=np.uint64))
        assert format(m, "x") == c["plaintext"]
        ct = pk.encrypt_with(m, pk.blinding_factor(int(c["r"], 16)))
        assert pk.to_wire(ct).hex() == c["ciphertext"]
        assert key.decrypt_raw(ct) == m
    c0, c1 = (pk.from_wire(h(c["ciphertext"])) for c in vector["contributions"])
    assert pk.to_wire(pk.multiply(c0, c1)).hex() == vector["product"]
    plaintext = key.decrypt_raw(pk.from_wire(h(vector["product"])))
    assert format(plaintext, "x") == vector["sum_plaintext"]
    sums = packing.unpack(plaintext, len(vector["slot_sums"])).tolist()
    assert sums == vector["slot_sums"] == [
        a + b for a, b in zip(*(c["values"] for c in vector["contributions"]), strict=True)
    ]


@pytest.mark.filterwarnings("ignore::secureagg.transport.simulator.ClippingWarning")
@pytest.mark.parametrize("vector", PAILLIER_ROUNDS)
def test_paillier_round_known_answers(vector) -> None:
    res = _paillier_round(vector)
    assert list(res.survivors) == vector["survivors"]
    got = [{"kind": e.kind, "sender": e.sender, "sha256": e.sha256} for e in res.transcript]
    assert got == vector["transcript"]
    scale = (2**15 - 1) / vector["clip"]
    assert [int(np.rint(v * scale)) for v in res.aggregate[0]] == vector["released_sums"]


@pytest.mark.filterwarnings("ignore::secureagg.transport.simulator.ClippingWarning")
@pytest.mark.parametrize("vector", CKKS_ROUNDS)
def test_ckks_round_known_answers(vector) -> None:
    plain = np.array(vector["plaintext_sum"])
    ups = _round_updates(vector["num_clients"], vector["dim"])
    assert [[float(v) for v in u[0]] for u in ups] == vector["updates"]
    floated, _ = _ckks_round(vector, "float")
    assert np.max(np.abs(floated.aggregate[0] - plain)) <= vector["float_tolerance"]
    fixed, _ = _ckks_round(vector, "fixed")
    released = [int(np.rint(v * 2 ** vector["precision_bits"])) for v in fixed.aggregate[0]]
    assert released == vector["fixed_released_sums"]
    assert np.max(np.abs(fixed.aggregate[0] - plain)) <= vector["fixed_tolerance"]
