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
encoder's no-overflow proof). The DP layer builds both from a mechanism by *wrapping* an
aggregator: :func:`secureagg.aggregators.dp.with_distributed_dp` rebuilds it through
:meth:`SecAggAggregator.with_options` (``scale=1.0``: the clients' values are already integers);
``make_aggregator("secagg+", num_clients=n, distributed_dp=DistributedDP(...), privacy=acc)`` is
the same wrapping, done by the registry. ``scale`` otherwise defaults to the largest that fits.
This module does not import the DP wrappers.

``client_noise`` is a Python callable: it is not part of the round spec, so a party on another
machine that rebuilds the aggregator from the spec (:func:`secureagg.aggregators.aggregator_for`)
would add no noise. ``integer_noise={"mechanism": "ddgauss" | "skellam", "variance": v}`` is the
same hook as a public, serialisable option: every client adds its own share of integer noise of
variance ``v`` per coordinate (integer units, i.e. after ``scale``), drawn from its randomness
keystream (label ``NOISE``) with :func:`secureagg.dp.noise.discrete_gaussian` (``sigma =
sqrt(v)``) or :func:`secureagg.dp.noise.skellam`. It travels in the spec's options and in
``parameters()``, so the in-process and the deployed rounds add exactly the same shares. It needs
``noise_headroom > 0`` when ``v > 0`` (the caller reserves the tail of the summed noise), and
refuses ``client_noise`` beside it. The accounting of that noise is the caller's (e.g.
:class:`secureagg.ensemble.SecureVoteAggregator`).

In the default ``threat="curious"`` mode the server is trusted to follow the protocol: one that
deviates can recover a single client's input exactly (docs/secagg.md, "What curious mode gives
up"); ``parameters()["threat_model_note"]`` says so in every run record.

