"""Our protocols on Flower's deployment engine (the ``flower`` extra: ``pip install
'secureagg[flower]'``).

The two-line change for an existing Flower app (``docs/flower.md``)::

    from secureagg.flower import SecureFedAvg, secureagg_mod

    app = ClientApp(mods=[secureagg_mod])          # around the user's unchanged @app.train()
    strategy = SecureFedAvg("secagg+", options={"clip": 1.0})   # in place of FedAvg

- :func:`secureagg_mod` (:mod:`secureagg.flower.mod`): the node side; runs our client party (or
  the HE key holder on the node configured as one) and keeps its state on the node.
- :class:`SecureFedAvg` (:mod:`secureagg.flower.strategy`): the server side for the
  ``flwr.serverapp`` API; :class:`SecureRounds` (:mod:`secureagg.flower.server`) is one round over
  a Grid, with a deadline per stage.
- :class:`SecureAggWorkflow` (:mod:`secureagg.flower.workflow`): the same rounds as the fit workflow
  of Flower's legacy ``DefaultWorkflow(fit_workflow=...)``, in place of ``SecAggPlusWorkflow``.
- :class:`FlowerLink` (:mod:`secureagg.flower.link`): the engine link over Flower's Grid.
- :class:`Deployment` (:mod:`secureagg.flower.processes`): a SuperLink and SuperNodes as real
  processes on 127.0.0.1, for the demo, the tests and the benchmark.

Everything networked is Flower's (its SuperLink, SuperNodes and their APIs); we add no network
layer. Importing this package needs ``flwr``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Deployment",
    "FlowerLink",
    "SecureAggWorkflow",
    "SecureFedAvg",
    "SecureRounds",
    "secureagg_mod",
]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import secureagg.flower.identity` works without importing flwr.
    if name == "secureagg_mod":
        from secureagg.flower.mod import secureagg_mod

        return secureagg_mod
    if name == "SecureFedAvg":
        from secureagg.flower.strategy import SecureFedAvg

        return SecureFedAvg
    if name == "SecureAggWorkflow":
        from secureagg.flower.workflow import SecureAggWorkflow

        return SecureAggWorkflow
    if name == "SecureRounds":
        from secureagg.flower.server import SecureRounds

        return SecureRounds
    if name == "FlowerLink":
        from secureagg.flower.link import FlowerLink

        return FlowerLink
    if name == "Deployment":
        from secureagg.flower.processes import Deployment

        return Deployment
    raise AttributeError(name)
