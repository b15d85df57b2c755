"""The attack harness: the AUC is right, the label-leakage attacks work on a real split model
(so that the protection tests have teeth), and the inversion probe tells leakage from noise."""

from __future__ import annotations

import json

import numpy as np
import pytest

from secureagg.errors import InvalidInputError, NonFiniteInputError
from secureagg.split.attacks import (
    AttackResult,
    cosine_attack,
    inversion_probe,
    norm_attack,
    roc_auc,
)

torch = pytest.importorskip("torch")
nn = torch.nn

POSITIVE_RATE = 0.1
FEATURES = 20


def imbalanced_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian inputs; the top 10% of a random linear score are the positives."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    score = x @ rng.normal(size=FEATURES)
    y = (score > np.quantile(score, 1.0 - POSITIVE_RATE)).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y)


def train_split(
    protect: object = None, *, steps: int = 20, batch: int = 128, seed: int = 0, lr: float = 0.1
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Vanilla split training written out by hand: client 20->32 ReLU | server 32->16->1.

    Returns every cut-layer gradient the client received (after ``protect``, if given), the
    matching labels, and the model's test accuracy / ROC AUC / first and last loss.
    """
    torch.manual_seed(seed)
    x, y = imbalanced_task(steps * batch + 2000, seed)
    client = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU())
    server = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1))
    client_opt = torch.optim.SGD(client.parameters(), lr=lr)
    server_opt = torch.optim.SGD(server.parameters(), lr=lr)
    grads, labels, losses = [], [], []
    for step in range(steps):
        xb, yb = x[step * batch : (step + 1) * batch], y[step * batch : (step + 1) * batch]
        smashed = client(xb)
        cut = smashed.detach().requires_grad_(True)  # what crosses the wire
        loss = nn.functional.binary_cross_entropy_with_logits(server(cut).squeeze(1), yb)
        client_opt.zero_grad()
        server_opt.zero_grad()
        loss.backward()
        server_opt.step()
        sent = cut.grad if protect is None else protect(cut.grad, yb)  # type: ignore[operator]
        assert sent.shape == cut.grad.shape
        grads.append(sent.detach().numpy().astype(np.float64))
        labels.append(yb.numpy())
        smashed.backward(sent)
        client_opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        logits = server(client(x[-2000:])).squeeze(1)
    test_y = y[-2000:].numpy()
    metrics = {
        "accuracy": float(((logits > 0).numpy() == (test_y == 1)).mean()),
        "test_auc": roc_auc(logits.numpy(), test_y),
        "first_loss": float(np.mean(losses[:5])),
        "last_loss": float(np.mean(losses[-5:])),
    }
    return np.concatenate(grads), np.concatenate(labels), metrics


@pytest.fixture(scope="module")
def clean_run() -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    return train_split()


# ----------------------------------------------------------------------------------- the AUC


def test_auc_known_values() -> None:
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert roc_auc([3.0, 3.0, 3.0, 3.0], [0, 1, 0, 1]) == 0.5
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    # one tie between a positive and a negative counts one half: (1 + 0.5 + 1 + 1) / 4
    assert roc_auc([0.1, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == 0.875


def test_auc_of_independent_scores_is_near_half() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=20000)
    labels = (rng.random(20000) < 0.1).astype(int)
    assert abs(roc_auc(scores, labels) - 0.5) < 0.02  # sd ≈ 0.0048


def test_auc_flips_with_the_score() -> None:
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 5, size=300).astype(float)  # many ties
    labels = (rng.random(300) < 0.3).astype(int)
    assert roc_auc(scores, labels) + roc_auc(-scores, labels) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_auc_matches_sklearn(ties: bool) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(2, 400))
        labels = (rng.random(n) < rng.uniform(0.05, 0.95)).astype(int)
        labels[0], labels[1] = 0, 1
        scores = rng.integers(0, 6, size=n).astype(float) if ties else rng.normal(size=n)
        scores += labels * rng.uniform(0, 2)
        assert roc_auc(scores, labels) == pytest.approx(
            metrics.roc_auc_score(labels, scores), abs=1e-12
        )


def test_auc_refuses_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="both classes"):
        roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(InvalidInputError, match="binary"):
        roc_auc([0.1, 0.2], [0, 2])
    with pytest.raises(InvalidInputError, match="one 0/1 label per example"):
        roc_auc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(NonFiniteInputError):
        roc_auc([0.1, float("nan")], [0, 1])


# ------------------------------------------------------------------------ the label attacks


def test_attacks_recover_labels_from_clean_gradients(clean_run: tuple) -> None:
    grads, labels, _ = clean_run
    assert labels.mean() == pytest.approx(POSITIVE_RATE, abs=0.02)
    norm = norm_attack(grads, labels)
    cosine = cosine_attack(grads, labels)
    assert norm.auc > 0.9, norm
    assert cosine.auc > 0.9, cosine  # no label known: cluster axis + class imbalance
    assert norm.num_examples == cosine.num_examples == grads.shape[0]
    assert norm.num_positive == int(labels.sum())
    known = cosine_attack(grads[:128], labels[:128], reference=int(np.flatnonzero(labels)[0]))
    assert known.auc > 0.9
    assert known.num_examples == 127  # the reference example is left out


def test_attacks_fail_on_label_independent_gradients() -> None:
    rng = np.random.default_rng(4)
    grads = rng.normal(size=(3000, 32))
    labels = (rng.random(3000) < POSITIVE_RATE).astype(int)
    assert norm_attack(grads, labels).auc_either_orientation < 0.56
    assert cosine_attack(grads, labels).auc_either_orientation < 0.56


def test_cosine_attack_orients_by_the_minority_and_by_a_reference() -> None:
    # positives (rare) point one way, negatives the other; equal norms defeat the norm attack
    rng = np.random.default_rng(5)
    labels = (np.arange(400) % 10 == 0).astype(int)
    direction = rng.normal(size=16)
    grads = np.where(labels[:, None] == 1, 1.0, -1.0) * direction + 0.3 * rng.normal(size=(400, 16))
    grads /= np.linalg.norm(grads, axis=1, keepdims=True)
    assert cosine_attack(grads, labels).auc > 0.99
    assert cosine_attack(grads, labels, reference=direction).auc > 0.99
    assert cosine_attack(grads, labels, reference=-direction).auc < 0.01
    assert cosine_attack(grads, labels, reference=-direction).auc_either_orientation > 0.99
    assert norm_attack(grads, labels).auc_either_orientation < 0.6
    with pytest.raises(InvalidInputError, match="negative"):
        cosine_attack(grads, labels, reference=1)
    with pytest.raises(InvalidInputError, match="outside"):
        cosine_attack(grads, labels, reference=400)
    with pytest.raises(InvalidInputError, match="values"):
        cosine_attack(grads, labels, reference=np.ones(3))


def test_attacks_accept_tensors_and_report_json(clean_run: tuple) -> None:
    grads, labels, _ = clean_run
    from_tensor = norm_attack(torch.from_numpy(grads).float(), torch.from_numpy(labels))
    assert from_tensor.auc == pytest.approx(norm_attack(grads, labels).auc, abs=1e-6)
    as_dict = json.loads(json.dumps(from_tensor.to_dict()))
    assert as_dict["attack"] == "norm"
    assert as_dict["auc"] == pytest.approx(from_tensor.auc)
    assert isinstance(from_tensor, AttackResult)


def test_attacks_refuse_bad_gradients() -> None:
    with pytest.raises(NonFiniteInputError):
        norm_attack(np.array([[1.0, np.inf], [0.0, 1.0]]), [0, 1])
    with pytest.raises(InvalidInputError, match="shape"):
        cosine_attack(np.array([1.0, 2.0]), [0, 1])
    with pytest.raises(InvalidInputError, match="one 0/1 label"):
        norm_attack(np.ones((3, 2)), [0, 1])


# -------------------------------------------------------------------------- inversion probe


def _inputs(n: int = 1200, dim: int = 16, seed: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim))  # correlated "pixels" with unequal variances
    return rng.normal(size=(n, dim)) @ mixing + rng.normal(size=dim)


def test_inversion_recovers_inputs_from_a_linear_client() -> None:
    x = _inputs()
    rng = np.random.default_rng(7)
    for acts in (x.copy(), x @ rng.normal(size=(16, 32)) + 0.5):
        result = inversion_probe(acts, x)
        assert result.mse_ratio < 0.01, result
        assert result.feature_correlation > 0.99
        assert result.num_test == 300
        assert result.num_train == 900


def test_inversion_from_noise_is_no_better_than_the_mean() -> None:
    x = _inputs()
    noise = np.random.default_rng(8).normal(size=(1200, 32))
    result = inversion_probe(noise, x)
    assert 0.95 < result.mse_ratio < 1.1, result
    assert abs(result.feature_correlation) < 0.15


def test_inversion_through_a_relu_client_is_partial() -> None:
    x = _inputs()
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(16, 8), nn.ReLU())  # narrower than the input: lossy
    with torch.no_grad():
        acts = layer(torch.from_numpy(x).float())
    result = inversion_probe(acts, torch.from_numpy(x))
    assert 0.05 < result.mse_ratio < 0.95, result


def test_inversion_with_a_separate_test_set() -> None:
    x = _inputs()
    result = inversion_probe(x[:800], x[:800], test_activations=x[800:], test_inputs=x[800:])
    assert result.num_train == 800
    assert result.num_test == 400
    assert result.mse_ratio < 1e-3
    assert json.loads(json.dumps(result.to_dict()))["decoder"] == "ridge"


def test_inversion_refuses_bad_input() -> None:
    x = _inputs(n=50)
    with pytest.raises(InvalidInputError, match="one pair per example"):
        inversion_probe(x, x[:40])
    with pytest.raises(InvalidInputError, match="both"):
        inversion_probe(x, x, test_activations=x)
    with pytest.raises(InvalidInputError, match="holdout_every"):
        inversion_probe(x, x, holdout_every=1)
    with pytest.raises(InvalidInputError, match="ridge"):
        inversion_probe(x, x, ridge=-1.0)
    with pytest.raises(NonFiniteInputError):
        inversion_probe(np.full((50, 3), np.nan), x)
