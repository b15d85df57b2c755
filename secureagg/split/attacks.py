"""Attacks on split learning, so that protections are measured, not claimed.

Threat model. The party *without* the labels (the client in the vanilla topology) is honest but
curious: it follows the protocol and looks at what it receives - the per-example gradient of the
loss with respect to its cut-layer activations. Li et al. 2022 ("Label Leakage and Protection in
Two-party Split Learning", ICLR, arXiv 2102.08504) show that on an imbalanced binary task those
gradients give the labels away:

* :func:`norm_attack` - the score is the per-example gradient L2 norm. For a sigmoid output the
  gradient is ``(p - y) * dz/da``; the model is confident about the frequent negatives
  (``|p - y|`` small) and not about the rare positives (``|p - y|`` large), so large norms mean
  positives. The attacker knows the orientation (positives are the rare class, their norms are
  larger), so :attr:`AttackResult.auc` uses "larger norm = positive" as is.
* :func:`cosine_attack` - the score is the cosine similarity with a reference direction: the sign
  of ``p - y`` flips between the classes, so the gradients of the two classes point in opposite
  directions. By default no label is known to the attacker: the reference is the leading singular
  vector of the unit-normalised gradients (the axis along which the two clusters lie, found
  without labels), oriented so that the *smaller* side is called positive (class imbalance is
  the only knowledge used). With ``reference=i`` the attacker knows that example ``i`` is a
  positive (the paper's variant) and that example is left out of the AUC.

Every result also reports :attr:`AttackResult.auc_either_orientation` = ``max(auc, 1 - auc)``:
an attacker who may learn the orientation some other way (a few known labels). Protections are
judged on this stronger number, so a defence cannot pass by merely flipping the orientation.

The AUC is computed here (:func:`roc_auc`, the Mann-Whitney U statistic with average ranks for
ties, so tied scores count one half); nothing in :mod:`secureagg` depends on scikit-learn.

:func:`inversion_probe` is the model-inversion probe: an attacker holding an auxiliary set of
(activation, input) pairs (for instance a server that knows public data of the same kind) fits a
decoder from activations back to inputs - closed-form ridge regression on standardised
activations, the ridge strength chosen on a validation part of the auxiliary pairs only - and is
scored on held-out pairs. :attr:`InversionResult.mse_ratio` is its mean squared error divided by
that of predicting the mean auxiliary input: ``0`` is perfect reconstruction, ``1`` means the
activations taught the attacker nothing (a linear decoder is a lower bound on what a stronger
attacker recovers: a small ratio proves leakage, a ratio near 1 does not prove safety).

Inputs are numpy arrays or torch tensors of shape ``[batch, ...]`` (torch is not imported here).

>>> import numpy as np
>>> grads = np.array([[0.1, 0.0], [0.2, 0.1], [-3.0, -1.0], [0.1, 0.1]])
>>> labels = np.array([0, 0, 1, 0])
>>> norm_attack(grads, labels).auc, cosine_attack(grads, labels).auc
(1.0, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.errors import InvalidInputError, NonFiniteInputError

__all__ = [
    "AttackResult",
    "InversionResult",
    "cosine_attack",
    "inversion_probe",
    "norm_attack",
    "roc_auc",
]

FloatArray = npt.NDArray[np.float64]

_RIDGE_GRID = tuple(10.0**k for k in range(-6, 4))


@dataclass(frozen=True)
class AttackResult:
    """The outcome of one label-leakage attack on one set of cut-layer gradients.

    ``auc`` uses the attacker's stated orientation (``orientation``);
    ``auc_either_orientation`` is ``max(auc, 1 - auc)``, the number protections are judged on.
    """

    attack: str
    auc: float
    auc_either_orientation: float
    num_examples: int
    num_positive: int
    orientation: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


@dataclass(frozen=True)
class InversionResult:
    """The outcome of the model-inversion probe on held-out (activation, input) pairs.

    ``mse`` and ``baseline_mse`` are mean squared errors per input feature (input units squared);
    ``mse_ratio = mse / baseline_mse`` (0 = perfect, 1 = no better than the mean input);
    ``feature_correlation`` is the mean over input features of the Pearson correlation between
    reconstruction and truth across held-out examples (features constant on the held-out set are
    skipped; 0 when none is left).
    """

    mse: float
    baseline_mse: float
    mse_ratio: float
    feature_correlation: float
    ridge: float
    num_train: int
    num_test: int
    decoder: str = "ridge"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


# ------------------------------------------------------------------------------------ helpers


def _as_array(values: object, what: str) -> FloatArray:
    """``values`` (numpy array or torch tensor) as a float64 numpy array; NaN/Inf refused."""
    detach = getattr(values, "detach", None)
    if callable(detach):  # a torch tensor: no torch import needed
        values = detach().cpu().double().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} must be a numeric array or tensor ({exc})") from None
    if not np.all(np.isfinite(array)):
        raise NonFiniteInputError(f"{what} contains NaN or Inf; pass finite values")
    return array


def _flat_batch(values: object, what: str) -> FloatArray:
    array = _as_array(values, what)
    if array.ndim < 2 or array.shape[0] == 0:
        raise InvalidInputError(
            f"{what} must have shape [batch, ...] with batch >= 1 and at least one feature, "
            f"got shape {array.shape}"
        )
    return array.reshape(array.shape[0], -1)


def _binary_labels(labels: object, batch: int) -> npt.NDArray[np.bool_]:
    array = _as_array(labels, "labels").reshape(-1)
    if array.shape[0] != batch:
        raise InvalidInputError(
            f"labels has {array.shape[0]} entries but there are {batch} examples; "
            "pass one 0/1 label per example"
        )
    if not np.all((array == 0) | (array == 1)):
        raise InvalidInputError("labels must be binary (0 or 1)")
    positive: npt.NDArray[np.bool_] = np.equal(array, 1.0)
    return positive


def _average_ranks(scores: FloatArray) -> FloatArray:
    """Ranks 1..n of ``scores``; tied scores all get the mean of their ranks."""
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    # start index of each run of equal values, in sorted order
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    ends = np.concatenate((starts[1:], [ordered.size]))
    run_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(scores.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def roc_auc(scores: object, labels: object) -> float:
    """Area under the ROC curve of ``scores`` for predicting ``labels == 1``.

    Computed as the Mann-Whitney U statistic: the probability that a random positive scores
    higher than a random negative, ties counting one half. Needs at least one example of each
    class.

    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    """
    flat = _as_array(scores, "scores").reshape(-1)
    positive = _binary_labels(labels, flat.shape[0])
    num_pos = int(positive.sum())
    num_neg = flat.shape[0] - num_pos
    if num_pos == 0 or num_neg == 0:
        raise InvalidInputError(
            f"the AUC needs both classes; got {num_pos} positives and {num_neg} negatives"
        )
    ranks = _average_ranks(flat)
    u_statistic = float(ranks[positive].sum()) - num_pos * (num_pos + 1) / 2.0
    return u_statistic / (num_pos * num_neg)


def _result(
    attack: str, scores: FloatArray, positive: npt.NDArray[np.bool_], how: str
) -> AttackResult:
    auc = roc_auc(scores, positive.astype(np.float64))
    return AttackResult(
        attack=attack,
        auc=auc,
        auc_either_orientation=max(auc, 1.0 - auc),
        num_examples=int(scores.size),
        num_positive=int(positive.sum()),
        orientation=how,
    )


# ------------------------------------------------------------------------------ label leakage


def norm_attack(grads: object, labels: object) -> AttackResult:
    """Li et al.'s norm attack: score each example by the L2 norm of its cut-layer gradient.

    ``grads`` has shape ``[batch, ...]`` (one gradient per example, as the non-label party
    receives it); ``labels`` are the true 0/1 labels, used only to score the attack.
    """
    flat = _flat_batch(grads, "grads")
    positive = _binary_labels(labels, flat.shape[0])
    scores = np.linalg.norm(flat, axis=1)
    return _result("norm", scores, positive, "larger gradient norm = positive (rare class)")


def cosine_attack(
    grads: object, labels: object, *, reference: int | object | None = None
) -> AttackResult:
    """Li et al.'s cosine attack: score each example by its gradient's cosine with a reference.

    ``reference=None`` (default, no label known): the leading right singular vector of the
    unit-normalised gradients, oriented so that the minority side (fewer examples with positive
    cosine) is called positive. ``reference=i`` (an ``int``): the attacker knows example ``i`` is
    positive; the reference is its gradient and example ``i`` is excluded from the AUC.
    Otherwise ``reference`` is a gradient-shaped array or tensor used as the positive direction.
    Zero gradients score 0.
    """
    flat = _flat_batch(grads, "grads")
    positive = _binary_labels(labels, flat.shape[0])
    norms = np.linalg.norm(flat, axis=1)
    unit = flat / np.where(norms > 0, norms, 1.0)[:, None]
    if reference is None:
        _, _, vt = np.linalg.svd(unit, full_matrices=False)
        direction = vt[0]
        scores = unit @ direction
        if np.count_nonzero(scores > 0) > np.count_nonzero(scores < 0):
            scores = -scores
        return _result(
            "cosine",
            scores,
            positive,
            "cluster axis (top singular vector), minority side = positive",
        )
    if isinstance(reference, int | np.integer) and not isinstance(reference, bool):
        index = int(reference)
        if not -flat.shape[0] <= index < flat.shape[0]:
            raise InvalidInputError(
                f"reference index {index} is outside the batch of {flat.shape[0]} examples"
            )
        index %= flat.shape[0]
        if not positive[index]:
            raise InvalidInputError(
                f"reference example {index} is a negative; the attack assumes a known positive"
            )
        scores = unit @ unit[index]
        keep = np.arange(flat.shape[0]) != index
        return _result(
            "cosine", scores[keep], positive[keep], f"cosine with known positive example {index}"
        )
    direction = _as_array(reference, "reference").reshape(-1)
    if direction.size != flat.shape[1]:
        raise InvalidInputError(
            f"reference has {direction.size} values but each gradient has {flat.shape[1]}"
        )
    length = float(np.linalg.norm(direction))
    if length == 0:
        raise InvalidInputError("reference must be a non-zero direction")
    scores = unit @ (direction / length)
    return _result("cosine", scores, positive, "cosine with a given positive direction")


# ------------------------------------------------------------------------------ inversion


def _standardise(x: FloatArray, mean: FloatArray, scale: FloatArray) -> FloatArray:
    return np.concatenate(((x - mean) / scale, np.ones((x.shape[0], 1))), axis=1)


def _ridge_fit(x: FloatArray, y: FloatArray, ridge: float) -> FloatArray:
    """Weights ``W`` minimising ``|x W - y|² + ridge * n * |W[:-1]|²`` (bias not penalised)."""
    gram = x.T @ x
    penalty = np.full(x.shape[1], ridge * x.shape[0])
    penalty[-1] = 0.0
    gram[np.diag_indices_from(gram)] += penalty
    solution = np.linalg.lstsq(gram, x.T @ y, rcond=None)[0]
    return np.asarray(solution, dtype=np.float64)


def _fit_decoder(
    acts: FloatArray, inputs: FloatArray, ridge: float | None
) -> tuple[FloatArray, FloatArray, FloatArray, float]:
    mean = acts.mean(axis=0)
    scale = acts.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    x = _standardise(acts, mean, scale)
    if ridge is None:  # choose on a validation part of the auxiliary pairs (every 5th row)
        val = np.arange(x.shape[0]) % 5 == 0
        if val.sum() < 2 or (~val).sum() < 2:
            ridge = 1e-3
        else:
            errors = [
                float(np.mean((x[val] @ _ridge_fit(x[~val], inputs[~val], lam) - inputs[val]) ** 2))
                for lam in _RIDGE_GRID
            ]
            ridge = _RIDGE_GRID[int(np.argmin(errors))]
    return _ridge_fit(x, inputs, ridge), mean, scale, ridge


def inversion_probe(
    activations: object,
    inputs: object,
    *,
    test_activations: object | None = None,
    test_inputs: object | None = None,
    holdout_every: int = 4,
    ridge: float | None = None,
) -> InversionResult:
    """Fit a ridge decoder activations -> inputs on auxiliary pairs; score it on held-out pairs.

    Without ``test_activations``/``test_inputs``, every ``holdout_every``-th pair of the auxiliary
    set (rows ``0, k, 2k, ...``) is held out and the decoder is fitted on the rest (deterministic:
    shuffle the pairs first if their order matters). ``ridge=None`` picks the ridge strength (a
    multiple of the number of training pairs, activations standardised) from a grid on a
    validation part of the *training* pairs only. The baseline predicts the mean training input.
    """
    acts = _flat_batch(activations, "activations")
    xs = _flat_batch(inputs, "inputs")
    if acts.shape[0] != xs.shape[0]:
        raise InvalidInputError(
            f"{acts.shape[0]} activations but {xs.shape[0]} inputs; pass one pair per example"
        )
    if (test_activations is None) != (test_inputs is None):
        raise InvalidInputError("pass both test_activations and test_inputs, or neither")
    if ridge is not None and not (math.isfinite(ridge) and ridge >= 0):
        raise InvalidInputError(f"ridge must be a finite number >= 0 or None, got {ridge!r}")
    if test_activations is not None:
        train_a, train_x = acts, xs
        test_a = _flat_batch(test_activations, "test_activations")
        test_x = _flat_batch(test_inputs, "test_inputs")
        if test_a.shape[0] != test_x.shape[0] or test_a.shape[1] != acts.shape[1]:
            raise InvalidInputError(
                f"test pairs must match: got activations {test_a.shape}, inputs {test_x.shape}"
            )
        if test_x.shape[1] != xs.shape[1]:
            raise InvalidInputError("test_inputs must have the same per-example shape as inputs")
    else:
        if (
            isinstance(holdout_every, bool)
            or not isinstance(holdout_every, int)
            or holdout_every < 2
        ):
            raise InvalidInputError(f"holdout_every must be an integer >= 2, got {holdout_every!r}")
        held = np.arange(acts.shape[0]) % holdout_every == 0
        train_a, train_x, test_a, test_x = acts[~held], xs[~held], acts[held], xs[held]
    if train_a.shape[0] < 2 or test_a.shape[0] < 1:
        raise InvalidInputError(
            f"need at least 2 training and 1 test pair, got {train_a.shape[0]} and "
            f"{test_a.shape[0]}; pass more auxiliary pairs"
        )
    weights, mean, scale, chosen = _fit_decoder(train_a, train_x, ridge)
    recon = _standardise(test_a, mean, scale) @ weights
    mse = float(np.mean((recon - test_x) ** 2))
    baseline = float(np.mean((train_x.mean(axis=0) - test_x) ** 2))
    ratio = mse / baseline if baseline > 0 else (0.0 if mse == 0 else math.inf)
    return InversionResult(
        mse=mse,
        baseline_mse=baseline,
        mse_ratio=ratio,
        feature_correlation=_feature_correlation(recon, test_x),
        ridge=float(chosen),
        num_train=int(train_a.shape[0]),
        num_test=int(test_a.shape[0]),
    )


def _feature_correlation(recon: FloatArray, truth: FloatArray) -> float:
    rc = recon - recon.mean(axis=0)
    tc = truth - truth.mean(axis=0)
    denom = np.sqrt((rc**2).sum(axis=0) * (tc**2).sum(axis=0))
    usable = denom > 1e-12
    if not usable.any():
        return 0.0
    return float(np.mean((rc * tc).sum(axis=0)[usable] / denom[usable]))
