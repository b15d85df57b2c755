"""Transport: the versioned codec, the in-memory simulator and its fault injection.

Drivers move bytes between sans-I/O parties; they never look inside a party. Everything a party
sends crosses :mod:`~secureagg.transport.codec` (no pickle), so transcripts record sizes and
sha256 digests of the real bytes.

>>> import numpy as np
>>> from secureagg.aggregators import make_aggregator
>>> from secureagg.transport import simulate
>>> res = simulate(make_aggregator("plain", num_clients=2), [[np.ones(3)], [np.ones(3)]])
>>> res.aggregate[0].tolist(), res.survivors
([2.0, 2.0, 2.0], (0, 1))
"""

from secureagg.transport.codec import decode, encode, message_digest
from secureagg.transport.faults import Delay, Drop, Reorder, Replay, Tamper
from secureagg.transport.simulator import (
    ClippingWarning,
    SeededRunWarning,
    SimulationResult,
    TranscriptEntry,
    derive_sim_seed,
    seeded_round,
    simulate,
)
from secureagg.transport.updates import normalize_updates, normalize_weights

__all__ = [
    "ClippingWarning",
    "Delay",
    "Drop",
    "Reorder",
    "Replay",
    "SeededRunWarning",
    "SimulationResult",
    "Tamper",
    "TranscriptEntry",
    "decode",
    "derive_sim_seed",
    "encode",
    "message_digest",
    "normalize_updates",
    "normalize_weights",
    "seeded_round",
    "simulate",
]
