"""The key holder of an HE aggregation round: checks every upload's key-check probes, then
decrypts one aggregate per round and releases it under the scheme's rule
(:mod:`~secureagg.protocols.he_round.stages`).

Between two messages the key holder exports its in-round state
(:meth:`HEKeyHolder.export_state`, a :class:`~secureagg.protocols.he_round.state.HEKeyHolderState`)
and a key holder freshly built in another process takes it over (:meth:`HEKeyHolder.load_state`).
Invariant: the one decryption per round survives this - a key holder restored after it released
(or refused, or failed) still refuses a second aggregate. The secret key is never in the state.

**Release post-processing** (optional, off by default; :data:`ReleasePostprocess`). A key holder
may be given ``postprocess(values, contributors, stream) -> (values, noise_std)``: after the scheme
has checked the decrypted sum and made its release (CKKS: flooded), the key holder hands the
``d`` value slots (a copy; not the weight slot) to it and releases what it returns instead, with
the noise standard deviation it states. It runs inside the key holder, on what the key holder
sees anyway (the sum), before anything leaves it: e.g. rounding an integer sum and adding
discrete Gaussian noise (:class:`~secureagg.ensemble.ckks_votes.CkksVoteAggregator`), so that
the server only ever sees the noised sum. ``stream`` is the post-processing's own keystream in a
seeded run, else ``None`` (draw from a fresh CSPRNG). The output must keep the release's dtype
and length and be finite, else :class:`~secureagg.errors.ConfigurationError`. Without it the
release and every message are exactly as before. The post-processing runs within the message that
releases, so it needs no exported state.

>>> HEKeyHolder.party_id
-2
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.crypto import prg
from secureagg.errors import ConfigurationError, InsufficientSurvivors, MalformedMessage
from secureagg.he.backend import Decryptor
from secureagg.protocols.base import KEY_HOLDER, SERVER, Envelope, Message, Party
from secureagg.protocols.he_round.scheme import HEScheme, ProbePlan
from secureagg.protocols.he_round.stages import (
    MAX_ATTEMPTS,
    RELEASE,
    check_counts,
    check_ids,
    check_round,
    refusal,
)
from secureagg.protocols.he_round.state import HEKeyHolderState, check_key_holder_fields
from secureagg.protocols.spec import RoundSpec
from secureagg.protocols.state import STATE_VERSION

__all__ = ["HEKeyHolder", "ReleasePostprocess"]

#: ``(values, contributors, stream) -> (released values, noise std)``: see the module docstring.
ReleasePostprocess = Callable[
    [npt.NDArray[Any], int, prg.Keystream | None], tuple[npt.NDArray[Any], float]
]


class HEKeyHolder(Party):
    """Decrypts one aggregate per round and releases it under the scheme's rule.

    With a ``probe_plan`` it first decrypts every contributor's key-check probes and, if any lies
    outside the plan's thresholds, names those senders to the server (``blame``) *without*
    decrypting the sums; the next attempt must leave them out. Only magnitudes of probes are
    looked at, and nothing decrypted from a probe leaves the key holder.
    """

    party_id = KEY_HOLDER
    #: The digest of the round spec it was built from (its exported state is bound to it).
    spec_digest: bytes = b""

    def __init__(
        self,
        *,
        scheme: HEScheme,
        decryptor: Decryptor,
        num_clients: int,
        min_clients: int,
        session_id: bytes,
        round_id: int,
        rng: Any = None,
        probe_plan: ProbePlan | None = None,
        postprocess: ReleasePostprocess | None = None,
        postprocess_rng: prg.Keystream | None = None,
    ) -> None:
        problems: list[str] = []
        check_ids(session_id, round_id, problems)
        check_counts(num_clients, min_clients, problems)
        if probe_plan is not None and scheme.probed_aggregate_type is None:
            problems.append(f"the {scheme.name} scheme has no key-check probes")
        hook: object = postprocess
        if hook is not None and not callable(hook):
            problems.append("postprocess must be None or a callable (values, contributors, "
                            "stream) -> (values, noise_std)")
        if problems:
            raise ConfigurationError(problems)
        self.scheme = scheme
        self.decryptor = decryptor
        self.num_clients = num_clients
        self.min_clients = min_clients
        self.session_id = session_id
        self.round_id = round_id
        self.probe_plan = probe_plan
        self.postprocess = postprocess
        self._postprocess_rng = postprocess_rng
        self._rng = rng
        self.released = False
        self.blamed: set[int] = set()
        self._attempt = 0
        self._last: tuple[int, ...] | None = None

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        stage = RELEASE
        if sender != SERVER:
            raise refusal("the key holder decrypts only what the server sends", stage=stage,
                       sender=sender)
        plan = self.probe_plan
        expected = self.scheme.aggregate_type if plan is None else self.scheme.probed_aggregate_type
        if expected is None or not isinstance(message, expected):
            wanted = "an aggregate" if expected is None else expected.KIND
            raise refusal(
                f"expected {wanted}, got {message.KIND}"
                + ("" if plan is None else " (this round checks every upload's key-check probes)"),
                stage=stage, sender=sender,
            )
        check_round(message, session_id=self.session_id, round_id=self.round_id,
                     fp=self.decryptor.key_fingerprint, stage=stage, sender=sender)
        if self.released:
            raise refusal("one decryption per round: a second aggregate is refused", stage=stage,
                       sender=sender)
        ids = tuple(message.contributors)
        if (
            len(set(ids)) != len(ids)
            or list(ids) != sorted(ids)
            or any(not 0 <= i < self.num_clients for i in ids)
        ):
            raise refusal("contributors must be distinct, sorted client ids", stage=stage,
                       sender=sender)
        if len(ids) < self.min_clients:
            raise InsufficientSurvivors(
                stage=stage, survivors=len(ids), threshold=self.min_clients, node_ids=ids
            )
        if plan is not None:
            blamed = self._check_probes(message, ids, plan, sender=sender)
            if blamed:
                blame_type = self.scheme.blame_type
                if blame_type is None:  # pragma: no cover - probed schemes define it
                    raise refusal("the scheme has no blame message", stage=stage, sender=sender)
                blame = blame_type(
                    session_id=self.session_id,
                    round_id=self.round_id,
                    key_fingerprint=self.decryptor.key_fingerprint,
                    attempt=int(getattr(message, "attempt", 0)),
                    contributors=ids,
                    refused=blamed,
                )
                return [Envelope(KEY_HOLDER, SERVER, blame)]
        self.released = True  # a refused or failed decryption still uses up the round
        try:
            decrypted = self.decryptor.decrypt(message.ciphertexts, self.scheme.payload_length)
        except MalformedMessage as exc:
            raise refusal(f"aggregate refused: {exc}", stage=stage, sender=sender) from None
        values, noise_std = self.scheme.release(decrypted, contributors=len(ids), rng=self._rng)
        if self.postprocess is not None:
            values, noise_std = self._postprocessed(values, len(ids))
        release = self.scheme.release_type(
            session_id=self.session_id,
            round_id=self.round_id,
            key_fingerprint=self.decryptor.key_fingerprint,
            contributors=ids,
            values=values,
            noise_std=float(noise_std),
        )
        return [Envelope(KEY_HOLDER, SERVER, release)]

    def _postprocessed(
        self, values: npt.NDArray[Any], contributors: int
    ) -> tuple[npt.NDArray[Any], float]:
        """The release after the key holder's post-processing of its ``d`` value slots."""
        postprocess = self.postprocess
        if postprocess is None:  # pragma: no cover - the caller checks
            return values, 0.0
        d = self.scheme.dimension
        out, noise_std = postprocess(values[:d].copy(), contributors, self._postprocess_rng)
        out = np.asarray(out)
        if (
            out.shape != (d,)
            or out.dtype != values.dtype
            or (out.dtype.kind == "f" and not bool(np.isfinite(out).all()))
            or not (isinstance(noise_std, int | float) and math.isfinite(noise_std)
                    and noise_std >= 0)
        ):
            # The key holder's own configuration is wrong: nothing is released.
            raise ConfigurationError(
                f"the key holder's release post-processing must return {d} finite values of "
                f"dtype {values.dtype} and a finite noise std >= 0"
            )
        released = values.copy()
        released[:d] = out
        return released, float(noise_std)

    def _check_probes(
        self, message: Any, ids: tuple[int, ...], plan: ProbePlan, *, sender: int
    ) -> tuple[int, ...]:
        """Decrypt every contributor's probes; return the contributors whose probes fail."""
        stage = RELEASE
        if message.attempt != self._attempt or self._attempt >= MAX_ATTEMPTS:
            raise refusal(
                f"aggregate of attempt {message.attempt!r} refused (expected attempt "
                f"{self._attempt}; at most {MAX_ATTEMPTS} per round)",
                stage=stage, sender=sender,
            )
        if self.blamed & set(ids) or (
            self._last is not None and not set(ids) <= set(self._last)
        ):
            raise refusal(
                "a retried aggregate must leave out the blamed clients and add no new ones",
                stage=stage, sender=sender,
            )
        groups = plan.groups
        probes = message.probes
        if len(probes) != len(ids) * len(groups):
            raise refusal(
                f"expected {len(groups)} key-check probe(s) per contributor, got "
                f"{len(probes)} for {len(ids)}",
                stage=stage, sender=sender,
            )
        blamed: list[int] = []
        for index, cid in enumerate(ids):
            for g, (size, _) in enumerate(groups):
                data = probes[index * len(groups) + g]
                try:
                    values = self.decryptor.decrypt_probe(data, size)
                except MalformedMessage as exc:  # the server builds probes: its fault
                    raise refusal(f"aggregate refused: {exc}", stage=stage, sender=sender) from None
                # Only the largest magnitude is compared; no probe value is kept or echoed.
                if not bool(np.all(np.abs(values) <= plan.thresholds[g])):
                    blamed.append(cid)
                    break
        self._attempt += 1
        self._last = ids
        self.blamed.update(blamed)
        return tuple(blamed)

    # ------------------------------------------------------------------------------ state

    def export_state(self) -> HEKeyHolderState:
        """This key holder's state now, between two messages (secret fields: ``SECRET_FIELDS``;
        the secret key is not among them - it is never in a state)."""
        rng = self._rng
        return HEKeyHolderState(
            version=STATE_VERSION, spec_digest=self.spec_digest, party_id=self.party_id,
            stage="done" if self.released else "await-aggregate", released=self.released,
            blamed=tuple(sorted(self.blamed)), attempt=self._attempt, last=self._last,
            randomness=rng.state() if isinstance(rng, prg.Keystream) else b"",
        )

    def load_state(self, spec: RoundSpec, state: object) -> None:
        """Take over ``state`` (checked like a message from another party: this round's spec,
        the key holder's party id, every field) - on a key holder freshly built for ``spec``
        from its own key, which has received nothing yet."""
        if self.released or self._attempt or self.spec_digest != spec.digest:
            raise ConfigurationError(
                "a state is loaded only into a key holder freshly built for the same round spec"
            )
        checked = check_key_holder_fields(
            spec, state, probed=self.probe_plan is not None, min_clients=self.min_clients
        )
        self.released = checked.released
        self.blamed = set(checked.blamed)
        self._attempt = checked.attempt
        self._last = checked.last
        self._rng = prg.Keystream.resume(checked.randomness) if checked.randomness else None
