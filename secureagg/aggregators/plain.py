"""The plain aggregator: clients send their updates in the clear. **Insecure on purpose.**

Threat model: none - the server (and anyone who can read the traffic) sees every client's update.
This is the baseline that every benchmark compares the secure protocols against: same driver, same
codec, same metrics, no protection. Do not use it where inputs are private.

It still keeps the hygiene the secure protocols keep: optional clipping to ``[-clip, clip]``
(counted), NaN/Inf refused on the client before sending, one upload per client, replays from other
rounds or sessions refused, and ``InsufficientSurvivors`` below ``min_clients`` uploads.

>>> import numpy as np, secureagg as sa
>>> agg = sa.make_aggregator("plain", num_clients=2, clip=1.0)
>>> sa.simulate(agg, [[np.array([0.5, 3.0])], [np.array([0.5, -1.0])]]).aggregate
[array([1., 0.])]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.aggregators.registry import register
from secureagg.errors import ConfigurationError, InvalidInputError
from secureagg.protocols.base import RoundFactory, RoundSetup
from secureagg.protocols.plain import UPLOAD, PlainClient, PlainServer
from secureagg.validation import is_positive_real

__all__ = ["PlainAggregator"]


@dataclass(frozen=True)
class PlainAggregator(RoundFactory):
    """Insecure baseline: the server sums plaintext updates.

    ``num_clients`` clients; ``clip`` (optional) bounds every value to ``[-clip, clip]`` before
    weighting; ``min_clients`` is the fewest uploads for which an aggregate is released.
    """

    name = "plain"
    dropout_stages = (UPLOAD,)

    num_clients: int
    clip: float | None = field(default=None, kw_only=True)
    min_clients: int = field(default=1, kw_only=True)

    def __post_init__(self) -> None:
        problems: list[str] = []
        n = self.num_clients
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            problems.append(f"num_clients must be a positive integer, got {n!r}")
        clip = self.clip
        if clip is not None and not is_positive_real(clip):
            problems.append(f"clip must be None or a positive finite number, got {clip!r}")
        m = self.min_clients
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            problems.append(f"min_clients must be a positive integer, got {m!r}")
        elif isinstance(n, int) and not isinstance(n, bool) and n >= 1 and m > n:
            problems.append(f"min_clients={m} exceeds num_clients={n}")
        if problems:
            raise ConfigurationError(problems)
        if clip is not None:
            object.__setattr__(self, "clip", float(clip))  # a numpy scalar becomes a float

    def setup_round(
        self,
        updates: Sequence[Sequence[npt.NDArray[np.float64]]],
        *,
        weights: Sequence[float] | None,
        session_id: bytes,
        round_id: int,
        seed: bytes | None,
    ) -> RoundSetup:
        """Build a :class:`PlainServer` and ``num_clients`` :class:`PlainClient` s.

        ``seed`` is accepted for the common interface; the plain protocol draws no randomness.
        """
        if len(updates) != self.num_clients:
            raise InvalidInputError(
                f"got updates for {len(updates)} clients, expected {self.num_clients}"
            )
        if weights is not None and len(weights) != self.num_clients:
            raise ConfigurationError(
                f"got {len(weights)} weights for {self.num_clients} clients"
            )
        shapes = [tuple(np.shape(t)) for t in updates[0]]
        server = PlainServer(
            num_clients=self.num_clients,
            shapes=shapes,
            session_id=session_id,
            round_id=round_id,
            min_clients=self.min_clients,
        )
        clients = {
            cid: PlainClient(
                cid,
                updates[cid],
                session_id=session_id,
                round_id=round_id,
                weight=1.0 if weights is None else float(weights[cid]),
                clip=self.clip,
            )
            for cid in range(self.num_clients)
        }
        return RoundSetup(server=server, clients=dict(clients))

    def parameters(self) -> dict[str, Any]:
        return {
            "protocol": self.name,
            "secure": False,
            "num_clients": self.num_clients,
            "clip": self.clip,
            "min_clients": self.min_clients,
            "dropout_stages": list(self.dropout_stages),
        }


register("plain", PlainAggregator)
