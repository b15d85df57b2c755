"""The ``"paillier"`` aggregator: packed Paillier (phe + gmpy2), safe by default.

>>> import numpy as np, secureagg as sa
>>> agg = sa.make_aggregator("paillier", num_clients=3, clip=1.0)   # keys come per round
>>> agg.parameters()["values_per_ciphertext"], agg.parameters()["key_bits"]
(170, 3072)

Roles as for CKKS (:mod:`secureagg.protocols.he_round`): the key holder creates a 3072-bit key
(fresh every round unless ``key=`` comes from the user's key service; below 2048 bits is refused)
and hands the server and the clients the public modulus ``n``. Clients quantise (``quant_bits``,
default 16), pack many values per plaintext with a proven no-overflow bound
(:class:`~secureagg.he.paillier.SlotPacking`) and encrypt with blinding factors from a
:class:`~secureagg.he.paillier.BlindingPool` (``precompute_blinding=True``: each client fills its
pool in ``precompute()``, which the driver calls before the round and times apart, in
``res.metrics["offline"]``, as a real client would between rounds). The server's pool, for
re-randomising the aggregate, depends on the public key only: in every mode the server fills it
in its own ``precompute()`` (offline, before the uploads; each factor used once, any missing one
computed at export), and with ``precompute_blinding=True`` already while the round is set up.
The server range-
and gcd-checks every ciphertext, multiplies them into running products, re-randomises the
aggregate and sends it to the key holder only when at least ``min_clients`` contributed. The key
holder CRT-decrypts, checks the count and the slot ranges, and releases exact integer sums.

``clip`` is required (the quantisation range). ``error_bound(survivors=S)`` is
``S * max_weight * clip / (2^(quant_bits-1) - 1)`` (stochastic rounding; Paillier itself is exact).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.aggregators.key_holder import KeyHolderAggregator
from secureagg.aggregators.registry import register
from secureagg.errors import ConfigurationError
from secureagg.he.paillier import (
    DEFAULT_KEY_BITS,
    MIN_KEY_BITS,
    BlindingPool,
    PaillierAccumulator,
    PaillierEncryptor,
    PaillierPublicKey,
    PaillierSecretKey,
    require_phe,
)
from secureagg.protocols.base import (
    KEY_HOLDER,
    SERVER,
    Message,
    check_update,
)
from secureagg.protocols.he_round import (
    UPLOAD,
    HEClient,
    HEKeyHolder,
    HEServer,
    default_min_clients,
    seeded_stream,
)
from secureagg.protocols.paillier import PaillierScheme
from secureagg.protocols.paillier.scheme import QUANT_BITS
from secureagg.protocols.spec import RoundSpec, SpecCache
from secureagg.validation import is_positive_real

__all__ = ["PaillierAggregator"]


class PaillierAggregator(KeyHolderAggregator):
    """Packed Paillier aggregation (see the module docstring)."""

    name = "paillier"
    scheme_name = "Paillier"
    key_type = PaillierSecretKey
    dropout_stages = (UPLOAD,)

    def __init__(
        self,
        *,
        num_clients: int,
        clip: float | None = None,
        min_clients: int | None = None,
        quant_bits: int = 16,
        key_bits: int = DEFAULT_KEY_BITS,
        max_weight: int = 1,
        precompute_blinding: bool = False,
        key: PaillierSecretKey | None = None,
    ) -> None:
        require_phe()
        problems: list[str] = []
        if clip is None:
            problems.append(
                "clip is required: Paillier quantises every value to [-clip, clip], e.g. "
                "make_aggregator('paillier', num_clients=n, clip=1.0)"
            )
        elif not is_positive_real(clip):
            problems.append(
                f"clip must be a finite real number > 0 (the bound on |value|), got {clip!r}"
            )
        bits_given: object = quant_bits
        if isinstance(bits_given, bool) or not isinstance(bits_given, int) or (
            bits_given not in QUANT_BITS
        ):
            problems.append(f"quant_bits must be one of {QUANT_BITS}, got {quant_bits!r}")
        if isinstance(max_weight, bool) or not isinstance(max_weight, int) or max_weight < 1:
            problems.append(f"max_weight must be an integer >= 1, got {max_weight!r}")
        blinding_flag: object = precompute_blinding
        if not isinstance(blinding_flag, bool):
            problems.append(
                f"precompute_blinding must be True or False, got {precompute_blinding!r}"
            )
        if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 2:
            problems.append(
                f"num_clients must be an integer >= 2 (a single client's update is never "
                f"decrypted alone), got {num_clients!r}"
            )
        elif min_clients is None:
            min_clients = default_min_clients(num_clients)
        if isinstance(num_clients, int) and num_clients >= 2 and (
            isinstance(min_clients, bool)
            or not isinstance(min_clients, int)
            or not 2 <= min_clients <= num_clients
        ):
            problems.append(
                f"min_clients must be an integer in [2, num_clients={num_clients}], got "
                f"{min_clients!r}"
            )
        if isinstance(key_bits, bool) or not isinstance(key_bits, int) or key_bits < MIN_KEY_BITS:
            problems.append(
                f"Paillier keys below {MIN_KEY_BITS} bits are refused, got key_bits={key_bits!r} "
                f"(the default is {DEFAULT_KEY_BITS})"
            )
        given: object = key
        if given is not None:
            if not isinstance(given, PaillierSecretKey):
                problems.append(f"key must be a PaillierSecretKey, got {type(given).__name__}")
            elif given.key_bits != key_bits:
                problems.append(
                    f"the key has {given.key_bits} bits but key_bits={key_bits}; pass the matching "
                    "key_bits"
                )
        if problems:
            raise ConfigurationError(problems)
        self.num_clients = int(num_clients)
        self.min_clients = int(min_clients or 2)
        self.key_bits = int(key_bits)
        self.key = key
        self.precompute_blinding = bool(precompute_blinding)
        self._rounds: SpecCache[tuple[PaillierScheme, PaillierPublicKey]] = SpecCache()
        self._options: dict[str, Any] = {
            "clip": clip,
            "quant_bits": quant_bits,
            "max_weight": max_weight,
        }
        # Validates quant_bits/clip/max_weight and proves the packing bound (HeadroomError).
        self.scheme = self._scheme(dimension=1, weighted=False)

    @property
    def clip(self) -> float:
        return self.scheme.clip

    def _scheme(self, *, dimension: int, weighted: bool) -> PaillierScheme:
        return PaillierScheme(
            key_bits=self.key_bits,
            dimension=dimension,
            weighted=weighted,
            num_clients=self.num_clients,
            **self._options,
        )

    def error_bound(self, *, survivors: int | None = None) -> float:
        return self.scheme.error_bound(
            summands=self.num_clients if survivors is None else survivors
        )

    def parameters(self) -> dict[str, Any]:
        return {
            "protocol": self.name,
            "secure": True,
            "num_clients": self.num_clients,
            "min_clients": self.min_clients,
            "key_bits": self.key_bits,
            "key_rotation": "user key service" if self.key is not None else "fresh keys per round",
            "precompute_blinding": self.precompute_blinding,
            **self.scheme.parameters(),
            "error_bound": self.error_bound(),
        }

    def spec_options(self) -> dict[str, Any]:
        return {
            **self._options,
            "min_clients": self.min_clients,
            "key_bits": self.key_bits,
            "precompute_blinding": self.precompute_blinding,
        }

    def _new_key(
        self, *, session_id: bytes, round_id: int, seed: bytes | None
    ) -> PaillierSecretKey:
        return PaillierSecretKey.generate(
            self.key_bits, rng=seeded_stream(seed, session_id, round_id, KEY_HOLDER, b"keys")
        )

    def _round(self, spec: RoundSpec) -> tuple[PaillierScheme, PaillierPublicKey]:
        """The round's scheme and public key, once per spec."""
        return self._rounds.get(spec, lambda: self._new_round(spec))

    def _new_round(self, spec: RoundSpec) -> tuple[PaillierScheme, PaillierPublicKey]:
        self.check_spec(spec)
        public_key = PaillierPublicKey.from_bytes(self.public_material(spec))
        if public_key.key_bits != self.key_bits:
            raise ConfigurationError(
                f"the spec's public key has {public_key.key_bits} bits, the round "
                f"{self.key_bits}"
            )
        return self._scheme(dimension=spec.dimension, weighted=spec.weighted), public_key

    @staticmethod
    def _pool(public_key: PaillierPublicKey, spec: RoundSpec, party: int,
              seed: bytes | None) -> BlindingPool:
        return BlindingPool(
            public_key, rng=seeded_stream(seed, spec.session_id, spec.round_id, party, b"blinding")
        )

    def server_from_spec(self, spec: RoundSpec, *, seed: bytes | None = None) -> HEServer:
        scheme, public_key = self._round(spec)
        count = math.ceil(scheme.payload_length / scheme.packing.slots)
        server_pool = self._pool(public_key, spec, SERVER, seed)
        if self.precompute_blinding:
            server_pool.fill(count)
        return HEServer(
            scheme=scheme,
            accumulator=PaillierAccumulator(public_key, count=count, pool=server_pool),
            key_fingerprint=public_key.key_fingerprint,
            num_clients=spec.num_clients,
            min_clients=self.min_clients,
            shapes=list(spec.shapes),
            session_id=spec.session_id,
            round_id=spec.round_id,
        )

    def client_from_spec(
        self,
        spec: RoundSpec,
        client_id: int,
        update: Sequence[npt.NDArray[np.floating[Any]]],
        *,
        weight: float | None = None,
        secret: Any = None,
        seed: bytes | None = None,
    ) -> HEClient:
        scheme, public_key = self._round(spec)
        client = HEClient(
            client_id,
            check_update(spec, client_id, update),
            scheme=scheme,
            encryptor=PaillierEncryptor(
                public_key, scheme.packing, pool=self._pool(public_key, spec, client_id, seed)
            ),
            session_id=spec.session_id,
            round_id=spec.round_id,
            weight=1 if weight is None else float(weight),
            rng=seeded_stream(seed, spec.session_id, spec.round_id, client_id, b"rounding"),
            precompute=self.precompute_blinding,
        )
        client.spec_digest = spec.digest
        return client

    def restore_client(self, spec: RoundSpec, state: Message, *, secret: Any = None) -> HEClient:
        scheme, public_key = self._round(spec)
        return HEClient.restore(
            spec, state, scheme=scheme,
            encryptor=PaillierEncryptor(
                public_key, scheme.packing,
                pool=BlindingPool(public_key),  # fresh OS randomness: no pool is carried over
            ),
            precompute=self.precompute_blinding,
        )

    def _key_holder(self, spec: RoundSpec, key: Any, *, seed: bytes | None) -> HEKeyHolder:
        scheme, _ = self._round(spec)
        return HEKeyHolder(
            scheme=scheme,
            decryptor=key.decryptor(scheme.packing),
            num_clients=spec.num_clients,
            min_clients=self.min_clients,
            session_id=spec.session_id,
            round_id=spec.round_id,
        )


register("paillier", PaillierAggregator)
