"""The public round spec: everything a party needs to take part in a round, and nothing secret.

Threat model: a spec crosses the network (server -> every party) and is read by parties that do
not trust the sender. It is therefore a registered :class:`~secureagg.protocols.base.Message`
(kind ``"round/spec"``): it encodes canonically through the versioned codec
(:mod:`secureagg.transport.codec`), and :meth:`RoundSpec.problems` - which the codec's strict
decoding is followed by in :func:`secureagg.transport.spec_from_bytes` - checks every field as it
would any message from another party. It holds no secret: no update, no secret key, no seed.

Fields:

* ``version`` - :data:`SPEC_VERSION`; any other is refused;
* ``protocol`` - the aggregator's name (``"plain"``, ``"secagg"``, ``"secagg+"``, ``"ckks"``,
  ``"paillier"``);
* ``options`` - the aggregator's public options as canonical JSON (sorted keys, no spaces): a
  party rebuilds the same encoding, scheme and thresholds from them;
* ``session_id``, ``round_id``, ``num_clients``;
* ``shape_ranks`` and ``shape_dims`` - the update's tensor shapes, flattened (ranks, then all
  dimensions in order), checked with exact integers;
* ``weighted`` - whether the round sums FedAvg weights;
* ``public_keys`` - party id -> public key material the round needs (the HE public context under
  :data:`~secureagg.protocols.base.KEY_HOLDER`; the clients' Ed25519 identity keys in malicious
  SecAgg);
* ``model_digest`` - a digest (e.g. SHA-256) of the model the round's update belongs to, at most
  64 bytes (empty if none);
* ``digest`` - SHA-256 over every other field (:meth:`RoundSpec.compute_digest`, label
  ``secureagg/v1/round-spec``): a flipped or lost byte anywhere is refused, and the digest names
  the spec in transcripts. It detects corruption, not forgery: a spec from a server that lies is
  authenticated by what binds it (malicious-mode signatures bind the model digest; the operator's
  signature over the run record, issue "audit").

>>> spec = RoundSpec.build(protocol="plain", options={"clip": 1.0}, session_id=b"s" * 16,
...                        round_id=0, num_clients=3, shapes=[(2, 2), (3,)], weighted=False)
>>> spec.shapes, spec.option_values, spec.problems()
(((2, 2), (3,)), {'clip': 1.0}, [])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from secureagg.errors import ConfigurationError
from secureagg.protocols.base import KEY_HOLDER, SERVER, Message
from secureagg.validation import is_int

__all__ = ["MAX_DIMENSION", "SPEC_VERSION", "RoundSpec", "SpecCache", "canonical_json"]

SPEC_VERSION = 1
#: The largest update a spec may declare (values), checked with exact integers.
MAX_DIMENSION = 2**40
_MAX_CLIENTS = 1_000_000
_MAX_RANK = 32
_MAX_SESSION_ID = 64
_MAX_OPTIONS = 1 << 16
_DIGEST_LABEL = b"secureagg/v1/round-spec\x00"


def canonical_json(value: Mapping[str, Any]) -> str:
    """Sorted keys, no whitespace, finite numbers only: one text per value."""
    try:
        return json.dumps(dict(value), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"spec options must be JSON values: {exc}") from None


@dataclass(frozen=True)
class RoundSpec(Message):
    """The public, immutable description of one round (see the module docstring)."""

    KIND: ClassVar[str] = "round/spec"

    version: int
    protocol: str
    options: str
    session_id: bytes
    round_id: int
    num_clients: int
    shape_ranks: tuple[int, ...]
    shape_dims: tuple[int, ...]
    weighted: bool
    public_keys: dict[int, bytes]
    model_digest: bytes
    digest: bytes = b""

    @classmethod
    def build(
        cls,
        *,
        protocol: str,
        options: Mapping[str, Any],
        session_id: bytes,
        round_id: int,
        num_clients: int,
        shapes: Sequence[Sequence[int]],
        weighted: bool,
        public_keys: Mapping[int, bytes] | None = None,
        model_digest: bytes = b"",
    ) -> RoundSpec:
        """A checked spec (:class:`~secureagg.errors.ConfigurationError` lists every problem)."""
        early: list[str] = []
        try:
            text = canonical_json(options)
        except ConfigurationError as exc:
            early.extend(exc.problems)
            text = "{}"
        spec = cls(
            version=SPEC_VERSION,
            protocol=protocol,
            options=text,
            session_id=session_id,
            round_id=round_id,
            num_clients=num_clients,
            shape_ranks=tuple(len(s) for s in shapes),
            shape_dims=tuple(int(d) for s in shapes for d in s),
            weighted=bool(weighted),
            public_keys=dict(sorted((public_keys or {}).items())),
            model_digest=model_digest,
        )
        if not spec._structure_problems():
            spec = dataclasses.replace(spec, digest=spec.compute_digest())
        problems = early + spec.problems()
        if problems:
            raise ConfigurationError(problems)
        return spec

    # ------------------------------------------------------------------------------ reading

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        out, start = [], 0
        for rank in self.shape_ranks:
            out.append(tuple(self.shape_dims[start : start + rank]))
            start += rank
        return tuple(out)

    @property
    def dimension(self) -> int:
        """Values in one client's update (exact integer arithmetic)."""
        return sum(math.prod(shape) for shape in self.shapes)

    @property
    def option_values(self) -> dict[str, Any]:
        value = json.loads(self.options)
        if not isinstance(value, dict):  # pragma: no cover - problems() refuses it first
            raise ConfigurationError("spec options are not a JSON object")
        return value

    # ------------------------------------------------------------------------------ checks

    def compute_digest(self) -> bytes:
        """SHA-256 over every field but ``digest``, each length-prefixed in declaration order
        (the key material is hashed as it is, never copied or hex-encoded)."""
        h = hashlib.sha256(_DIGEST_LABEL)

        def put(data: bytes) -> None:
            h.update(len(data).to_bytes(8, "big"))
            h.update(data)

        def put_int(value: int) -> None:  # every integer field is bounded by problems()
            put(value.to_bytes(16, "big", signed=True))

        put_int(self.version)
        put(self.protocol.encode("utf-8"))
        put(self.options.encode("utf-8"))
        put(self.session_id)
        for value in (self.round_id, self.num_clients, len(self.shape_ranks), *self.shape_ranks,
                      len(self.shape_dims), *self.shape_dims, int(self.weighted),
                      len(self.public_keys)):
            put_int(value)
        for party, material in sorted(self.public_keys.items()):
            put_int(party)
            put(material)
        put(self.model_digest)
        return h.digest()

    def problems(self) -> list[str]:
        """Everything wrong with this spec, as a party that did not write it checks it."""
        out = self._structure_problems()
        if not out and self.digest != self.compute_digest():
            out.append("the spec's digest does not match its fields (a corrupted spec)")
        return out

    def _structure_problems(self) -> list[str]:
        out: list[str] = []
        if self.version != SPEC_VERSION:
            out.append(f"round spec version {self.version!r} is not {SPEC_VERSION}")
        if not isinstance(self.protocol, str) or not self.protocol or len(self.protocol) > 64:
            out.append("protocol must be a non-empty name")
        self._check_options(out)
        if (
            not isinstance(self.session_id, bytes)
            or not 1 <= len(self.session_id) <= _MAX_SESSION_ID
        ):
            out.append(f"session_id must be 1..{_MAX_SESSION_ID} bytes")
        if not is_int(self.round_id) or not 0 <= self.round_id < 1 << 63:
            out.append("round_id must be an integer in [0, 2^63)")
        n = self.num_clients
        if not is_int(n) or not 1 <= n <= _MAX_CLIENTS:
            out.append(f"num_clients must be an integer in 1..{_MAX_CLIENTS}")
        self._check_shapes(out)
        weighted: object = self.weighted  # a decoded field: checked, not trusted
        if not isinstance(weighted, bool):
            out.append("weighted must be True or False")
        keys = self.public_keys
        if not isinstance(keys, dict) or any(
            not is_int(k) or not isinstance(v, bytes) or not v for k, v in keys.items()
        ):
            out.append("public_keys must map party ids to non-empty bytes")
        elif is_int(n) and any(not (k in (SERVER, KEY_HOLDER) or 0 <= k < n) for k in keys):
            out.append("public_keys names a party that is not in the round")
        if not isinstance(self.model_digest, bytes) or len(self.model_digest) > 64:
            out.append("model_digest must be at most 64 bytes (e.g. a SHA-256)")
        if not isinstance(self.digest, bytes) or len(self.digest) not in (0, 32):
            out.append("digest must be 32 bytes (SHA-256)")
        return out

    def _check_options(self, out: list[str]) -> None:
        text = self.options
        if not isinstance(text, str) or len(text) > _MAX_OPTIONS:
            out.append(f"options must be JSON text of at most {_MAX_OPTIONS} characters")
            return
        try:
            value = json.loads(text)
        except ValueError:
            out.append("options are not valid JSON")
            return
        if not isinstance(value, dict):
            out.append("options must be a JSON object")
            return
        try:
            canonical = canonical_json(value)
        except ConfigurationError:
            canonical = ""
        if canonical != text:
            out.append("options are not canonical JSON (sorted keys, no spaces, finite numbers)")

    def _check_shapes(self, out: list[str]) -> None:
        ranks, dims = self.shape_ranks, self.shape_dims
        given: tuple[object, object] = (ranks, dims)
        if not isinstance(given[0], tuple) or not isinstance(given[1], tuple):
            out.append("shapes must be tuples of integers")
            return
        if not ranks or any(not is_int(r) or not 0 <= r <= _MAX_RANK for r in ranks):
            out.append(f"every tensor rank must be an integer in 0..{_MAX_RANK}")
            return
        if sum(ranks) != len(dims):
            out.append(f"the shapes declare {sum(ranks)} dimensions but carry {len(dims)}")
            return
        if any(not is_int(d) or not 0 <= d <= MAX_DIMENSION for d in dims):
            out.append(f"every dimension must be an integer in [0, {MAX_DIMENSION}]")
            return
        if self.dimension > MAX_DIMENSION:
            out.append(f"the update declares {self.dimension} values, above {MAX_DIMENSION}")


_V = TypeVar("_V")


class SpecCache(Generic[_V]):
    """What an aggregator derives from one spec (scheme, context, inner spec), computed once and
    shared by the parties it builds for that spec; a new spec replaces it.

    >>> cache: SpecCache[int] = SpecCache()
    >>> spec = RoundSpec.build(protocol="plain", options={}, session_id=b"s", round_id=0,
    ...                        num_clients=1, shapes=[(1,)], weighted=False)
    >>> cache.get(spec, lambda: 7), cache.get(spec, lambda: 8)
    (7, 7)
    """

    def __init__(self) -> None:
        self._spec: RoundSpec | None = None
        self._value: _V | None = None

    def get(self, spec: RoundSpec, build: Callable[[], _V]) -> _V:
        if self._spec is not spec or self._value is None:
            self._value = build()
            self._spec = spec
        return self._value