In ``threat="malicious"`` mode, key advertisements are signed with Ed25519 identity keys from a
client registry (``identity_keys``: id -> :class:`~secureagg.crypto.signing.SigningKey`, the
simulation holding every client's key; generated if omitted), clients run a consistency round
over the survivor list, and the model digest of the round is bound into the signatures.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from secureagg.aggregators.registry import register
from secureagg.crypto import labels, prg, signing
from secureagg.crypto.encoding import FixedPointEncoder
from secureagg.dp import noise as dp_noise
from secureagg.errors import ConfigurationError
from secureagg.protocols.base import Message, Provision, RoundFactory, check_update
from secureagg.protocols.secagg.client import IntegerNoise, SecAggClient
from secureagg.protocols.secagg.context import STAGES, Randomness, RoundContext
from secureagg.protocols.secagg.params import SecAggParams, choose_parameters, validate_parameters
from secureagg.protocols.secagg.server import SecAggServer
from secureagg.protocols.spec import RoundSpec, SpecCache
from secureagg.validation import is_int, is_positive_real

__all__ = ["CURIOUS_MODE_NOTE", "SecAggAggregator"]

#: What the default curious mode gives up, in one sentence: carried by ``parameters()`` (and so by
#: every run record) whenever ``threat="curious"``.
CURIOUS_MODE_NOTE = (
    "curious mode trusts the server to follow the protocol: a server that deviates can recover "
    "one client's input exactly (it delivers the victim only some peers' shares, then declares "
    "those peers dropped); threat='malicious' (signed keys and a consistency round) stops this. "
    "See docs/secagg.md, 'What curious mode gives up'"
)


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
        integer_noise: Mapping[str, Any] | None = None,
    ) -> None:
        problems: list[str] = []
        if clip is None:
            problems.append(
                "clip is required: the bound on |value| each client's update is "
                "clipped to, e.g. make_aggregator('secagg+', num_clients=n, clip=1.0)"
            )
        elif not is_positive_real(clip):
            problems.append(
                f"clip must be a finite real number > 0 (the bound on |value|), got {clip!r}"
            )
        if not is_int(max_weight) or max_weight < 1:
            problems.append(f"max_weight must be an integer >= 1, got {max_weight!r}")
        given: dict[str, object] = {  # checked as what a caller may really pass
            "complete_graph": complete_graph,
            "model_digest": model_digest,
            "client_noise": client_noise,
            "identity_keys": identity_keys,
        }
        if not isinstance(given["complete_graph"], bool):
            problems.append(f"complete_graph must be True or False, got {complete_graph!r}")
        if not isinstance(given["model_digest"], bytes):
            problems.append(f"model_digest must be bytes, got {model_digest!r}")
        if given["client_noise"] is not None and not callable(given["client_noise"]):
            problems.append("client_noise must be None or a callable (count, keystream) -> array")
        keys = given["identity_keys"]
        if keys is not None and not isinstance(keys, Mapping):
            problems.append(f"identity_keys must map client ids to SigningKey, got {type(keys)}")
        if not is_int(noise_headroom) or noise_headroom < 0:
            problems.append(f"noise_headroom must be an integer >= 0, got {noise_headroom!r}")
        noise_option = _integer_noise(integer_noise, client_noise, noise_headroom, problems)
        params = self._choose(
            num_clients=num_clients,
            complete_graph=complete_graph is True,
            dropout_rate=dropout_rate,
            corrupt_rate=corrupt_rate,
            threat=threat,
            degree=degree,
            threshold=threshold,
            min_survivors=min_survivors,
            problems=problems,
        )
        if params is not None and threat == "malicious" and isinstance(identity_keys, Mapping):
            missing = sorted(set(range(num_clients)) - set(identity_keys))
            if missing:
                problems.append(f"identity_keys lacks clients {missing[:10]}")
        if problems or params is None:
            raise ConfigurationError(problems)
        self.params = params
        self.name = "secagg" if complete_graph else "secagg+"
        self.num_clients = num_clients
        self.dropout_rate = float(dropout_rate)
        self.corrupt_rate = float(corrupt_rate)
        bits_given = bits
        if bits is None:
            levels = (2**31 - 1 - noise_headroom) / (num_clients * max_weight)
            bits = 32 if levels >= 2**16 else 64
        # The encoder's own problems (bits, scale, headroom) raise here, with HeadroomError's
        # max_safe_summands / max_safe_clip intact.
        self.encoder = FixedPointEncoder(
            clip=float(clip),  # type: ignore[arg-type]  # validated above
            num_summands=num_clients,
            bits=bits,
            max_weight=max_weight,
            noise_headroom=noise_headroom,
            scale=scale,
        )
        self.max_weight = max_weight
        self._model_digest = model_digest
        #: ``integer_noise`` as given, checked: ``{"mechanism", "variance"}`` or ``None``
        self.integer_noise = noise_option
        #: the clients' noise hook: ``client_noise``, or the share ``integer_noise`` describes
        self.client_noise: IntegerNoise | None = (
            client_noise if noise_option is None else self._integer_noise_share)
        self._contexts: SpecCache[RoundContext] = SpecCache()
        self._identity_keys = dict(identity_keys) if identity_keys is not None else None
        #: The constructor's arguments, so that a wrapper (distributed DP, malicious mode) builds
        #: the same aggregator with a few of them changed (:meth:`with_options`).
        self.options: dict[str, Any] = {
            "num_clients": num_clients, "clip": clip, "complete_graph": complete_graph,
            "dropout_rate": dropout_rate, "corrupt_rate": corrupt_rate, "threat": threat,
            "degree": degree, "threshold": threshold, "min_survivors": min_survivors,
            "bits": bits_given, "max_weight": max_weight, "noise_headroom": noise_headroom,
            "scale": scale, "identity_keys": identity_keys, "model_digest": model_digest,
            "client_noise": client_noise, "integer_noise": noise_option,
        }
        #: The stages a client may drop at: this round's stage list (one declaration, in
        #: :data:`secureagg.protocols.secagg.context.STAGES`).
        self.dropout_stages = STAGES[self.params.threat]
        #: A client first uses its update at ``masked`` (its masked input): it may be built
        #: without it (:meth:`client_awaiting_update`) and given it then (:meth:`supply_update`).
        self.update_stage: str | None = "masked"

    @staticmethod
    def _choose(
        *,
        num_clients: int,
        complete_graph: bool,
        dropout_rate: float,
        corrupt_rate: float,
        threat: Literal["curious", "malicious"],
        degree: int | None,
        threshold: int | None,
        min_survivors: int | None,
        problems: list[str],
    ) -> SecAggParams | None:
        """The protocol parameters, or None with the problems appended (what the user passed)."""
        derived = False  # the threshold came from the degree, not from the user
        try:
            if degree is None and threshold is None:
                chosen = choose_parameters(
                    num_clients=num_clients,
                    complete_graph=complete_graph,
                    dropout_rate=dropout_rate,
                    corrupt_rate=corrupt_rate,
                    threat=threat,
                )
                if min_survivors is None:
                    return chosen
                degree, threshold = chosen.degree, chosen.threshold
            elif degree is None:
                degree = num_clients - 1 if complete_graph else choose_parameters(
                    num_clients=num_clients,
                    dropout_rate=dropout_rate,
                    corrupt_rate=corrupt_rate,
                    threat=threat,
                ).degree
            if complete_graph and degree != num_clients - 1:
                problems.append(
                    f"'secagg' uses the complete graph: degree must be {num_clients - 1}, got "
                    f"{degree!r} (use 'secagg+' for a sparse graph)"
                )
                return None
            if threshold is None:
                derived = True
                threshold = max(2, degree // 2 + 1) if is_int(degree) else 2
            return validate_parameters(
                num_clients=num_clients,
                degree=degree,
                threshold=threshold,
                min_survivors=min_survivors,
                dropout_rate=dropout_rate,
                corrupt_rate=corrupt_rate,
                threat=threat,
            )
        except ConfigurationError as exc:
            note = " (the threshold was derived from the degree; pass threshold= to choose it)"
            problems.extend(
                p + note if derived and p.startswith("threshold t=") else p for p in exc.problems
            )
            return None

    def with_options(self, **changes: Any) -> SecAggAggregator:
        """The same aggregator with some constructor arguments changed (validated anew)."""
        unknown = sorted(set(changes) - set(self.options))
        if unknown:
            raise ConfigurationError(f"unknown SecAgg options {unknown}")
        return SecAggAggregator(**{**self.options, **changes})

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
            **({"threat_model_note": CURIOUS_MODE_NOTE} if p.threat == "curious" else {}),
            **({} if self.integer_noise is None else {"integer_noise": dict(self.integer_noise)}),
        }

    def spec_options(self) -> dict[str, Any]:
        secret_or_derived = ("num_clients", "complete_graph", "identity_keys", "model_digest",
                             "client_noise", "integer_noise")
        out = {k: v for k, v in self.options.items() if k not in secret_or_derived}
        if self.integer_noise is not None:  # absent otherwise: other specs keep their bytes
            out["integer_noise"] = dict(self.integer_noise)
        return out

    def _integer_noise_share(
        self, count: int, stream: prg.Keystream | None
    ) -> npt.NDArray[np.int64]:
        """One client's share of ``integer_noise`` for ``count`` values, from its keystream."""
        option = self.integer_noise
        if option is None:  # pragma: no cover - only installed with the option
            raise ConfigurationError("no integer_noise option")
        if option["mechanism"] == "skellam":
            return dp_noise.skellam(option["variance"], count, stream)
        return dp_noise.discrete_gaussian(math.sqrt(option["variance"]), count, stream)

    def model_digest(self) -> bytes:
        return self._model_digest

    def provision(
        self, *, session_id: bytes, round_id: int, seed: bytes | None
    ) -> Provision:
        """Malicious mode: each client's Ed25519 identity key (its secret), the registry public."""
        if self.params.threat != "malicious":
            return Provision()
        identities = self._identity_keys
        if identities is None:
            identities = {u: self._identity(u, seed) for u in range(self.num_clients)}
            self._identity_keys = identities
        return Provision(
            public={u: k.public_bytes for u, k in identities.items()},
            secrets=dict(identities),
        )

    def round_spec(
        self,
        *,
        shapes: Sequence[Sequence[int]],
        weighted: bool,
        session_id: bytes,
        round_id: int,
        public_keys: Mapping[int, bytes] | None = None,
    ) -> RoundSpec:
        if self.params.threat == "malicious" and sorted(public_keys or {}) != list(
            range(self.num_clients)
        ):
            raise ConfigurationError(
                "malicious mode: the round spec needs every client's identity public key"
            )
        return super().round_spec(
            shapes=shapes, weighted=weighted, session_id=session_id, round_id=round_id,
            public_keys=public_keys,
        )

    def _context(self, spec: RoundSpec) -> RoundContext:
        """The round's public context (its graph computed once per spec, shared by its parties)."""
        return self._contexts.get(spec, lambda: self._new_context(spec))

    def _new_context(self, spec: RoundSpec) -> RoundContext:
        self.check_spec(spec)
        return RoundContext(
            params=self.params,
            session_id=spec.session_id,
            round_id=spec.round_id,
            encoder=self.encoder,
            shapes=spec.shapes,
            weighted=spec.weighted,
            registry=dict(spec.public_keys) if self.params.threat == "malicious" else None,
        )

    def server_from_spec(self, spec: RoundSpec, *, seed: bytes | None = None) -> SecAggServer:
        return SecAggServer(self._context(spec), model_digest=spec.model_digest)

    def client_from_spec(
        self,
        spec: RoundSpec,
        client_id: int,
        update: Sequence[npt.NDArray[np.floating[Any]]],
        *,
        weight: float | None = None,
        secret: Any = None,
        seed: bytes | None = None,
    ) -> SecAggClient:
        ctx = self._context(spec)
        identity = self._identity_secret(ctx, client_id, secret)
        flat, int_weight = self._flat_update(spec, client_id, update, weight)
        return self._client(spec, ctx, client_id, flat, int_weight, identity, seed)

    def client_awaiting_update(
        self, spec: RoundSpec, client_id: int, *, secret: Any = None, seed: bytes | None = None
    ) -> SecAggClient:
        """Client ``client_id`` built without its update, which :meth:`supply_update` gives it
        before stage :attr:`update_stage` (``masked``); its randomness is the same as
        :meth:`client_from_spec`'s, so a seeded round gives the same bytes either way."""
        ctx = self._context(spec)
        identity = self._identity_secret(ctx, client_id, secret)
        return self._client(spec, ctx, client_id, None, 1, identity, seed)

    def supply_update(
        self,
        spec: RoundSpec,
        client: Any,
        update: Sequence[npt.NDArray[np.floating[Any]]],
        *,
        weight: float | None = None,
        seed: bytes | None = None,
    ) -> None:
        """Give ``client`` (built by :meth:`client_awaiting_update` or restored from its state)
        its update and weight, checked as :meth:`client_from_spec` checks them."""
        if not isinstance(client, SecAggClient) or client.spec_digest != spec.digest:
            raise ConfigurationError("supply_update needs a SecAgg client of this round spec")
        flat, int_weight = self._flat_update(spec, client.party_id, update, weight)
        client.supply_update(flat, weight=int_weight)

    def _flat_update(
        self, spec: RoundSpec, client_id: int, update: Sequence[npt.NDArray[np.floating[Any]]],
        weight: float | None,
    ) -> tuple[npt.NDArray[Any], int]:
        arrays = [a.reshape(-1) for a in check_update(spec, client_id, update)]
        flat = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        (int_weight,) = self._integer_weights(
            None if weight is None else [weight], first=client_id
        )
        return flat, int_weight

    def _client(
        self, spec: RoundSpec, ctx: RoundContext, client_id: int, flat: npt.NDArray[Any] | None,
        weight: int, identity: signing.SigningKey | None, seed: bytes | None,
    ) -> SecAggClient:
        client = SecAggClient(
            client_id, ctx, flat, weight=weight, identity=identity,
            randomness=Randomness(
                self._party_stream(seed, spec.session_id, spec.round_id, client_id)
            ),
            noise=self.client_noise,
        )
        client.spec_digest = spec.digest
        return client

    def restore_client(
        self, spec: RoundSpec, state: Message, *, secret: Any = None
    ) -> SecAggClient:
        ctx = self._context(spec)
        identity = self._identity_secret(ctx, getattr(state, "party_id", -1), secret)
        return SecAggClient.restore(spec, ctx, state, identity=identity, noise=self.client_noise)

    @staticmethod
    def _identity_secret(
        ctx: RoundContext, client_id: int, secret: Any
    ) -> signing.SigningKey | None:
        """Malicious mode: the client's own identity key, the one the spec registers."""
        if not ctx.malicious:
            return None
        if not isinstance(secret, signing.SigningKey):
            raise ConfigurationError(
                f"client {client_id}: malicious mode needs the client's own identity "
                "SigningKey as its secret"
            )
        if ctx.registry is None or ctx.registry.get(client_id) != secret.public_bytes:
            raise ConfigurationError(
                f"client {client_id}: its identity key is not the one the spec registers"
            )
        return secret

    def _integer_weights(
        self, weights: Sequence[float] | None, *, first: int = 0
    ) -> list[int]:
        if weights is None:
            return [1]
        problems, out = [], []
        for u, w in enumerate(weights, start=first):
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


