"""CKKS rounds end to end: sums within the stated bounds, dropouts, weights, streaming, flooding."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import secureagg as sa
from secureagg.errors import ConfigurationError, InsufficientSurvivors, NonFiniteInputError
from secureagg.protocols.base import KEY_HOLDER, SERVER
from tests.he.driver import drive, make_setup
from tests.he.keys import ckks_key


def _updates(n, shapes=((30, 20), (7,)), seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [[rng.uniform(-scale, scale, size=s) for s in shapes] for _ in range(n)]


def _reference(updates, ids, clip=None, weights=None):
    out = []
    for t in range(len(updates[0])):
        total = np.zeros(updates[0][t].shape)
        for i in ids:
            x = updates[i][t] if clip is None else np.clip(updates[i][t], -clip, clip)
            total += (1.0 if weights is None else weights[i]) * x
        out.append(total)
    return out


def _max_error(res, ref):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(res.aggregate, ref, strict=True))


@pytest.mark.filterwarnings("ignore::secureagg.transport.simulator.ClippingWarning")
@pytest.mark.parametrize("encoding", ["float", "fixed"])
def test_sum_within_bound_with_dropouts(encoding) -> None:
    n = 6
    ups = _updates(n, scale=1.3)  # some values beyond the clip
    agg = sa.make_aggregator("ckks", num_clients=n, clip=1.0, encoding=encoding, key=ckks_key())
    res = sa.simulate(agg, ups, dropouts={1: "upload", 4: "upload"}, seed=3)
    assert res.survivors == (0, 2, 3, 5)
    ref = _reference(ups, res.survivors, clip=1.0)
    err = _max_error(res, ref)
    assert err <= agg.error_bound(survivors=4)
    assert res.total_weight == 4.0
    assert [a.shape for a in res.aggregate] == [(30, 20), (7,)]
    assert res.metrics["clipped"]["total"] > 0
    if encoding == "float":
        # the error is dominated by the flooding noise: visible, but inside the bound
        assert err > 0.5 * agg.scheme.flooding_std
        assert res.details["flooding_noise_std"] == pytest.approx(agg.scheme.flooding_std)
    else:
        assert err <= 4 * 2.0**-agg.scheme.precision_bits
        assert res.details["flooding_noise_std"] == 0.0


def test_weighted_sum() -> None:
    n = 4
    ups = _updates(n)
    weights = [1.0, 2.5, 3.0, 0.5]
    agg = sa.make_aggregator("ckks", num_clients=n, clip=1.0, max_weight=3.0, key=ckks_key())
    res = sa.simulate(agg, ups, weights=weights, seed=1)
    assert _max_error(res, _reference(ups, range(n), clip=1.0, weights=weights)) <= (
        agg.error_bound() * 3.0
    )
    assert res.total_weight == pytest.approx(7.0, abs=20 * agg.scheme.flooding_std)


def test_fixed_point_weighted_sum_is_exact_on_the_weight() -> None:
    ups = _updates(3)
    agg = sa.make_aggregator("ckks", num_clients=3, clip=1.0, encoding="fixed", max_weight=4)
    res = sa.simulate(agg, ups, weights=[1, 4, 2], seed=2)
    assert res.total_weight == 7.0
    ref = _reference(ups, range(3), clip=1.0, weights=[1, 4, 2])
    assert _max_error(res, ref) <= agg.error_bound()


def test_the_server_streams_one_ciphertext_set() -> None:
    held = {}
    for n in (3, 8):
        agg = sa.make_aggregator("ckks", num_clients=n, clip=1.0, key=ckks_key())
        setup = make_setup(agg, [[np.ones(5000)] for _ in range(n)])
        server, counts = setup.server, []
        for env in server.start():
            for reply in setup.clients[env.recipient].receive(SERVER, env.message):
                server.receive(reply.sender, reply.message)
                counts.append((server.held_ciphertexts, server.held_probes))
        held[n] = counts
    # 5000 values + count slot = 2 running sums, whatever the number of clients; the key-check
    # probes are one per chunk size (a full and a partial chunk: 2) per client
    assert held[3] == [(2, 2 * k) for k in (1, 2, 3)]
    assert held[8] == [(2, 2 * k) for k in range(1, 9)]


def test_too_few_contributions_release_nothing() -> None:
    agg = sa.make_aggregator("ckks", num_clients=5, clip=1.0, min_clients=3, key=ckks_key())
    setup = make_setup(agg, _updates(5))
    with pytest.raises(InsufficientSurvivors) as info:
        drive(setup, dropouts={0, 1, 2})
    assert info.value.survivors == 2 and info.value.threshold == 3
    assert not setup.helpers[KEY_HOLDER].released  # nothing reached the key holder


def test_insufficient_survivors_through_simulate() -> None:
    agg = sa.make_aggregator("ckks", num_clients=4, clip=1.0, key=ckks_key())
    with pytest.raises(InsufficientSurvivors) as info:
        sa.simulate(agg, _updates(4), dropouts={0: "upload", 1: "upload", 2: "upload"})
    assert [e.kind for e in info.value.downlink].count("ckks/aggregate") == 0


@pytest.mark.parametrize("kwargs", [{"num_clients": 1}, {"num_clients": 4, "min_clients": 1}])
def test_a_single_client_is_never_decrypted_alone(kwargs) -> None:
    with pytest.raises(ConfigurationError, match=r"never decrypted alone|min_clients"):
        sa.make_aggregator("ckks", clip=1.0, **kwargs)


def test_default_min_clients_is_half() -> None:
    assert sa.make_aggregator("ckks", num_clients=20).min_clients == 10
    assert sa.make_aggregator("ckks", num_clients=3).min_clients == 2


def test_nan_is_refused_before_anything_is_sent() -> None:
    ups = _updates(3)
    ups[1][0][0, 0] = np.nan
    agg = sa.make_aggregator("ckks", num_clients=3, clip=1.0, key=ckks_key())
    with pytest.raises(NonFiniteInputError, match="client 1"):
        sa.simulate(agg, ups)


# ------------------------------------------------------------------------------ flooding


def test_flooding_noise_has_the_stated_spread() -> None:
    n, d = 4, 20000
    ups = [[np.zeros(d)] for _ in range(n)]
    agg = sa.make_aggregator("ckks", num_clients=n, clip=1.0, key=ckks_key())
    res = sa.simulate(agg, ups, seed=5)
    sigma = agg.scheme.flooding_std
    assert sigma == pytest.approx(2.0**12 * agg.scheme.noise_bound)
    assert float(np.std(res.aggregate[0])) == pytest.approx(sigma, rel=0.05)
    assert abs(float(np.mean(res.aggregate[0]))) < 5 * sigma / np.sqrt(d)


def test_flooding_bits_are_adjustable() -> None:
    a = sa.make_aggregator("ckks", num_clients=4, flooding_bits=8)
    b = sa.make_aggregator("ckks", num_clients=4, flooding_bits=16)
    assert b.scheme.flooding_std == pytest.approx(256 * a.scheme.flooding_std)
    assert b.error_bound() > a.error_bound()
    assert b.parameters()["flooding_statistical_bits"] == 26.0


def test_turning_flooding_off_needs_an_explicit_opt_out() -> None:
    with pytest.raises(ConfigurationError, match="allow_unsafe_release=True"):
        sa.make_aggregator("ckks", num_clients=4, flooding_bits=0)


def test_the_opt_out_is_logged_and_releases_raw_decryptions(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="secureagg.he"):
        agg = sa.make_aggregator(
            "ckks", num_clients=3, clip=1.0, flooding_bits=0, allow_unsafe_release=True,
            key=ckks_key(),
        )
    assert any("flooding is OFF" in r.getMessage() for r in caplog.records)
    assert agg.parameters()["release_protection"].startswith("NONE")
    ups = _updates(3)
    res = sa.simulate(agg, ups)
    assert res.details["flooding_noise_std"] == 0.0
    assert _max_error(res, _reference(ups, range(3), clip=1.0)) < 1e-6


def test_error_bound_includes_the_flooding() -> None:
    agg = sa.make_aggregator("ckks", num_clients=10, clip=1.0)
    assert agg.error_bound() >= 10 * agg.scheme.flooding_std
    assert agg.parameters()["error_bound"] == agg.error_bound()


def test_fixed_point_budget() -> None:
    agg = sa.make_aggregator("ckks", num_clients=20, clip=1.0, encoding="fixed")
    p = agg.parameters()
    assert p["precision_bits"] == 27 and p["flooding_bits"] == 0
    assert p["exact_failure_log2"] < -60
    assert agg.error_bound(survivors=20) == pytest.approx(20 * 2.0**-27, rel=1e-4)


def test_a_key_service_key_must_match_the_parameters() -> None:
    from secureagg.he.ckks import FLARE_DEFAULT, CkksSecretKey

    with pytest.raises(ConfigurationError, match="differ from the aggregator"):
        sa.make_aggregator("ckks", num_clients=3, key=CkksSecretKey(FLARE_DEFAULT))
    with pytest.raises(ConfigurationError, match="CkksSecretKey"):
        sa.make_aggregator("ckks", num_clients=3, key="not a key")
    agg = sa.make_aggregator("ckks", num_clients=3, coeff_mod_bit_sizes=(60, 40, 40, 60),
                             key=CkksSecretKey(FLARE_DEFAULT))
    assert agg.parameters()["key_rotation"] == "user key service"


def test_insecure_context_is_refused_by_the_aggregator() -> None:
    with pytest.raises(ConfigurationError, match="HE-standard budget of 109") as info:
        sa.make_aggregator("ckks", num_clients=3, poly_modulus_degree=4096,
                           coeff_mod_bit_sizes=(60, 60), min_clients=9)
    assert len(info.value.problems) == 2  # and the bad min_clients, reported together


def test_fresh_keys_every_round_by_default() -> None:
    agg = sa.make_aggregator("ckks", num_clients=3, clip=1.0)
    a = make_setup(agg, _updates(3), round_id=0)
    b = make_setup(agg, _updates(3), round_id=1)
    assert a.server.key_fingerprint != b.server.key_fingerprint
    assert agg.parameters()["key_rotation"] == "fresh keys per round"


# ------------------------------------------------------------------------------ encryption pool


@pytest.mark.parametrize("encoding", ["float", "fixed"])
def test_precomputed_encryption_is_used_once_per_chunk(encoding) -> None:
    n = 4
    ups = _updates(n)  # 607 values + count slot: one partial chunk each
    agg = sa.make_aggregator("ckks", num_clients=n, clip=1.0, encoding=encoding,
                             precompute_encryption=True, key=ckks_key())
    setup = make_setup(agg, ups)
    pools = [c.encryptor.pool for c in setup.clients.values()]
    assert len({id(p) for p in pools}) == n  # every client has its own pool
    assert [len(p) for p in pools] == [0] * n  # nothing computed before the offline phase
    assert [c.precompute() for c in setup.clients.values()] == [1] * n
    assert [c.precompute() for c in setup.clients.values()] == [0] * n  # already topped up
    run = drive(setup)
    assert all(len(p) == 0 and p.misses == 0 and p.computed == 1 for p in pools)
    uploads = [m.ciphertexts[0] for _, _, m in run.messages("ckks/upload")]
    assert len({bytes(u) for u in uploads}) == n
    [(_, _, release)] = run.messages("ckks/release")
    assert release.contributors == tuple(range(n))
    res = setup.server.result()
    err = max(float(np.max(np.abs(a - b)))
              for a, b in zip(res.aggregate, _reference(ups, range(n), clip=1.0), strict=True))
    assert err <= agg.error_bound()


def test_simulate_reports_the_offline_phase_apart() -> None:
    n = 3
    ups = _updates(n)
    pooled = sa.make_aggregator("ckks", num_clients=n, clip=1.0, precompute_encryption=True)
    res = sa.simulate(pooled, ups)
    assert res.metrics["offline"]["clients"] == n
    assert res.metrics["offline"]["client_seconds_max"] <= res.metrics["offline"][
        "client_seconds_total"]
    assert "offline" not in res.metrics["stages"]  # the round's own stages stay online-only
    assert res.parameters["precompute_encryption"] is True
    assert _max_error(res, _reference(ups, range(n), clip=1.0)) <= pooled.error_bound()
    plain = sa.make_aggregator("ckks", num_clients=n, clip=1.0)
    assert plain.parameters()["precompute_encryption"] is False
    setup = make_setup(plain, ups)
    assert [c.precompute() for c in setup.clients.values()] == [0] * n  # off: a no-op
    drive(setup)
    assert all(c.encryptor.pool.misses == 1 for c in setup.clients.values())
    no_pools = sa.simulate(sa.make_aggregator("plain", num_clients=n), ups)
    assert no_pools.metrics["offline"] == {
        "client_seconds_total": 0.0, "client_seconds_max": 0.0, "clients": 0,
        "server_seconds": 0.0}


def test_precompute_flag_must_be_a_bool() -> None:
    with pytest.raises(ConfigurationError, match="precompute_encryption"):
        sa.make_aggregator("ckks", num_clients=3, precompute_encryption="yes")
