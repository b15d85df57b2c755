"""The installed library's version, without importing the rest of the package (the run
directory's writer records it, and that layer imports no protocol code)."""

from __future__ import annotations

from importlib import metadata as _metadata

__all__ = ["VERSION"]

try:
    VERSION: str = _metadata.version("secureagg")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    VERSION = "0+unknown"
