"""The ``"ckks"`` aggregator: CKKS homomorphic aggregation through TenSEAL, safe by default.

>>> import numpy as np, secureagg as sa
>>> agg = sa.make_aggregator("ckks", num_clients=3, clip=1.0)
>>> res = sa.simulate(agg, [[np.full(4, 0.5)] for _ in range(3)])
>>> bool(np.all(np.abs(res.aggregate[0] - 1.5) <= agg.error_bound())), res.survivors
(True, (0, 1, 2))

Roles (see :mod:`secureagg.protocols.he_round`): a key holder (helper party
:data:`~secureagg.protocols.base.KEY_HOLDER`) creates the keys - fresh every round unless the
user's key service passes ``key=`` - and hands the server and the clients a *public* TenSEAL
context (validated: no secret key, not symmetric, HE-standard parameters, the expected ones).
Clients encrypt; the server adds ciphertexts in place as they arrive and sends the sum to the key
holder only when at least ``min_clients`` (default ``max(2, ceil(n/2))``) contributed; the key
holder decrypts that one aggregate, checks its count slot and range, and releases it with noise
flooding (``encoding="float"``, the default: ``flooding_bits=12`` above the decryption-noise bound)
or exactly rounded (``encoding="fixed"``). Turning flooding off needs ``flooding_bits=0`` *and*
``allow_unsafe_release=True``, and logs a warning.

Context: N=8192, coefficient moduli [60, 60, 60], scale 2^40 by default: 180 of the 218 bits the
HE standard allows for 128-bit security at N=8192; one ciphertext carries 4096 values in 256 KiB
(16x float32). Other parameters are validated against the HE-standard table. The second data
prime is the room the *key checks* need (``attribution``, on by default whenever they fit): the
server folds every upload into a masked probe, the key holder decrypts the probes before the
sum, and an upload made under another key (which parses like any other and would turn the
decrypted sum into noise) is refused as its sender's fault, and the round goes on without it.
The probes hide the update from the key holder to within 2^-40 in statistical distance
(``parameters()["key_checks"]``); with ``coeff_mod_bit_sizes=(60, 60)`` (half the bytes) or no clip
they cannot, and are off: such an upload then makes the key holder refuse the whole round.

``precompute_encryption=True`` lets every client compute its encryptions of zero *before* the
round (:class:`~secureagg.he.ckks.CkksZeroPool`; the driver calls each client's ``precompute()``
and reports that time apart, in ``res.metrics["offline"]``); online, a client then only encodes
its values and adds them into a pooled encryption of zero - 3-6x cheaper than a fresh
encryption, and distributed exactly like one, since each pooled ciphertext is used once. The pool
costs one ciphertext of memory per chunk (64 MB per client at d = 10^6) until the upload; since
``sa.simulate`` fills every client's pool before the round, a simulation holds n of them at once
(6.4 GB at n = 100, d = 10^6).

``error_bound(survivors=S)`` is the worst-case per-value error of the released sum: ten standard
deviations of the decryption noise and of the flooding noise (float), or the fixed-point rounding.

``release_postprocess`` (default ``None``: off, and then nothing changes - no option, spec field or
message differs) is a callable ``(values, contributors, stream) -> (values, noise_std)`` that the
**key holder** applies to the checked, decoded-for-release value slots of the sum before it
releases them (:mod:`secureagg.protocols.he_round.key_holder`, "Release post-processing"): e.g.
round an integer sum - exact when ``error_bound(survivors=S) < 0.5`` - and add discrete Gaussian
noise, so that the server and everyone after it see only the noised sum
(:class:`~secureagg.ensemble.ckks_votes.CkksVoteAggregator`). It is local to the key holder: it
is not in the round spec (a callable is not public data), so a deployment passes it where it
builds the key holder's aggregator. With it, ``error_bound`` still bounds the error of the sum the
post-processing receives, not of its output. In a seeded run it gets its own keystream (purpose
``release-postprocess``); otherwise ``stream`` is ``None`` and it draws from a fresh CSPRNG.
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
from secureagg.he.ckks import CkksParameters, CkksPublicContext, CkksSecretKey, require_tenseal
from secureagg.protocols.base import (
    KEY_HOLDER,
    SERVER,
    Message,
    check_update,
)
from secureagg.protocols.ckks import CkksScheme
from secureagg.protocols.ckks.flooding import DEFAULT_FLOODING_BITS
from secureagg.protocols.ckks.scheme import PROBE_HIDING_BITS
from secureagg.protocols.he_round import (
    MAX_ATTEMPTS,
    UPLOAD,
    HEClient,
    HEKeyHolder,
    HEServer,
    ProbePlan,
    default_min_clients,
    seeded_stream,
)
from secureagg.protocols.he_round.key_holder import ReleasePostprocess
from secureagg.protocols.spec import RoundSpec, SpecCache

__all__ = ["CkksAggregator"]


class CkksAggregator(KeyHolderAggregator):
    """CKKS aggregation (see the module docstring). Every problem is reported at construction."""

    name = "ckks"
    scheme_name = "CKKS"
    key_type = CkksSecretKey
    dropout_stages = (UPLOAD,)

    def __init__(
        self,
        *,
        num_clients: int,
        clip: float | None = None,
        min_clients: int | None = None,
        max_weight: float = 1.0,
        encoding: str = "float",
        flooding_bits: int = DEFAULT_FLOODING_BITS,
        allow_unsafe_release: bool = False,
        precision_bits: int | None = None,
        poly_modulus_degree: int = 8192,
        coeff_mod_bit_sizes: Sequence[int] = (60, 60, 60),
        scale: float = 2.0**40,
        key: CkksSecretKey | None = None,
        precompute_encryption: bool = False,
        attribution: bool | None = None,
        release_postprocess: ReleasePostprocess | None = None,
    ) -> None:
        require_tenseal()
        problems: list[str] = []
        hook: object = release_postprocess
        if hook is not None and not callable(hook):
            problems.append(
                "release_postprocess must be None or a callable (values, contributors, stream) "
                "-> (values, noise_std)"
            )
        if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 2:
            problems.append(
                f"num_clients must be an integer >= 2 (a single client's update is never "
                f"decrypted alone), got {num_clients!r}"
            )
        if min_clients is None and not problems:
            min_clients = default_min_clients(num_clients)
        if not problems and (
            isinstance(min_clients, bool)
            or not isinstance(min_clients, int)
            or not 2 <= min_clients <= num_clients
        ):
            problems.append(
                f"min_clients must be an integer in [2, num_clients={num_clients}], got "
                f"{min_clients!r}"
            )
        given: object = key
        if given is not None and not isinstance(given, CkksSecretKey):
            problems.append(
                f"key must be a CkksSecretKey from your key service, got {type(given).__name__}"
            )
        try:
            params = CkksParameters(
                poly_modulus_degree=poly_modulus_degree,
                coeff_mod_bit_sizes=tuple(coeff_mod_bit_sizes),
                scale=scale,
            )
        except ConfigurationError as exc:
            problems.extend(exc.problems)
            params = CkksParameters()
        flag: object = precompute_encryption
        if not isinstance(flag, bool):
            problems.append(
                f"precompute_encryption must be True or False, got {precompute_encryption!r}"
            )
        if isinstance(key, CkksSecretKey) and key.params != params:
            problems.append(
                f"the key's parameters {key.params.to_dict()} differ from the aggregator's "
                f"{params.to_dict()}"
            )
        if problems:
            raise ConfigurationError(problems)
        self.num_clients = int(num_clients)
        self.min_clients = int(min_clients or 2)
        self.params = params
        self.key = key
        self.precompute_encryption = bool(precompute_encryption)
        #: The key holder's release post-processing (local to the key holder; not in the spec).
        self.release_postprocess = release_postprocess
        self._rounds: SpecCache[tuple[CkksScheme, ProbePlan | None, CkksPublicContext]] = (
            SpecCache()
        )
        self._options: dict[str, Any] = {
            "clip": clip,
            "max_weight": max_weight,
            "encoding": encoding,
            "flooding_bits": flooding_bits,
            "allow_unsafe_release": allow_unsafe_release,
            "precision_bits": precision_bits,
            "attribution": attribution,
        }
        # The round-independent part of the scheme, validated now (clip, flooding, budgets).
        self.scheme = self._scheme(dimension=1, weighted=False)

    @property
    def clip(self) -> float | None:
        return self.scheme.clip

    def _scheme(self, *, dimension: int, weighted: bool) -> CkksScheme:
        return CkksScheme(
            params=self.params,
            dimension=dimension,
            weighted=weighted,
            num_clients=self.num_clients,
            **self._options,
        )

    def error_bound(self, *, survivors: int | None = None) -> float:
        """Worst-case per-value error of the released sum over ``survivors`` contributors."""
        return self.scheme.error_bound(
            summands=self.num_clients if survivors is None else survivors
        )

    def parameters(self) -> dict[str, Any]:
        return {
            "protocol": self.name,
            "secure": True,
            "num_clients": self.num_clients,
            "min_clients": self.min_clients,
            "key_rotation": "user key service" if self.key is not None else "fresh keys per round",
            "precompute_encryption": self.precompute_encryption,
            "public_context_bytes_estimate": 2
            * int(self.params.poly_modulus_degree)
            * len(self.params.coeff_mod_bit_sizes)
            * 8,
            **self.scheme.parameters(),
            "key_checks": self._key_checks(),
            "error_bound": self.error_bound(),
            **({"key_holder_postprocess": str(getattr(
                self.release_postprocess, "description",
                "the key holder post-processes the decrypted sum before it releases it"))}
               if self.release_postprocess is not None else {}),
        }

    def _key_checks(self) -> dict[str, Any]:
        """Whether uploads are key-checked (for a one-chunk update; larger ones: per round)."""
        plan = self.scheme.probe_plan(self.params.slots)
        if plan is None:
            return {
                "on": False,
                "why": "turned off (attribution=False)"
                if self._options["attribution"] is False
                else "the parameters leave no room to hide a probe (needs a clip and two data "
                "primes): an upload under another key makes the key holder refuse the round",
            }
        # hiding bits for an update of d values: log2(2 * mask_bound / value_bound) - log2(d + 2)
        per_value = math.log2(2.0 * plan.mask_bound / plan.value_bound)
        return {
            "on": True,
            "mask_bound": plan.mask_bound,
            "value_bound": plan.value_bound,
            "hiding_bits": "log2(2 * mask_bound / value_bound) - log2(d + 2) for d values",
            "max_values_at_40_bits": int(2.0 ** (per_value - PROBE_HIDING_BITS)) - 2,
            "max_upload_attempts": MAX_ATTEMPTS,
        }

    def spec_options(self) -> dict[str, Any]:
        return {
            **self._options,
            "min_clients": self.min_clients,
            "poly_modulus_degree": int(self.params.poly_modulus_degree),
            "coeff_mod_bit_sizes": [int(b) for b in self.params.coeff_mod_bit_sizes],
            "scale": float(self.params.scale),
            "precompute_encryption": self.precompute_encryption,
        }

    def _new_key(self, *, session_id: bytes, round_id: int, seed: bytes | None) -> CkksSecretKey:
        return CkksSecretKey(self.params)  # SEAL's own CSPRNG: a seed cannot reproduce it

    def _round(self, spec: RoundSpec) -> tuple[CkksScheme, ProbePlan | None, CkksPublicContext]:
        """The round's scheme, key-check plan and (clients') public context, once per spec."""
        return self._rounds.get(spec, lambda: self._new_round(spec))

    def _new_round(
        self, spec: RoundSpec
    ) -> tuple[CkksScheme, ProbePlan | None, CkksPublicContext]:
        self.check_spec(spec)
        scheme = self._scheme(dimension=spec.dimension, weighted=spec.weighted)
        return scheme, scheme.probe_plan(self.params.slots), self._public_context(spec)

    def _public_context(self, spec: RoundSpec) -> CkksPublicContext:
        return CkksPublicContext(self.public_material(spec), expected=self.params)

    def server_from_spec(self, spec: RoundSpec, *, seed: bytes | None = None) -> HEServer:
        scheme, plan, _ = self._round(spec)
        context = self._public_context(spec)  # the server's own copy
        return HEServer(
            scheme=scheme,
            probe_plan=plan,
            accumulator=context.accumulator(length=scheme.payload_length, scale=scheme.scale),
            key_fingerprint=context.key_fingerprint,
            num_clients=spec.num_clients,
            min_clients=self.min_clients,
            shapes=list(spec.shapes),
            session_id=spec.session_id,
            round_id=spec.round_id,
            rng=seeded_stream(seed, spec.session_id, spec.round_id, SERVER, b"key-check"),
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
        scheme, _, context = self._round(spec)
        client = HEClient(
            client_id,
            check_update(spec, client_id, update),
            scheme=scheme,
            encryptor=context.encryptor(scale=scheme.scale),  # each client its own pool
            session_id=spec.session_id,
            round_id=spec.round_id,
            weight=1.0 if weight is None else float(weight),
            rng=seeded_stream(seed, spec.session_id, spec.round_id, client_id, b"rounding"),
            precompute=self.precompute_encryption,
        )
        client.spec_digest = spec.digest
        return client

    def restore_client(self, spec: RoundSpec, state: Message, *, secret: Any = None) -> HEClient:
        scheme, _, context = self._round(spec)
        return HEClient.restore(
            spec, state, scheme=scheme, encryptor=context.encryptor(scale=scheme.scale),
            precompute=self.precompute_encryption,
        )

    def _key_holder(self, spec: RoundSpec, key: Any, *, seed: bytes | None) -> HEKeyHolder:
        scheme, plan, _ = self._round(spec)
        return HEKeyHolder(
            scheme=scheme,
            decryptor=key.decryptor(scale=scheme.scale),
            num_clients=spec.num_clients,
            min_clients=self.min_clients,
            session_id=spec.session_id,
            round_id=spec.round_id,
            rng=seeded_stream(seed, spec.session_id, spec.round_id, KEY_HOLDER, b"flooding"),
            probe_plan=plan,
            postprocess=self.release_postprocess,
            postprocess_rng=None if self.release_postprocess is None else seeded_stream(
                seed, spec.session_id, spec.round_id, KEY_HOLDER, b"release-postprocess"),
        )


register("ckks", CkksAggregator)
