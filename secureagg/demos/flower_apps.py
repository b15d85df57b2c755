"""The digits demo as a Flower ServerApp and ClientApp (``secureagg demo --engine flower``).

The same federated run as ``secureagg demo`` (:func:`~secureagg.demos.federated_task.build_run`
on :func:`~secureagg.demos.federated_task.digits_task`), deployed: the ServerApp runs it with a
:class:`~secureagg.flower.federated.FlowerDeployment`, so every round's clients train on their
SuperNodes and the server receives only what the protocol sends; each SuperNode's ClientApp
trains the client of its ``partition-id`` with the run's own code, behind
:func:`~secureagg.flower.secureagg_mod`.

Run config (``flwr run ... --run-config``):

- ``settings``: the :class:`~secureagg.demos.federated_task.DemoSettings` as JSON
  (:func:`settings_to_json`);
- ``run-dir``: where the ServerApp writes the run directory (empty: none);
- ``train-deadline`` and ``stage-deadline``: seconds of the first stage (the nodes train in it)
  and of every other stage;
- ``identities``: the admitted identity keys' file (``--threat malicious``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from secureagg.errors import ConfigurationError
from secureagg.flower.mod import secureagg_mod

try:
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
except ImportError as exc:  # pragma: no cover - the flower extra is missing
    raise ImportError("the Flower demo needs Flower: pip install 'secureagg[flower]'") from exc

__all__ = ["APP_DIR", "client_app", "server_app", "settings_from_json", "settings_to_json"]

#: The directory ``flwr run`` submits (its pyproject.toml names the apps below).
APP_DIR = Path(__file__).with_name("flower_app")


# torch and the demo's task are imported only where a node trains or the server runs: every other
# message a SuperNode receives starts a ClientApp process that needs only the protocol step.


def settings_to_json(settings: Any) -> str:
    values = dataclasses.asdict(settings)
    values.pop("workers", None)  # a deployed run trains on its nodes
    return json.dumps(values, sort_keys=True)


def settings_from_json(text: str) -> Any:
    try:
        values = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"run config 'settings' is not JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigurationError("run config 'settings' must be a JSON object")
    from secureagg.demos.federated_task import DemoSettings

    known = {f.name for f in dataclasses.fields(DemoSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigurationError(f"unknown demo settings: {', '.join(unknown)}")
    if "dp_decay" in values:
        values["dp_decay"] = tuple(values["dp_decay"])
    return DemoSettings(**values)


def _node_run(context: Any) -> Any:
    from secureagg.demos.federated_task import build_run, digits_task

    settings = settings_from_json(str(context.run_config["settings"]))
    return build_run(settings, digits_task(settings), run_dir=None, progress=False)


client_app = ClientApp(mods=[secureagg_mod])


@client_app.train()
def train(message: Any, context: Any) -> Any:
    """Train this node's client with the run's code (reached only at a round's first step)."""
    from secureagg.flower.federated import node_trainer

    return node_trainer(_node_run)(message, context)


server_app = ServerApp()


@server_app.main()
def main(grid: Any, context: Any) -> None:
    """Run the demo's federated run over ``grid``; the run directory is its record."""
    from secureagg.demos.federated_task import build_run, digits_task
    from secureagg.flower.federated import FlowerDeployment
    from secureagg.flower.identity import read_allowed_keys

    cfg = context.run_config
    settings = settings_from_json(str(cfg["settings"]))
    identities = str(cfg.get("identities", ""))
    deployment = FlowerDeployment(
        grid,
        train_deadline=float(cfg.get("train-deadline", 300.0)),
        stage_deadline=float(cfg.get("stage-deadline", 30.0)),
        identities=read_allowed_keys(identities) if identities else None,
        min_nodes=2,
    )
    run_dir = str(cfg.get("run-dir", "")) or None
    run = build_run(settings, digits_task(settings), run_dir=run_dir, progress=False,
                    deployment=deployment)
    run.run()
