"""Independent privacy accounting: recompute every ε a privacy ledger states, by another road.

:func:`reaccount` reads a ledger - one accountant's report
(:data:`~secureagg.dp.ledger.LEDGER_FORMAT`) or a federated run's ``privacy_ledger.json``
(:data:`~secureagg.dp.ledger.FEDERATED_LEDGER_FORMAT`, one report per level) - and recomputes the
ε of every stream (one per ``(scope, party)``) from the stream's **events** alone, at the
ledger's own δ, without the code that trained: nothing here calls
:mod:`secureagg.dp.accounting`, :mod:`secureagg.dp.rdp` or Opacus.

* **Gaussian streams** (``GaussianSteps``: DP-SGD, central Gaussian, ActivationDP - each event's
  noise multiplier is already relative to its adjacency's sensitivity): Google's
  ``dp_accounting`` (extra ``audit``), add/remove adjacency. Its RDP accountant
  (``PoissonSampledDpEvent`` of a ``GaussianDpEvent``, self-composed; Mironov-Talwar-Zhang
  2019) at :data:`GAUSSIAN_RDP_ORDERS`, the orders of the library's (Opacus) accountant, gives
  ``rdp_epsilon`` and ``rdp_agrees_within_1pct`` (for an ``"rdp"`` ledger). Its PLD accountant
  (Doroshenko et al. 2022, pessimistic estimate, :data:`PLD_DISCRETIZATION`) gives
  ``pld_epsilon``, the tight value the verdict uses.
* **Integer streams** (``DistributedNoiseRound``): closed forms written here from the papers, at
  every integer order of :data:`INTEGER_RDP_ORDERS` (a superset of the library's), with ``Δ2``,
  ``Δ1`` the integer L2/L1 sensitivities and ``μ = survivors * client_variance``:

  - Skellam (Agarwal, Kairouz, Liu, NeurIPS 2021, arXiv 2110.04995, Thm 3.5 and its corollary
    for sums of shares): ``ε(α) = α Δ2²/(2μ) + min(((2α-1) Δ2² + 6 Δ1)/(4μ²), 3 Δ1/(2μ))``;
  - distributed discrete Gaussian (Kairouz, Liu, Steinke, ICML 2021, arXiv 2102.06387, Thm 1 /
    Prop 14, for a local σ >= 1/2): ``n = survivors``, ``a = Δ2/(√n σ)``, ``b = Δ1/(√n σ)``,
    ``τ = 10 Σ_{k=1}^{n-1} exp(-2π² σ² k/(k+1))``,
    ``ε(α) = min(α a²/2 + τ d, α/2 (a² + 2bτ + τ² d), α/2 (a + τ √d)²)``;
  - Poisson client sampling at ``q < 1``: the general upper bound of Zhu & Wang 2019 ("Poisson
    Subsampled Rényi DP", ICML; the bound with the factor 3, for any mechanism), ``min``-ed with
    the unsampled curve;
  - composition: RDP curves add over rounds; conversion (Canonne, Kamath, Steinke 2020, Prop 12,
    = Balle et al. 2020, Thm 21): ``ε = min_α ε(α) + log((α-1)/α) - (log δ + log α)/(α-1)``.

  Beside it, ``gaussian_reference_epsilon``: the PLD ε of a *continuous* Gaussian of the same
  variance per round (``z = √μ / Δ2``) - a **reference only**, not a bound for the integer
  mechanism.

**Verdict per stream.** ``"fail"`` when the stated ε is below the independent tight value (PLD for
Gaussian streams, the closed form for integer ones) by more than :data:`RELATIVE_TOLERANCE` of it
(or :data:`ABSOLUTE_TOLERANCE` near 0); likewise for ``epsilon_without_sampling``; when the stated
step or round count disagrees with the events; when events spend privacy in a stream the ledger
states no ε for; when the stated ε exceeds the ledger's ``max_epsilon``. ``"not re-accounted"``
(never ``"ok"``) when a stream holds an event kind not known here, mixes Gaussian steps with
integer rounds, or has a round outside a theorem's hypothesis. Otherwise ``"ok"``. A seeded run
(reproducible test noise) is flagged: it is NOT private whatever its ε.

>>> ledger = {"format": "secureagg-privacy-ledger/1", "accountant": "rdp", "delta": 1e-5,
...           "streams": [{"scope": "user", "party": None, "epsilon": 0.5}],
...           "events": [{"kind": "gaussian_steps", "scope": "user", "party": None,
...                       "noise_multiplier": 10.0, "sample_rate": 1.0, "clip": 1.0}]}
>>> stream = reaccount(ledger)["levels"]["user"]["streams"][0]
>>> stream["verdict"], round(stream["pld_epsilon"], 3)   # the analytic Gaussian ε: 0.3407
('ok', 0.341)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.dp.events import (
    BudgetStop,
    DistributedNoiseRound,
    GaussianSteps,
    MechanismConfigured,
    PrivacyEvent,
    SeededNoise,
    event_from_dict,
)
from secureagg.dp.ledger import FEDERATED_LEDGER_FORMAT, LEDGER_FORMAT, json_float
from secureagg.errors import ConfigurationError, InvalidInputError

__all__ = ["ABSOLUTE_TOLERANCE", "GAUSSIAN_RDP_ORDERS", "INTEGER_RDP_ORDERS",
           "PLD_DISCRETIZATION", "RELATIVE_TOLERANCE", "REPORT_FORMAT", "rdp_to_epsilon",
           "reaccount", "round_rdp"]

REPORT_FORMAT = "secureagg/reaccount/v1"
#: A stated ε may sit below the tight value by this fraction of it (float noise), no more ...
RELATIVE_TOLERANCE = 1e-6
#: ... or by this much when the tight value is near 0.
ABSOLUTE_TOLERANCE = 1e-9
#: The orders of the library's Gaussian accountant (Opacus's ``RDPAccountant.DEFAULT_ALPHAS``).
GAUSSIAN_RDP_ORDERS: tuple[float, ...] = (*(1 + x / 10.0 for x in range(1, 100)),
                                          *(float(a) for a in range(12, 64)))
#: Integer orders for the closed forms: a superset of the library's, so never a coarser grid.
INTEGER_RDP_ORDERS: tuple[int, ...] = (*range(2, 257), 320, 384, 448, 512, 768, 1024)
#: PLD value discretisation (pessimistic rounding: an upper bound at any grid) for ε <= 10;
#: above, ``1e-5 * ε`` (the grid would grow with ε). A 10x finer grid moves ε by < 1e-5 relative.
PLD_DISCRETIZATION = 1e-4
_KNOWN = {c.KIND for c in (GaussianSteps, DistributedNoiseRound, MechanismConfigured,
                            SeededNoise, BudgetStop)}
_RANK = {"ok": 0, "not re-accounted": 1, "fail": 2}
_THEOREMS = {"skellam": "Skellam, Agarwal-Kairouz-Liu 2021 Thm 3.5",
             "ddgauss": "distributed discrete Gaussian, Kairouz-Liu-Steinke 2021 Thm 1"}
_FLOATS = ("stated_epsilon", "rdp_epsilon", "pld_epsilon", "closed_form_epsilon",
           "gaussian_reference_epsilon", "tight_epsilon")
FloatArray = npt.NDArray[np.float64]
History = tuple[tuple[float, float, int], ...]  # (noise multiplier, sample rate, steps)
Key = tuple[str, int | None]  # (scope, party)


def _dp_accounting() -> Any:
    try:
        import dp_accounting
    except ImportError as exc:
        raise ConfigurationError(
            "independent re-accounting needs Google's dp_accounting package, which is not "
            "installed: pip install 'secureagg[audit]'"
        ) from exc
    # Its RDP accountant logs a warning for each fractional order whose series does not
    # converge, and leaves that order out - which can only raise the ε it reports (still an
    # upper bound). The report says which accountant; the warnings would only be noise.
    logging.getLogger("absl").setLevel(logging.ERROR)
    return dp_accounting


# ------------------------------------------------------------------------- integer closed forms


def round_rdp(
    event: DistributedNoiseRound, orders: Sequence[int] = INTEGER_RDP_ORDERS
) -> FloatArray:
    """RDP curve of one distributed-noise round at integer ``orders`` (closed forms above).

    Raises :class:`ConfigurationError` when no theorem here covers the round (an unknown
    mechanism, a discrete Gaussian with local σ < 1/2).
    """
    ints = np.asarray(orders, dtype=np.int64)
    if (ints < 2).any() or (ints != np.asarray(orders, dtype=np.float64)).any():
        raise ConfigurationError("the closed forms are used at integer orders >= 2 only")
    if event.sample_rate >= 1.0:
        return _unsampled(event, ints.astype(np.float64))
    # Zhu-Wang needs ε(l) at every integer l <= α: the closed form gives it exactly.
    full = _unsampled(event, np.arange(int(ints.max()) + 1, dtype=np.float64))
    if not np.isfinite(full[2:]).all():
        return full[ints]
    return np.minimum(full[ints], _poisson_subsampled(ints, float(event.sample_rate), full))


def _unsampled(event: DistributedNoiseRound, alphas: FloatArray) -> FloatArray:
    l2, l1, n = float(event.l2_sensitivity), float(event.l1_sensitivity), event.survivors
    mu = n * float(event.client_variance)
    if l2 == 0.0:
        return np.zeros_like(alphas)
    if mu <= 0.0:
        return np.full_like(alphas, math.inf)
    if event.mechanism == "skellam":
        return alphas * l2**2 / (2 * mu) + np.minimum(
            ((2 * alphas - 1) * l2**2 + 6 * l1) / (4 * mu**2), 3 * l1 / (2 * mu))
    if event.mechanism != "ddgauss":
        raise ConfigurationError(f"no closed form for mechanism {event.mechanism!r}")
    sigma = math.sqrt(event.client_variance)
    if sigma < 0.5:
        raise ConfigurationError(
            f"ddgauss round {event.round_id}: local σ = {sigma:.4g} < 1/2, outside the "
            "hypothesis of Kairouz-Liu-Steinke 2021 Thm 1")
    k = np.arange(1, n, dtype=np.float64)
    tau = 10.0 * float(np.exp(-2 * math.pi**2 * sigma**2 * k / (k + 1)).sum())
    a, b, d = l2 / math.sqrt(mu), l1 / math.sqrt(mu), float(event.dimension)
    out: FloatArray = np.minimum.reduce([alphas * a * a / 2 + tau * d,
                                         alphas / 2 * (a * a + 2 * b * tau + tau * tau * d),
                                         alphas / 2 * (a + tau * math.sqrt(d)) ** 2])
    return out


def _poisson_subsampled(orders: npt.NDArray[np.int64], q: float, eps: FloatArray) -> FloatArray:
    """Zhu-Wang 2019 general upper bound for Poisson sampling at rate ``q`` (integer orders):
    ``log[(1-q)^(α-1)(αq-q+1) + C(α,2) q² (1-q)^(α-2) e^{ε(2)}
    + 3 Σ_{l=3}^α C(α,l) q^l (1-q)^(α-l) e^{(l-1)ε(l)}] / (α-1)``, ``eps[l] = ε(l)``."""
    lq, l1q = math.log(q), math.log1p(-q)
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, len(eps))))])
    out = np.empty(len(orders))
    for i, a in enumerate(int(v) for v in orders):
        ls = np.arange(3, a + 1)
        terms = np.concatenate([
            [(a - 1) * l1q + math.log(a * q - q + 1),
             math.log(a * (a - 1) / 2) + 2 * lq + (a - 2) * l1q + eps[2]],
            math.log(3.0) + log_fact[a] - log_fact[ls] - log_fact[a - ls]
            + ls * lq + (a - ls) * l1q + (ls - 1) * eps[3:a + 1],
        ])
        peak = float(terms.max())
        out[i] = (peak + math.log(float(np.exp(terms - peak).sum()))) / (a - 1)
    return out


def rdp_to_epsilon(orders: Sequence[float], rdp: npt.ArrayLike, delta: float) -> float:
    """ε at ``delta`` from an RDP curve (Canonne-Kamath-Steinke 2020 Prop 12 = Balle et al. 2020
    Thm 21): ``min_α ε(α) + log((α-1)/α) - (log δ + log α)/(α-1)``, at least 0."""
    a = np.asarray(orders, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        eps = np.asarray(rdp, dtype=np.float64) + np.log1p(-1.0 / a) - (
            math.log(delta) + np.log(a)) / (a - 1)
    return max(0.0, float(np.where(np.isnan(eps), math.inf, eps).min()))


# ------------------------------------------------------------------------------ accounting


@dataclass
class _Stream:
    gaussian: dict[tuple[float, float], int] = field(default_factory=dict)  # (σ, q) -> steps
    rounds: list[DistributedNoiseRound] = field(default_factory=list)
    worst_case: int = 0
    unknown: list[str] = field(default_factory=list)
    seeded: bool = False
    mechanisms: set[str] = field(default_factory=set)

    def history(self, sampled: bool = True) -> History:
        merged: dict[tuple[float, float], int] = {}
        for (s, q), n in self.gaussian.items():
            merged[(s, q if sampled else 1.0)] = merged.get((s, q if sampled else 1.0), 0) + n
        return tuple((s, q, n) for (s, q), n in sorted(merged.items()))


class _Accountant:
    """dp_accounting and the closed forms, each result cached (clients share schedules)."""

    def __init__(self, dpa: Any) -> None:
        self.dpa = dpa
        self.cache: dict[tuple[Any, ...], Any] = {}

    def _memo(self, key: tuple[Any, ...], fn: Any) -> Any:
        if key not in self.cache:
            self.cache[key] = fn()
        return self.cache[key]

    def _event(self, history: History) -> Any:
        dpa = self.dpa
        return dpa.ComposedDpEvent([dpa.SelfComposedDpEvent(
            dpa.GaussianDpEvent(s) if q >= 1 else dpa.PoissonSampledDpEvent(
                q, dpa.GaussianDpEvent(s)), n) for s, q, n in history])

    def _rdp(self, history: History, delta: float) -> float:
        acc = self.dpa.rdp.RdpAccountant(list(GAUSSIAN_RDP_ORDERS),
                                         self.dpa.NeighboringRelation.ADD_OR_REMOVE_ONE)
        acc.compose(self._event(history))
        return max(0.0, float(acc.get_epsilon(delta)))

    def _pld(self, history: History, delta: float, rdp_eps: float) -> float:
        if not math.isfinite(rdp_eps):  # a step without noise: no finite ε at all
            return math.inf
        acc = self.dpa.pld.PLDAccountant(
            self.dpa.NeighboringRelation.ADD_OR_REMOVE_ONE,
            value_discretization_interval=PLD_DISCRETIZATION * max(1.0, rdp_eps / 10.0))
        acc.compose(self._event(history))
        return max(0.0, float(acc.get_epsilon(delta)))

    def gaussian(self, history: History, delta: float) -> tuple[float, float]:
        """(RDP ε, PLD ε) of a history of sampled-Gaussian steps."""
        if not history:
            return 0.0, 0.0
        rdp_eps = self._memo(("rdp", history, delta), lambda: self._rdp(history, delta))
        return rdp_eps, self._memo(("pld", history, delta),
                                   lambda: self._pld(history, delta, rdp_eps))

    def integer(self, rounds: Sequence[DistributedNoiseRound], delta: float) -> float:
        total = np.zeros(len(INTEGER_RDP_ORDERS))
        for r in rounds:
            key = ("round", replace(r, round_id=0, seeded=False, clients=0))
            total = total + self._memo(key, lambda r=r: round_rdp(r))
        return rdp_to_epsilon(INTEGER_RDP_ORDERS, total, delta) if rounds else 0.0

    def reference(self, rounds: Sequence[DistributedNoiseRound], delta: float) -> float:
        """PLD ε of continuous Gaussians of the rounds' variances (a reference, not a bound)."""
        counts: dict[tuple[float, float], int] = {}
        for r in rounds:
            if r.l2_sensitivity > 0:
                key = (math.sqrt(r.survivors * r.client_variance) / r.l2_sensitivity,
                       float(r.sample_rate))
                counts[key] = counts.get(key, 0) + 1
        return self.gaussian(tuple((z, q, n) for (z, q), n in sorted(counts.items())), delta)[1]


