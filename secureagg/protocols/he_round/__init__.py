"""One round of homomorphic aggregation: the sans-I/O parties CKKS and Paillier share.

Roles and what each learns:

* **clients** (ids ``0 .. n-1``) hold the public key only. Each encodes its update (scheme
  specific: CKKS floats or fixed point, Paillier quantised and packed) and uploads the ciphertexts
  once, in stage ``"upload"``. A client learns nothing from the round beyond what the released
  aggregate tells everyone.
* the **server** holds the public key only. It validates every upload (session, round, key
  fingerprint, chunk count, every ciphertext through the backend) and adds it *in place* into one
  running ciphertext per chunk position as it arrives, so its state does not grow with ``n``. At
  the upload deadline it needs at least ``min_clients`` contributions (else
  :class:`~secureagg.errors.InsufficientSurvivors`, nothing is decrypted) and sends the aggregate
  ciphertexts to the key holder (stage ``"release"``). It learns the released aggregate, never an
  individual update.
* the **key holder** (party :data:`~secureagg.protocols.base.KEY_HOLDER`) holds the secret key. It
  decrypts at most one aggregate per round, only from the server, only naming at least
  ``min_clients`` distinct contributors, and only if the *decrypted* count slot (every client
  encrypts a 1 there) equals that number - so a server cannot have one client's ciphertext
  decrypted by passing it off as an aggregate. The scheme then checks the decrypted values against
  the range the encoding allows and releases them (CKKS: with noise flooding or exact rounding).
  It learns the aggregate; it never sees an individual ciphertext.

If the key holder colludes with the server, they can decrypt every individual upload: the
protocol protects against each of them alone, not against both together. A malicious server can
also encrypt fake contributions under the public key to meet ``min_clients``; the release rule
binds an honest-but-curious server (authenticated uploads would be needed beyond that).

Every message carries ``session_id``, ``round_id`` and the key fingerprint; a message from another
round, session or key is refused. Scheme packages subclass the message classes here only to give
them their own ``KIND`` (``"ckks/upload"``, ``"paillier/upload"``, ...).

>>> import numpy as np, secureagg as sa
>>> agg = sa.make_aggregator("ckks", num_clients=3, clip=1.0)
>>> setup = agg.setup_round([[np.ones(4)]] * 3, weights=None, session_id=b"s" * 16,
...                         round_id=0, seed=None)
>>> type(setup.server).__name__, sorted(setup.helpers)   # the key holder is party -2
('HEServer', [-2])
"""

from __future__ import annotations

from secureagg.protocols.he_round.client import HEClient
from secureagg.protocols.he_round.key_holder import HEKeyHolder
from secureagg.protocols.he_round.messages import (
    HEAggregate,
    HEBlame,
    HEProbedAggregate,
    HERelease,
    HERequest,
    HERetry,
    HEUpload,
)
from secureagg.protocols.he_round.scheme import (
    HEScheme,
    ProbePlan,
    make_probe_plan,
    payload_chunks,
)
from secureagg.protocols.he_round.server import HEServer
from secureagg.protocols.he_round.stages import (
    MAX_ATTEMPTS,
    RELEASE,
    REUPLOAD,
    STAGES,
    UPLOAD,
    default_min_clients,
    seeded_stream,
)

__all__ = [
    "MAX_ATTEMPTS",
    "RELEASE",
    "REUPLOAD",
    "STAGES",
    "UPLOAD",
    "HEAggregate",
    "HEBlame",
    "HEClient",
    "HEKeyHolder",
    "HEProbedAggregate",
    "HERelease",
    "HERequest",
    "HERetry",
    "HEScheme",
    "HEServer",
    "HEUpload",
    "ProbePlan",
    "default_min_clients",
    "make_probe_plan",
    "payload_chunks",
    "seeded_stream",
]
