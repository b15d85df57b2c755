"""Label protection: measured by the attacks, unbiased, CSPRNG noise, seeds only in test mode.

The regression the issue asks for: on an imbalanced binary task (10% positives) the norm and
cosine attacks reach AUC > 0.9 without protection and <= 0.6 with Marvell noise, judged on the
stronger either-orientation AUC, while the model still trains.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from secureagg.dp.noise import SeededNoiseWarning
from secureagg.errors import ConfigurationError, InvalidInputError, NonFiniteInputError
from secureagg.split.attacks import cosine_attack, norm_attack
from secureagg.split.label_protection import MarvellNoise, MaxNormNoise, ProtectionReport
from tests.split.test_attacks import train_split

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.filterwarnings("ignore::secureagg.dp.noise.SeededNoiseWarning")

SEED = b"label-protection-test"


def marvell(power_scale: float = 16.0) -> MarvellNoise:
    return MarvellNoise(power_scale=power_scale, seed=SEED, test_mode=True)


@pytest.fixture(scope="module")
def clean() -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    return train_split()


def test_protection_off_leaks(clean: tuple) -> None:
    grads, labels, _ = clean
    assert norm_attack(grads, labels).auc > 0.9
    assert cosine_attack(grads, labels).auc > 0.9


@pytest.fixture(scope="module")
def protected() -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    return train_split(marvell())


def test_marvell_defeats_both_attacks(protected: tuple) -> None:
    grads, labels, _ = protected
    norm = norm_attack(grads, labels)
    cosine = cosine_attack(grads, labels)
    assert norm.auc_either_orientation <= 0.6, norm
    assert cosine.auc_either_orientation <= 0.6, cosine
    # the paper's attacker who knows one positive, per batch of 128
    for start in range(0, 1280, 128):
        batch, batch_labels = grads[start : start + 128], labels[start : start + 128]
        known = int(np.flatnonzero(batch_labels)[0])
        attack = cosine_attack(batch, batch_labels, reference=known)
        assert attack.auc_either_orientation <= 0.8, attack  # 13 positives: AUC sd ≈ 0.08
    pooled = [
        cosine_attack(grads[s : s + 128], labels[s : s + 128], reference=int(k)).auc
        for s in range(0, grads.shape[0], 128)
        for k in np.flatnonzero(labels[s : s + 128])[:1]
    ]
    assert abs(float(np.mean(pooled)) - 0.5) <= 0.1


def test_weak_marvell_leaks_more_than_strong(protected: tuple) -> None:
    weak_grads, labels, _ = train_split(marvell(power_scale=0.25))
    strong_grads, strong_labels, _ = protected
    assert np.array_equal(labels, strong_labels)
    weak = cosine_attack(weak_grads, labels).auc_either_orientation
    strong = cosine_attack(strong_grads, labels).auc_either_orientation
    assert weak > 0.75
    assert weak > strong + 0.15


def test_max_norm_defeats_the_norm_attack_only() -> None:
    grads, labels, _ = train_split(MaxNormNoise(seed=SEED, test_mode=True))
    assert norm_attack(grads, labels).auc_either_orientation <= 0.6
    assert cosine_attack(grads, labels).auc > 0.9  # the documented limitation


def test_training_still_works_with_marvell() -> None:
    # measured: off accuracy 0.986, test AUC 0.998; on 0.955, 0.980 (300 steps at lr 0.1:
    # 0.979 / 0.996 and 0.965 / 0.988)
    _, _, off = train_split(steps=150, lr=0.3)
    _, _, on = train_split(marvell(), steps=150, lr=0.3)
    assert off["test_auc"] > 0.98  # the task is learnable
    assert on["last_loss"] < 0.5 * on["first_loss"]
    assert on["test_auc"] > 0.95
    assert on["test_auc"] > off["test_auc"] - 0.05
    assert on["accuracy"] > 0.93  # "always negative" scores about 0.90


def test_noise_is_zero_mean_and_along_the_class_gap() -> None:
    rng = np.random.default_rng(0)
    labels = (np.arange(64) % 8 == 0).astype(np.float64)
    grads = rng.normal(size=(64, 10)) * 0.1 + np.outer(
        np.where(labels == 1, -1.0, 0.1), np.ones(10)
    )
    protect = marvell()
    draws = np.stack([protect(grads, labels) for _ in range(400)])
    noise = draws - grads
    spread = noise.std(axis=0)
    assert np.all(np.abs(noise.mean(axis=0)) <= 6 * spread / np.sqrt(400))
    report = protect.last_report
    assert report is not None
    assert report.noise_power > 10 * report.signal_power
    expected = np.mean(np.sum(noise**2, axis=2))
    assert expected == pytest.approx(report.noise_power, rel=0.1)
    # the noise goes where the classes differ: along the gap between the class means
    gap = grads[labels == 1].mean(axis=0) - grads[labels == 0].mean(axis=0)
    u = gap / np.linalg.norm(gap)
    along = np.mean((noise @ u) ** 2)
    across = np.mean(np.sum(noise**2, axis=2) - (noise @ u) ** 2) / 9
    assert along > 100 * across


def test_strength_parameter_orders_noise_and_kl() -> None:
    rng = np.random.default_rng(1)
    labels = (np.arange(128) % 10 == 0).astype(np.float64)
    grads = rng.normal(size=(128, 32)) * 0.05 + np.outer(1.0 - 2 * labels, np.ones(32)) * 0.1
    reports = []
    for scale in (1.0, 4.0, 16.0):
        protect = marvell(scale)
        protect(grads, labels)
        assert protect.last_report is not None
        reports.append(protect.last_report)
    powers = [r.noise_power for r in reports]
    kls = [r.sum_kl for r in reports]
    assert powers[0] < powers[1] < powers[2]
    assert kls[0] > kls[1] > kls[2]  # type: ignore[operator]


def test_max_norm_equalises_norms() -> None:
    rng = np.random.default_rng(2)
    grads = rng.normal(size=(50, 512)) * rng.uniform(0.01, 1.0, size=(50, 1))
    protect = MaxNormNoise(seed=SEED, test_mode=True)
    noisy = protect(grads, None)
    norms = np.linalg.norm(noisy, axis=1)
    target = np.linalg.norm(grads, axis=1).max()
    assert np.all(np.abs(norms / target - 1.0) < 0.15)  # sd of the ratio ≈ 0.03 at d = 512
    assert np.linalg.norm(grads, axis=1).std() / target > 0.2  # before: far from equal


def test_tensors_keep_type_shape_dtype() -> None:
    rng = np.random.default_rng(3)
    grads = torch.from_numpy(rng.normal(size=(16, 2, 3, 3)).astype(np.float32))
    labels = torch.tensor([1.0] * 3 + [0.0] * 13)
    for protect in (marvell(), MaxNormNoise(seed=SEED, test_mode=True)):
        out = protect(grads, labels)
        assert isinstance(out, torch.Tensor)
        assert out.shape == grads.shape
        assert out.dtype == torch.float32
        assert not out.requires_grad
        assert not torch.equal(out, grads)
    as_array = marvell()(grads.numpy(), labels.numpy())
    assert isinstance(as_array, np.ndarray)
    assert as_array.shape == (16, 2, 3, 3)
    assert as_array.dtype == np.float32


def test_seed_only_in_test_mode_and_reproducible() -> None:
    with pytest.raises(ConfigurationError, match="test_mode"):
        MarvellNoise(seed=SEED)
    with pytest.raises(ConfigurationError, match="test_mode"):
        MaxNormNoise(seed=SEED)
    with pytest.warns(SeededNoiseWarning):
        MarvellNoise(seed=SEED, test_mode=True)
    grads = np.random.default_rng(4).normal(size=(20, 8))
    labels = (np.arange(20) < 4).astype(int)
    assert np.array_equal(marvell()(grads, labels), marvell()(grads, labels))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unseeded protection does not warn
        fresh = MarvellNoise()
    assert not fresh.seeded
    torch.manual_seed(0)
    first = fresh(grads, labels)
    torch.manual_seed(0)
    assert not np.array_equal(first, fresh(grads, labels))  # not torch's generator
    report = marvell()
    report(grads, labels)
    assert report.last_report is not None and report.last_report.seeded
    assert fresh.last_report is not None and not fresh.last_report.seeded


def test_batch_without_a_class_reuses_the_last_plan() -> None:
    rng = np.random.default_rng(5)
    grads = rng.normal(size=(32, 8))
    negatives = np.zeros(32)
    mixed = (np.arange(32) < 4).astype(float)
    protect = marvell(4.0)
    protect(grads, negatives)  # nothing seen yet: isotropic, 4 * the largest squared norm
    first = protect.last_report
    assert first is not None and first.fallback and first.sum_kl is None
    assert first.noise_power == pytest.approx(4.0 * np.max(np.sum(grads**2, axis=1)))
    protect(grads, mixed)
    planned = protect.last_report
    assert planned is not None and not planned.fallback and planned.sum_kl is not None
    protect(grads, negatives)
    reused = protect.last_report
    assert reused is not None and reused.fallback and reused.sum_kl == planned.sum_kl
    assert json.loads(json.dumps(reused.to_dict()))["method"] == "marvell"
    assert isinstance(reused, ProtectionReport)


def test_bad_input_is_refused() -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ConfigurationError, match="power_scale"):
            MarvellNoise(power_scale=bad)
    protect = marvell()
    grads = np.ones((4, 3))
    with pytest.raises(NonFiniteInputError):
        protect(np.array([[np.nan, 1.0], [0.0, 1.0]]), [0, 1])
    with pytest.raises(InvalidInputError, match="one 0/1 label"):
        protect(grads, [0, 1])
    with pytest.raises(InvalidInputError, match="binary"):
        protect(grads, [0, 1, 2, 0])
    with pytest.raises(InvalidInputError, match="labels"):
        protect(grads, None)
    with pytest.raises(InvalidInputError, match="shape"):
        protect(np.ones(4), [0, 1, 0, 0])
