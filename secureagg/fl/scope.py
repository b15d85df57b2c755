"""What each ε of a federated run covers, and what it does not, in words an auditor reads.

:func:`sample_scope` (DP-SGD on the clients) and :func:`user_scope` (noise on the released sums)
are written into ``privacy_ledger.json`` (``sample_level_scope``, ``user_level_scope``) beside
the figures: mechanism, adjacency, whom it protects against, what is public (released without
noise) and the accountant's theorems. ``docs/dp.md`` ("What each ε covers") says the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from secureagg.fl.settings import FederatedDP

__all__ = ["sample_scope", "user_scope"]


def sample_scope(
    dp: FederatedDP, *, method: str, not_released: Sequence[str]
) -> dict[str, Any]:
    """What the sample-level (DP-SGD) ε of a run with ``dp`` covers; ``method``: the
    accountant's theorems, ``not_released``: the state entries that never leave a client."""
    if dp.public_schedule:
        counts = (
            "not released: every client samples at the public q = 1/batches_per_epoch, runs "
            "local_epochs * batches_per_epoch steps, averages its gradients over the public "
            "expected_batch_size and uses the same σ; FedAvg weights are uniform"
        )
        record_counts = "not released"
    else:
        counts = (
            "public: client i's sampling rate q_i = 1/len(loader_i), its noise multiplier "
            "σ_i, its number of steps (and, with weighting='examples', its FedAvg weight) "
            "are functions of its record count N_i and are released without noise. The ε "
            "bounds what the noised updates reveal about one record, but N_i itself - "
            "whether a client holds one record more or fewer - is not hidden. Set "
            "FederatedDP(batches_per_epoch=...) to hide it"
        )
        record_counts = "public"
    return {
        "mechanism": "DP-SGD on each client: per-record gradient clipping to max_grad_norm, "
        "Gaussian noise σ * max_grad_norm per step, Poisson-sampled batches (CSPRNG)",
        "adjacency": "add/remove one record of one client's data set",
        "protects": "each record of a client against anyone who sees that client's update "
        "or anything computed from it: the server (with 'plain'), the global model's users",
        "record_counts": record_counts,
        "record_counts_detail": counts,
        "public": ["max_grad_norm", "σ and q of every client (this ledger)", "the number "
                   "of DP-SGD steps", "which clients were sampled, dropped and survived in "
                   "each round", "rounds, local_epochs, δ"],
        "not_released": list(not_released),
        "enforced": "the parameters may change only through the DP optimizer's steps: a "
        "client whose model changed otherwise (its train function writing to it, another "
        "optimizer) sends nothing",
        "accountant": method,
    }


def user_scope(dp: FederatedDP) -> dict[str, Any]:
    """What the user-level ε (noise on the released sums) of a run with ``dp`` covers."""
    distributed = dp.distributed_noise_multiplier is not None
    return {
        "mechanism": dp.describe()["user_level"]["mechanism"],
        "adjacency": "one client's whole contribution to every round replaced by zero "
        "(zero-out), its update L2-clipped to update_clip",
        "protects": (
            "every client against the server and everyone who sees the released sums: the "
            "clients add the noise inside SecAgg, no party sees a noiseless sum"
            if distributed
            else "every client against those who see only the server's output; the server "
            "is trusted: it sees the exact sum before adding the noise"
        ),
        "client_sampling": "no amplification claimed (sampling rate 1): the run samples a "
        "fixed number of clients per round and the server knows who they are",
        "public": ["update_clip", "the noise multiplier", "which clients were sampled, "
                   "dropped and survived in each round (the number of survivors sets the "
                   "distributed noise)"],
    }
