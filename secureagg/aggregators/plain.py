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
from secureagg.errors import ConfigurationError
from secureagg.protocols.base import Message, RoundFactory, check_update
from secureagg.protocols.plain import UPLOAD, PlainClient, PlainServer
from secureagg.protocols.spec import RoundSpec
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

    def spec_options(self) -> dict[str, Any]:
        return {"clip": self.clip, "min_clients": self.min_clients}

    def server_from_spec(self, spec: RoundSpec, *, seed: bytes | None = None) -> PlainServer:
        """``seed`` is accepted for the common interface; the plain protocol draws no randomness."""
        return PlainServer(
            num_clients=spec.num_clients,
            shapes=list(spec.shapes),
            session_id=spec.session_id,
            round_id=spec.round_id,
            min_clients=self.min_clients,
        )

    def client_from_spec(
        self,
        spec: RoundSpec,
        client_id: int,
        update: Sequence[npt.NDArray[np.floating[Any]]],
        *,
        weight: float | None = None,
        secret: Any = None,
        seed: bytes | None = None,
    ) -> PlainClient:
        client = PlainClient(
            client_id,
            check_update(spec, client_id, update),
            session_id=spec.session_id,
            round_id=spec.round_id,
            weight=1.0 if weight is None else float(weight),
            clip=self.clip,
        )
        client.spec_digest = spec.digest
        return client

    def restore_client(self, spec: RoundSpec, state: Message, *, secret: Any = None) -> PlainClient:
        return PlainClient.restore(spec, state)

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
