"""secureagg: privacy-preserving collaborative machine learning around your own PyTorch loop.

The small public surface: pick an aggregator by name, run it over the in-memory transport, read
the aggregate, survivors, transcript and metrics. ``import secureagg`` needs only numpy and
``cryptography``; torch, tenseal, phe, opacus and flwr are imported only by the modules that use
them, when they are used.

>>> import numpy as np, secureagg as sa
>>> agg = sa.make_aggregator("plain", num_clients=3)
>>> res = sa.simulate(agg, [[np.ones(2)] for _ in range(3)], dropouts={0: "upload"})
>>> res.survivors, res.aggregate[0].tolist()
((1, 2), [2.0, 2.0])
"""

from __future__ import annotations

from secureagg import errors
from secureagg.aggregators import aggregator_for, available, make_aggregator
from secureagg.protocols.spec import RoundSpec
from secureagg.transport import ClippingWarning, SeededRunWarning, SimulationResult, simulate
from secureagg.version import VERSION

__version__ = VERSION

__all__ = [
    "ClippingWarning",
    "RoundSpec",
    "SeededRunWarning",
    "SimulationResult",
    "__version__",
    "aggregator_for",
    "available",
    "errors",
    "make_aggregator",
    "simulate",
]
