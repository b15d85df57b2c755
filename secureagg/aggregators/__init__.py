"""Aggregators: what users pick. Each composes encoding, DP and a protocol into one object.

Build one by name with :func:`make_aggregator`; :func:`available` lists the names. The plain
baseline is always registered; the protocol aggregators shipped with secureagg (SecAgg/SecAgg+,
CKKS, Paillier) are imported on first use by :func:`make_aggregator` and register themselves.
Those modules must import optional dependencies (tenseal, phe, torch) lazily, so that
``import secureagg`` stays light.

>>> from secureagg.aggregators import make_aggregator
>>> make_aggregator("plain", num_clients=3).dropout_stages
('upload',)
"""

from __future__ import annotations

import secureagg.aggregators.plain  # noqa: F401  (registers "plain")
from secureagg.aggregators.registry import (
    aggregator_for,
    available,
    make_aggregator,
    protocol_aggregator,
    register,
)

__all__ = ["aggregator_for", "available", "make_aggregator", "protocol_aggregator", "register"]
