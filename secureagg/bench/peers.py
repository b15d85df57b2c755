"""The peers ``secureagg bench`` runs beside ours, on the same configuration, interleaved.

* ``flower``: Flower 1.42's own SecAgg+ (``SecAggPlusWorkflow`` + ``secaggplus_mod``, in this
  process, :mod:`secureagg.bench.flower_peer`) beside ``secagg+`` without DP: the same data, the
  same clients dropped at the same stage, Flower's ``num_shares = k + 1`` (it counts the node
  itself) and ``reconstruction_threshold = t``;
* ``tenseal``: bare TenSEAL on NVIDIA FLARE's default context (N = 8192, [60, 40, 40], scale
  2^40, symmetric encryption: FLARE's clients hold the secret key) beside ``ckks`` and
  ``ckks:pooled`` without DP (:mod:`secureagg.bench.he_peers`); ``tenseal-pk``: the same context
  with public-key encryption, as our clients (which never hold the secret key) encrypt;
  ``tenseal-same``: bare TenSEAL on our own default context ([60, 60, 60], public-key), so that
  ours over it is what the protocol around TenSEAL costs (clipping, validation, key checks,
  flooding);
* ``phe``: python-paillier, one ciphertext per value, beside ``paillier`` and
  ``paillier:pooled`` without DP, at ``min(d, PHE_MAX_D)`` values (phe is slow; its figures are
  compared per value).

Every peer result is normalised to carry ``total_compute_seconds`` (every party's compute in the
round, serialisation included - ours, ``compute_seconds_total``, includes our codec),
``client_seconds`` (one client), ``bytes_up_per_client``, ``max_abs_error`` and ``values`` (the
values per client it ran at: ``d``, or fewer for a capped phe) beside the peer's own fields.
:func:`peer_ratio` compares per value, so a capped peer is never compared on a smaller job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.bench.grid import VALUE_CLIP, BenchConfig
from secureagg.bench.measure import PeerFn

__all__ = ["PEERS", "PHE_MAX_D", "peer_factory", "peer_ratio", "peer_unavailable"]

PEERS: tuple[str, ...] = ("flower", "tenseal", "tenseal-pk", "tenseal-same", "phe")
#: the most values per client phe is run at (one 6144-bit exponentiation per value per client)
PHE_MAX_D = 200


def peer_unavailable(name: str) -> str | None:
    """None when the peer can run here, else why not."""
    if name == "flower":
        from secureagg.bench.flower_peer import flower_available

        return flower_available()
    module = {"tenseal": "tenseal", "tenseal-pk": "tenseal", "tenseal-same": "tenseal",
              "phe": "phe"}.get(name)
    if module is None:
        return f"unknown peer {name!r}"
    try:
        __import__(module)
    except ImportError:
        extra = "he"
        return f"{module} not installed; pip install 'secureagg[{extra}]'"
    return None


def _flower(config: BenchConfig, agg: Any) -> PeerFn:
    from secureagg.bench.flower_peer import flower_share_params, measure_flower_secaggplus

    shares, threshold = flower_share_params(int(agg.params.degree), int(agg.params.threshold))

    def run(data: npt.NDArray[np.float64], dropped: list[int]) -> dict[str, Any]:
        r = measure_flower_secaggplus(
            config.n, config.d, num_shares=shares, threshold=threshold, dropped=dropped,
            clip=VALUE_CLIP, updates=data,
        )
        if r.get("available", True):
            r["values"] = config.d
            r["total_compute_without_serde_seconds"] = r["total_compute_seconds"]
            r["total_compute_seconds"] = r["total_compute_seconds"] + r["serde_seconds"]
            r["client_seconds"] = r["client_seconds_max"]
        return r

    return run


def _he_totals(r: dict[str, Any], n: int) -> dict[str, Any]:
    if r.get("available", True):
        r["values"] = int(r.get("d_measured", r["d"]))
        r["total_compute_seconds"] = (
            n * float(r["client_seconds"]) + float(r["server_seconds"])
            + float(r["decrypt_seconds"])
        )
        r.setdefault("bytes_up_per_client", r.get("upload_bytes"))
        r.setdefault("max_abs_error", r.get("max_error"))
    return r


def _tenseal(config: BenchConfig, *, public_key: bool = False,
             context: str = "flare-default") -> PeerFn:
    from secureagg.bench.he_peers import measure_tenseal_peer

    def run(data: npt.NDArray[np.float64], dropped: list[int]) -> dict[str, Any]:
        r = measure_tenseal_peer(config.n, config.d, repeats=1, context=context,
                                 encryption="asymmetric" if public_key else None)
        return _he_totals(r, config.n)

    return run


def _phe(config: BenchConfig) -> PeerFn:
    from secureagg.bench.he_peers import measure_phe_peer

    def run(data: npt.NDArray[np.float64], dropped: list[int]) -> dict[str, Any]:
        r = measure_phe_peer(config.n, config.d, repeats=1, max_d=PHE_MAX_D)
        return _he_totals(r, config.n)

    return run


def peer_ratio(
    entry: Mapping[str, Any], name: str, *, ours_key: str = "compute_seconds_total",
    peer_key: str = "total_compute_seconds",
) -> float | None:
    """The peer's figure over ours, both per value per client (above 1: we are faster)."""
    peer = (entry.get("peers") or {}).get(name) or {}
    theirs, values = peer.get(peer_key), peer.get("values")
    ours = (entry.get("figures") or {}).get(ours_key)
    if not (isinstance(theirs, Mapping) and isinstance(ours, Mapping)):
        return None
    count = values["median"] if isinstance(values, Mapping) else values
    if not count or ours["median"] <= 0:
        return None
    return (float(theirs["median"]) / float(count)) / (
        float(ours["median"]) / float(entry["config"]["d"])
    )


def peer_factory(
    names: set[str], *, max_n: int | None = None
) -> Callable[[BenchConfig, Any], Mapping[str, PeerFn]]:
    """``peers(config, aggregator)``: the enabled peers that apply to ``config`` (none above
    ``max_n`` clients: Flower's SecAgg+ takes about 30 s of compute per round at n = 100)."""

    def peers(config: BenchConfig, agg: Any) -> Mapping[str, PeerFn]:
        out: dict[str, PeerFn] = {}
        if config.dp != "none" or (max_n is not None and config.n > max_n):
            return out
        if "flower" in names and config.protocol == "secagg+":
            out["flower"] = _flower(config, agg)
        if "tenseal" in names and config.base == "ckks":
            out["tenseal"] = _tenseal(config)
        if "tenseal-pk" in names and config.base == "ckks":
            out["tenseal-pk"] = _tenseal(config, public_key=True)
        if "tenseal-same" in names and config.base == "ckks":
            out["tenseal-same"] = _tenseal(config, public_key=True, context="secureagg-default")
        if "phe" in names and config.base == "paillier":
            out["phe"] = _phe(config)
        return out

    return peers
