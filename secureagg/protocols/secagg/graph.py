"""The SecAgg+ neighbour graph: a Harary graph H(k, n) over a pseudorandom ring order.

Invariant: every party computes the same graph from public inputs only (session id, round id,
``n``, ``k``), so a server cannot show different clients different graphs, and the ring order is
unpredictable before the session id is fixed. With ``k = n - 1`` it is the complete graph (plain
SecAgg). The permutation is a Fisher-Yates shuffle driven by the AES-CTR keystream under the
``GRAPH`` label (:func:`secureagg.crypto.prg.Keystream.below`), so it is uniform.

>>> g = harary_graph(6, 2, session_id=b"s" * 16, round_id=0)
>>> all(len(nbrs) == 2 for nbrs in g.values())
True
"""

from __future__ import annotations

import hashlib

from secureagg.crypto import labels, prg

__all__ = ["harary_graph"]


def _ring_order(n: int, session_id: bytes, round_id: int) -> list[int]:
    seed = hashlib.sha256(b"secureagg/v1/secagg/graph-seed" + session_id).digest()
    stream = prg.Keystream(
        seed, label=labels.GRAPH, context=round_id.to_bytes(8, "big") + n.to_bytes(4, "big")
    )
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = stream.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def harary_graph(n: int, k: int, *, session_id: bytes, round_id: int) -> dict[int, frozenset[int]]:
    """Neighbour sets of the ``n`` clients; each has ``k`` neighbours.

    ``k`` must be even (checked by the parameter validation) unless it is ``n - 1``.
    """
    if k >= n - 1:
        everyone = frozenset(range(n))
        return {u: everyone - {u} for u in range(n)}
    order = _ring_order(n, session_id, round_id)
    half = k // 2
    neighbours: dict[int, set[int]] = {u: set() for u in range(n)}
    for pos, u in enumerate(order):
        for step in range(1, half + 1):
            v = order[(pos + step) % n]
            neighbours[u].add(v)
            neighbours[v].add(u)
    return {u: frozenset(v) for u, v in neighbours.items()}
