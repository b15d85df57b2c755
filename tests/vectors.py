"""The one loader for known-answer vectors under ``protocols/**/vectors/*.json``.

Each vector file is a JSON object ``{"description": ..., "generated_by": ..., "vectors": [...]}``.
Byte strings are stored as lowercase hex. ``regenerate`` is set by
``SECUREAGG_REGENERATE_VECTORS=1`` and lets a generator script rewrite our *own* vectors (never the
RFC ones) after an intended, versioned change of output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROTOCOLS = ROOT / "protocols"


def vector_path(protocol: str, name: str) -> Path:
    return PROTOCOLS / protocol / "vectors" / f"{name}.json"


def load_vectors(protocol: str, name: str) -> list[dict[str, Any]]:
    """Return the ``vectors`` list of ``protocols/<protocol>/vectors/<name>.json``."""
    path = vector_path(protocol, name)
    with path.open(encoding="utf-8") as fh:
        data = json.load(fh)
    vectors = data["vectors"]
    if not vectors:
        raise ValueError(f"{path} holds no vectors")
    return list(vectors)


def regenerate() -> bool:
    return os.environ.get("SECUREAGG_REGENERATE_VECTORS") == "1"


def write_vectors(
    protocol: str, name: str, *, description: str, generated_by: str, vectors: list[dict[str, Any]]
) -> Path:
    path = vector_path(protocol, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"description": description, "generated_by": generated_by, "vectors": vectors}
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def h(data: str) -> bytes:
    """Hex to bytes."""
    return bytes.fromhex(data)
