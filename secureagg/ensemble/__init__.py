"""Private ensembles: parties train in parallel, and their models' votes are combined under
secure aggregation with distributed DP (PATE / GNMax) - or under CKKS, the key holder adding the
noise (:class:`CkksVoteAggregator`) - or averaged for joint predictions.

With the votes computed on the parties' own machines, a batch is answered by
:meth:`SecureVoteAggregator.answer_deployed` (:mod:`secureagg.ensemble.deployed`; on Flower:
:mod:`secureagg.flower.ensemble`). The vote path imports neither torch nor opacus;
:mod:`secureagg.ensemble.teachers` (torch) is imported on its own. See ``docs/ensemble.md``
and ``protocols/ensemble/spec.md``.
"""

from __future__ import annotations

from secureagg.ensemble.accounting import ADJACENCY, VoteAccountant, batch_sensitivity
from secureagg.ensemble.aggregate import BatchResult, SecureVoteAggregator
from secureagg.ensemble.ckks_votes import CkksVoteAggregator
from secureagg.ensemble.inference import CombinedPrediction, combine_predictions
from secureagg.ensemble.votes import VoteSpec, encode_votes

__all__ = [
    "ADJACENCY",
    "BatchResult",
    "CkksVoteAggregator",
    "CombinedPrediction",
    "SecureVoteAggregator",
    "VoteAccountant",
    "VoteSpec",
    "batch_sensitivity",
    "combine_predictions",
    "encode_votes",
]
