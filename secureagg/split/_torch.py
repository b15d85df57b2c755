"""The one place :mod:`secureagg.split` imports torch; a missing torch names the extra to install.

``import secureagg`` never imports this module (nor torch): only the split-learning modules do,
when they are used.

>>> from secureagg.split._torch import require_torch
>>> require_torch().__name__
'torch'
"""

from __future__ import annotations

from types import ModuleType

from secureagg.errors import MissingDependencyError

__all__ = ["require_torch"]


def require_torch() -> ModuleType:
    """Return ``torch``; raise :class:`MissingDependencyError` naming the ``dp`` extra if absent."""
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "dp", purpose="split learning") from None
    return torch
