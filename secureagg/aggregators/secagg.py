"""The ``"secagg"`` and ``"secagg+"`` aggregators: parameters chosen for the user.

>>> import numpy as np, secureagg as sa
>>> agg = sa.make_aggregator("secagg+", num_clients=5, clip=1.0)
>>> agg.params.threshold >= 2
True

``make_aggregator("secagg+", num_clients=n, clip=c, dropout_rate=0.1, corrupt_rate=0.05,
threat="curious")`` picks the graph degree ``k`` and threshold ``t`` by the analysis in
:mod:`secureagg.protocols.secagg.params` (Bell et al. 2020): honest survivors stay connected and no
coalition of the server and ``corrupt_rate * n`` clients learns a single input except with
probability 2^-40 (40-bit statistical security); the round completes despite
``dropout_rate`` dropouts except with probability 2^-20 (the achieved figure is reported in
``parameters()["failure_probability"]`` when ``n`` is too small to reach it). ``"secagg"`` is the
same protocol on the complete graph (Bonawitz et al. 2017). The bit width is 32 unless the
headroom for ``n * max_weight`` summands would leave fewer than 2^16 quantization levels, then 64.

Explicit ``degree`` and ``threshold`` are validated: ``t < 2``, ``t > n`` and thresholds unsafe for
the threat model (curious: ``t`` must exceed the corrupted count; malicious: ``t > (n + c)/2``,
per neighbourhood for SecAgg+) raise :class:`~secureagg.errors.ConfigurationError` at
construction, with every problem listed.

Distributed DP hooks in through ``client_noise(count, keystream) -> int64 array`` (each client's
share of integer noise, added to its encoded vector before masking, so the server only sees the
noised sum) and ``noise_headroom`` (the integer tail bound of the summed noise, reserved by the
encoder's no-overflow proof). The DP layer builds both from a mechanism:
``make_aggregator("secagg+", num_clients=n, distributed_dp=DistributedDP(...), privacy=acc)``
returns the composition in :mod:`secureagg.aggregators.dp` (it passes ``scale=1.0``: the clients'
values are already integers). ``scale`` otherwise defaults to the largest that fits.

In ``threat="malicious"`` mode, key advertisements are signed with Ed25519 identity keys from a
client registry (``identity_keys``: id -> :class:`~secureagg.crypto.signing.SigningKey`, the
simulation holding every client's key; generated if omitted), clients run a consistency round
over the survivor list, and the model digest of the round is bound into the signatures.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from secureagg.aggregators.registry import register
from secureagg.crypto import labels, prg, signing
from secureagg.crypto.encoding import FixedPointEncoder
from secureagg.errors import ConfigurationError
from secureagg.protocols.base import RoundFactory, RoundSetup
from secureagg.protocols.secagg.client import IntegerNoise, SecAggClient
from secureagg.protocols.secagg.context import Randomness, RoundContext
from secureagg.protocols.secagg.params import SecAggParams, choose_parameters, validate_parameters
from secureagg.protocols.secagg.server import SecAggServer

__all__ = ["SecAggAggregator"]


class SecAggAggregator(RoundFactory):
    """Masked secure aggregation (SecAgg / SecAgg+). See the module docstring."""

    def __init__(
        self,
        *,
        num_clients: int,
        clip: float | None = None,
        complete_graph: bool = False,
        dropout_rate: float = 0.1,
        corrupt_rate: float = 0.05,
        threat: Literal["curious", "malicious"] = "curious",
        degree: int | None = None,
        threshold: int | None = None,
        min_survivors: int | None = None,
        bits: int | None = None,
        max_weight: int = 1,
        noise_headroom: int = 0,
        scale: float | None = None,
        identity_keys: Mapping[int, signing.SigningKey] | None = None,
        model_digest: bytes = b"",
        client_noise: IntegerNoise | None = None,
    ) -> None:
        problems = []
        if clip is None:
            problems.append(
                "clip is required: the bound on |value| each client's update is "
                "clipped to, e.g. make_aggregator('secagg+', num_clients=n, clip=1.0)"
            )
        if isinstance(max_weight, bool) or not isinstance(max_weight, int) or max_weight < 1:
            problems.append(f"max_weight must be an integer >= 1, got {max_weight!r}")
        if problems:
            raise ConfigurationError(problems)
        self.name = "secagg" if complete_graph else "secagg+"
        self.num_clients = num_clients
        self.params: SecAggParams
        if degree is None and threshold is None:
            self.params = choose_parameters(
                num_clients=num_clients,
                dropout_rate=dropout_rate,
                corrupt_rate=corrupt_rate,
                threat=threat,
                complete_graph=complete_graph,
            )
            if min_survivors is not None:
                self.params = validate_parameters(
                    num_clients=num_clients,
                    degree=self.params.degree,
                    threshold=self.params.threshold,
                    corrupt_rate=corrupt_rate,
                    dropout_rate=dropout_rate,
                    threat=threat,
                    min_survivors=min_survivors,
                )
        else:
            k = (
                degree
                if degree is not None
                else (
                    num_clients - 1
                    if complete_graph
                    else choose_parameters(
                        num_clients=num_clients,
                        dropout_rate=dropout_rate,
                        corrupt_rate=corrupt_rate,
                        threat=threat,
                    ).degree
                )
            )
            if complete_graph and k != num_clients - 1:
                raise ConfigurationError(
                    f"'secagg' uses the complete graph: degree must be {num_clients - 1}, got {k}"
                )
            t = threshold if threshold is not None else max(2, k // 2 + 1)
            self.params = validate_parameters(
                num_clients=num_clients,
                degree=k,
                threshold=t,
                corrupt_rate=corrupt_rate,
                dropout_rate=dropout_rate,
                threat=threat,
                min_survivors=min_survivors,
            )
        self.dropout_rate = dropout_rate
        self.corrupt_rate = corrupt_rate
        if bits is None:
            levels = (2**31 - 1 - noise_headroom) / (num_clients * max_weight)
            bits = 32 if levels >= 2**16 else 64
        self.encoder = FixedPointEncoder(
            clip=float(clip or 0.0),
            num_summands=num_clients,
            bits=bits,
            max_weight=max_weight,
            noise_headroom=noise_headroom,
            scale=scale,
        )
        self.max_weight = max_weight
        self.model_digest = model_digest
        self.client_noise = client_noise
        self._identity_keys = dict(identity_keys) if identity_keys is not None else None
        if threat == "malicious" and self._identity_keys is not None:
            missing = sorted(set(range(num_clients)) - set(self._identity_keys))
            if missing:
                raise ConfigurationError(f"identity_keys lacks clients {missing[:10]}")
        self.dropout_stages = (
            ("advertise", "share", "masked", "consistency", "unmask")
            if threat == "malicious"
            else ("advertise", "share", "masked", "unmask")
        )

    @property
    def registry(self) -> dict[int, bytes] | None:
        """Client id -> Ed25519 public key (malicious mode), as a deployment would publish it."""
        if self._identity_keys is None:
            return None
        return {u: k.public_bytes for u, k in self._identity_keys.items()}

    def error_bound(self, *, survivors: int | None = None) -> float:
        """Worst-case per-coordinate error of the decoded sum from stochastic rounding."""
        n = self.num_clients if survivors is None else survivors
        return self.encoder.error_bound(summands=n, total_weight=n * self.max_weight)

    def parameters(self) -> dict[str, Any]:
        p = self.params
        return {
            "protocol": self.name,
            "num_clients": p.num_clients,
            "degree": p.degree,
            "threshold": p.threshold,
            "threat": p.threat,
            "min_survivors": p.min_survivors,
            "corrupted_neighbours": p.corrupted_neighbours,
            "dropout_rate": self.dropout_rate,
            "corrupt_rate": self.corrupt_rate,
            "failure_probability": p.failure_probability,
            "security_failure": p.security_failure,
            "security_bits_target": 40,
            "correctness_bits_target": 20,
            "bits": self.encoder.bits,
            "clip": self.encoder.clip,
            "scale": self.encoder.effective_scale,
            "max_weight": self.max_weight,
            "error_bound": self.error_bound(),
        }

    def setup_round(
        self,
        updates: Sequence[Sequence[npt.NDArray[np.float64]]],
        *,
        weights: Sequence[float] | None,
        session_id: bytes,
        round_id: int,
        seed: bytes | None,
    ) -> RoundSetup:
        n = self.num_clients
        if len(updates) != n:
            raise ConfigurationError(f"expected {n} client updates, got {len(updates)}")
        int_weights = self._integer_weights(weights)
        shapes = tuple(tuple(int(d) for d in np.shape(a)) for a in updates[0])
        identities = self._identity_keys
        if self.params.threat == "malicious" and identities is None:
            identities = {u: self._identity(u, seed) for u in range(n)}
            self._identity_keys = identities
        registry = (
            {u: k.public_bytes for u, k in identities.items()} if identities is not None else None
        )
        ctx = RoundContext(
            params=self.params,
            session_id=session_id,
            round_id=round_id,
            encoder=self.encoder,
            shapes=shapes,
            weighted=weights is not None,
            registry=registry,
        )
        clients = {}
        for u in range(n):
            arrays = [np.asarray(a).reshape(-1) for a in updates[u]]
            flat = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            rand = Randomness(self._party_stream(seed, session_id, round_id, u))
            clients[u] = SecAggClient(
                u,
                ctx,
                flat,
                weight=int_weights[u],
                identity=identities[u] if identities else None,
                randomness=rand,
                noise=self.client_noise,
            )
        server = SecAggServer(ctx, model_digest=self.model_digest)
        return RoundSetup(server=server, clients=dict(clients))

    def _integer_weights(self, weights: Sequence[float] | None) -> list[int]:
        if weights is None:
            return [1] * self.num_clients
        problems, out = [], []
        for u, w in enumerate(weights):
            if not (
                isinstance(w, int | float | np.integer | np.floating)
                and math.isfinite(w)
                and float(w).is_integer()
                and 1 <= w <= self.max_weight
            ):
                problems.append(
                    f"client {u}: weight {w!r} must be an integer in "
                    f"[1, max_weight={self.max_weight}] (raise max_weight in "
                    "make_aggregator for larger FedAvg weights)"
                )
            else:
                out.append(int(w))
        if problems:
            raise ConfigurationError(problems)
        return out

    @staticmethod
    def _party_stream(
        seed: bytes | None, session_id: bytes, round_id: int, party: int
    ) -> prg.Keystream | None:
        return prg.seeded_party_stream(
            seed, label=labels.SEEDED_PARTY, session_id=session_id, round_id=round_id, party=party
        )

    @staticmethod
    def _identity(u: int, seed: bytes | None) -> signing.SigningKey:
        if seed is None:
            return signing.SigningKey.generate()
        stream = prg.Keystream(
            hashlib.sha256(seed).digest(),
            label=labels.SEEDED_PARTY,
            context=b"identity" + struct.pack(">I", u),
        )
        return signing.SigningKey.from_private_bytes(stream.read(32))


def _build(**kwargs: Any) -> RoundFactory:
    if kwargs.get("distributed_dp") is not None or "privacy" in kwargs:
        # Distributed DP (clients' noise shares inside SecAgg) is composed in aggregators/dp.py.
        from secureagg.aggregators.dp import distributed_dp_aggregator

        return distributed_dp_aggregator(**kwargs)
    kwargs.pop("distributed_dp", None)
    return SecAggAggregator(**kwargs)


def _secagg(**kwargs: Any) -> RoundFactory:
    return _build(complete_graph=True, **kwargs)


def _secagg_plus(**kwargs: Any) -> RoundFactory:
    return _build(complete_graph=False, **kwargs)


register("secagg", _secagg)
register("secagg+", _secagg_plus)
