"""The HE peers (bare TenSEAL as FLARE runs it, unpacked phe) compute correct sums (issue 15).

Tiny sizes; no timing assertions: what is checked is that each peer's decrypted aggregate is the
plaintext sum, that the configuration measured is the one named, and that the result is JSON.
"""

from __future__ import annotations

import json

import pytest

from secureagg.bench import he_peers
from secureagg.bench.he_peers import (
    TENSEAL_PEER_CONTEXTS,
    measure_phe_peer,
    measure_tenseal_peer,
)
from secureagg.errors import ConfigurationError, MissingDependencyError
from tests.he.keys import paillier_key

pytest.importorskip("tenseal")
pytest.importorskip("phe")

SEED = bytes(range(32))


@pytest.mark.parametrize(
    ("context", "bits", "encryption"),
    [
        ("flare-default", [60, 40, 40], "symmetric"),
        ("flare-60-40-40-60", [60, 40, 40, 60], "asymmetric"),
        ("secureagg-default", [60, 60, 60], "asymmetric"),
    ],
)
def test_tenseal_peer_sums_correctly_on_its_context(context, bits, encryption) -> None:
    # d = 4097: two ciphertexts per client, the second holding a single value
    result = measure_tenseal_peer(3, 4097, repeats=1, context=context, seed=SEED)
    json.dumps(result)
    assert result["available"] is True
    assert result["coeff_mod_bit_sizes"] == bits and result["poly_modulus_degree"] == 8192
    assert result["scale"] == 2.0**40 and result["encryption"] == encryption
    assert result["ciphertexts_per_client"] == 2 and result["clients_encrypted"] == 3
    assert result["max_error"] < 1e-4  # CKKS noise at scale 2^40: about 1e-8 per value
    assert result["upload_bytes"] > 4 * 4097
    assert all(result[k] > 0 for k in ("client_seconds", "server_seconds", "decrypt_seconds"))


def test_tenseal_peer_public_key_variant_and_copied_uploads() -> None:
    result = measure_tenseal_peer(
        4, 100, repeats=2, encryption="asymmetric", clients_encrypted=2, seed=SEED
    )
    assert result["encryption"] == "asymmetric" and result["clients_encrypted"] == 2
    assert len(result["samples"]["client_seconds"]) == 2 * 2  # two clients, two repeats
    assert result["max_error"] < 1e-4  # the reference counts each copied upload again


def test_tenseal_peer_refuses_unknown_configurations() -> None:
    with pytest.raises(ConfigurationError, match="unknown context"):
        measure_tenseal_peer(2, 10, context="flare-latest")
    with pytest.raises(ConfigurationError, match="encryption"):
        measure_tenseal_peer(2, 10, encryption="hybrid")
    with pytest.raises(ConfigurationError, match="n must be"):
        measure_tenseal_peer(0, 10)
    assert set(TENSEAL_PEER_CONTEXTS) == {"flare-default", "flare-60-40-40-60",
                                          "secureagg-default"}


def test_same_context_peer_is_our_aggregators_default_context() -> None:
    # "tenseal-same" is only a measure of our protocol's overhead if it runs our own context
    import secureagg as sa

    agg = sa.make_aggregator("ckks", num_clients=3, clip=1.0)
    ours = agg.parameters()["context"]
    peer = TENSEAL_PEER_CONTEXTS["secureagg-default"]
    assert peer["poly_modulus_degree"] == ours["poly_modulus_degree"]
    assert list(peer["coeff_mod_bit_sizes"]) == list(ours["coeff_mod_bit_sizes"])
    assert 2.0 ** peer["scale_bits"] == ours["scale"]
    assert peer["encryption"] == "asymmetric"  # our clients hold the public key only


def test_phe_peer_sums_correctly_and_states_the_cap() -> None:
    public, private = paillier_key().phe_keypair()  # a 2048-bit key: the smallest we accept
    result = measure_phe_peer(
        3, 12, max_d=5, keypair=(public, private), clients_encrypted=None, seed=SEED
    )
    json.dumps(result)
    assert result["available"] is True
    assert result["d"] == 12 and result["d_measured"] == 5 and result["capped"] is True
    assert result["clients_encrypted"] == 3 and result["key_bits"] == 2048
    assert result["max_error"] <= result["error_bound"]
    assert result["upload_bytes"] == 512 * 5


def test_phe_peer_uncapped_with_copied_vectors() -> None:
    result = measure_phe_peer(4, 3, keypair=paillier_key().phe_keypair(), seed=SEED)
    assert result["capped"] is False and result["d_measured"] == 3
    assert result["clients_encrypted"] == 1  # the default: the others' vectors are copies
    assert result["max_error"] <= result["error_bound"]


def test_phe_peer_refuses_bad_arguments() -> None:
    with pytest.raises(ConfigurationError, match="max_d"):
        measure_phe_peer(2, 10, max_d=0)
    with pytest.raises(ConfigurationError, match="precision"):
        measure_phe_peer(2, 10, precision=float("nan"))


def test_missing_dependencies_are_reported_not_raised(monkeypatch) -> None:
    import secureagg.he.ckks as ckks
    import secureagg.he.paillier as paillier

    def missing(name: str):
        def raise_missing() -> None:
            raise MissingDependencyError(name, "he", purpose="a test")

        return raise_missing

    monkeypatch.setattr(ckks, "require_tenseal", missing("tenseal"))
    monkeypatch.setattr(paillier, "require_phe", missing("phe"))
    for result in (he_peers.measure_tenseal_peer(2, 10), he_peers.measure_phe_peer(2, 10)):
        assert result["available"] is False and "he" in result["reason"]
        json.dumps(result)
