"""Encrypted cut layer for U-shaped split learning: the server's first linear layer on CKKS data.

Roles. The **client** holds its bottom layers, the head after the cut layer, the labels and the
CKKS secret key (:class:`~secureagg.he.ckks.CutLayerSecretKey`). The **server** holds the cut
layer's weight ``W`` (in x out) and bias ``b`` and an evaluation context with no key in it. Both
objects are sans-I/O: they consume and produce the frozen messages below; a driver moves them.

One training step (two round trips, as vanilla split learning)::

    client  ForwardRequest   Enc(A')            A' = [A, 1] (B x in+1), the bias folded into W'
    server  ForwardResponse  Enc(partial sums of A' W')       W' = [W; b]
    client  decrypts, sums the partials into Z = A W + b, runs its head and loss: G = dL/dZ
    client  BackwardRequest  Enc(G), and the weight gradient of [W; b], computed by the client
                             in plaintext from A' and G, per-example clipped, Gaussian-noised
    server  BackwardResponse Enc(partial sums of G W^T) with the W before the step; then SGD
    client  decrypts dL/dA = G W^T and backpropagates through its bottom layers

Threat model and what the server learns (honest-but-curious server). The server sees the
ciphertexts Enc(A') and Enc(G) - IND-CPA under RLWE at 128 bits (N = 4096, 109-bit modulus: the
HE-standard budget) - and the **noised weight gradient**: with per-example L2 clipping to ``clip``
and Gaussian noise of std ``noise_multiplier * clip`` (CSPRNG, :class:`secureagg.dp.noise.
CsprngGaussian`) it is a Gaussian-mechanism release, emitted as a ``GaussianSteps`` event for the
accountant (:func:`weight_gradient_event`: replace-one adjacency, sensitivity ``2 * clip``, no
sampling). That ε covers this release only - not the ciphertexts (protected by encryption), not
the client's bottom and head (trained on every record with exact gradients), not G in the clear
with ``encrypt_gradient=False``: :func:`weight_gradient_scope` says so in the record.
It does not see Z, G or dL/dA. The noise is the default because the exact gradient
``A'^T G`` lets the server solve for the activations: with a batch of ``B <= out`` rows and
``G`` of full row rank, ``A'^T = dW' G^T (G G^T)^-1``; with ``B > out`` it still reveals the
projection of every activation column on the column space of G. ``noise_multiplier=0`` therefore
needs ``allow_exact_weight_gradient=True`` *and* ``batch_size > out_features``, and warns.
``encrypt_gradient=False`` (cheaper) sends G in plaintext instead of Enc(G): the server then also
learns G - which leaks labels (norm/cosine attacks) and, through the head, Z - so it is an
explicit opt-in. The released gradient depends on decrypted values (G is computed from the
decrypted Z), so it carries the CKKS decryption error: the DP noise floods that error by a
factor of about 2^20 at the defaults; with the noise off the release is unflooded.

The client learns Z and dL/dA, as in vanilla split learning; with chosen gradients G it can read
``W`` out of ``G W^T``: the layer's weights are **not** confidential from the client.

Packing (why there are no rotations and no Galois keys). A batch is laid out so that a product
needs only ciphertext x plaintext multiplications and additions: in a group of ``Rc`` rows, slot
``(r, ki, cj)`` of input ciphertext ``s`` holds ``A'[r, ki*p + s]`` (replicated over ``cj``), the
plaintext for output ``t`` holds ``W'[ki*p + s, cj*q + t]`` (replicated over ``r``), and the
server returns ``sum_s`` of the products; the client finishes the inner sum over ``ki`` after
decryption. ``(Rc, p, q)`` minimise a measured cost model (encryptions, plaintext products,
decryptions) - see :func:`choose_layout`. The last slot of every group carries a secret random
**canary** that the server's plaintexts pass through unchanged: a result made under another key,
for another group, or replayed from another step fails the check on decryption
(:class:`~secureagg.errors.MalformedMessage`). Every message carries the session id and the step;
responses bind the SHA-256 digest of the request, and the backward request that of the forward:
a message out of stage, from another step or another batch is refused and nothing is applied.

Precision: CKKS scale 2^25 for inputs and weights; about 1e-5 absolute error per output for
unit-scale activations and weights (the tests assert 1e-3 on a 16-wide layer). Activations and
gradients must stay within ``activation_bound`` (checked on the client) so that the server can
prove, before computing, that its sums cannot wrap around the modulus.

>>> import numpy as np
>>> cfg = HeCutConfig(in_features=4, out_features=3, batch_size=2)
>>> client = HeCutClient(cfg)
>>> server = HeCutServer(cfg, weight=np.eye(4, 3), bias=np.zeros(3), learning_rate=0.1)
>>> server.accept_setup(client.setup())
>>> z = client.finish_forward(server.forward(client.forward(np.ones((2, 4)))))
>>> np.round(z, 3).tolist()
[[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]

Modules. This module is the protocol's entry point and re-exports the names below from:
:mod:`~secureagg.split.he_cut_config` (:class:`HeCutConfig`),
:mod:`~secureagg.split.he_cut_client` (:class:`HeCutClient`, the key holder),
:mod:`~secureagg.split.he_cut_server` (:class:`HeCutServer`, the evaluator),
:mod:`~secureagg.split.he_cut_messages` (the five messages),
:mod:`~secureagg.split.he_cut_validation` (session, step and digest binding; array checks),
:mod:`~secureagg.split.he_cut_privacy` (the ε and its scope) and
:mod:`~secureagg.split.cut_slots` (the slot layout).
"""

from __future__ import annotations

from secureagg.split.cut_slots import CutLayout, choose_layout
from secureagg.split.he_cut_client import HeCutClient
from secureagg.split.he_cut_config import HeCutConfig
from secureagg.split.he_cut_messages import (
    BackwardRequest,
    BackwardResponse,
    CutSetup,
    ForwardRequest,
    ForwardResponse,
)
from secureagg.split.he_cut_privacy import (
    WEIGHT_GRADIENT_MECHANISM,
    weight_gradient_event,
    weight_gradient_scope,
)
from secureagg.split.he_cut_server import HeCutServer

__all__ = [
    "WEIGHT_GRADIENT_MECHANISM",
    "BackwardRequest",
    "BackwardResponse",
    "CutLayout",
    "CutSetup",
    "ForwardRequest",
    "ForwardResponse",
    "HeCutClient",
    "HeCutConfig",
    "HeCutServer",
    "choose_layout",
    "weight_gradient_event",
    "weight_gradient_scope",
]