# ---------------------------------------------------------------------------------- parsing


def _number(value: Any, where: str, *, allow_inf: bool = False) -> float:
    if allow_inf and value == "inf":
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        kind = 'a number or "inf"' if allow_inf else "a number"
        raise InvalidInputError(f"{where} must be {kind}, got {value!r}")
    return float(value)


def _key(raw: Any, where: str) -> Key:
    if not isinstance(raw, Mapping):
        raise InvalidInputError(f"{where} must be an object")
    scope, party = raw.get("scope"), raw.get("party")
    if scope not in ("sample", "user") or not (party is None or type(party) is int):
        raise InvalidInputError(f"{where}: scope must be 'sample' or 'user' and party an int or "
                                f"null, got {scope!r}, {party!r}")
    return scope, party


def _list(data: Mapping[str, Any], name: str, where: str) -> list[Any]:
    value = data.get(name)
    if not isinstance(value, list):
        raise InvalidInputError(f"{where}.{name} must be a list, got {type(value).__name__}")
    return value


def _events(data: Mapping[str, Any], where: str) -> dict[Key, _Stream]:
    streams: dict[Key, _Stream] = {}
    for i, raw in enumerate(_list(data, "events", where)):
        at = f"{where}.events[{i}]"
        stream = streams.setdefault(_key(raw, at), _Stream())
        kind = raw.get("kind")
        if not isinstance(kind, str):
            raise InvalidInputError(f"{at}.kind must be a string, got {kind!r}")
        if kind not in _KNOWN:
            stream.unknown.append(kind)
            continue
        try:
            event: PrivacyEvent = event_from_dict(raw)
        except (ConfigurationError, InvalidInputError, TypeError) as exc:
            raise InvalidInputError(f"{at} ({kind}): {exc}") from exc
        if isinstance(event, GaussianSteps):
            sq = (float(event.noise_multiplier), float(event.sample_rate))
            stream.gaussian[sq] = stream.gaussian.get(sq, 0) + event.steps
            stream.mechanisms.add(event.mechanism)
        elif isinstance(event, DistributedNoiseRound):
            stream.seeded |= event.seeded
            stream.mechanisms.add(event.mechanism)
            if event.worst_case:  # the pre-round budget check: nothing was released by it
                stream.worst_case += 1
            else:
                stream.rounds.append(event)
        elif isinstance(event, SeededNoise):
            stream.seeded = True
    return streams


