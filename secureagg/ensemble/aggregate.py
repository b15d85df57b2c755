"""Secure GNMax: the parties' votes on a batch of queries summed under SecAgg+ with distributed
discrete noise; the released label of each query is the noisy argmax.

Parties (teachers), a server and a querier. For a batch of ``Q`` queries over ``C`` classes:

1. every party validates its own ``(Q, C)`` vote matrix (:meth:`VoteSpec.validate`); a malformed
   vote is refused and the party takes no part in the batch (``malformed="absent"``), or
   submits the all-zero vote (``malformed="abstain"``: the server cannot tell, and the zero vote
   is in the admissible set the accounting covers);
2. *one* SecAgg+ round carries the whole batch: each party's input is its ``Q*C`` integer votes
   (row-major: query ``i``, class ``j`` at ``i*C + j``) plus its share of integer noise
   (discrete Gaussian or Skellam) of variance ``sigma² scale² / provisioned``, added *before*
   masking (:class:`~secureagg.aggregators.secagg.SecAggAggregator`'s ``integer_noise``, an
   option of the public round spec, so a party rebuilt from the spec on its own machine adds
   the same share);
3. the server unmasks the sum of the survivors' noisy votes - the noisy histogram, and nothing
   else - and hands it to the querier; the label of query ``i`` is ``argmax_j`` of row ``i``.

**Exact integer path.** Votes are integers (softmax votes rounded *down* at ``resolution``),
encoded with ``scale=1``: nothing is clipped, scaled or stochastically rounded on the way, so the
sensitivity is exactly that of the votes (:mod:`secureagg.ensemble.accounting`). The
``DistributedDP`` wrapper would clip the *whole* vector in L2 and bound one party's contribution
by its norm (an add/remove bound): under REPLACE that is ``2 sqrt(Q)`` for one-hot votes where the
exact value is ``sqrt(2Q)``, plus its rounding inflation.

**Dropouts.** With ``m`` parties in the sum the noise standard deviation per count is
``sigma * sqrt(m / provisioned)`` (vote units) and the batch is accounted with ``m``. SecAgg+
aborts a round with fewer than ``min_survivors`` parties in the sum (default: ``provisioned =
ceil(n (1 - expected_dropout))``); the budget check before a batch assumes the worst survivor
count in ``[min_survivors, n]``. An aborted round releases nothing and spends nothing.

>>> agg = SecureVoteAggregator(3, 4, sigma=3.0, seed=b"doctest")   # seeded: NOT private
>>> votes = {p: encode_votes("one-hot", np.array([1, 1, 2]), 4) for p in range(3)}
>>> res = agg.aggregate(votes)
>>> res.labels.shape, res.survivors
((3,), (0, 1, 2))
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from secureagg.aggregators import make_aggregator
from secureagg.dp import rdp
from secureagg.dp.events import EventSink
from secureagg.ensemble.accounting import Mechanism, VoteAccountant
from secureagg.ensemble.votes import VoteKind, VoteSpec, encode_votes
from secureagg.errors import ConfigurationError, InsufficientSurvivors
from secureagg.transport.results import SimulationResult, transcript_lines
from secureagg.transport.simulator import simulate
from secureagg.validation import is_int, is_positive_real, is_rate

if TYPE_CHECKING:
    from secureagg.ensemble.deployed import VoteDeployment

__all__ = ["BatchResult", "SecureVoteAggregator", "encode_votes"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_SESSION_ID_BYTES = 16


@dataclass(frozen=True)
class BatchResult:
    """What one batch released, and what happened.

    ``labels`` (``(Q,)`` int64) and ``noisy_histogram`` (``(Q, C)`` float64, vote units: counts
    for one-hot votes) are what the server and the querier see; both ``None`` when the batch was
    not answered (``stopped_by_budget`` or ``aborted``). ``survivors`` are the parties whose votes
    and noise are in the sum; ``noise_std`` the standard deviation of the noise per count (vote
    units) with that many shares. ``refused`` maps a party to the rule its vote broke: a
    *party-local* diagnostic (in a deployment each party keeps its own; the server only sees
    that the party was silent, or nothing at all with ``malformed="abstain"``). ``absent`` are
    parties that gave no vote; ``dropped`` the requested mid-round dropouts (party -> stage).
    ``epsilon_after`` is the ε upper bound (party level = record level) at the aggregator's δ
    after this batch. ``transcript``: one JSON-ready line per message of the batch's SecAgg round
    (``round`` = the batch, ``direction`` up/down/peer, sender, recipient, stage, kind, size,
    sha256; party ids as given to :meth:`SecureVoteAggregator.aggregate`), for ``transcript.jsonl``
    of a run directory; the partial transcript when the round aborted.
    """

    batch: int
    answered: bool
    labels: IntArray | None
    noisy_histogram: FloatArray | None
    survivors: tuple[int, ...]
    noise_std: float | None
    epsilon_after: float
    refused: Mapping[int, str] = field(default_factory=dict)
    absent: tuple[int, ...] = ()
    dropped: Mapping[int, str] = field(default_factory=dict)
    stopped_by_budget: bool = False
    aborted: str | None = None
    seconds: float = 0.0
    metrics: Mapping[str, Any] = field(default_factory=dict)
    transcript: tuple[Mapping[str, Any], ...] = ()


class _VoteBatches:
    """What both secure GNMax aggregators do (:class:`SecureVoteAggregator`,
    :class:`~secureagg.ensemble.ckks_votes.CkksVoteAggregator`): validate every party's votes,
    admit a batch against the budget, run one secure round per batch, account it. A subclass
    sets the attributes below and says how much noise a sum carries."""

    num_parties: int
    num_classes: int
    spec: VoteSpec
    accountant: VoteAccountant
    malformed: str
    seed: bytes | int | None
    _agg: Any
    _session_id: bytes
    _batch: int
    #: the stage from which a party without a (valid) vote is silent
    silent_stage = "advertise"

    def _noise_std(self, survivors: int) -> float:
        """The noise standard deviation per count (vote units) of a sum over ``survivors``."""
        raise NotImplementedError

    def _released(self, metrics: Mapping[str, Any], width: int, survivors: int) -> dict[
            str, Any]:
        """After a sum of ``width`` values is released: the batch's metrics."""
        return dict(metrics)

    def encode(self, outputs: npt.ArrayLike) -> FloatArray:
        """A party's vote matrix from its model's outputs (see :meth:`VoteSpec.encode`)."""
        return self.spec.encode(outputs)

    # ------------------------------------------------------------------------------- a batch

    def aggregate(
        self,
        votes_by_party: Mapping[int, object],
        *,
        num_queries: int | None = None,
        dropouts: Mapping[int, str] | None = None,
    ) -> BatchResult:
        """Answer one batch: every party's ``(Q, C)`` vote matrix (party id -> matrix; a missing
        id or ``None``: no vote) summed with noise in one secure aggregation round.

        ``num_queries`` defaults to the most common number of rows among the votes.
        ``dropouts`` (party -> stage of the protocol: SecAgg ``"advertise" "share" "masked"
        "unmask"``, CKKS ``"upload"``) makes parties go silent mid-round, as in
        :func:`secureagg.simulate`. Refused by the budget or aborted by the protocol (too few
        parties), the batch returns ``answered=False`` and releases nothing.
        """
        n = self.num_parties
        if not isinstance(votes_by_party, Mapping):
            raise ConfigurationError("votes_by_party must map party ids to vote matrices")
        unknown = sorted(str(p) for p in votes_by_party if not (is_int(p) and 0 <= p < n))
        if unknown:
            raise ConfigurationError(f"unknown party ids {unknown[:10]} (parties are 0..{n - 1})")
        q = self._num_queries(votes_by_party, num_queries)
        admitted = self._admit(q)
        if isinstance(admitted, BatchResult):
            return admitted
        batch, worst = admitted

        width = q * self.num_classes
        updates: list[list[FloatArray]] = []
        refused: dict[int, str] = {}
        absent: list[int] = []
        silent: dict[int, str] = {}
        for p in range(n):
            given = votes_by_party.get(p)
            ints, reason = (None, None) if given is None else self.spec.validate(
                given, num_queries=q)
            if given is None:
                absent.append(p)
                silent[p] = self.silent_stage
            elif ints is None:
                refused[p] = str(reason)
                if self.malformed == "absent":
                    silent[p] = self.silent_stage
            # a silent party's vector is never sent; an abstaining one sends the zero vote
            updates.append([np.zeros(width) if ints is None else
                            ints.reshape(-1).astype(np.float64)])
        requested = dict(dropouts or {})
        drop_map = {**requested, **silent}  # a party with no valid vote never speaks

        t0 = time.perf_counter()
        outcome: SimulationResult | InsufficientSurvivors
        try:
            outcome = simulate(
                self._agg,
                updates,
                dropouts=drop_map,
                seed=self.seed,
                round_id=batch,
                session_id=None if self.seed is not None else self._session_id,
            )
        except InsufficientSurvivors as exc:
            outcome = exc
        return self._settle(batch, q, worst, outcome, seconds=time.perf_counter() - t0,
                            refused=refused, absent=tuple(absent), dropped=requested,
                            silent=silent)

    def _admit(self, queries: int) -> tuple[int, float] | BatchResult:
        """The next batch number and its worst-case ε if the budget admits a batch of
        ``queries`` queries; else the unanswered batch (the budget stop is on the ledger)."""
        batch = self._batch
        self._batch += 1
        admitted, worst = self.accountant.admit(batch=batch, queries=queries)
        if not admitted:
            return self._unanswered(batch, stopped_by_budget=True)
        return batch, worst

    def _settle(
        self,
        batch: int,
        queries: int,
        worst: float,
        outcome: SimulationResult | InsufficientSurvivors,
        *,
        seconds: float,
        refused: Mapping[int, str],
        absent: tuple[int, ...],
        dropped: Mapping[int, str],
        silent: Mapping[int, str],
    ) -> BatchResult:
        """After a batch's secure round (in-process or deployed): account it and say what it
        released. ``outcome`` is the round's result, or the abort (then nothing was released
        and nothing is spent). ``dropped``: the parties that went silent mid-round (party ->
        stage), ``silent``: those that never took part (no valid vote)."""
        if isinstance(outcome, InsufficientSurvivors):
            self.accountant.record_failed(batch=batch, queries=queries, reason=str(outcome))
            return self._unanswered(
                batch, refused=dict(refused), absent=absent, dropped=dict(dropped),
                aborted=str(outcome), seconds=seconds,
                transcript=tuple(transcript_lines(
                    batch, (), up=getattr(outcome, "transcript", None) or (),
                    down=getattr(outcome, "downlink", None) or ())),
            )
        res = outcome
        survivors = tuple(int(p) for p in res.survivors)
        m = len(survivors)
        histogram = res.aggregate[0].reshape(queries, self.num_classes) / self.spec.scale
        metrics = self._released(res.metrics, queries * self.num_classes, m)
        eps = self.accountant.record(
            batch=batch,
            queries=queries,
            survivors=m,
            refused=sorted(refused),
            dropped=sorted(set(dropped) - set(silent)),
            seeded=res.seeded,
            worst_case_epsilon=worst,
        )
        return BatchResult(
            batch=batch,
            answered=True,
            labels=np.argmax(histogram, axis=1).astype(np.int64),
            noisy_histogram=histogram,
            survivors=survivors,
            noise_std=self._noise_std(m),
            epsilon_after=eps,
            refused=dict(refused),
            absent=absent,
            dropped=dict(dropped),
            seconds=seconds,
            metrics=metrics,
            transcript=tuple(transcript_lines(batch, (), up=res.transcript, down=res.downlink,
                                              peer=res.peer_traffic)),
        )

    def _unanswered(self, batch: int, **fields: Any) -> BatchResult:
        """A batch that released nothing (refused by the budget, or aborted): ε unchanged."""
        return BatchResult(batch=batch, answered=False, labels=None, noisy_histogram=None,
                           survivors=(), noise_std=None, epsilon_after=self.accountant.epsilon(),
                           **fields)

    def _num_queries(self, votes: Mapping[int, object], given: int | None) -> int:
        if given is not None:
            if not is_int(given) or given < 1:
                raise ConfigurationError(f"num_queries must be an integer >= 1, got {given!r}")
            return given
        counted = (_rows(v) for v in votes.values() if v is not None)
        rows = Counter(r for r in counted if r is not None).most_common(2)
        if not rows or (len(rows) == 2 and rows[0][1] == rows[1][1]):
            raise ConfigurationError("cannot tell the batch size from the votes; pass num_queries=")
        return rows[0][0]

    # --------------------------------------------------------------------------- accounting

    def epsilon(self, *, delta: float | None = None) -> float:
        """ε upper bound spent so far (party level = record level), at ``delta``."""
        return self.accountant.epsilon(delta=delta)

    def batches_remaining(self, queries: int) -> int | None:
        """More batches of ``queries`` queries the budget admits (worst case; ``None``: no
        budget)."""
        return self.accountant.batches_remaining(queries)

    def ledger(self) -> list[dict[str, Any]]:
        """One JSON-ready entry per batch (see :meth:`VoteAccountant.ledger`)."""
        return self.accountant.ledger()

    def run_ledger(self) -> dict[str, Any]:
        """``privacy_ledger.json`` for a run directory (see :meth:`VoteAccountant.run_ledger`)."""
        return self.accountant.run_ledger()



