"""Privacy accounting of secure GNMax vote batches: sensitivity, RDP, composition, budget, ledger.

**Adjacency.** Two datasets are neighbours when *one record of one party* is added, removed or
changed. In PATE a record affects only its own party's model (teacher), so at most that party's
integer vote matrix changes - arbitrarily within the admissible set of
:mod:`secureagg.ensemble.votes`, on every query of every batch. Changing one party's *whole*
dataset (party-level adjacency) changes the same thing. So, for this data-independent analysis,
**record-level ε equals party-level ε**; both are reported, with the adjacency stated. (DP-SGD
inside a teacher would not lower this figure: it is not used by this analysis.)

**Sensitivity (REPLACE one party's votes).** Admissible integer vote rows are non-negative with
``||q||_2² <= B2`` and ``||q||_1 <= B1`` (or zero). For two such rows ``<q, q'> >= 0``, so
``||q - q'||_2² = ||q||² + ||q'||² - 2<q, q'> <= 2 B2``, and ``||q - q'||_1 <= 2 B1``. Over a batch
of ``Q`` queries (one party's vote may change on all of them)::

    Δ2 = sqrt(2 B2 Q)        Δ1 = min(2 B1 Q, Δ2², sqrt(Q C) Δ2)

(``Δ1 <= Δ2²`` because the difference is an integer vector). One-hot: ``Δ2 = sqrt(2Q)``,
``Δ1 = 2Q``; top-k: ``sqrt(2kQ)``, ``2kQ``; softmax with an L2 clip ``c`` at resolution ``r``:
``B2 = floor((r c)²)``, i.e. ``Δ2 <= sqrt(2Q) r c`` - tighter than the generic ``2 r c sqrt(Q)``
because votes are non-negative.

**Mechanism and theorems.** Each of the ``m`` parties whose votes reach the sum adds an
independent integer noise share of variance ``v`` to each of the ``Q C`` coordinates; the sum
carries the ``m`` shares.

* discrete Gaussian shares: Kairouz, Liu, Steinke 2021 ("The Distributed Discrete Gaussian
  Mechanism for Federated Learning with Secure Aggregation", ICML, Theorem 1 and its RDP form),
  via :func:`secureagg.dp.rdp.ddgauss_rdp` with ``local_sigma = sqrt(v)``, ``clients = m``,
  ``dimension = Q C``;
* Skellam shares: Agarwal, Kairouz, Liu 2021 ("The Skellam Mechanism for Differentially Private
  Federated Learning", NeurIPS, Theorem 3.5 and its corollary for sums of shares), via
  :func:`secureagg.dp.rdp.skellam_rdp` with ``variance = m v``;
* ``"keyholder-dgauss"`` - CKKS with the noise added by the key holder
  (:class:`~secureagg.ensemble.ckks_votes.CkksVoteAggregator`): *one* noise source. The key holder
  decrypts the sum, rounds it to the exact integer histogram and adds ``N_Z(0, v)`` per count, so
  the release is exactly "integer histogram + discrete Gaussian": Canonne, Kamath, Steinke 2020
  ("The Discrete Gaussian for Differential Privacy", NeurIPS; arXiv 2004.00010, Theorem 4 and its
  multivariate form): ``(α, α Δ2² / (2 v))``-RDP for every ``α > 1`` (½(Δ2/σ)²-zCDP),
  whatever the number of parties in the sum. It is accounted - and its events are replayed - as
  :func:`secureagg.dp.rdp.ddgauss_rdp` with ``clients = 1``: Kairouz-Liu-Steinke's Theorem 1 with
  one share has ``τ = 0`` and is *exactly* that curve (the same numbers, not a looser bound);
* batches compose by adding RDP curves (Mironov 2017, "Rényi Differential Privacy", Prop. 1);
* RDP -> (ε, δ): Balle, Barthe, Gaboardi, Hsu, Sato 2020 ("Hypothesis Testing Interpretations
  and Renyi Differential Privacy", Theorem 21), :func:`secureagg.dp.rdp.rdp_to_epsilon`, at
  integer orders :data:`secureagg.dp.rdp.ORDERS`.

The released noisy histogram is covered; the GNMax label (its argmax) is post-processing of it.
Every figure is an upper bound. No data-dependent analysis is done.

**Dropouts.** A batch is accounted with the *actual* number ``m`` of parties whose votes (and
noise shares) reached the sum (``"keyholder-dgauss"``: one noise share whatever ``m``). The
**budget** check before a batch takes the worst case over every survivor count the protocol lets
finish (``min_survivors`` to ``num_parties``; pointwise maximum of the RDP curves), so no outcome
of the batch can take ε above the budget.

Every batch emits a :class:`~secureagg.dp.events.DistributedNoiseRound` (scope ``"user"``,
sensitivities of the REPLACE relation above; ``"keyholder-dgauss"``: mechanism ``"ddgauss"`` with
``clients = survivors = provisioned = 1`` and ``client_variance = v``, the key holder's noise)
to an internal
:class:`~secureagg.dp.accounting.PrivacyAccountant`, whose replay of the events gives the same ε
(tested); a refused batch emits a :class:`~secureagg.dp.events.BudgetStop`.

>>> from secureagg.ensemble.votes import VoteSpec
>>> s = batch_sensitivity(VoteSpec("one-hot", num_classes=10), queries=8)
>>> s.l2 == 4.0, s.l1
(True, 16.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from secureagg.dp import rdp
from secureagg.dp.accounting import PrivacyAccountant
from secureagg.dp.events import BudgetStop, DistributedNoiseRound, EventSink
from secureagg.dp.ledger import FEDERATED_LEDGER_FORMAT, json_float
from secureagg.ensemble.votes import VoteSpec
from secureagg.errors import ConfigurationError
from secureagg.validation import is_int, is_positive_real

__all__ = [
    "ADJACENCY",
    "ENSEMBLE_LEDGER_FORMAT",
    "KEYHOLDER_DGAUSS",
    "MECHANISMS",
    "THEOREMS",
    "BatchSensitivity",
    "VoteAccountant",
    "batch_sensitivity",
]

Mechanism = Literal["ddgauss", "skellam", "keyholder-dgauss"]
MECHANISMS: tuple[str, ...] = ("ddgauss", "skellam", "keyholder-dgauss")
#: CKKS with the noise added by the key holder: one discrete Gaussian, a central mechanism.
KEYHOLDER_DGAUSS: Literal["keyholder-dgauss"] = "keyholder-dgauss"
FloatArray = npt.NDArray[np.float64]

ENSEMBLE_LEDGER_FORMAT = "secureagg-ensemble-ledger/1"
ADJACENCY = (
    "one record of one party added, removed or changed; it changes at most that party's votes "
    "(its own teacher), arbitrarily within the admissible set, on every query: REPLACE one "
    "party's vote matrix. Record-level and party-level epsilon are therefore equal in this "
    "data-independent analysis"
)
THEOREMS = {
    "ddgauss": (
        "distributed discrete Gaussian, Kairouz-Liu-Steinke 2021 (ICML; arXiv 2102.06387) "
        "Thm 1, RDP form (secureagg.dp.rdp.ddgauss_rdp)"
    ),
    "skellam": (
        "Skellam, Agarwal-Kairouz-Liu 2021 (NeurIPS; arXiv 2110.04995) Thm 3.5 "
        "(secureagg.dp.rdp.skellam_rdp)"
    ),
    "keyholder-dgauss": (
        "discrete Gaussian added by the CKKS key holder to the exact (rounded) integer "
        "histogram, Canonne-Kamath-Steinke 2020 (NeurIPS; arXiv 2004.00010) Thm 4 and its "
        "multivariate form: (alpha, alpha * Delta2^2 / (2 sigma^2))-RDP; evaluated as "
        "secureagg.dp.rdp.ddgauss_rdp with one share (tau = 0: the same curve)"
    ),
    "composition": "RDP composition over batches, Mironov 2017 Prop. 1",
    "conversion": "RDP to (eps, delta), Balle et al. 2020 Thm 21 (secureagg.dp.rdp.rdp_to_epsilon)",
    "post_processing": "the GNMax label is the argmax of the released noisy histogram",
}


@dataclass(frozen=True)
class BatchSensitivity:
    """Sensitivities of one party's integer votes over a batch (REPLACE relation).

    ``l2_squared`` is exact (an integer); ``l2`` is its square root rounded *up*.
    """

    queries: int
    l2_squared: int
    l2: float
    l1: float


def batch_sensitivity(spec: VoteSpec, queries: int) -> BatchSensitivity:
    """``Δ2 = sqrt(2 B2 Q)``, ``Δ1 = min(2 B1 Q, Δ2², sqrt(Q C) Δ2)`` (module docstring)."""
    if not is_int(queries) or queries < 1:
        raise ConfigurationError(f"queries must be an integer >= 1, got {queries!r}")
    l2_squared = 2 * spec.l2_squared_bound * queries
    l2 = _sqrt_up(l2_squared)
    l1 = min(
        float(2 * spec.l1_bound * queries),
        float(l2_squared),
        math.nextafter(math.sqrt(queries * spec.num_classes) * l2, math.inf),
    )
    return BatchSensitivity(queries=queries, l2_squared=l2_squared, l2=l2, l1=l1)


def _sqrt_up(value: int) -> float:
    root = math.sqrt(value)
    while root * root < value:
        root = math.nextafter(root, math.inf)
    return root


class VoteAccountant:
    """RDP accounting, hard budget and ledger of a sequence of secure GNMax batches.

    Integer units throughout: ``client_variance`` is one party's per-coordinate noise variance
    (integer vote units, i.e. scaled by ``spec.scale``). ``min_survivors`` is the fewest parties
    whose votes the secure aggregation lets reach a released sum (the budget's worst case).
    ``budget_epsilon`` (``None``: no budget) is the hard cap at ``delta``.
    """

    def __init__(
        self,
        *,
        spec: VoteSpec,
        mechanism: Mechanism,
        num_parties: int,
        provisioned: int,
        min_survivors: int,
        client_variance: float,
        delta: float = 1e-5,
        budget_epsilon: float | None = None,
        sink: EventSink | None = None,
    ) -> None:
        problems: list[str] = []
        if mechanism not in MECHANISMS:
            problems.append(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")
        if not is_int(num_parties) or num_parties < 1:
            problems.append(f"num_parties must be an integer >= 1, got {num_parties!r}")
        elif not (is_int(min_survivors) and 1 <= min_survivors <= num_parties):
            problems.append(f"min_survivors must be an integer in [1, {num_parties}]")
        elif not (is_int(provisioned) and 1 <= provisioned <= num_parties):
            problems.append(f"provisioned must be an integer in [1, {num_parties}]")
        if not is_positive_real(client_variance):
            problems.append(f"client_variance must be a finite number > 0, got {client_variance!r}")
        elif mechanism == "ddgauss" and math.sqrt(client_variance) < 0.5:
            problems.append(
                f"each party's discrete Gaussian sigma is {math.sqrt(client_variance):.3g} < 1/2 "
                "integer units, outside Kairouz et al. 2021 Thm 1: raise the noise or the "
                "resolution, or use fewer parties"
            )
        elif mechanism == KEYHOLDER_DGAUSS and math.sqrt(client_variance) < 0.5:
            problems.append(
                f"the key holder's discrete Gaussian sigma is {math.sqrt(client_variance):.3g} "
                "< 1/2 integer units: the ledger's replay (Kairouz et al. 2021 Thm 1 with one "
                "share) needs sigma >= 1/2; raise the noise or the resolution"
            )
        if not (is_positive_real(delta) and delta < 1):
            problems.append(f"delta must be in (0, 1), got {delta!r}")
        if budget_epsilon is not None and not is_positive_real(budget_epsilon):
            problems.append(
                f"budget_epsilon must be a finite number > 0 or None, got {budget_epsilon!r}"
            )
        if problems:
            raise ConfigurationError(problems)
        self.spec = spec
        self.mechanism: Mechanism = mechanism
        self.num_parties = num_parties
        self.provisioned = provisioned
        self.min_survivors = min_survivors
        self.client_variance = float(client_variance)
        self.delta = float(delta)
        self.budget_epsilon = None if budget_epsilon is None else float(budget_epsilon)
        self.privacy = PrivacyAccountant(accountant="rdp", delta=self.delta, sink=sink)
        self._total = np.zeros(len(rdp.ORDERS), dtype=np.float64)
        self._curves: dict[tuple[int, int], FloatArray] = {}
        self._worst: dict[int, FloatArray] = {}
        self._ledger: list[dict[str, Any]] = []
        self.queries_answered = 0
        self.seeded = False

    # ------------------------------------------------------------------------------ curves

    @property
    def central(self) -> bool:
        """Whether one party (the CKKS key holder) adds all the noise (``"keyholder-dgauss"``)."""
        return self.mechanism == KEYHOLDER_DGAUSS

    def noise_shares(self, survivors: int) -> int:
        """How many noise shares a sum over ``survivors`` parties carries (1 when central)."""
        return 1 if self.central else survivors

    def batch_rdp(self, queries: int, survivors: int) -> FloatArray:
        """RDP curve (at :data:`secureagg.dp.rdp.ORDERS`) of one batch of ``queries`` queries
        whose sum carries ``survivors`` parties' votes (and, distributed, their noise shares)."""
        key = (queries, self.noise_shares(survivors))
        if key not in self._curves:
            s = batch_sensitivity(self.spec, queries)
            self._curves[key] = _curve(
                "ddgauss" if self.central else self.mechanism,
                s,
                self.client_variance,
                key[1],
                queries * self.spec.num_classes,
            )
        return self._curves[key]

    def worst_case_rdp(self, queries: int) -> FloatArray:
        """Pointwise maximum of :meth:`batch_rdp` over every survivor count in
        ``[min_survivors, num_parties]``: bounds the batch whatever the dropouts."""
        if queries not in self._worst:
            curves = [
                self.batch_rdp(queries, m) for m in range(self.min_survivors, self.num_parties + 1)
            ]
            self._worst[queries] = np.max(np.vstack(curves), axis=0)
        return self._worst[queries]

    def _epsilon_of(self, curve: FloatArray, delta: float | None = None) -> float:
        if not curve.any():  # nothing released: (0, 0)-DP
            return 0.0
        return rdp.rdp_to_epsilon(rdp.ORDERS, curve, self.delta if delta is None else delta)[0]

    # --------------------------------------------------------------------------- public ε

    def epsilon(self, *, delta: float | None = None) -> float:
        """ε at ``delta`` (default: the accountant's) spent so far: party level = record level."""
        return self._epsilon_of(self._total, delta)

    def epsilon_if_answered(self, queries: int) -> float:
        """ε after one more batch of ``queries`` queries, in the worst case of dropouts."""
        return self._epsilon_of(self._total + self.worst_case_rdp(queries))

    def batches_remaining(self, queries: int) -> int | None:
        """How many more batches of ``queries`` queries the budget admits (worst case);
        ``None`` without a budget."""
        if self.budget_epsilon is None:
            return None
        worst = self.worst_case_rdp(queries)
        cap = self.budget_epsilon

        def fits(k: int) -> bool:
            return self._epsilon_of(self._total + k * worst) <= cap

        if not fits(1):
            return 0
        lo, hi = 1, 2
        while hi < 1 << 40 and fits(hi):
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return lo

    # ------------------------------------------------------------------------------ events

    def admit(self, *, batch: int, queries: int) -> tuple[bool, float]:
        """Before a batch: ``(True, worst-case ε after)`` if the budget admits it; else record a
        budget stop (ledger entry and :class:`~secureagg.dp.events.BudgetStop`) and return
        ``(False, would-be ε)``. Without a budget every batch is admitted."""
        would_be = self.epsilon_if_answered(queries)
        if self.budget_epsilon is None or would_be <= self.budget_epsilon:
            return True, would_be
        spent = self.epsilon()
        self.privacy.emit(
            BudgetStop(
                scope="user",
                party=None,
                spent=spent,
                would_be=would_be,
                max_epsilon=self.budget_epsilon,
                delta=self.delta,
                unit="round",
                index=batch,
            )
        )
        self._ledger.append(
            {
                "batch": batch,
                "status": "stopped_by_budget",
                "queries": queries,
                "epsilon_before": spent,
                "epsilon_worst_case_if_answered": json_float(would_be),
                "budget_epsilon": self.budget_epsilon,
                "epsilon_after": spent,
                "note": "NOT answered: nothing was sent or released for this batch",
            }
        )
        return False, would_be

    def record(
        self,
        *,
        batch: int,
        queries: int,
        survivors: int,
        refused: Sequence[int] = (),
        dropped: Sequence[int] = (),
        seeded: bool = False,
        worst_case_epsilon: float | None = None,
    ) -> float:
        """Account a released batch whose sum carried ``survivors`` parties' votes (and,
        distributed, their noise shares; central: the key holder's one); return ε after."""
        before = self.epsilon()
        s = batch_sensitivity(self.spec, queries)
        curve = self.batch_rdp(queries, survivors)
        shares = self.noise_shares(survivors)
        self._total = self._total + curve
        self.queries_answered += queries
        self.seeded = self.seeded or seeded
        self.privacy.emit(
            DistributedNoiseRound(
                scope="user",
                party=None,
                mechanism="skellam" if self.mechanism == "skellam" else "ddgauss",
                round_id=batch,
                clients=1 if self.central else self.num_parties,
                survivors=shares,
                provisioned=1 if self.central else self.provisioned,
                client_variance=self.client_variance,
                l2_sensitivity=s.l2,
                l1_sensitivity=s.l1,
                dimension=queries * self.spec.num_classes,
                seeded=seeded,
            )
        )
        after = self.epsilon()
        scale = self.spec.scale
        self._ledger.append(
            {
                "batch": batch,
                "status": "answered",
                "queries": queries,
                "values": queries * self.spec.num_classes,
                "survivors": survivors,
                "refused": sorted(int(p) for p in refused),
                "dropped": sorted(int(p) for p in dropped),
                "mechanism": self.mechanism,
                "noise_shares": shares,
                "client_variance_integer_units": self.client_variance,
                "noise_std_votes": math.sqrt(shares * self.client_variance) / scale,
                "l2_sensitivity_integer_units": s.l2,
                "l2_sensitivity_squared": s.l2_squared,
                "l1_sensitivity_integer_units": s.l1,
                "epsilon_batch_alone": json_float(self._epsilon_of(curve)),
                "epsilon_before": json_float(before),
                "epsilon_worst_case_checked": (
                    None if worst_case_epsilon is None else json_float(worst_case_epsilon)
                ),
                "epsilon_after": json_float(after),
                "seeded": seeded,
            }
        )
        return after

    def record_failed(self, *, batch: int, queries: int, reason: str) -> None:
        """A batch whose secure aggregation aborted: nothing was released, ε is unchanged."""
        spent = self.epsilon()
        self._ledger.append(
            {
                "batch": batch,
                "status": "aborted",
                "queries": queries,
                "reason": reason,
                "epsilon_before": json_float(spent),
                "epsilon_after": json_float(spent),
                "note": "secure aggregation aborted before unmasking: no sum was released",
            }
        )

    # ------------------------------------------------------------------------------ ledger

    def ledger(self) -> list[dict[str, Any]]:
        """One JSON-ready entry per batch (answered, stopped by the budget, or aborted)."""
        return [dict(e) for e in self._ledger]

    def parameters(self) -> dict[str, Any]:
        """The public parameters of the mechanism."""
        if self.central:
            return {
                "mechanism": self.mechanism,
                "noise_source": "the CKKS key holder: one discrete Gaussian per count, added to "
                "the exactly rounded integer histogram before release",
                "num_parties": self.num_parties,
                "min_survivors": self.min_survivors,
                "noise_variance_integer_units": self.client_variance,
                "noise_std_votes": math.sqrt(self.client_variance) / self.spec.scale,
                "vote": self.spec.describe(),
                "delta": self.delta,
                "budget_epsilon": self.budget_epsilon,
            }
        return {
            "mechanism": self.mechanism,
            "num_parties": self.num_parties,
            "provisioned_survivors": self.provisioned,
            "min_survivors": self.min_survivors,
            "client_variance_integer_units": self.client_variance,
            "noise_std_votes_provisioned": (
                math.sqrt(self.provisioned * self.client_variance) / self.spec.scale
            ),
            "vote": self.spec.describe(),
            "delta": self.delta,
            "budget_epsilon": self.budget_epsilon,
        }

    def report(self) -> dict[str, Any]:
        """The ensemble ledger (JSON-ready): ε per party and per record, the adjacency, the
        theorems, every batch, and the library's privacy ledger of the same events (which
        :meth:`~secureagg.dp.accounting.PrivacyAccountant.from_ledger` replays)."""
        eps = json_float(self.epsilon())
        return {
            "format": ENSEMBLE_LEDGER_FORMAT,
            "adjacency": ADJACENCY,
            "epsilon_party_level": eps,
            "epsilon_record_level": eps,
            "delta": self.delta,
            "bound": "upper bound (data-independent RDP analysis)",
            "method": "; ".join(
                THEOREMS[k]
                for k in (self.mechanism, "composition", "conversion", "post_processing")
            ),
            "queries_answered": self.queries_answered,
            "seeded": self.seeded,
            "warning": "SEEDED NOISE: this run is NOT private" if self.seeded else None,
            "parameters": self.parameters(),
            "batches": self.ledger(),
            "privacy_ledger": self.privacy.report(),
        }

    def run_ledger(self) -> dict[str, Any]:
        """``privacy_ledger.json`` of a run directory, in the federated ledger's format (so that
        ``secureagg audit`` replays it, checks every answered batch is covered, and re-accounts
        it): the released vote histograms are the user level, one stream; record level equals
        party level here, so there is no separate sample level."""
        return {
            "format": FEDERATED_LEDGER_FORMAT,
            "differential_privacy": True,
            "settings": self.parameters(),
            "note": "a private ensemble (GNMax): user_level accounts the released noisy vote "
            "histograms, one event per answered batch (round_id = batch); its ε is the ε per "
            "party and per record (REPLACE one party's votes). Replay with "
            "PrivacyAccountant.from_ledger(path, level='user').",
            "sample_level_scope": None,
            "user_level_scope": self._scope(),
            "not_released": [],
            "sample_level": None,
            "user_level": self.privacy.report(),
        }

    def _scope(self) -> dict[str, Any]:
        if self.central:
            return {
                "mechanism": "GNMax: the parties' votes summed under CKKS; the key holder "
                "decrypts only the sum, rounds it to the exact integer histogram and adds "
                "discrete Gaussian noise before anything is released",
                "adjacency": ADJACENCY,
                "protects": "every party's data and every record in it, against the server and "
                "the querier (they see ciphertexts and the noisy histogram). The key holder "
                "sees the noiseless histogram: it is trusted for DP, like a central curator",
                "public": ["the queries", "the noise level",
                           "which parties voted in each batch"],
            }
        return {
            "mechanism": f"GNMax: the parties' votes plus distributed {self.mechanism} noise "
            "summed under secure aggregation",
            "adjacency": ADJACENCY,
            "protects": "every party's data and every record in it, against the server and "
            "the querier: the parties add the noise inside secure aggregation, no one sees a "
            "noiseless histogram",
            "public": ["the queries", "the noise level", "which parties voted and survived "
                       "in each batch (the number of survivors sets the noise)"],
        }


def _curve(
    mechanism: Mechanism,
    s: BatchSensitivity,
    client_variance: float,
    survivors: int,
    dimension: int,
) -> FloatArray:
    if survivors < 1:
        return np.full(len(rdp.ORDERS), math.inf)
    if mechanism == "skellam":
        return rdp.skellam_rdp(rdp.ORDERS, l2=s.l2, l1=s.l1, variance=survivors * client_variance)
    return rdp.ddgauss_rdp(
        rdp.ORDERS,
        l2=s.l2,
        l1=s.l1,
        local_sigma=math.sqrt(client_variance),
        clients=survivors,
        dimension=dimension,
    )