def _stated(data: Mapping[str, Any], where: str, delta: float) -> dict[Key, dict[str, Any]]:
    out: dict[Key, dict[str, Any]] = {}
    for i, s in enumerate(_list(data, "streams", where)):
        at = f"{where}.streams[{i}]"
        key = _key(s, at)
        if key in out:
            raise InvalidInputError(f"{at}: a second stream for scope={key[0]!r}, party={key[1]!r}")
        if "epsilon" not in s:
            raise InvalidInputError(f"{at}.epsilon is missing")
        entry = {"epsilon": _number(s["epsilon"], f"{at}.epsilon", allow_inf=True),
                 "delta": delta if s.get("delta") is None else _number(s["delta"], f"{at}.delta")}
        if not 0.0 < entry["delta"] < 1.0:
            raise InvalidInputError(f"{at}.delta must be in (0, 1), got {entry['delta']!r}")
        if s.get("epsilon_without_sampling") is not None:
            entry["without"] = _number(s["epsilon_without_sampling"],
                                       f"{at}.epsilon_without_sampling", allow_inf=True)
        for name in ("steps", "rounds"):
            if s.get(name) is not None:
                if type(s[name]) is not int or s[name] < 0:
                    raise InvalidInputError(f"{at}.{name} must be an integer >= 0")
                entry[name] = s[name]
        out[key] = entry
    return out


