"""An empirical ε lower bound from one federated training run: the canary audit.

Steinke, Nasr and Jagielski 2023 ("Privacy auditing with one (1) training run", arXiv
2305.08846), on the user's own :class:`~secureagg.fl.FederatedRun` configuration:

1. draw ``m`` canary examples (inputs and labels) and, for each, an inclusion bit that is 1 with
   probability 1/2 - from ``secrets`` (a seed only for tests and benchmarks: it warns);
2. hand the included canaries to the user's ``build_run``, which adds them to the training data
   of **one client** (``client``, default 0) and returns the federated run, not started;
3. run it - the real path: local training (DP-SGD when the run has it), the chosen aggregator,
   FedAvg, the accountants;
4. score every canary on the final global model with the user's ``score(model, inputs, labels)``
   (higher = "looks trained on"; :func:`logit_margins` is the usual choice), minus its score on
   the initial model (``relative=True``: what training changed, not how easy the canary was);
5. guess "included" for the ``k+`` highest scores and "excluded" for the ``k-`` lowest, abstain
   on the rest, count the right guesses, and turn them into an ε lower bound at ``confidence``
   (:mod:`secureagg.audit.canary_bound`: the pure-ε bound with δ = 0, the δ-aware Theorem 3
   with δ > 0).

**Why one client.** Sample-level DP here is per client: client ``i``'s DP-SGD protects each of
its records at its own ``(ε_i, δ)``, which its privacy ledger states. Putting every canary in one
client audits exactly that client's figure; canaries spread over clients would be compared with
the largest ``ε_i`` while each client's share carried less signal. The claimed ε is therefore the
run's own ledger's sample-level ε of that client (the user-level ε of the released sums when the
run has no DP-SGD - it covers every record too - and ``inf`` without DP). The client should be
sampled in every round for the strongest audit; the ledger counts what it actually did.

**What the bound means.** With probability at least ``confidence`` over the inclusion bits and
the training's randomness, the run is *not* ``(ε, δ)``-DP for any ε below the bound (δ: the
run's own, so the two figures compare). A bound above the claimed ε means the claim is wrong (an
accounting or implementation error); a bound below it says nothing against the claim - one-run
black-box audits are loose, and DP-SGD's worst case is rarely reached by real examples.

Guesses must not be chosen by looking at the scores: the default tries three ``(k+, k-)`` pairs
fixed by ``m`` alone (``m/20``, ``m/10``, ``m/4`` on each side) and pays for choosing the best
with a union bound (each at confidence ``1 - (1 - confidence) / 3``).

For the strongest audit of a DP run, give its DP-SGD a public schedule (``FederatedDP(...,
batches_per_epoch=..., expected_batch_size=...)``): otherwise the canary client's sampling rate,
noise multiplier and step count depend on how many canaries it holds, which its ledger states as
record counts released outside the accounting.

Threat model of the audit itself: the auditor sees the final global model only (black box
up to ``score``), as anyone who receives the model does. It imports no torch: the user's
``build_run`` and ``score`` hold everything model-specific.

>>> import numpy as np
>>> logit_margins(np.array([[2.0, 0.5, 1.0], [0.0, 3.0, 1.0]]), np.array([0, 2]))
array([ 1., -2.])
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from secureagg.audit.canary_bound import best_guesses
from secureagg.crypto import labels, prg
from secureagg.errors import ConfigurationError, InvalidInputError
from secureagg.transport.results import SeededRunWarning
from secureagg.validation import is_int, is_real

__all__ = [
    "CanaryAudit",
    "CanaryPlacement",
    "canary_audit",
    "default_choices",
    "logit_margins",
    "random_canaries",
]


class AuditableRun(Protocol):
    """What the audit uses of a :class:`~secureagg.fl.FederatedRun` (no import of it here)."""

    model: Any
    privacy: Any
    history: list[dict[str, Any]]

    def run(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class CanaryPlacement:
    """The canaries that ``build_run`` must add to client ``client``'s training data.

    ``inputs`` (``(count, *input_shape)``, float32) and ``labels`` (``(count,)``, int64) are the
    *included* canaries only; how they join the client's data set (a ``ConcatDataset``, a
    concatenated ``TensorDataset``) is the user's, as long as every one of them is a training
    record of that client and nothing else about the run depends on the inclusion bits.
    """

    client: int
    inputs: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]

    @property
    def count(self) -> int:
        return int(self.labels.size)


@dataclass(frozen=True)
class CanaryAudit:
    """The result of :func:`canary_audit` (all figures of one audit; JSON via :meth:`to_dict`)."""

    #: the run's own ledger's ε for the canary client's records (``inf`` without DP)
    claimed_epsilon: float
    #: the run's ε is at least this, with probability ``confidence`` (not (ε, delta)-DP below)
    epsilon_lower_bound: float
    confidence: float
    #: the δ of the bound: the run's own (0.0, pure ε, when the run has no DP)
    delta: float
    #: m, the canaries drawn; ``included`` of them were in the client's data
    canaries: int
    included: int
    #: r guesses (k_plus "included" + k_minus "excluded"), of which ``correct`` were right
    guesses: int
    correct: int
    k_plus: int
    k_minus: int
    #: every (k+, k-) pair tried; the bound holds at ``confidence`` over all of them
    choices: tuple[tuple[int, int], ...]
    client: int
    #: wall time of the training and the scoring
    seconds: float
    #: where the claimed ε comes from
    claim_source: str
    #: the run's DP settings as its ledger states them (None without DP)
    dp_settings: Mapping[str, Any] | None
    #: protocol, rounds, clients, clip, weighting from the run's configuration
    run_configuration: Mapping[str, Any]
    #: the run's last completed round's metrics (``evaluate``), if any
    final_metrics: Mapping[str, Any] | None
    rounds_completed: int
    #: the inclusion bits came from a seed (reproducible, for tests and benchmarks)
    seeded: bool
    #: the training run itself was seeded (its DP noise is then reproducible: NOT private)
    run_seeded: bool

    @property
    def refutes_claim(self) -> bool:
        """The lower bound exceeds the claimed ε: the run is less private than its ledger says."""
        return self.epsilon_lower_bound > self.claimed_epsilon

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["claimed_epsilon"] = None if math.isinf(self.claimed_epsilon) else self.claimed_epsilon
        out["choices"] = [list(c) for c in self.choices]
        out["refutes_claim"] = self.refutes_claim
        return out


def logit_margins(logits: npt.ArrayLike, labels: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Per example, the logit of its label minus the largest other logit (numpy, any model).

    A memorised example has a large positive margin; one the model never saw, with a random
    label, mostly a negative one.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or y.shape != (z.shape[0],) or z.shape[1] < 2:
        raise InvalidInputError(
            f"logits must be (n, classes >= 2) and labels (n,), got {z.shape} and {y.shape}"
        )
    rows = np.arange(z.shape[0])
    own = z[rows, y]
    others = z.copy()
    others[rows, y] = -np.inf
    margins: npt.NDArray[np.float64] = own - others.max(axis=1)
    return margins


def random_canaries(
    rng: prg.Keystream,
    count: int,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """``count`` canaries: random patterns, each input value ``low`` or ``high`` with
    probability 1/2, and labels uniform over ``num_classes``.

    Out of distribution (noise, not data) with a random label: nothing else in the data set
    teaches the model a canary's label, so a model that predicts it learned it from the canary.
    ``value_range`` should be the range of the real inputs (features scaled to [0, 1]: the
    default), so that canaries are not singled out by scale alone.
    """
    low, high = value_range
    shape = (count, *(int(s) for s in input_shape))
    size = int(np.prod(shape, dtype=np.int64))
    bits = (rng.words(size, 8) & 1).reshape(shape)
    inputs = np.where(bits == 1, high, low).astype(np.float32)
    labels = np.array([rng.below(num_classes) for _ in range(count)], dtype=np.int64)
    return inputs, labels


def canary_stream(seed: int | None = None) -> prg.Keystream:
    """The audit's randomness: an AES-CTR keystream from a fresh CSPRNG seed, or - ``seed`` given,
    tests and benchmarks only - from SHA-256 of the seed."""
    if seed is None:
        key = prg.random_seed()
    else:
        key = hashlib.sha256(b"secureagg canary audit seed " + str(int(seed)).encode()).digest()
    return prg.Keystream(key, label=labels.CANARY_AUDIT)


def default_choices(canaries: int) -> tuple[tuple[int, int], ...]:
    """The ``(k+, k-)`` pairs tried by default: ``m/20``, ``m/10`` and ``m/4`` on each side."""
    ks = sorted({max(1, canaries // 20), max(1, canaries // 10), max(1, canaries // 4)})
    return tuple((k, k) for k in ks if 2 * k <= canaries)


Score = Callable[[Any, npt.NDArray[np.float32], npt.NDArray[np.int64]], npt.ArrayLike]
MakeCanaries = Callable[
    [prg.Keystream, int], tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
]


def canary_audit(
    build_run: Callable[[CanaryPlacement], AuditableRun],
    score: Score,
    *,
    canaries: int,
    input_shape: Sequence[int] = (),
    num_classes: int = 0,
    client: int = 0,
    seed: int | None = None,
    choices: Sequence[tuple[int, int]] | None = None,
    confidence: float = 0.95,
    delta: float | None = None,
    relative: bool = True,
    value_range: tuple[float, float] = (0.0, 1.0),
    make_canaries: MakeCanaries | None = None,
) -> CanaryAudit:
    """Audit the run that ``build_run`` makes: an ε lower bound from one training run.

    ``build_run(placement)`` returns a fresh :class:`~secureagg.fl.FederatedRun` (not started)
    whose client ``placement.client`` trains on its own data plus ``placement.inputs`` /
    ``placement.labels``. ``score(model, inputs, labels)`` returns one number per canary, higher
    for "trained on" (e.g. ``logit_margins`` of the model's logits). The canaries are
    :func:`random_canaries` of ``input_shape`` and ``num_classes`` (``value_range``), or
    ``make_canaries(rng, canaries)``. ``choices`` are the ``(k+, k-)`` pairs tried (default
    :func:`default_choices`; union bound over them). ``delta`` defaults to the run's own δ (0
    without DP). ``seed`` makes the canaries and inclusion bits reproducible (tests and
    benchmarks; it warns). See the module docstring for the method and what the bound means.
    """
    problems = _audit_problems(
        canaries=canaries, input_shape=input_shape, num_classes=num_classes, client=client,
        seed=seed, confidence=confidence, delta=delta, make_canaries=make_canaries,
    )
    raw: tuple[Any, ...] = ()
    if choices is not None:
        raw = tuple(tuple(c) if isinstance(c, tuple | list) else c for c in choices)
        problems += _choice_problems(raw, canaries)
    elif is_int(canaries) and canaries >= 2:
        raw = default_choices(canaries)
    if problems:
        raise ConfigurationError(problems)
    picked = tuple((int(k_plus), int(k_minus)) for k_plus, k_minus in raw)
    if seed is not None:
        warnings.warn(
            "seeded canary audit: the canaries and their inclusion bits are reproducible from "
            "the seed; use seed= only for tests and benchmarks",
            SeededRunWarning,
            stacklevel=2,
        )
    rng = canary_stream(seed)
    if make_canaries is not None:
        inputs, labels = make_canaries(rng, canaries)
    else:
        inputs, labels = random_canaries(
            rng, canaries, input_shape=input_shape, num_classes=num_classes,
            value_range=value_range,
        )
    inputs, labels = _checked_canaries(inputs, labels, canaries)
    included = (rng.words(canaries, 8) & 1).astype(bool)

    placement = CanaryPlacement(client, inputs[included], labels[included])
    run = build_run(placement)
    clients: Any = getattr(run, "num_clients", None)
    if is_int(clients) and client >= clients:
        raise ConfigurationError(
            f"the canaries are for client {client}, but the run has {clients} clients"
        )
    if any(entry.get("status") == "completed" for entry in getattr(run, "history", [])):
        raise ConfigurationError(
            "build_run returned a run that has already trained (resumed?): the audit needs a "
            "fresh run, whose initial model has never seen a canary"
        )
    start = time.perf_counter()
    before = _scores(score, run.model, inputs, labels) if relative else 0.0
    run.run()
    scores = _scores(score, run.model, inputs, labels) - before
    seconds = time.perf_counter() - start

    claimed, run_delta, source, settings = _claim(run, client)
    bound_delta = float(delta) if delta is not None else run_delta
    best = best_guesses(scores, included, picked, confidence=confidence, delta=bound_delta)
    history = list(getattr(run, "history", []))
    done = [e for e in history if e.get("status") == "completed"]
    return CanaryAudit(
        claimed_epsilon=claimed,
        epsilon_lower_bound=best.epsilon_lower_bound,
        confidence=float(confidence),
        delta=bound_delta,
        canaries=canaries,
        included=placement.count,
        guesses=best.guesses,
        correct=best.correct,
        k_plus=best.k_plus,
        k_minus=best.k_minus,
        choices=picked,
        client=client,
        seconds=seconds,
        claim_source=source,
        dp_settings=settings,
        run_configuration=_configuration(run),
        final_metrics=dict(done[-1]["metrics"]) if done and done[-1].get("metrics") else None,
        rounds_completed=len(done),
        seeded=seed is not None,
        run_seeded=bool(getattr(run, "seeded", False)),
    )


def _audit_problems(
    *,
    canaries: int,
    input_shape: Sequence[int],
    num_classes: int,
    client: int,
    seed: int | None,
    confidence: float,
    delta: float | None,
    make_canaries: MakeCanaries | None,
) -> list[str]:
    out = []
    if not (is_int(canaries) and canaries >= 2):
        out.append(f"canaries must be an integer >= 2, got {canaries!r}")
    if make_canaries is None:
        if not (is_int(num_classes) and num_classes >= 2):
            out.append(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if not (len(input_shape) >= 1 and all(is_int(s) and s >= 1 for s in input_shape)):
            out.append(f"input_shape must be positive integers, got {tuple(input_shape)!r}")
    if not (is_int(client) and client >= 0):
        out.append(f"client must be an integer >= 0, got {client!r}")
    if seed is not None and not (is_int(seed) and seed >= 0):
        out.append(f"seed must be None or an integer >= 0, got {seed!r}")
    if not (is_real(confidence) and 0.0 < confidence < 1.0):
        out.append(f"confidence must be in (0, 1), got {confidence!r}")
    if delta is not None and not (is_real(delta) and 0.0 <= delta < 1.0):
        out.append(f"delta must be None or in [0, 1), got {delta!r}")
    return out


def _choice_problems(picked: tuple[Any, ...], canaries: int) -> list[str]:
    limit = canaries if is_int(canaries) else None

    def fits(choice: Any) -> bool:
        if not (isinstance(choice, tuple) and len(choice) == 2):
            return False
        k_plus, k_minus = choice
        return (
            is_int(k_plus) and is_int(k_minus) and k_plus >= 0 and k_minus >= 0
            and k_plus + k_minus > 0 and (limit is None or k_plus + k_minus <= limit)
        )

    if picked and all(fits(c) for c in picked):
        return []
    return [
        f"choices must be (k_plus, k_minus) pairs of integers >= 0 with 0 < k_plus + k_minus "
        f"<= canaries = {canaries!r}, got {picked!r}"
    ]


def _checked_canaries(
    inputs: Any, labels: Any, count: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    x = np.asarray(inputs, dtype=np.float32)
    y = np.asarray(labels)
    if x.ndim < 1 or x.shape[0] != count or y.shape != (count,) or y.dtype.kind not in "iu":
        raise InvalidInputError(
            f"the canaries must be {count} inputs and {count} integer labels, got inputs of "
            f"shape {x.shape} and labels of shape {y.shape} ({y.dtype})"
        )
    if not np.all(np.isfinite(x)):
        raise InvalidInputError("the canary inputs hold NaN or Inf")
    return x, y.astype(np.int64)


def _scores(
    score: Score, model: Any, inputs: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    out = np.asarray(score(model, inputs, labels), dtype=np.float64).reshape(-1)
    if out.shape != (labels.size,) or not np.all(np.isfinite(out)):
        raise InvalidInputError(
            f"score must return {labels.size} finite numbers (one per canary), got shape "
            f"{out.shape}" + ("" if np.all(np.isfinite(out)) else " with NaN/Inf")
        )
    return out


def _claim(run: AuditableRun, client: int) -> tuple[float, float, str, Mapping[str, Any] | None]:
    """``(claimed ε, δ, source, DP settings)`` from the run's own privacy ledger."""
    privacy = getattr(run, "privacy", None)
    if privacy is None:
        return math.inf, 0.0, "no differential privacy in the run: no claim", None
    ledger = privacy.ledger()
    settings = dict(ledger.get("settings") or {})
    delta = float(settings.get("delta", 0.0))
    for level, scope, party in (("sample_level", "sample", client), ("user_level", "user", None)):
        report = ledger.get(level)
        if not report:
            continue
        for stream in report.get("streams", []):
            if stream.get("scope") == scope and stream.get("party") == party:
                eps = stream.get("epsilon")
                value = math.inf if eps is None else float(eps)
                where = (
                    f"sample-level ε of client {client} (DP-SGD) in the run's privacy ledger"
                    if scope == "sample"
                    else "user-level ε of the released sums in the run's privacy ledger (no "
                    "DP-SGD: it covers every record of every client)"
                )
                return value, delta, where, settings
        if scope == "sample":  # DP-SGD on, but the canary client never trained
            return 0.0, delta, f"client {client} never trained: none of its records was used", (
                settings
            )
    return math.inf, delta, "the run's ledger holds no ε for these records", settings


def _configuration(run: AuditableRun) -> dict[str, Any]:
    config = getattr(run, "config", None)
    if not isinstance(config, Mapping):
        return {}
    keys = ("protocol", "rounds", "num_clients", "clients_per_round", "clip", "weighting",
            "server_lr", "seeded")
    return {k: config.get(k) for k in keys if k in config}
