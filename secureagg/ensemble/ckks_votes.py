"""Secure GNMax under CKKS, with the noise added by the key holder.

Parties: ``n`` parties (teachers), a server, a **key holder** (the CKKS round's helper party, which
alone holds the secret key - a fresh key per batch) and a querier. For a batch of ``Q`` queries over
``C`` classes:

1. every party validates its own ``(Q, C)`` vote matrix (:meth:`VoteSpec.validate`, as in
   :class:`~secureagg.ensemble.aggregate.SecureVoteAggregator`); a malformed vote is refused and
   the party takes no part in the batch (``malformed="absent"``), or submits the all-zero vote
   (``"abstain"``);
2. *one* CKKS round carries the whole batch: each party encrypts its ``Q*C`` integer votes
   (row-major: query ``i``, class ``j`` at ``i*C + j``) under the batch's public key; the server
   adds the ciphertexts as they arrive and sends only their sum to the key holder;
3. the key holder decrypts only the sum, checks it (count slot, range; the CKKS aggregator's
   release, flooding included), then - its release post-processing,
   :class:`KeyHolderNoise` - **rounds** every value to the nearest integer, which is the exact
   integer histogram because the CKKS error bound of the sum is below ``1/2`` (checked at
   construction: :class:`~secureagg.errors.ConfigurationError` otherwise), and **adds**
   ``N_Z(0, sigma²)`` per count (discrete Gaussian, Canonne-Kamath-Steinke 2020 sampler of
   :func:`secureagg.dp.noise.discrete_gaussian`, from the library's CSPRNG keystream); only then
   does it release;
4. the server and the querier receive the noisy histogram; the label of query ``i`` is its argmax.

**What each party sees (trust).** The key holder sees the *noiseless* histogram: it is trusted for
DP, like a central curator (it never sees a single party's votes). The server sees ciphertexts and
the noisy histogram; the querier the noisy histogram and the labels. A key holder colluding with
the server could decrypt every party's upload (the HE round's threat model,
:mod:`secureagg.protocols.he_round`). Use
:class:`~secureagg.ensemble.aggregate.SecureVoteAggregator` when no party may see a noiseless sum.

**One noise source, no over-provisioning.** The noise does not come from the parties, so dropouts
change only whose votes are in the sum, never the noise: the histogram always carries exactly one
``N_Z(0, sigma²)`` per count, and ``ε`` does not depend on how many parties survived. A party
silent from ``"upload"`` (the CKKS round's one dropout stage) is not in the sum; fewer than
``min_survivors`` uploads abort the round (nothing decrypted, nothing spent).

**Accounting** (:class:`~secureagg.ensemble.accounting.VoteAccountant`, mechanism
``"keyholder-dgauss"``): the released batch is exactly "integer histogram + ``N_Z(0, sigma²)`` per
count", so it is ``(α, α Δ2² / (2 sigma²))``-RDP (Canonne, Kamath, Steinke 2020, Thm 4 and its
multivariate form), ``Δ2 = sqrt(2 Q)`` for one-hot votes under REPLACE one party's votes.

**When rounding is not exact.** It fails only if a decryption error reaches ``1/2`` although its
bound (ten standard deviations) is below it: probability at most ``2^-75.8`` per value under the
CKKS noise model (:func:`secureagg.protocols.ckks.flooding.exact_failure_log2`). Such a failure
changes the release by at most that probability in total variation, so the ``(ε, δ)`` statement
holds at ``δ + (1 + e^ε) Σ_b p_b`` (``p_b``: the batch's failure probability);
:meth:`CkksVoteAggregator.report` states that term (about ``1e-15`` for a million values). The
rounding is ``floor(x + 1/2)``: for an integer sum ``h`` plus an error ``e`` it gives
``h + floor(e + 1/2)``, whose error term does not depend on ``h``.

>>> agg = CkksVoteAggregator(3, 4, sigma=3.0, seed=b"doctest")   # seeded noise: NOT private
>>> votes = {p: encode_votes("one-hot", np.array([1, 1, 2]), 4) for p in range(3)}
>>> res = agg.aggregate(votes)
>>> res.labels.shape, res.survivors, res.noise_std
((3,), (0, 1, 2), 3.0)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from secureagg.aggregators import make_aggregator
from secureagg.aggregators.ckks import CkksAggregator
from secureagg.crypto import prg
from secureagg.dp import noise
from secureagg.dp.events import EventSink
from secureagg.ensemble.accounting import KEYHOLDER_DGAUSS, VoteAccountant
from secureagg.ensemble.aggregate import _VoteBatches
from secureagg.ensemble.votes import VoteKind, VoteSpec, encode_votes
from secureagg.errors import ConfigurationError
from secureagg.protocols.ckks.flooding import exact_failure_log2
from secureagg.validation import is_int, is_positive_real

__all__ = [
    "CKKS_OPTIONS",
    "ROUNDING_LIMIT",
    "CkksVoteAggregator",
    "KeyHolderNoise",
    "encode_votes",
    "round_to_integers",
]

FloatArray = npt.NDArray[np.float64]

_SESSION_ID_BYTES = 16
#: The rounding is exact while the CKKS error bound of the sum is below this (integer units).
ROUNDING_LIMIT = 0.5
#: The largest discrete Gaussian sigma the sampler takes (integer units).
_MAX_SIGMA = 2.0**25
#: CKKS options a user may set (the rest - clip, encoding, counts, the post-processing - are ours).
CKKS_OPTIONS = frozenset({
    "flooding_bits", "scale", "poly_modulus_degree", "coeff_mod_bit_sizes",
    "precompute_encryption", "attribution", "key",
})
_UPLOAD = "upload"  # the CKKS round's dropout stage


class KeyHolderNoise:
    """The key holder's release post-processing (``CkksAggregator(release_postprocess=...)``):
    round the decrypted sum to integers, add ``N_Z(0, sigma²)`` per value, return
    ``(values, sigma)``. ``sigma`` in integer units. Exact only when the CKKS error bound of the
    sum is below 1/2 (:class:`CkksVoteAggregator` checks it).

    >>> from secureagg.crypto import labels
    >>> out, std = KeyHolderNoise(2.0)(np.array([3.0000001, 4.9999999]), 3,
    ...                                prg.Keystream(bytes(32), label=labels.TEST_VECTOR))
    >>> bool(np.all(out == np.round(out))), std
    (True, 2.0)
    """

    description = (
        "the key holder rounds the decrypted sum to the exact integer histogram and adds "
        "discrete Gaussian noise N_Z(0, sigma^2) per count before release"
    )

    def __init__(self, sigma: float) -> None:
        if not (is_positive_real(sigma) and sigma <= _MAX_SIGMA):
            raise ConfigurationError(f"sigma must be a finite number in (0, 2^25], got {sigma!r}")
        self.sigma = float(sigma)

    def __call__(
        self, values: npt.NDArray[Any], contributors: int, stream: prg.Keystream | None
    ) -> tuple[FloatArray, float]:
        exact = round_to_integers(values)
        drawn = noise.discrete_gaussian(self.sigma, exact.size, stream)
        return exact + drawn.astype(np.float64), self.sigma


def round_to_integers(values: npt.NDArray[Any]) -> FloatArray:
    """``floor(x + 1/2)`` per value (float64): the integer nearest to each ``x``, ties up."""
    return np.floor(np.asarray(values, dtype=np.float64) + 0.5)


class CkksVoteAggregator(_VoteBatches):
    """Secure GNMax under CKKS, the key holder adding the noise (module docstring).

    ``sigma``: the standard deviation of the discrete Gaussian noise on each vote count, in vote
    units (PATE's GNMax sigma); one noise source, whatever the dropouts. ``vote``, ``top_k``,
    ``clip``, ``clip_norm``, ``resolution``: :class:`~secureagg.ensemble.votes.VoteSpec`.
    ``min_survivors``: fewer uploads abort the round (default: the CKKS default,
    ``max(2, ceil(n/2))``). ``malformed``: ``"absent"`` or ``"abstain"``. ``budget_epsilon``: the
    hard cap on ε at ``delta``. ``sink`` receives every privacy event. ``ckks_options``: CKKS
    parameters (:data:`CKKS_OPTIONS`: ``flooding_bits``, ``scale``, ``poly_modulus_degree``,
    ``coeff_mod_bit_sizes``, ``precompute_encryption``, ``attribution``, ``key``); a setting whose
    error bound for a sum of ``num_parties`` votes is not below 1/2 integer units is refused.
    ``seed`` (tests and benchmarks only) makes the noise reproducible and therefore NOT private
    (CKKS keys still come from SEAL's own CSPRNG); the ledger says so.
    """

    def __init__(
        self,
        num_parties: int,
        num_classes: int,
        *,
        sigma: float,
        vote: VoteKind = "one-hot",
        top_k: int = 1,
        clip: float = 1.0,
        clip_norm: Literal["l2", "l1"] = "l2",
        resolution: int = 1024,
        min_survivors: int | None = None,
        malformed: Literal["absent", "abstain"] = "absent",
        delta: float = 1e-5,
        budget_epsilon: float | None = None,
        sink: EventSink | None = None,
        seed: bytes | int | None = None,
        ckks_options: Mapping[str, Any] | None = None,
    ) -> None:
        problems: list[str] = []
        try:
            self.spec = VoteSpec(
                vote, num_classes, top_k=top_k, clip=clip, clip_norm=clip_norm,
                resolution=resolution,
            )
        except ConfigurationError as exc:
            problems.extend(exc.problems)
        if not is_int(num_parties) or num_parties < 2:
            problems.append(f"num_parties must be an integer >= 2, got {num_parties!r}")
        if not is_positive_real(sigma):
            problems.append(f"sigma must be a finite number > 0 (vote units), got {sigma!r}")
        if malformed not in ("absent", "abstain"):
            problems.append(f"malformed must be 'absent' or 'abstain', got {malformed!r}")
        options = dict(ckks_options or {})
        unknown = sorted(set(options) - CKKS_OPTIONS)
        if unknown:
            problems.append(
                f"ckks_options {unknown} are not settable here (allowed: {sorted(CKKS_OPTIONS)})"
            )
        if not problems:
            sigma_int = float(sigma) * self.spec.scale
            if not 0.5 <= sigma_int <= _MAX_SIGMA:
                problems.append(
                    f"sigma * resolution = {sigma_int:.4g} integer units must lie in [1/2, 2^25] "
                    "(the discrete Gaussian sampler; the ledger's replay needs >= 1/2)"
                )
        if problems:
            raise ConfigurationError(problems)
        n = int(num_parties)
        self.num_parties = n
        self.num_classes = int(num_classes)
        self.sigma = float(sigma)
        self.malformed = malformed
        #: the key holder's discrete Gaussian sigma, integer units
        self.sigma_integer = self.sigma * self.spec.scale
        self.key_holder_noise = KeyHolderNoise(self.sigma_integer)
        agg = make_aggregator(
            "ckks",
            num_clients=n,
            clip=float(self.spec.max_value),
            min_clients=min_survivors,
            release_postprocess=self.key_holder_noise,
            **options,
        )
        if not isinstance(agg, CkksAggregator):  # pragma: no cover - the registry's "ckks"
            raise ConfigurationError(f"expected the CKKS aggregator, got {type(agg).__name__}")
        self._agg = agg
        #: worst-case per-value error of the decrypted sum the key holder rounds (integer units)
        self.rounding_error_bound = float(self._agg.error_bound(survivors=n))
        if not self.rounding_error_bound < ROUNDING_LIMIT:
            raise ConfigurationError(
                f"the CKKS error bound of a sum of {n} parties' votes is "
                f"{self.rounding_error_bound:.4g} >= 1/2 integer units: the key holder's rounding "
                "would not give the exact histogram, and the discrete Gaussian accounting would "
                "not hold. Lower ckks_options['flooding_bits'], raise the CKKS scale, or use "
                "fewer parties"
            )
        self.min_survivors = agg.min_clients
        self.accountant = VoteAccountant(
            spec=self.spec,
            mechanism=KEYHOLDER_DGAUSS,
            num_parties=n,
            provisioned=1,
            min_survivors=self.min_survivors,
            client_variance=self.sigma_integer**2,
            delta=delta,
            budget_epsilon=budget_epsilon,
            sink=sink,
        )
        self.seed = seed
        self._session_id = os.urandom(_SESSION_ID_BYTES)
        self._batch = 0
        self._failure_probability = 0.0  # Σ_b p_b over answered batches

    silent_stage = _UPLOAD  # the CKKS round's one dropout stage

    def _noise_std(self, survivors: int) -> float:
        return self.sigma  # one noise source, whatever the survivors

    def _released(self, metrics: Mapping[str, Any], width: int, survivors: int) -> dict[
            str, Any]:
        failure = 2.0 ** exact_failure_log2(values=width)
        self._failure_probability += failure
        return {
            **metrics,
            "ckks_error_bound": float(self._agg.error_bound(survivors=survivors)),
            "rounding_failure_probability": failure,
        }

    def delta_rounding_failure(self) -> float:
        """``(1 + e^ε) Σ_b p_b``: what a non-exact rounding could add to δ (module docstring)."""
        return (1.0 + math.exp(min(self.epsilon(), 700.0))) * self._failure_probability

    def report(self) -> dict[str, Any]:
        """The ensemble ledger with the protocol parameters and the trust statement."""
        out = self.accountant.report()
        out["protocol"] = {
            **self._agg.parameters(),
            "exact_integer_votes": True,
            "key_holder_noise": {
                "mechanism": "discrete Gaussian N_Z(0, sigma^2) per count, added by the key "
                "holder to the rounded (exact) integer histogram before release",
                "sigma_integer_units": self.sigma_integer,
                "sigma_votes": self.sigma,
                "over_provisioning": "none: one noise source, independent of dropouts",
            },
            "rounding": {
                "error_bound_integer_units": self.rounding_error_bound,
                "exact_below": ROUNDING_LIMIT,
                "failure_log2_per_value": exact_failure_log2(values=1),
                "delta_rounding_failure": self.delta_rounding_failure(),
                "note": "the (epsilon, delta) statement holds at delta + delta_rounding_failure",
            },
            "trust": "the key holder sees the noiseless histogram (trusted for DP, like a "
            "central curator); the server sees ciphertexts and the noisy histogram; the querier "
            "the noisy histogram and the labels",
        }
        return out

