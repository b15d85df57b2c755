"""CKKS summation: the server's in-place running sums and the key holder's decryption.

Threat model and invariants.

* **Validation.** Every chunk (and every key-check probe) is parsed and checked by
  :mod:`secureagg.he.ckks.ciphertexts` before it is used: malformed, truncated or foreign bytes
  raise :class:`~secureagg.errors.MalformedMessage`; TenSEAL's own exceptions never escape.
* **Streaming.** The server keeps one running ciphertext per chunk position and adds each
  arriving chunk into it in place (``add_``), one chunk held at a time beside its running sums.
* **All or nothing.** A contribution is added completely or not at all: if a later chunk fails
  validation, the chunks already added are subtracted again (exact modular arithmetic, so the
  running sums are restored bit for bit).
* **Key checks.** With a probe draw (:class:`~secureagg.he.backend.ProbeDraw`),
  :meth:`CkksAccumulator.add` also forms one masked signed sum of the client's chunks per size
  group; the key holder decrypts it (:meth:`CkksDecryptor.decrypt_probe`) and checks only its
  magnitude.

>>> import numpy as np
>>> from secureagg.he.ckks.keys import CkksPublicContext, CkksSecretKey
>>> key = CkksSecretKey()
>>> context = CkksPublicContext(key.public_material())
>>> total = context.accumulator(length=3)
>>> for values in ([1.0, 2.0, 3.0], [0.5, 0.5, 0.5]):
...     _ = total.add(list(context.encryptor().encrypt(np.array(values))))
>>> np.round(key.decryptor().decrypt(total.export(), 3), 6).tolist()
[1.5, 2.5, 3.5]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from secureagg.errors import ConfigurationError, MalformedMessage
from secureagg.he.backend import (
    Accumulator,
    Decryptor,
    ProbeDraw,
    chunk_sizes,
    size_groups,
)
from secureagg.he.ckks.ciphertexts import _byte_budget, _check_scale, _parse_native
from secureagg.he.ckks.keys import (
    SCHEME,
    CkksPublicContext,
    CkksSecretKey,
    _context_parameters,
    require_tenseal,
)
from secureagg.validation import is_integer_scalar

__all__ = ["CkksAccumulator", "CkksDecryptor"]


class CkksAccumulator(Accumulator):
    """Server side: validates chunks and adds them in place into one running sum per position."""

    def __init__(self, context: CkksPublicContext, *, length: int, scale: float) -> None:
        if not is_integer_scalar(length) or length < 1:
            raise ConfigurationError(f"length must be a positive integer, got {length!r}")
        self._context = context
        self.scale = _check_scale(context.params, scale)
        self._sizes = chunk_sizes(int(length), context.params.slots)
        self._sums: list[Any | None] = [None] * len(self._sizes)
        self._count = 0
        self._budget = _byte_budget(context.params)

    @property
    def contributions(self) -> int:
        return self._count

    @property
    def held_ciphertexts(self) -> int:
        return sum(1 for s in self._sums if s is not None)

    @property
    def chunk_count(self) -> int:
        return len(self._sizes)

    @property
    def supports_probes(self) -> bool:
        return True

    def empty(self) -> CkksAccumulator:
        return CkksAccumulator(self._context, length=sum(self._sizes), scale=self.scale)

    def add(
        self, ciphertexts: Sequence[bytes | memoryview], *, probe: ProbeDraw | None = None
    ) -> tuple[bytes, ...]:
        """Validate each chunk and add it in place; a bad chunk rolls the contribution back.

        ``ciphertexts`` may be zero-copy views of the upload; each is copied once, into the bytes
        TenSEAL's loader takes, parsed straight into a C++ vector (no Python wrappers), validated
        and added at once - while it is still in cache - then dropped, so the server holds one
        chunk at a time beside its running sums. If a later chunk fails validation, the chunks
        already added are parsed again and subtracted (ciphertext addition is exact modular
        arithmetic, so the running sums are restored bit for bit): a contribution is added
        completely or not at all.

        With ``probe``, each chunk is also added to (sign +1) or subtracted from (sign -1) its
        size group's probe, and each probe gets its group's mask added as a plaintext at the
        round's scale (no multiplication, so no level is used): one extra ciphertext per group.
        """
        ts = require_tenseal()
        if len(ciphertexts) != len(self._sizes):
            raise MalformedMessage(
                f"expected {len(self._sizes)} ciphertext chunks, got {len(ciphertexts)}"
            )
        groups = size_groups(self._sizes)
        if probe is not None and (
            len(probe.signs) != len(self._sizes) or len(probe.masks) != len(groups)
        ):
            raise ConfigurationError(
                f"a probe draw needs {len(self._sizes)} signs and {len(groups)} masks"
            )
        group_of = {size: g for g, (size, _) in enumerate(groups)}
        probes: list[Any | None] = [None] * len(groups)
        ctx = self._context._ctx
        first_parms_id, scale, budget = self._context._first_parms_id, self.scale, self._budget
        sums, sizes = self._sums, self._sizes
        added = 0
        try:
            for i, data in enumerate(ciphertexts):
                vec = _parse_native(
                    ts,
                    ctx,
                    data,
                    index=i,
                    size=sizes[i],
                    scale=scale,
                    first_parms_id=first_parms_id,
                    budget=budget,
                )
                if probe is not None:  # before vec may become a running sum
                    g = group_of[sizes[i]]
                    current = probes[g]
                    if current is None:
                        # a new ciphertext equal to +-vec; negating twice is exact and about
                        # 1000x faster than TenSEAL's copy(), which also copies the context
                        start = vec.neg()
                        if probe.signs[i] > 0:
                            start.neg_()
                        probes[g] = start
                    elif probe.signs[i] > 0:
                        current.add_(vec)
                    else:
                        current.sub_(vec)
                running = sums[i]
                if running is None:
                    sums[i] = vec  # deserialized straight into the running sum
                else:
                    running.add_(vec)  # in place (SEAL add_inplace)
                added += 1
            out: list[bytes] = []
            masks = () if probe is None else probe.masks
            for g, current in enumerate(probes if probe is not None else ()):
                if current is None:  # pragma: no cover - every group has at least one chunk
                    raise ConfigurationError("empty probe group")
                for layer in np.asarray(masks[g], dtype=np.float64).reshape(-1, groups[g][0]):
                    current.add_plain_(layer.tolist())
                out.append(current.serialize())
        except MalformedMessage:
            self._roll_back(ciphertexts, added)
            raise
        except (ValueError, RuntimeError, TypeError) as exc:
            # SEAL refusing an operation on what passed parsing (a fuzzed scale the probe's mask
            # cannot be added at): the upload is refused and its chunks taken out again
            self._roll_back(ciphertexts, added)
            raise MalformedMessage(f"the upload cannot be added: {exc}") from None
        self._count += 1
        return tuple(out)

    def _roll_back(self, ciphertexts: Sequence[bytes | memoryview], added: int) -> None:
        ts = require_tenseal()
        ctx = self._context._ctx
        for i in range(added):
            if self._count == 0:
                self._sums[i] = None  # this contribution was the first: nothing before it
                continue
            running = self._sums[i]
            if running is not None:  # always: positions fill on the first contribution
                data = ciphertexts[i]
                raw = data if isinstance(data, bytes) else bytes(data)
                running.sub_(ts._ts_cpp.CKKSVector(ctx.data, raw))

    def export(self) -> tuple[bytes, ...]:
        if self._count == 0:
            raise ConfigurationError("nothing was added: there is no aggregate to export")
        return tuple(s.serialize() for s in self._sums if s is not None)


class CkksDecryptor(Decryptor):
    """Key holder side: validates and decrypts an aggregate into float64 values."""

    scheme: ClassVar[str] = SCHEME

    def __init__(self, key: CkksSecretKey, *, scale: float) -> None:
        self._key = key
        self.scale = _check_scale(key.params, scale)
        ts = require_tenseal()
        _, _, first = _context_parameters(ts, key._private_context())
        self._first_parms_id = list(first)

    @property
    def key_fingerprint(self) -> bytes:
        return self._key.key_fingerprint

    def public_material(self) -> bytes:
        return self._key.public_material()

    def decrypt(
        self, ciphertexts: Sequence[bytes | memoryview], length: int
    ) -> npt.NDArray[np.float64]:
        ts = require_tenseal()
        sizes = chunk_sizes(int(length), self._key.params.slots)
        if len(ciphertexts) != len(sizes):
            raise MalformedMessage(
                f"expected {len(sizes)} ciphertext chunks, got {len(ciphertexts)}"
            )
        ctx = self._key._private_context()
        budget = _byte_budget(self._key.params)
        out = np.empty(int(length), dtype=np.float64)
        offset = 0
        for i, data in enumerate(ciphertexts):
            vec = _parse_native(
                ts,
                ctx,
                data,
                index=i,
                size=sizes[i],
                scale=self.scale,
                first_parms_id=self._first_parms_id,
                budget=budget,
            )
            out[offset : offset + sizes[i]] = vec.decrypt()
            offset += sizes[i]
        return out

    def decrypt_probe(self, data: bytes | memoryview, size: int) -> npt.NDArray[np.float64]:
        """Decrypt one key-check probe of ``size`` values (malformed input: ``MalformedMessage``).

        A probe is a masked signed sum of one client's chunks (:meth:`CkksAccumulator.add`); its
        values are meaningful only as magnitudes, which is all the key holder checks.
        """
        vec = _parse_native(
            require_tenseal(),
            self._key._private_context(),
            data,
            index=0,
            size=int(size),
            scale=self.scale,
            first_parms_id=self._first_parms_id,
            budget=_byte_budget(self._key.params),
            where="key-check probe",
        )
        return np.asarray(vec.decrypt(), dtype=np.float64)
