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
from secureagg.protocols.spec import RoundSpec

__all__ = [
    "COMPOSITION_KEYWORDS",
    "aggregator_for",
    "available",
    "make_aggregator",
    "protocol_aggregator",
    "register",
]

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


#: Keywords that compose a wrapper onto any aggregator instead of configuring the protocol:
#: ``distributed_dp`` (:func:`secureagg.aggregators.dp.with_distributed_dp`), ``central_dp``
#: (:func:`secureagg.aggregators.dp.with_central_dp`) and ``privacy`` (the event sink of either).
COMPOSITION_KEYWORDS = ("distributed_dp", "central_dp", "privacy")


def make_aggregator(name: str, /, **kwargs: Any) -> RoundFactory:
    """Build the aggregator registered as ``name`` with ``kwargs``.

    ``distributed_dp=``, ``central_dp=`` and ``privacy=`` are not protocol options: the protocol's
    aggregator is built from the other keywords, then wrapped (:mod:`secureagg.aggregators.dp`),
    the same way for every protocol. With ``distributed_dp`` the ``clip`` defaults to its L2 bound.
    Unknown names and unknown keyword arguments raise
    :class:`~secureagg.errors.ConfigurationError` listing what is known.
    """
    composed = {k: kwargs.pop(k) for k in COMPOSITION_KEYWORDS if k in kwargs}
    distributed = composed.get("distributed_dp")
    central = composed.get("central_dp")
    if isinstance(distributed, dict):  # from a round spec's JSON options
        from secureagg.dp.distributed import DistributedDP

        distributed = _config(DistributedDP, distributed, "distributed_dp")
    if isinstance(central, dict):
        from secureagg.dp.central import CentralDP

        central = _config(CentralDP, central, "central_dp")
    if distributed is not None and central is not None:
        raise ConfigurationError("pass distributed_dp or central_dp, not both")
    if composed.get("privacy") is not None and distributed is None and central is None:
        raise ConfigurationError(
            "privacy= is the event sink of distributed_dp= or central_dp=; pass one of them"
        )
    if distributed is not None and kwargs.get("clip") is None:
        l2_clip = getattr(distributed, "l2_clip", None)
        if l2_clip is not None:
            kwargs["clip"] = l2_clip
    agg = _make(name, **kwargs)
    if distributed is None and central is None:
        return agg
    # The wrappers live one module over; imported here, on use, so that no protocol's
    # aggregator module imports the DP layer (and the DP layer imports them).
    from secureagg.aggregators.dp import with_central_dp, with_distributed_dp

    if distributed is not None:
        return with_distributed_dp(agg, distributed, privacy=composed.get("privacy"))
    if central is not None:
        return with_central_dp(agg, central, privacy=composed.get("privacy"))
    return agg


def _config(cls: Any, values: dict[str, Any], what: str) -> Any:
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigurationError(f"{what}: {exc}") from None


def aggregator_for(spec: RoundSpec) -> RoundFactory:
    """The aggregator a round spec describes, rebuilt from its public options alone.

    What a party on another machine, holding only the spec's bytes, calls before building itself
    (``agg.client_from_spec(spec, ...)``). The options are validated as at construction: a spec
    asking for unsafe parameters raises :class:`~secureagg.errors.ConfigurationError`.
    """
    options = spec.option_values
    if "num_clients" in options:
        raise ConfigurationError("spec options must not repeat num_clients")
    return make_aggregator(spec.protocol, num_clients=spec.num_clients, **options)


def protocol_aggregator(agg: RoundFactory) -> RoundFactory:
    """The protocol's own aggregator inside ``agg``'s composition (the DP wrappers hold it as
    ``inner``): what asks which parties a round has - an HE key holder, identity keys."""
    while isinstance(getattr(agg, "inner", None), RoundFactory):
        agg = agg.inner  # type: ignore[attr-defined]
    return agg


def _make(name: str, /, **kwargs: Any) -> RoundFactory:
    """The protocol's own aggregator (no composition)."""
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
            ] + list(COMPOSITION_KEYWORDS)
            raise ConfigurationError(
                f"aggregator {name!r}: {exc}; it accepts {', '.join(accepted)}"
            ) from None
    return factory(**kwargs)
