"""What our messages carry inside Flower's: one ConfigRecord, ``"secureagg"``, read strictly.

Every message of ours travels as a Flower message of type ``train`` (the one type every ClientApp
registers, so the mod in front of the user's function sees it) whose content holds a ConfigRecord
under :data:`RECORD`. Its fields, by ``kind``:

- ``hello`` (server to node, one per node and round): ``session`` (bytes), ``round`` (int),
  ``protocol`` (str), ``options`` (canonical JSON str), ``num_clients`` (int). The node answers
  with ``role`` (``client`` or ``key-holder``), ``identity`` (its Ed25519 identity public key, raw
  32 bytes, or empty) and ``public`` (a key holder's fresh public key material for this round,
  or empty).
- ``step`` (server to node, one protocol message): ``party`` (int), ``sender`` (int),
  ``message`` (bytes, our codec's), ``digest`` (the round spec's digest), on the first step of
  a round to that party only ``spec`` (the spec's bytes), and ``train`` (bool, ``True``) on the
  one step of a round to a client that carries the user's training content (Flower's ``arrays``
  and ``config`` records) beside ours: the step of the stage where the protocol first uses the
  update (SecAgg/SecAgg+: ``masked``; the others: the first step). The node trains there, once
  per round. The node answers with ``recipients`` (list of int) and ``messages`` (list of
  bytes), the protocol's replies, possibly none.

Only bytes produced by our codec and the spec's own serialisation travel; nothing is pickled.
Threat model: everything read here came from another party; a missing field or a field of the
wrong type raises :class:`~secureagg.errors.MalformedMessage`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from secureagg.errors import MalformedMessage

__all__ = [
    "HELLO",
    "IDENTITY_KEY",
    "KEY_HOLDER_ROLE",
    "RECORD",
    "ROLE_KEY",
    "STEP",
    "bytes_list",
    "field",
    "hello",
    "int_field",
    "int_list",
    "step",
]

RECORD = "secureagg"
HELLO = "hello"
STEP = "step"
#: The node-config key that makes a SuperNode the round's HE key holder (value ``key-holder``).
ROLE_KEY = "secureagg-role"
KEY_HOLDER_ROLE = "key-holder"
#: The node-config key naming the node's Ed25519 identity key file (malicious mode).
IDENTITY_KEY = "secureagg-identity-key"


def hello(*, keygen: bool = False, session: bytes = b"", round_id: int = 0, protocol: str = "",
          options: str = "", num_clients: int = 0) -> dict[str, Any]:
    """A ``hello`` record; with ``keygen`` (to the key-holder node) it carries the round."""
    out: dict[str, Any] = {"kind": HELLO, "keygen": keygen}
    if keygen:
        out.update(session=session, round=round_id, protocol=protocol, options=options,
                   num_clients=num_clients)
    return out


def step(*, party: int, sender: int, message: bytes, digest: bytes, spec: bytes | None = None,
         seed: bytes | None = None, train: bool = False) -> dict[str, Any]:
    """A ``step`` record: one protocol message to ``party``; ``spec`` on its first step of a
    round, ``seed`` only in a seeded (NOT private) run, ``train`` on the step that carries the
    training content."""
    out: dict[str, Any] = {"kind": STEP, "party": party, "sender": sender, "message": message,
                           "digest": digest}
    if spec is not None:
        out["spec"] = spec
    if seed is not None:
        out["seed"] = seed
    if train:
        out["train"] = True
    return out


def field(record: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """``record[name]``, refused unless present and of ``kind`` (bool is never an int here)."""
    if name not in record:
        raise MalformedMessage(f"the {RECORD} record has no {name!r}")
    value = record[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise MalformedMessage(f"{name!r} is a bool, expected {kind}")
    if not isinstance(value, kinds):
        raise MalformedMessage(f"{name!r} is {type(value).__name__}, expected {kind}")
    return value


def int_field(record: Mapping[str, Any], name: str) -> int:
    return int(field(record, name, int))


def bytes_list(record: Mapping[str, Any], name: str) -> list[bytes]:
    value = field(record, name, list)
    if not all(isinstance(v, bytes) for v in value):
        raise MalformedMessage(f"{name!r} must be a list of bytes")
    return list(value)


def int_list(record: Mapping[str, Any], name: str) -> list[int]:
    value = field(record, name, list)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise MalformedMessage(f"{name!r} must be a list of int")
    return list(value)
