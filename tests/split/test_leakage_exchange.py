"""Label leakage measured on the real exchange (SplitLearning + codec), not on a hand-made split.

An imbalanced binary task (about 10% positives); the attacks see exactly the gradients the
non-label party received. Without protection both attacks must succeed (AUC > 0.9: the test has
teeth); with Marvell noise applied by the label holder they must fail (AUC <= 0.6), in the
vanilla topology (server holds the labels) and in the U-shaped one (the client holds them, the
server receives the output gradients).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
from secureagg.demos.split_experiments import label_leakage
from secureagg.split.label_protection import MarvellNoise

pytestmark = pytest.mark.filterwarnings("ignore::secureagg.dp.SeededNoiseWarning")


def task(n: int = 2048, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    w = rng.normal(size=16)
    y = (x @ w / np.linalg.norm(w) > 1.28).astype(np.int64)  # about 10% positives
    return x, y


@pytest.mark.parametrize("topology", ["vanilla", "u-shaped"])
def test_attacks_succeed_without_and_fail_with_label_protection(topology: str) -> None:
    x, y = task()
    assert 0.05 < y.mean() < 0.15
    off = label_leakage(x, y, topology=topology, epochs=2, batch_size=64)
    assert off["norm_auc"] > 0.9 and off["cosine_auc"] > 0.9, off
    protect = MarvellNoise(power_scale=32.0, seed=b"leak", test_mode=True)
    on = label_leakage(x, y, topology=topology, label_protection=protect, epochs=2,
                       batch_size=64)
    assert on["norm_auc"] <= 0.6 and on["cosine_auc"] <= 0.6, on
