"""The one helper that imports torch for the packages above :mod:`secureagg.dp`.

torch comes with the ``dp`` extra; :mod:`secureagg.fl` and :mod:`secureagg.split` (siblings that
do not import each other) both call :func:`require_torch` from here, so a missing torch always
raises the same :class:`~secureagg.errors.MissingDependencyError` naming the extra. ``import
secureagg`` never imports torch.

>>> require_torch().__name__
'torch'
"""

from __future__ import annotations

from types import ModuleType

from secureagg.errors import MissingDependencyError

__all__ = ["require_torch"]


def require_torch(purpose: str = "training") -> ModuleType:
    """Return ``torch``; raise :class:`MissingDependencyError` naming the ``dp`` extra if absent."""
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "dp", purpose=purpose) from None
    return torch
