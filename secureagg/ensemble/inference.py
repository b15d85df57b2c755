"""Secure ensemble inference: the querier learns only the parties' *mean* prediction.

For parties that want joint predictions on new inputs without DP labels: every party evaluates
its own model on the querier's inputs, clips its probability vectors (each value to
``[0, clip]``), and the vectors are summed under secure aggregation - SecAgg+ (the server sees
only masked vectors) or CKKS (the server sees only ciphertexts; the key holder decrypts only the
sum) - in one round for the whole batch of queries. The querier receives the sum of the
survivors' vectors divided by their number.

What the combined prediction still reveals (no DP here): the mean itself is exact up to the
encoding's rounding, so a querier can learn things about the parties' models from it, and
through them about their data - membership inference and model extraction work against an
ensemble's averaged output as against one model's, if less sharply; and when only two parties
survive a round, each of them learns the other's prediction by subtracting its own. Use
:class:`~secureagg.ensemble.aggregate.SecureVoteAggregator` (noisy histogram, accounted ε) when
the released output must be differentially private.

Runs every party in this process through :func:`secureagg.transport.simulate` (every message
through the codec); :func:`combine_predictions` is the in-process counterpart of a deployed round.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.aggregators import make_aggregator
from secureagg.errors import ConfigurationError, InvalidInputError
from secureagg.transport import SeededRunWarning, simulate

__all__ = ["CombinedPrediction", "combine_predictions"]

_PROTOCOLS = ("secagg+", "secagg", "ckks")


@dataclass(frozen=True)
class CombinedPrediction:
    """What the querier learns: the survivors' mean probabilities and their argmax."""

    mean: npt.NDArray[np.float64]  #: queries x classes
    labels: npt.NDArray[np.int64]  #: argmax per query
    survivors: tuple[int, ...]  #: the parties whose vectors are in the mean
    refused: dict[int, str]  #: parties refused before the round, and why
    error_bound: float  #: worst-case per-value error of ``mean`` (encoding / CKKS noise)
    protocol: str
    bytes_up_per_party: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "queries": int(self.mean.shape[0]),
            "classes": int(self.mean.shape[1]),
            "survivors": list(self.survivors),
            "refused": {str(k): v for k, v in self.refused.items()},
            "error_bound": self.error_bound,
            "bytes_up_per_party": self.bytes_up_per_party,
            "seconds": self.seconds,
        }


def _check(party: int, probs: object, shape: tuple[int, int] | None,
           clip: float) -> tuple[npt.NDArray[np.float64] | None, str | None]:
    try:
        arr = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError):
        return None, "not a numeric array"
    if arr.ndim != 2:
        return None, f"expected a queries x classes matrix, got shape {arr.shape}"
    if shape is not None and arr.shape != shape:
        return None, f"shape {arr.shape}, expected {shape}"
    if not np.all(np.isfinite(arr)):
        return None, "NaN or infinite probabilities"
    if np.any(arr < 0) or np.any(arr > 1):
        return None, "probabilities outside [0, 1]"
    return np.minimum(arr, clip), None


def combine_predictions(
    probs_by_party: Mapping[int, object],
    *,
    protocol: str = "secagg+",
    clip: float = 1.0,
    dropouts: Mapping[int, str] | None = None,
    seed: int | None = None,
) -> CombinedPrediction:
    """The mean of the parties' clipped probability vectors, summed under ``protocol``.

    ``probs_by_party`` maps a party id to its ``queries x classes`` probabilities (values in
    ``[0, 1]``; each clipped to ``clip``). A party whose matrix is malformed (shape differs from
    the first well-formed one, NaN, values outside [0, 1]) is refused before the round and
    listed in ``refused``. ``dropouts`` maps a party id to the stage from which it is silent
    (testing). ``seed`` makes keys and masks reproducible (tests only)."""
    if protocol not in _PROTOCOLS:
        raise ConfigurationError(
            f"protocol must be one of {', '.join(_PROTOCOLS)}, got {protocol!r}"
        )
    if not (isinstance(clip, int | float) and math.isfinite(clip) and 0 < clip <= 1):
        raise ConfigurationError(f"clip must be a number in (0, 1], got {clip!r}")
    accepted: dict[int, npt.NDArray[np.float64]] = {}
    refused: dict[int, str] = {}
    shape: tuple[int, int] | None = None
    for party in sorted(probs_by_party):
        arr, why = _check(party, probs_by_party[party], shape, float(clip))
        if arr is None:
            refused[party] = str(why)
            continue
        shape = (int(arr.shape[0]), int(arr.shape[1]))
        accepted[party] = arr
    if len(accepted) < 2:
        raise InvalidInputError(
            f"secure ensemble inference needs at least 2 parties with well-formed predictions, "
            f"got {len(accepted)} (refused: {refused})"
        )
    order = sorted(accepted)  # protocol ids 0..n-1 in the parties' order
    index = {party: i for i, party in enumerate(order)}
    agg = make_aggregator(protocol, num_clients=len(order), clip=float(clip))
    drop = {index[p]: stage for p, stage in (dropouts or {}).items() if p in index}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeededRunWarning)
        res = simulate(agg, [[accepted[p]] for p in order], dropouts=drop, seed=seed)
    survivors = tuple(order[i] for i in res.survivors)
    mean = np.asarray(res.aggregate[0], dtype=np.float64) / len(survivors)
    error_bound = getattr(agg, "error_bound", None)
    if not callable(error_bound):  # every registered aggregator states one
        raise ConfigurationError(f"the {protocol} aggregator states no error bound")
    bound = float(error_bound(survivors=len(survivors))) / len(survivors)
    up: dict[int, int] = {}
    for entry in res.transcript:
        if entry.sender >= 0:
            up[entry.sender] = up.get(entry.sender, 0) + entry.size
    totals = res.metrics["totals"]
    return CombinedPrediction(
        mean=mean,
        labels=np.argmax(mean, axis=1).astype(np.int64),
        survivors=survivors,
        refused=refused,
        error_bound=bound,
        protocol=protocol,
        bytes_up_per_party=max(up.values(), default=0),
        seconds=float(totals["client_seconds_total"]) + float(totals["server_seconds"])
        + float(totals["helper_seconds"]),
    )
