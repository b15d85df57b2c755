"""The stages, limits and message checks shared by the parties of an HE aggregation round.

The parties themselves live in :mod:`~secureagg.protocols.he_round.client`,
:mod:`~secureagg.protocols.he_round.server` and :mod:`~secureagg.protocols.he_round.key_holder`;
see :mod:`secureagg.protocols.he_round` for the roles, what each learns and the collusion caveat.
Each party keeps an explicit stage; anything out of stage, from the wrong sender, from another
round, session or key, or a duplicate raises :class:`~secureagg.errors.ProtocolError` naming the
stage and the sender (:func:`refusal`).

Stages: ``"upload"`` then ``"release"``; ``"reupload"`` (and ``"release"`` again) only after the
key holder blamed some uploads (**key checks**, a scheme's
:meth:`~secureagg.protocols.he_round.scheme.HEScheme.probe_plan`, CKKS with room in its
modulus): a ciphertext made under another key with the same parameters parses like any other and
would turn the decrypted sum into noise, so the server also folds each upload into masked
*probes* (a random signed sum of its chunks plus a mask from the server's CSPRNG), the key holder
decrypts every probe before the sums, and when a probe is out of range it names those senders
(``blame``) without decrypting the sums. The server drops them and asks the others to upload
again (at most :data:`MAX_ATTEMPTS` uploads per round), and the round goes on.

>>> STAGES, default_min_clients(20), default_min_clients(3)
(('upload', 'release'), 10, 2)
"""


from __future__ import annotations

import math
from typing import Any

from secureagg.crypto import labels, prg
from secureagg.errors import ProtocolError

__all__ = [
    "BLAMED",
    "MAX_ATTEMPTS",
    "RELEASE",
    "REUPLOAD",
    "STAGES",
    "UPLOAD",
    "check_counts",
    "check_ids",
    "check_round",
    "default_min_clients",
    "refusal",
    "seeded_stream",
]

UPLOAD = "upload"
RELEASE = "release"
#: Entered only after the key holder blamed some uploads: the others upload again.
REUPLOAD = "reupload"
STAGES = (UPLOAD, RELEASE)
#: Uploads per round at most (the first and the retries after blames).
MAX_ATTEMPTS = 4

BLAMED = (
    "the key holder found that its upload does not decrypt under the round's key to values an "
    "honest client sends (a ciphertext under another key, or values far outside the encoding); "
    "the client is treated as dropped"
)


def seeded_stream(
    seed: bytes | None, session_id: bytes, round_id: int, party: int, purpose: bytes
) -> prg.Keystream | None:
    """The keystream of one party and purpose in a seeded (test/benchmark) run, else None.

    Label ``secureagg/v1/he/seeded-party``; context ``session || round || party || purpose``.
    """
    return prg.seeded_party_stream(
        seed, label=labels.HE_SEEDED_PARTY, session_id=session_id, round_id=round_id,
        party=party, purpose=purpose,
    )


def default_min_clients(num_clients: int) -> int:
    """The default release threshold: half the clients, and never fewer than two."""
    return max(2, math.ceil(num_clients / 2))


# ------------------------------------------------------------------------------ checks


def refusal(message: str, *, stage: str, sender: int) -> ProtocolError:
    """The error a party raises for a message it refuses, naming the stage and the sender."""
    return ProtocolError(message, stage=stage, node_ids=[sender])


def check_round(msg: Any, *, session_id: bytes, round_id: int, fp: bytes, stage: str,
                 sender: int) -> None:
    if msg.session_id != session_id or msg.round_id != round_id:
        raise refusal("message from another session or round (replay?) refused", stage=stage,
                   sender=sender)
    if msg.key_fingerprint != fp:
        raise refusal(
            "message under another key (mismatched context or public key) refused",
            stage=stage,
            sender=sender,
        )


def check_ids(session_id: bytes, round_id: int, problems: list[str]) -> None:
    if not isinstance(session_id, bytes) or not session_id:
        problems.append("session_id must be non-empty bytes")
    if isinstance(round_id, bool) or not isinstance(round_id, int) or round_id < 0:
        problems.append(f"round_id must be a non-negative integer, got {round_id!r}")


def check_counts(num_clients: int, min_clients: int, problems: list[str]) -> None:
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 2:
        problems.append(
            f"num_clients must be an integer >= 2 (HE aggregation never decrypts one client's "
            f"update alone), got {num_clients!r}"
        )
    elif (
        isinstance(min_clients, bool)
        or not isinstance(min_clients, int)
        or not 2 <= min_clients <= num_clients
    ):
        problems.append(
            f"min_clients must be an integer in [2, num_clients={num_clients}] (a single "
            f"client's update is never decrypted alone), got {min_clients!r}"
        )