# ---------------------------------------------------------------------------------- verdicts


def _below(stated: float, tight: float) -> bool:
    """True if ``stated`` is under ``tight`` by more than the tolerance."""
    if math.isinf(tight):
        return not math.isinf(stated)
    return tight - stated > max(RELATIVE_TOLERANCE * tight, ABSOLUTE_TOLERANCE)


def _method(stream: _Stream) -> str:
    if not stream.rounds:
        return ("dp_accounting RDP (the orders of Opacus's RDPAccountant) and PLD (pessimistic, "
                f"discretisation {PLD_DISCRETIZATION}), add/remove adjacency")
    parts = [_THEOREMS[k] for k in sorted({r.mechanism for r in stream.rounds})]
    if any(r.sample_rate < 1 for r in stream.rounds):
        parts.append("Poisson sampling: Zhu-Wang 2019 general upper bound")
    parts.append("RDP to (eps, delta): Canonne-Kamath-Steinke 2020 Prop 12")
    return ("closed-form RDP at integer orders: " + "; ".join(parts) + ". The Gaussian "
            "reference (PLD of a continuous Gaussian of the same variance) is NOT a bound for it")


def _stream_report(key: Key, stream: _Stream, stated: dict[str, Any] | None, acc: _Accountant,
                   *, accountant: str, delta: float, max_epsilon: float | None) -> dict[str, Any]:
    rep: dict[str, Any] = {
        "scope": key[0], "party": key[1], "delta": stated["delta"] if stated else delta,
        "mechanisms": sorted(stream.mechanisms), "steps": sum(stream.gaussian.values()),
        "rounds": len(stream.rounds), "worst_case_checks": stream.worst_case,
        "seeded": stream.seeded, "stated_epsilon": stated["epsilon"] if stated else None,
        "rdp_epsilon": None, "pld_epsilon": None, "closed_form_epsilon": None,
        "gaussian_reference_epsilon": None, "tight_epsilon": None, "tight_source": None,
        "abs_diff": None, "rel_diff": None, "rdp_agrees_within_1pct": None,
        "method": _method(stream),
    }
    verdict, problems = _judge(rep, stream, stated, acc, accountant, max_epsilon)
    for name in _FLOATS:
        if rep[name] is not None:
            rep[name] = json_float(rep[name])
    return {**rep, "verdict": verdict, "reason": "; ".join(problems)}


