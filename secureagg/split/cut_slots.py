"""Packing of an encrypted ``(rows x inner)`` by plain ``(inner x cols)`` product into CKKS slots.

Used by the encrypted cut layer (:mod:`secureagg.split.he_cut`): a layout needs only
ciphertext x plaintext products and additions - no rotations, no Galois keys. In a group of
``Rc`` rows, input ciphertext ``s`` holds ``X[r, ki*p + s]`` at slot ``(r, ki, cj)`` (replicated
over ``cj``), the plaintext for output ``t`` holds ``M[ki*p + s, cj*q + t]`` (replicated over
``r``), and the client finishes the inner sum over ``ki`` after decryption. The last slot of
every group is a secret canary that the plaintexts pass through unchanged (weight 1), so a result
made under another key, for another group or replayed from another step fails
:meth:`CutLayout.unpack_outputs`. :func:`choose_layout` picks ``(Rc, p, q)`` by a measured cost
model. Pure numpy: no key material here.

>>> lay = choose_layout(2, 3, 2, 16)
>>> x, m = np.arange(6.0).reshape(2, 3), np.ones((3, 2))
>>> canary = np.array([0.5] * lay.groups)
>>> slots = lay.pack_inputs(x, canary).reshape(lay.groups, lay.inputs_per_group, 16)
>>> plain = lay.pack_weights(m)
>>> y = np.einsum("gps,qps->gqs", slots, plain).reshape(-1, 16)
>>> lay.unpack_outputs(y, canary).tolist()
[[3.0, 3.0], [12.0, 12.0]]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from secureagg.errors import ConfigurationError, MalformedMessage

__all__ = ["CutLayout", "choose_layout"]

FloatArray = npt.NDArray[np.float64]
_CANARY_TOLERANCE = 1e-3
# Relative costs (ms at N = 4096 on the reference machine) used to pick the packing.
_COST_ENCRYPT, _COST_PRODUCT, _COST_DECRYPT = 1.4, 0.7, 0.75


# ------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class CutLayout:
    """How an encrypted ``(rows x inner)`` times plain ``(inner x cols)`` product is packed.

    ``rows_per_group`` rows share ciphertexts; ``inner_blocks`` x ``col_blocks`` slots per row;
    each group sends ``inputs_per_group`` ciphertexts and gets ``outputs_per_group`` back. The
    last slot is the canary.
    """

    rows: int
    inner: int
    cols: int
    slots: int
    rows_per_group: int
    inner_blocks: int
    col_blocks: int

    @property
    def inputs_per_group(self) -> int:  # p
        return -(-self.inner // self.inner_blocks)

    @property
    def outputs_per_group(self) -> int:  # q
        return -(-self.cols // self.col_blocks)

    @property
    def groups(self) -> int:
        return -(-self.rows // self.rows_per_group)

    @property
    def used_slots(self) -> int:
        return self.rows_per_group * self.inner_blocks * self.col_blocks

    def pack_inputs(self, x: FloatArray, canaries: FloatArray) -> FloatArray:
        """``(groups * p, slots)`` slot rows of ``x`` (rows x inner); canary in the last slot."""
        g, rc, ki, cj, p = (
            self.groups,
            self.rows_per_group,
            self.inner_blocks,
            self.col_blocks,
            self.inputs_per_group,
        )
        padded = np.zeros((g * rc, ki * p), dtype=np.float64)
        padded[: self.rows, : self.inner] = x
        blocks = padded.reshape(g, rc, ki, p).transpose(0, 3, 1, 2)  # (g, p, rc, ki)
        out = np.zeros((g, p, self.slots), dtype=np.float64)
        out[:, :, : self.used_slots] = np.broadcast_to(
            blocks[..., None], (g, p, rc, ki, cj)
        ).reshape(g, p, self.used_slots)
        out[:, 0, -1] = canaries
        return out.reshape(g * p, self.slots)

    def pack_weights(self, m: FloatArray) -> FloatArray:
        """``(q, p, slots)`` plaintext rows of ``m`` (inner x cols); canary weight 1 for s = 0."""
        rc, ki, cj, p, q = (
            self.rows_per_group,
            self.inner_blocks,
            self.col_blocks,
            self.inputs_per_group,
            self.outputs_per_group,
        )
        padded = np.zeros((ki * p, cj * q), dtype=np.float64)
        padded[: self.inner, : self.cols] = m
        blocks = padded.reshape(ki, p, cj, q).transpose(3, 1, 0, 2)  # (q, p, ki, cj)
        out = np.zeros((q, p, self.slots), dtype=np.float64)
        out[:, :, : self.used_slots] = np.broadcast_to(
            blocks[:, :, None], (q, p, rc, ki, cj)
        ).reshape(q, p, self.used_slots)
        out[:, 0, -1] = 1.0
        return out

    def unpack_outputs(self, y: FloatArray, canaries: FloatArray) -> FloatArray:
        """Check every group's canary and finish the inner sums: ``(rows x cols)``."""
        g, rc, ki, cj, q = (
            self.groups,
            self.rows_per_group,
            self.inner_blocks,
            self.col_blocks,
            self.outputs_per_group,
        )
        y = y.reshape(g, q, self.slots)
        if not np.all(np.abs(y[:, :, -1] - canaries[:, None]) <= _CANARY_TOLERANCE):
            raise MalformedMessage(
                "a result ciphertext failed its canary check: it was made under another key, for "
                "another batch group, or replayed from another step"
            )
        partial = y[:, :, : self.used_slots].reshape(g, q, rc, ki, cj).sum(axis=3)
        full = partial.transpose(0, 2, 3, 1).reshape(g * rc, cj * q)
        return np.ascontiguousarray(full[: self.rows, : self.cols])


@functools.lru_cache(maxsize=64)
def choose_layout(rows: int, inner: int, cols: int, slots: int) -> CutLayout:
    """The packing of least modelled cost (encryptions, plaintext products, decryptions).

    >>> lay = choose_layout(32, 65, 64, 2048)
    >>> lay.groups * lay.inputs_per_group * lay.outputs_per_group >= 32 * 65 * 64 // 2047
    True
    """
    usable = slots - 1
    best: tuple[float, CutLayout] | None = None
    for p in range(1, inner + 1):
        ki = -(-inner // p)
        if ki > 1 and -(-inner // (ki - 1)) == p:
            continue  # same p with fewer blocks already seen
        for q in range(1, cols + 1):
            cj = -(-cols // q)
            if cj > 1 and -(-cols // (cj - 1)) == q:
                continue
            rc = min(rows, usable // (ki * cj))
            if rc < 1:
                continue
            groups = -(-rows // rc)
            cost = groups * (p * _COST_ENCRYPT + q * _COST_DECRYPT + p * q * _COST_PRODUCT)
            layout = CutLayout(rows, inner, cols, slots, rc, ki, cj)
            if best is None or cost < best[0]:
                best = (cost, layout)
    if best is None:
        raise ConfigurationError(f"no packing fits {slots} slots")  # slots >= 2 always fits
    return best[1]
