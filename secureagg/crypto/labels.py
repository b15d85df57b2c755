"""Every domain-separation label of secureagg, in one place.

Threat model: if two uses of a KDF or PRG shared a label, a key or mask derived for one purpose
could equal one derived for another (for example a pairwise mask equal to an AEAD key). Every
:func:`secureagg.crypto.kdf.derive` and :func:`secureagg.crypto.prg.expand` call therefore takes a
:class:`Label` registered here, and no two purposes share one. Labels are versioned
(``secureagg/v1/...``): a change of derivation gets a new label, never a silently different output.

Per-use context (session id, round id, party ids) is passed separately as ``context`` bytes and is
bound after the label, so the label itself stays a fixed, auditable constant.

>>> from secureagg.crypto import labels
>>> labels.SELF_MASK.name
'secureagg/v1/secagg/self-mask'
>>> labels.lookup("secureagg/v1/secagg/self-mask") is labels.SELF_MASK
True
"""

from __future__ import annotations

from dataclasses import dataclass

from secureagg.errors import UnknownLabelError

__all__ = ["ALL_LABELS", "Label", "lookup", "require"]


@dataclass(frozen=True)
class Label:
    """A registered domain-separation label. Build new ones only in this module."""

    name: str
    purpose: str

    @property
    def encoded(self) -> bytes:
        """The label as bytes, with its length prefixed so that label||context is unambiguous."""
        raw = self.name.encode("ascii")
        return len(raw).to_bytes(2, "big") + raw


_REGISTRY: dict[str, Label] = {}


def _register(name: str, purpose: str) -> Label:
    if not name.startswith("secureagg/v"):
        raise ValueError(f"label {name!r} is not versioned (secureagg/vN/...)")
    if name in _REGISTRY:
        raise ValueError(f"label {name!r} registered twice")
    label = Label(name, purpose)
    _REGISTRY[name] = label
    return label


# --- SecAgg / SecAgg+ -------------------------------------------------------------------------
SELF_MASK = _register("secureagg/v1/secagg/self-mask", "PRG expansion of a client's self-mask b_u")
PAIRWISE_MASK = _register(
    "secureagg/v1/secagg/pairwise-mask", "PRG expansion of the pairwise mask seed s_uv"
)
PAIRWISE_SEED = _register(
    "secureagg/v1/secagg/pairwise-seed", "KDF from an X25519 agreement to the pairwise mask seed"
)
SHARE_ENCRYPTION_KEY = _register(
    "secureagg/v1/secagg/share-key", "KDF from an X25519 agreement to the AEAD key for shares"
)
GRAPH = _register("secureagg/v1/secagg/graph", "PRG for the SecAgg+ neighbour graph")
SEEDED_PARTY = _register(
    "secureagg/v1/secagg/seeded-party",
    "per-party keystream of a seeded (test/benchmark) run: keys, b_u, nonces, rounding",
)

# --- encoding, sampling and noise -----------------------------------------------------------------
STOCHASTIC_ROUNDING = _register(
    "secureagg/v1/encoding/stochastic-rounding", "uniforms for stochastic rounding"
)
SHAMIR_COEFFICIENTS = _register(
    "secureagg/v1/shamir/coefficients", "random polynomial coefficients for Shamir sharing"
)
NOISE = _register("secureagg/v1/dp/noise", "keystream for DP noise sampling")
DP_SAMPLING = _register(
    "secureagg/v1/dp/poisson-sampling", "uniforms for DP-SGD's Poisson sampling of records"
)
DP_ROTATION = _register(
    "secureagg/v1/dp/rotation",
    "public random signs of a distributed-DP round's randomized Hadamard rotation",
)
DP_ROUNDING = _register(
    "secureagg/v1/dp/conditional-rounding",
    "uniforms for a client's conditional randomized rounding in distributed DP",
)
DP_CLIENT_SAMPLING = _register(
    "secureagg/v1/dp/client-sampling",
    "a client's Poisson coin: whether its update joins a DP round at the declared sampling rate",
)
TEST_VECTOR = _register("secureagg/v1/test/vector", "known-answer vectors and self-tests only")

# --- homomorphic aggregation (CKKS, Paillier) -----------------------------------------------
CKKS_FLOODING = _register(
    "secureagg/v1/he/ckks-flooding",
    "keystream for the Gaussian noise flooding of released CKKS decryptions (IND-CPA-D)",
)
HE_KEY_CHECK = _register(
    "secureagg/v1/he/key-check",
    "the server's signs and masks of the key-check probes of HE uploads (which senders' "
    "ciphertexts do not decrypt under the round's key)",
)
HE_SEEDED_PARTY = _register(
    "secureagg/v1/he/seeded-party",
    "per-party keystream of a seeded (test/benchmark) HE run: Paillier primes and blinding "
    "factors, stochastic rounding, flooding noise",
)

# --- federated training (secureagg.fl) -----------------------------------------------------------
FL_SCHEDULE = _register(
    "secureagg/v1/fl/schedule",
    "keystream for a federated run's per-round choices: client sampling, dropouts by rate",
)
FL_DATA_SPLIT = _register(
    "secureagg/v1/fl/data-split",
    "keystream for splitting a data set across clients (Dirichlet label skew, train/test split)",
)
FL_SEEDED_TRAINING = _register(
    "secureagg/v1/fl/seeded-training",
    "torch seeds of a seeded (test/benchmark) federated run: local training order per client",
)

# --- simulator (seeded, reproducible runs for tests and benchmarks only) -------------------------
SIM_SEED = _register(
    "secureagg/v1/sim/seed",
    "KDF from a user-supplied simulation seed to the round seed, session id and driver seed",
)
SIM_DRIVER = _register(
    "secureagg/v1/sim/driver",
    "keystream for the simulator's and CLI's own choices (delivery order, dropouts, test data)",
)

CANARY_AUDIT = _register(
    "secureagg/v1/audit/canaries",
    "the canary audit's canary inputs, labels and inclusion bits (from a fresh CSPRNG seed)",
)

ALL_LABELS: tuple[Label, ...] = tuple(_REGISTRY.values())


def lookup(name: str) -> Label:
    """Return the registered label called ``name``; raise :class:`UnknownLabelError` otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownLabelError(
            f"unknown label {name!r}: register it in secureagg/crypto/labels.py "
            f"(known: {', '.join(sorted(_REGISTRY))})"
        ) from None


def require(label: Label | str) -> Label:
    """Accept a :class:`Label` or a registered name; reject anything else.

    A :class:`Label` object that is not the registered one (built elsewhere) is rejected too.
    """
    if isinstance(label, str):
        return lookup(label)
    if isinstance(label, Label) and _REGISTRY.get(label.name) is label:
        return label
    raise UnknownLabelError(f"{label!r} is not a label registered in secureagg/crypto/labels.py")
