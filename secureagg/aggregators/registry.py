"""Registry of aggregators by name: what :func:`make_aggregator` can build.

Invariant: a name maps to exactly one factory (registering a different factory under a taken name
is an error), and :func:`make_aggregator` checks the keyword arguments against the factory's
signature before calling it, so a typo is a :class:`~secureagg.errors.ConfigurationError` listing
the accepted parameters rather than a bare ``TypeError``.

>>> from secureagg.aggregators import make_aggregator, available
>>> "plain" in available()
True
>>> make_aggregator("plain", num_clients=4).name
'plain'
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable
from typing import Any

from secureagg.errors import ConfigurationError
from secureagg.protocols.base import RoundFactory

__all__ = ["available", "make_aggregator", "register"]

AggregatorFactory = Callable[..., RoundFactory]

_FACTORIES: dict[str, AggregatorFactory] = {}

#: Aggregators shipped with secureagg whose modules register themselves when imported. They are
#: imported lazily, on first use, so that ``import secureagg`` stays light and a protocol module
#: that fails to import breaks only its own names (its ImportError propagates from
#: :func:`make_aggregator`, it is never swallowed).
_BUILTIN_MODULES: dict[str, str] = {
    "secagg": "secureagg.aggregators.secagg",
    "secagg+": "secureagg.aggregators.secagg",
    "ckks": "secureagg.aggregators.ckks",
    "paillier": "secureagg.aggregators.paillier",
}


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def register(name: str, factory: AggregatorFactory) -> None:
    """Make ``factory(**kwargs)`` available as ``make_aggregator(name, **kwargs)``.

    Registering the same factory twice is a no-op; a different factory under a taken name raises
    :class:`~secureagg.errors.ConfigurationError`.
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise ConfigurationError(f"aggregator names are non-empty strings, got {name!r}")
    if not callable(factory):
        raise ConfigurationError(f"the factory for {name!r} is not callable")
    existing = _FACTORIES.get(name)
    if existing is not None and existing is not factory:
        raise ConfigurationError(f"an aggregator called {name!r} is already registered")
    _FACTORIES[name] = factory


def available() -> tuple[str, ...]:
    """The aggregator names :func:`make_aggregator` accepts, sorted (imports nothing)."""
    builtin = {name for name, module in _BUILTIN_MODULES.items() if _module_exists(module)}
    return tuple(sorted(set(_FACTORIES) | builtin))


def make_aggregator(name: str, /, **kwargs: Any) -> RoundFactory:
    """Build the aggregator registered as ``name`` with ``kwargs``.

    Unknown names and unknown keyword arguments raise
    :class:`~secureagg.errors.ConfigurationError` listing what is known.
    """
    if name not in _FACTORIES and name in _BUILTIN_MODULES:
        module = _BUILTIN_MODULES[name]
        if _module_exists(module):
            importlib.import_module(module)  # registers its names; errors propagate
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ConfigurationError(
            f"unknown aggregator {name!r}; known: {', '.join(available()) or '(none)'}"
        )
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        signature = None
    if signature is not None:
        try:
            signature.bind(**kwargs)
        except TypeError as exc:
            accepted = [
                p.name
                for p in signature.parameters.values()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            ]
            raise ConfigurationError(
                f"aggregator {name!r}: {exc}; it accepts {', '.join(accepted)}"
            ) from None
    return factory(**kwargs)
