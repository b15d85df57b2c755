"""Cutting the user's own model into the parts each party runs.

The parts *share* the user's modules (no copy): training the parts trains the user's model in
place, so after split training ``model`` is the trained model, ready to evaluate or save.

* one cut ``[i]`` -> ``(bottom, top)``: the client runs ``model[:i]``, the server ``model[i:]``
  (vanilla split learning, labels at the server);
* two cuts ``[i, j]`` -> ``(bottom, middle, head)``: the client runs ``model[:i]`` and
  ``model[j:]`` and keeps the labels, the server runs ``model[i:j]`` (U-shaped).

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
>>> bottom, top = split_sequential(net, [2])
>>> len(bottom), len(top), bottom[0] is net[0]
(2, 1, True)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from secureagg.dp.torch_import import require_torch
from secureagg.errors import ConfigurationError

__all__ = ["split_sequential"]


def split_sequential(model: Any, cuts: Sequence[int]) -> tuple[Any, ...]:
    """Cut an ``nn.Sequential`` at ``cuts`` (indices into it, strictly increasing).

    Returns ``len(cuts) + 1`` ``nn.Sequential`` parts sharing ``model``'s modules. Every part must
    hold at least one module; the bottom must hold a parameter (else the "client model" is the raw
    input, and split learning would send the data itself).
    """
    torch = require_torch()
    if not isinstance(model, torch.nn.Sequential):
        raise ConfigurationError(
            f"split_sequential needs a torch.nn.Sequential, got {type(model).__name__}; for any "
            "other model, pass the parts (your own nn.Modules) directly"
        )
    size = len(model)
    problems = []
    given = list(cuts)
    if not 1 <= len(given) <= 2:
        problems.append(f"give one cut (vanilla) or two (U-shaped), got {len(given)}")
    if any(isinstance(c, bool) or not isinstance(c, int) for c in given):
        problems.append(f"cuts must be integers, got {given!r}")
    elif given:
        bounds = [0, *given, size]
        if any(b <= a for a, b in itertools.pairwise(bounds)):
            problems.append(
                f"cuts must be strictly increasing within 1..{size - 1} so that every part holds "
                f"at least one module; got {given!r} for a model of {size} modules"
            )
    if problems:
        raise ConfigurationError(problems)
    bounds = [0, *given, size]
    parts = tuple(model[a:b] for a, b in itertools.pairwise(bounds))
    if not any(True for _ in parts[0].parameters()):
        raise ConfigurationError(
            f"the bottom part model[:{given[0]}] has no parameters: the server would receive a "
            "fixed function of the raw input; cut after the first trainable layer"
        )
    return parts