#: The mechanisms of ``integer_noise``, and the largest per-client variance (the samplers' own
#: limits: a discrete Gaussian sigma of at most 2^25, a Skellam variance of at most 2^50).
_NOISE_MECHANISMS = ("ddgauss", "skellam")
_MAX_NOISE_VARIANCE = 2.0**50


def _integer_noise(option: object, client_noise: object, noise_headroom: object,
                   problems: list[str]) -> dict[str, Any] | None:
    """``integer_noise`` checked and normalised (``{"mechanism": str, "variance": float}``), or
    ``None``; its problems appended."""
    if option is None:
        return None
    before = len(problems)
    if client_noise is not None:
        problems.append("give either client_noise (a callable) or integer_noise (the spec "
                        "option), not both")
    if not isinstance(option, Mapping) or set(option) != {"mechanism", "variance"}:
        problems.append("integer_noise must be a dict with exactly the keys 'mechanism' "
                        "('ddgauss' or 'skellam') and 'variance' (per client and coordinate, "
                        f"integer units), got {option!r}")
        return None
    mechanism, variance = option["mechanism"], option["variance"]
    if mechanism not in _NOISE_MECHANISMS:
        problems.append(f"integer_noise mechanism must be 'ddgauss' or 'skellam', got "
                        f"{mechanism!r}")
    if not (isinstance(variance, int | float) and not isinstance(variance, bool)
            and math.isfinite(variance) and 0 <= variance <= _MAX_NOISE_VARIANCE):
        problems.append(f"integer_noise variance must be a finite number in [0, 2^50] "
                        f"(per client and coordinate, integer units), got {variance!r}")
    elif variance > 0 and is_int(noise_headroom) and noise_headroom == 0:
        problems.append("integer_noise needs noise_headroom > 0: the integer tail bound of the "
                        "summed noise, reserved by the encoder's no-overflow proof")
    if len(problems) > before:
        return None
    return {"mechanism": str(mechanism), "variance": float(variance)}


def _secagg(**kwargs: Any) -> RoundFactory:
    return SecAggAggregator(complete_graph=True, **kwargs)


def _secagg_plus(**kwargs: Any) -> RoundFactory:
    return SecAggAggregator(complete_graph=False, **kwargs)


def _factory_signature() -> inspect.Signature:
    """What ``make_aggregator("secagg"/"secagg+", ...)`` accepts, for its keyword check:
    SecAggAggregator's parameters without ``complete_graph`` (fixed by the name)."""
    return inspect.Signature(
        [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for name, p in inspect.signature(SecAggAggregator.__init__).parameters.items()
            if name not in ("self", "complete_graph")
        ]
    )


_secagg.__signature__ = _secagg_plus.__signature__ = _factory_signature()  # type: ignore[attr-defined]

register("secagg", _secagg)
register("secagg+", _secagg_plus)
