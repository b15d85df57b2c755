"""Federated training around the user's own PyTorch loop: FedAvg with any aggregator.

>>> import secureagg.fl as fl      # imports torch only when a name below is used
>>> sorted(fl.__all__)[:3]
['DEFAULT_CLIP', 'Failures', 'FederatedDP']

The user supplies a model, ``train(model, loader)``, one data loader per client and optionally
``evaluate(model) -> dict``; :class:`FederatedRun` samples clients, trains them with the user's
function, aggregates their updates with ``"plain"``, ``"secagg"``, ``"secagg+"``, ``"ckks"`` or
``"paillier"`` (the server sees only the weighted sum), applies the FedAvg step, and writes a run
directory that can be resumed. See ``docs/federated.md``.

Threat model: that of the chosen aggregator (see its documentation); ``"plain"`` is the insecure
baseline. The orchestration itself (sampling, dropouts, run directory) is public information.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from secureagg.fl.model_state import StateCodec
    from secureagg.fl.privacy import FederatedDP
    from secureagg.fl.records import RoundRecord
    from secureagg.fl.run import FederatedRun
    from secureagg.fl.run_config import DEFAULT_CLIP
    from secureagg.fl.schedule import Failures

__all__ = ["DEFAULT_CLIP", "Failures", "FederatedDP", "FederatedRun", "RoundRecord", "StateCodec"]

_WHERE = {
    "DEFAULT_CLIP": "secureagg.fl.run_config",
    "FederatedRun": "secureagg.fl.run",
    "Failures": "secureagg.fl.schedule",
    "FederatedDP": "secureagg.fl.privacy",
    "RoundRecord": "secureagg.fl.records",
    "StateCodec": "secureagg.fl.model_state",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'secureagg.fl' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
