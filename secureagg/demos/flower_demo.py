"""``secureagg demo --engine flower``: the federated digits demo on real Flower processes.

It starts a Flower SuperLink and one SuperNode per client as real processes on 127.0.0.1
(:class:`~secureagg.flower.processes.Deployment`), each SuperNode configured with its own
partition of the data (``partition-id``), submits the demo's Flower app
(:mod:`secureagg.demos.flower_apps`) with ``flwr run``, prints each round as the ServerApp commits
it to the run directory, and stops every process it started when the run ends, fails, or is
interrupted (Ctrl-C). ``tls=True`` makes a throwaway CA and runs every link over TLS. Under
``--threat malicious`` each SuperNode gets an Ed25519 identity key file and the ServerApp the list
of their public keys (:mod:`secureagg.flower.identity`). An HE protocol adds one SuperNode whose
node config makes it the round's key holder.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from secureagg.audit.rundir import RunDirectory
from secureagg.demos.federated_task import DemoSettings

__all__ = ["run_flower_demo"]

HE_PROTOCOLS = ("ckks", "paillier")


def _history(run_dir: Path) -> list[dict[str, Any]]:
    try:
        doc = json.loads((run_dir / "history.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    rounds = doc.get("rounds") if isinstance(doc, dict) else None
    return rounds if isinstance(rounds, list) else []


def run_flower_demo(
    settings: DemoSettings,
    *,
    run_dir: Path,
    tls: bool,
    say: Callable[[str], None],
    round_line: Callable[[dict[str, Any], int], str],
    train_deadline: float = 300.0,
    stage_deadline: float = 60.0,
    timeout: float | None = None,
) -> list[dict[str, Any]]:
    """Run the demo on a local Flower deployment; return the run's history (one entry per
    round, as :class:`~secureagg.fl.FederatedRun` records it)."""
    from secureagg.demos.flower_apps import APP_DIR, settings_to_json
    from secureagg.flower.identity import write_identity_key
    from secureagg.flower.processes import Deployment, DeploymentError

    # absolute: the ServerApp that writes it runs in another process, in another directory
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    keys_dir = run_dir / "flower-keys"
    node_configs: list[dict[str, Any]] = [{} for _ in range(settings.clients)]
    run_config: dict[str, Any] = {
        "settings": settings_to_json(settings),
        "run-dir": str(run_dir),
        "train-deadline": float(train_deadline),
        "stage-deadline": float(stage_deadline),
    }
    if settings.threat == "malicious":
        keys_dir.mkdir(exist_ok=True)
        lines = []
        for i, cfg in enumerate(node_configs):
            path = keys_dir / f"node-{i}.pem"
            lines.append(write_identity_key(path).hex())
            cfg["secureagg-identity-key"] = str(path)
        allowed = RunDirectory(run_dir).write_bytes(
            "flower-admitted-keys.txt", ("\n".join(lines) + "\n").encode())
        run_config["identities"] = str(allowed)
    if settings.run_seed is not None:
        for cfg in node_configs:
            cfg["secureagg-allow-seeded"] = True
    if settings.protocol in HE_PROTOCOLS:
        node_configs.append({"secureagg-role": "key-holder"})
    started = time.perf_counter()
    say(f"  starting a Flower SuperLink and {len(node_configs)} SuperNodes on 127.0.0.1"
        + (" over TLS (throwaway CA)" if tls else "") + " ...")
    deployment = Deployment(len(node_configs), node_configs=node_configs, tls=tls,
                            log_dir=run_dir / "flower-logs")
    printed = 0
    outcome: Any = None
    error: BaseException | None = None
    with deployment:
        say(f"  ready in {time.perf_counter() - started:.1f} s (SuperLink {deployment.address}); "
            f"submitting the run with flwr run")

        def submit() -> None:
            nonlocal outcome, error
            try:
                limit = 120.0 + settings.rounds * (train_deadline + 6 * stage_deadline)
                outcome = deployment.run(APP_DIR, run_config=run_config, timeout=timeout or limit)
            except BaseException as exc:  # reported by the main thread
                error = exc

        worker = threading.Thread(target=submit, name="flwr-run", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(1.0)
            history = _history(run_dir)
            for entry in history[printed:]:
                say(round_line(entry, settings.rounds))
            printed = max(printed, len(history))
    if error is not None:
        raise error
    history = _history(run_dir)
    for entry in history[printed:]:
        say(round_line(entry, settings.rounds))
    if outcome is None or not outcome.ok:
        detail = "no outcome" if outcome is None else (
            f"{outcome.status}: {outcome.details}\n{outcome.log[-3000:]}")
        raise DeploymentError(f"the Flower run did not complete ({detail})")
    say(f"  all Flower processes stopped; the run took {time.perf_counter() - started:.0f} s")
    if not history:
        raise DeploymentError(f"the Flower run completed but wrote no history.json in {run_dir}")
    return history
