"""What the two HE aggregators share: a key holder party with its own key, and its public part
in the round spec.

:class:`KeyHolderAggregator` provisions the key holder's key (the user's key service's, or a
fresh one per round), requires its public material in every round spec, and builds the key
holder from the spec and its own key alone - after checking that the spec names that key, so a
spec naming another key (another round's, or one the server made) is refused. A key holder whose
process ends between messages is rebuilt the same way and takes over its exported state
(:meth:`KeyHolderAggregator.restore_helper`): the state must belong to the same round spec and
to the key holder, and the key is passed again (it is never in the state).

>>> KeyHolderAggregator.__name__
'KeyHolderAggregator'
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from secureagg.errors import ConfigurationError
from secureagg.protocols.base import KEY_HOLDER, Message, Party, Provision, RoundFactory
from secureagg.protocols.he_round import HEKeyHolder
from secureagg.protocols.spec import RoundSpec

__all__ = ["KeyHolderAggregator", "SecretKey"]


class SecretKey(Protocol):
    def public_material(self) -> bytes: ...


class KeyHolderAggregator(RoundFactory):
    """An aggregator whose round needs the key holder's public key in its spec."""

    #: The scheme's name in messages ("CKKS", "Paillier") and its secret-key class.
    scheme_name: str
    key_type: type[Any]
    key: Any = None

    @abc.abstractmethod
    def _new_key(self, *, session_id: bytes, round_id: int, seed: bytes | None) -> SecretKey:
        """A fresh key for one round (when no key service's key was given)."""

    @abc.abstractmethod
    def _key_holder(self, spec: RoundSpec, key: Any, *, seed: bytes | None) -> HEKeyHolder:
        """The key holder of the round ``spec`` describes, holding ``key`` (already checked)."""

    def provision(
        self, *, session_id: bytes, round_id: int, seed: bytes | None
    ) -> Provision:
        """The key holder's key (fresh unless ``key=`` was given); its public part is public."""
        key = self.key
        if key is None:
            key = self._new_key(session_id=session_id, round_id=round_id, seed=seed)
        return Provision(public={KEY_HOLDER: key.public_material()}, secrets={KEY_HOLDER: key})

    def round_spec(
        self,
        *,
        shapes: Sequence[Sequence[int]],
        weighted: bool,
        session_id: bytes,
        round_id: int,
        public_keys: Mapping[int, bytes] | None = None,
    ) -> RoundSpec:
        if not public_keys or KEY_HOLDER not in public_keys:
            raise ConfigurationError(
                f"a {self.scheme_name} round spec needs the key holder's public key"
            )
        return super().round_spec(
            shapes=shapes, weighted=weighted, session_id=session_id, round_id=round_id,
            public_keys={KEY_HOLDER: public_keys[KEY_HOLDER]},
        )

    def helpers_from_spec(
        self, spec: RoundSpec, secrets: Mapping[int, Any], *, seed: bytes | None = None
    ) -> dict[int, Party]:
        return {KEY_HOLDER: self._checked_key_holder(spec, secrets, seed=seed)}

    def restore_helper(
        self, spec: RoundSpec, state: Message, secrets: Mapping[int, Any]
    ) -> HEKeyHolder:
        """The key holder ``state`` describes: built from the spec and its own key (passed again
        in ``secrets``; never in a state), then given the state, which must be this round's
        (the spec's digest) and the key holder's; anything else raises
        :class:`~secureagg.errors.MalformedMessage` naming it."""
        holder = self._checked_key_holder(spec, secrets, seed=None)
        holder.load_state(spec, state)
        return holder

    def _checked_key_holder(
        self, spec: RoundSpec, secrets: Mapping[int, Any], *, seed: bytes | None
    ) -> HEKeyHolder:
        """The key holder, once its key is checked against the key the spec names."""
        key = secrets.get(KEY_HOLDER)
        if not isinstance(key, self.key_type):
            raise ConfigurationError(f"the key holder needs its {self.key_type.__name__}")
        if spec.public_keys.get(KEY_HOLDER) != key.public_material():
            raise ConfigurationError("the round spec names another key than the key holder's")
        holder = self._key_holder(spec, key, seed=seed)
        holder.spec_digest = spec.digest
        return holder

    def public_material(self, spec: RoundSpec) -> bytes:
        """The key holder's public key material the spec carries."""
        material = spec.public_keys.get(KEY_HOLDER)
        if material is None:
            raise ConfigurationError(f"the round spec carries no {self.scheme_name} public key")
        return material
