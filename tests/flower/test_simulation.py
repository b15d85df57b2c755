"""The same ServerApp/ClientApp pair (secure_app/) under Flower's simulation engine with Ray,
when Ray is installed (``pip install 'secureagg[simulation]'``; never in the default install)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray", reason="Flower's simulation engine needs Ray: secureagg[simulation]")

from flwr.simulation import run_simulation

sys.path.insert(0, str(Path(__file__).parent / "secure_app"))

import secure_app

pytestmark = pytest.mark.flower


def test_secagg_plus_under_the_ray_simulation_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 12
    monkeypatch.setitem(secure_app.DEFAULTS, "min-nodes", n)
    monkeypatch.setitem(secure_app.DEFAULTS, "rounds", 1)
    monkeypatch.setitem(secure_app.DEFAULTS, "options",
                        json.dumps({"clip": 1.0, "max_weight": n + 1}))
    secure_app.LAST_RESULT.clear()
    run_simulation(server_app=secure_app.server_app, client_app=secure_app.client_app,
                   num_supernodes=n,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    result = secure_app.LAST_RESULT
    (entry,) = result["rounds"]
    assert entry["status"] == "ok" and len(entry["survivors"]) == n
    parts = {int(k): v for k, v in result["partitions"].items()}
    p = np.array([parts[int(entry["nodes"][str(s)])] + 1.0 for s in entry["survivors"]])
    final = {k: np.array(v) for k, v in result["arrays"][-1]["arrays"].items()}
    np.testing.assert_allclose(final["b"], -float(p @ p) / 50 / p.sum(), atol=1e-5)
    np.testing.assert_allclose(final["w"], float(p @ p) / 100 / p.sum(), atol=1e-5)