class SecureVoteAggregator(_VoteBatches):
    """Secure GNMax over ``num_parties`` parties and ``num_classes`` classes (module docstring).

    ``sigma`` is the standard deviation of the total noise on each vote count when
    ``provisioned`` parties survive, in vote units (PATE's GNMax sigma). ``vote`` (``"one-hot"``,
    ``"top-k"``, ``"softmax"``) with ``top_k``, ``clip``, ``clip_norm``, ``resolution``: see
    :class:`~secureagg.ensemble.votes.VoteSpec`. ``mechanism``: ``"ddgauss"`` (distributed
    discrete Gaussian) or ``"skellam"``. ``expected_dropout``: the fraction of parties the noise is
    over-provisioned for (count colluding parties, who know their own shares, as dropped);
    ``min_survivors``: fewer parties in the sum abort the round (default ``provisioned``).
    ``budget_epsilon``: the hard cap on ε at ``delta``. ``protocol``: ``"secagg+"`` or
    ``"secagg"``. ``sink`` receives every privacy event. ``seed`` (tests and benchmarks only)
    makes masks and noise reproducible and therefore NOT private; the ledger says so.
    ``tail_bits``: the sum wraps around modulo ``2^bits`` with probability at most
    ``Q C 2^-tail_bits`` per batch (noise tail bound reserved as headroom).
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
        mechanism: Mechanism = "ddgauss",
        expected_dropout: float = 0.0,
        min_survivors: int | None = None,
        malformed: Literal["absent", "abstain"] = "absent",
        delta: float = 1e-5,
        budget_epsilon: float | None = None,
        protocol: Literal["secagg+", "secagg"] = "secagg+",
        threat: Literal["curious", "malicious"] = "curious",
        sink: EventSink | None = None,
        seed: bytes | int | None = None,
        tail_bits: int = 40,
    ) -> None:
        problems: list[str] = []
        try:
            self.spec = VoteSpec(
                vote,
                num_classes,
                top_k=top_k,
                clip=clip,
                clip_norm=clip_norm,
                resolution=resolution,
            )
        except ConfigurationError as exc:
            problems.extend(exc.problems)
        if not is_int(num_parties) or num_parties < 2:
            problems.append(f"num_parties must be an integer >= 2, got {num_parties!r}")
        if not is_positive_real(sigma):
            problems.append(f"sigma must be a finite number > 0 (vote units), got {sigma!r}")
        if not is_rate(expected_dropout):
            problems.append(f"expected_dropout must be in [0, 1), got {expected_dropout!r}")
        if mechanism not in ("ddgauss", "skellam"):
            problems.append(f"mechanism must be 'ddgauss' or 'skellam', got {mechanism!r}")
        if malformed not in ("absent", "abstain"):
            problems.append(f"malformed must be 'absent' or 'abstain', got {malformed!r}")
        if protocol not in ("secagg+", "secagg"):
            problems.append(f"protocol must be 'secagg+' or 'secagg', got {protocol!r}")
        if not is_int(tail_bits) or not 20 <= tail_bits <= 128:
            problems.append(f"tail_bits must be an integer in [20, 128], got {tail_bits!r}")
        if problems:
            raise ConfigurationError(problems)
        n = num_parties
        self.num_parties = n
        self.num_classes = num_classes
        self.sigma = float(sigma)
        self.mechanism: Mechanism = mechanism
        self.malformed = malformed
        self.protocol = protocol
        self.provisioned = max(1, math.ceil(n * (1.0 - float(expected_dropout)) - 1e-9))
        self.expected_dropout = float(expected_dropout)
        scale = self.spec.scale
        #: one party's per-coordinate noise variance, integer units
        self.client_variance = (self.sigma * scale) ** 2 / self.provisioned
        tail = 2.0**-tail_bits
        if mechanism == "skellam":
            headroom = rdp.skellam_tail_bound(n * self.client_variance, tail)
        else:
            headroom = rdp.subgaussian_tail_bound(n * self.client_variance, tail)
        bits = 32 if n * self.spec.max_value + headroom <= 2**31 - 1 else 64
        self.noise_headroom = float(headroom)
        self._agg = make_aggregator(
            protocol,
            num_clients=n,
            clip=float(self.spec.max_value),
            scale=1.0,
            bits=bits,
            noise_headroom=headroom,
            min_survivors=self.provisioned if min_survivors is None else min_survivors,
            dropout_rate=max(0.1, self.expected_dropout),
            threat=threat,
            # a public option of the round spec: a party rebuilt from the spec on another
            # machine (secureagg.flower.ensemble) adds exactly the same share
            integer_noise={"mechanism": mechanism, "variance": self.client_variance},
        )
        params = getattr(self._agg, "params", None)
        self.min_survivors = int(getattr(params, "min_survivors", self.provisioned))
        self.accountant = VoteAccountant(
            spec=self.spec,
            mechanism=mechanism,
            num_parties=n,
            provisioned=self.provisioned,
            min_survivors=self.min_survivors,
            client_variance=self.client_variance,
            delta=delta,
            budget_epsilon=budget_epsilon,
            sink=sink,
        )
        self.seed = seed
        self._session_id = os.urandom(_SESSION_ID_BYTES)
        self._batch = 0
        #: Deployed batches only (:meth:`answer_deployed`): what each party's node reported about
        #: its teacher - party -> ``{"status": "trained" | "failed", "stage", "error", "batch",
        #: "train_seconds", "teacher_epsilon"}``. A party whose teacher failed is not asked again.
        self.node_teachers: dict[int, dict[str, Any]] = {}

    def answer_deployed(self, queries: npt.ArrayLike, deployment: VoteDeployment) -> BatchResult:
        """Answer one batch whose votes are computed on the parties' own nodes: ``queries`` are
        the batch's public query inputs (``Q`` rows), sent to every node with the batch's one
        secure round over ``deployment`` (e.g. :class:`secureagg.flower.ensemble.FlowerVotes`).
        Admitted, accounted and recorded as :meth:`aggregate` does; see
        :mod:`secureagg.ensemble.deployed`."""
        from secureagg.ensemble.deployed import answer_batch

        return answer_batch(self, queries, deployment)

    def _noise_std(self, survivors: int) -> float:
        return math.sqrt(survivors * self.client_variance) / self.spec.scale

    def report(self) -> dict[str, Any]:
        """The ensemble ledger with the protocol parameters (JSON-ready)."""
        out = self.accountant.report()
        out["protocol"] = {
            **self._agg.parameters(),
            "exact_integer_votes": True,
            # what an auditor's no-overflow check adds to n * max vote (sum of every share)
            "distributed_dp": {"mechanism": self.mechanism, "noise_headroom": self.noise_headroom,
                               "client_variance": self.client_variance},
        }
        return out


def _rows(vote: object) -> int | None:
    """The number of rows of a vote (``None`` for something without rows)."""
    try:
        shape = np.shape(vote)  # type: ignore[call-overload]
    except (TypeError, ValueError):  # a ragged list
        return None
    return int(shape[0]) if len(shape) >= 1 and shape[0] > 0 else None
