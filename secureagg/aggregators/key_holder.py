"""The HE key holder's own secret, checked against the round spec it is asked to serve.

A key holder is built from the spec and its secret key alone (``helpers_from_spec``); before it
decrypts anything for a round it checks that the spec's public key material is its own key's, so
a spec naming another key (another round's, or one the server made) is refused.

>>> key_holder_secret.__name__
'key_holder_secret'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

from secureagg.errors import ConfigurationError
from secureagg.protocols.base import KEY_HOLDER
from secureagg.protocols.spec import RoundSpec

__all__ = ["key_holder_secret"]


class _SecretKey(Protocol):
    def public_material(self) -> bytes: ...


_K = TypeVar("_K", bound=_SecretKey)


def key_holder_secret(spec: RoundSpec, secrets: Mapping[int, Any], key_type: type[_K]) -> _K:
    """The key holder's key of ``key_type`` from ``secrets``, if the spec names its public key."""
    key = secrets.get(KEY_HOLDER)
    if not isinstance(key, key_type):
        raise ConfigurationError(f"the key holder needs its {key_type.__name__}")
    if spec.public_keys.get(KEY_HOLDER) != key.public_material():
        raise ConfigurationError("the round spec names another key than the key holder's")
    return key