def _judge(rep: dict[str, Any], stream: _Stream, stated: dict[str, Any] | None,
           acc: _Accountant, accountant: str, max_epsilon: float | None) -> tuple[str, list[str]]:
    """Fill ``rep``'s figures; return the verdict and its reasons."""
    if stream.unknown:
        return "not re-accounted", [
            f"event kinds this module cannot re-account: {sorted(set(stream.unknown))}"]
    if stream.gaussian and stream.rounds:
        return "not re-accounted", ["the stream mixes Gaussian steps and distributed-noise "
                                    "rounds; only streams of one kind are re-accounted"]
    delta = rep["delta"]

    def tight_of(sampled: bool) -> tuple[float, float]:
        """(RDP ε, tight ε), with or without the sampling amplification."""
        if stream.rounds:
            value = acc.integer(stream.rounds if sampled else [
                replace(r, sample_rate=1.0) for r in stream.rounds], delta)
            return value, value
        return acc.gaussian(stream.history(sampled), delta)

    try:
        rdp_eps, tight = tight_of(True)
    except ConfigurationError as exc:
        return "not re-accounted", [str(exc)]
    rep.update(rdp_epsilon=rdp_eps, tight_epsilon=tight)
    if stream.rounds:
        rep.update(closed_form_epsilon=tight, tight_source="closed_form",
                   gaussian_reference_epsilon=acc.reference(stream.rounds, delta))
    else:
        rep.update(pld_epsilon=tight, tight_source="pld")
    if stated is None:
        if tight > 0:
            return "fail", ["its events spend privacy but the ledger states no ε for this stream"]
        return "ok", ["no privacy spent and none stated"]
    eps = stated["epsilon"]
    if math.isfinite(eps) and math.isfinite(tight):
        rep["abs_diff"] = eps - tight
        rep["rel_diff"] = (eps - tight) / tight if tight > 0 else None
    # The run's RDP figure is comparable for integer streams and for an "rdp" ledger.
    if (stream.rounds or accountant == "rdp") and math.isfinite(rdp_eps) and math.isfinite(eps):
        rep["rdp_agrees_within_1pct"] = abs(eps - rdp_eps) <= 0.01 * rdp_eps
    problems = [f"the ledger states {stated[n]} {n} but its events hold {rep[n]}"
                for n in ("steps", "rounds") if n in stated and stated[n] != rep[n]]
    if _below(eps, tight):
        problems.append(f"stated ε {eps:.6g} is below the independent tight ε {tight:.6g} "
                        f"({rep['tight_source']})")
    if "without" in stated:
        tight_all = tight_of(False)[1]
        rep["epsilon_without_sampling"] = {"stated": json_float(stated["without"]),
                                           "tight": json_float(tight_all)}
        if _below(stated["without"], tight_all):
            problems.append(f"stated ε without sampling {stated['without']:.6g} is below the "
                            f"independent tight value {tight_all:.6g}")
    if max_epsilon is not None and eps > max_epsilon * (1 + RELATIVE_TOLERANCE):
        problems.append(f"stated ε {eps:.6g} exceeds the ledger's max_epsilon {max_epsilon}")
    if problems:
        return "fail", problems
    return "ok", [f"stated ε {eps:.6g} >= independent tight ε {tight:.6g} "
                  f"({rep['tight_source']})"]


