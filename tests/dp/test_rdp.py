"""The RDP curves, subsampling bound, conversion and tail bounds against references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from secureagg.crypto import labels, prg
from secureagg.dp import noise, rdp


def test_skellam_rdp_tends_to_the_gaussian_curve() -> None:
    """With a fine grid (huge variance) the Skellam curve is α Δ²/(2μ) (Agarwal et al. Thm 3.5)."""
    orders = [2, 8, 32]
    l2 = 1e7
    out = rdp.skellam_rdp(orders, l2=l2, l1=l2 * 30, variance=(1.3 * l2) ** 2)
    gauss = np.array([a / (2 * 1.3**2) for a in orders])
    np.testing.assert_allclose(out, gauss, rtol=1e-6)
    assert (out > gauss).all()  # the discretisation surcharge is positive


def test_skellam_rdp_formula_at_small_variance() -> None:
    a, l2, l1, mu = 5, 3.0, 7.0, 20.0
    surcharge = min(((2 * a - 1) * l2**2 + 6 * l1) / (4 * mu**2), 3 * l1 / (2 * mu))
    expected = a * l2**2 / (2 * mu) + surcharge
    assert rdp.skellam_rdp([a], l2=l2, l1=l1, variance=mu)[0] == pytest.approx(expected)
    assert math.isinf(rdp.skellam_rdp([2], l2=1.0, l1=1.0, variance=0.0)[0])


def test_ddgauss_rdp_is_gaussian_for_large_sigma() -> None:
    out = rdp.ddgauss_rdp([2, 10], l2=100.0, l1=1000.0, local_sigma=50.0, clients=4, dimension=64)
    z2 = 4 * 50.0**2 / 100.0**2
    np.testing.assert_allclose(out, [2 / (2 * z2), 10 / (2 * z2)], rtol=1e-12)
    # τ matters only for small local σ: then the bound is larger.
    small = rdp.ddgauss_rdp([2], l2=1.0, l1=1.0, local_sigma=0.5, clients=4, dimension=64)
    assert small[0] > 2 / (2 * 4 * 0.25)
    # below σ = 1/2 the theorem does not apply: no bound is claimed
    assert np.isinf(rdp.ddgauss_rdp([2, 8], l2=1.0, l1=1.0, local_sigma=0.49, clients=4,
                                    dimension=64)).all()


def test_subsampling_bound_is_an_upper_bound_on_the_exact_sampled_gaussian() -> None:
    opacus_rdp = pytest.importorskip("opacus.accountants.analysis.rdp")
    orders = list(range(2, 48))
    for q, sigma in ((0.01, 1.0), (0.1, 0.8), (0.5, 2.0)):
        bound = rdp.poisson_subsampled_rdp(
            orders, sample_rate=q, rdp=lambda a, s=sigma: a / (2 * s * s)
        )
        exact = opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=orders)
        assert (bound >= exact * (1 - 1e-9)).all()
        assert bound[0] == pytest.approx(exact[0], rel=1e-9)  # exact at α = 2
        assert (bound <= np.array([a / (2 * sigma**2) for a in orders]) + 1e-12).all()


def test_sampling_rate_one_returns_the_curve() -> None:
    out = rdp.poisson_subsampled_rdp([2, 3], sample_rate=1.0, rdp=lambda a: 0.5 * a)
    np.testing.assert_array_equal(out, [1.0, 1.5])


def test_conversion_matches_opacus() -> None:
    opacus_rdp = pytest.importorskip("opacus.accountants.analysis.rdp")
    orders = [float(a) for a in rdp.ORDERS]
    curve = opacus_rdp.compute_rdp(q=0.02, noise_multiplier=1.1, steps=500, orders=orders)
    ours = rdp.rdp_to_epsilon(orders, curve, 1e-6)
    theirs = opacus_rdp.get_privacy_spent(orders=orders, rdp=curve, delta=1e-6)
    assert ours[0] == pytest.approx(float(theirs[0]), abs=1e-12)
    assert ours[1] == float(theirs[1])


@pytest.mark.parametrize("variance", [10.0, 1e4])
def test_skellam_tail_bound_holds_empirically(variance: float) -> None:
    ks = prg.Keystream(bytes(32), label=labels.TEST_VECTOR, context=b"tail")
    x = noise.skellam(variance, 200_000, ks)
    t = rdp.skellam_tail_bound(variance, 1e-3)
    assert np.mean(np.abs(x) > t) <= 1e-3
    assert t < 5 * math.sqrt(variance) + 10  # and it is not absurdly loose
    assert rdp.skellam_tail_bound(0.0, 1e-9) == 0


def test_rounded_norm_bounds() -> None:
    assert rdp.rounded_l2_bound(10.0, 100, 0.0) == 20.0
    squared = 100 + 25 + math.sqrt(2 * math.log(1 / 0.5)) * (10 + 5)
    assert rdp.rounded_l2_bound(10.0, 100, 0.5) == pytest.approx(math.sqrt(squared))
    assert rdp.rounded_l1_bound(3.0, 100) == 9.0
    assert rdp.rounded_l1_bound(30.0, 100) == 300.0