def _worst(verdicts: Sequence[str]) -> str:
    return max(verdicts, key=_RANK.__getitem__, default="ok")


def _one_ledger(data: Mapping[str, Any], where: str, acc: _Accountant) -> dict[str, Any]:
    delta = _number(data.get("delta"), f"{where}.delta")
    if not 0.0 < delta < 1.0:
        raise InvalidInputError(f"{where}.delta must be in (0, 1), got {delta!r}")
    accountant = data.get("accountant")
    if not isinstance(accountant, str):
        raise InvalidInputError(f"{where}.accountant must be a string, got {accountant!r}")
    raw_max = data.get("max_epsilon")
    max_epsilon = None if raw_max is None else _number(raw_max, f"{where}.max_epsilon")
    stated, streams = _stated(data, where, delta), _events(data, where)
    reports = [_stream_report(k, streams.get(k, _Stream()), stated.get(k), acc,
                              accountant=accountant, delta=delta, max_epsilon=max_epsilon)
               for k in [*stated, *(k for k in streams if k not in stated)]]
    return {"accountant": accountant, "delta": delta, "max_epsilon": max_epsilon,
            "seeded": bool(data.get("seeded")) or any(r["seeded"] for r in reports),
            "streams": reports}


def reaccount(ledger: Mapping[str, Any]) -> dict[str, Any]:
    """Re-account every stream of ``ledger`` independently (see the module docstring).

    Returns a JSON-ready dict: ``verdict`` (the worst over all streams: ``"fail"``, then
    ``"not re-accounted"``, then ``"ok"``), ``seeded``/``warning``, the tolerances, and
    ``levels`` - ``"sample"`` and/or ``"user"``: a federated ledger's levels, or a plain
    ledger's streams grouped by scope - each with its ``verdict`` and one report per stream.
    Raises :class:`InvalidInputError` (naming the field) on a malformed ledger and
    :class:`ConfigurationError` if ``dp_accounting`` is not installed.
    """
    if not isinstance(ledger, Mapping):
        raise InvalidInputError(f"a ledger is a JSON object, got {type(ledger).__name__}")
    fmt = ledger.get("format")
    acc = _Accountant(_dp_accounting())
    levels: dict[str, dict[str, Any]] = {}
    if fmt == LEDGER_FORMAT:
        whole = _one_ledger(ledger, "ledger", acc)
        for scope in ("sample", "user"):
            mine = [s for s in whole["streams"] if s["scope"] == scope]
            if mine:
                levels[scope] = {**whole, "source": "ledger", "streams": mine}
    elif fmt == FEDERATED_LEDGER_FORMAT:
        for level in ("sample", "user"):
            name = f"{level}_level"
            if name not in ledger:
                raise InvalidInputError(f"{name} is missing (null when the run has no DP there)")
            part = ledger[name]
            if part is None:
                continue
            if not isinstance(part, Mapping) or part.get("format") != LEDGER_FORMAT:
                raise InvalidInputError(f"{name} must be null or a {LEDGER_FORMAT} ledger")
            levels[level] = {**_one_ledger(part, name, acc), "source": name}
    else:
        raise InvalidInputError(
            f"format must be {LEDGER_FORMAT!r} or {FEDERATED_LEDGER_FORMAT!r}, got {fmt!r}")
    for rep in levels.values():
        rep["verdict"] = _worst([s["verdict"] for s in rep["streams"]])
    seeded = any(rep["seeded"] for rep in levels.values())
    return {
        "format": REPORT_FORMAT, "ledger_format": fmt,
        "verdict": _worst([rep["verdict"] for rep in levels.values()]) if levels
        else "not re-accounted",
        "reason": None if levels else "the ledger holds no privacy accounting (no DP)",
        "seeded": seeded,
        "warning": "SEEDED NOISE: reproducible test noise, this run is NOT private"
        if seeded else None,
        "tolerance": {"relative": RELATIVE_TOLERANCE, "absolute": ABSOLUTE_TOLERANCE},
        "levels": levels,
    }
