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
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from secureagg.dp.events import EventSink, SeededNoise
from secureagg.dp.noise import CsprngGaussian
from secureagg.errors import (
    ConfigurationError,
    InvalidInputError,
    MalformedMessage,
    NonFiniteInputError,
    ProtocolError,
)
from secureagg.he.ckks import (
    CUT_LAYER_PARAMETERS,
    CkksParameters,
    CutLayerEvaluator,
    CutLayerSecretKey,
)
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
from secureagg.split.he_packing import CutLayout, choose_layout
from secureagg.validation import shown

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

FloatArray = npt.NDArray[np.float64]
_DIGEST_LABEL = b"secureagg/v1/split/he-cut/digest\x00"


# ------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class HeCutConfig:
    """Parameters both parties agree on (the setup message carries them; mismatches abort).

    ``clip``: per-example L2 bound on the gradient of ``[W; b]`` (``None`` only without noise).
    ``noise_multiplier``: Gaussian std / clip on the weight gradient (0 needs
    ``allow_exact_weight_gradient=True`` and ``batch_size > out_features``).
    ``loss_reduction``: ``"mean"`` (torch's default: G is the gradient of the batch mean) or
    ``"sum"``. ``activation_bound``: every activation and gradient entry must lie within it.
    ``sample_rate``: must be 1.0 - the layer does not sample records (its batch size is fixed,
    which Poisson sampling cannot give), so it claims no amplification by sampling; kept so that
    a configuration that asked for amplification is refused rather than silently believed.
    """

    in_features: int
    out_features: int
    batch_size: int
    clip: float | None = 1.0
    noise_multiplier: float = 1.0
    allow_exact_weight_gradient: bool = False
    encrypt_gradient: bool = True
    loss_reduction: Literal["mean", "sum"] = "mean"
    activation_bound: float = 16.0
    sample_rate: float = 1.0
    params: CkksParameters = field(default=CUT_LAYER_PARAMETERS)

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in ("in_features", "out_features", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        sigma = self.noise_multiplier
        if not _finite_number(sigma) or sigma < 0:
            problems.append(f"noise_multiplier must be a finite number >= 0, got {sigma!r}")
        if self.clip is None:
            if sigma != 0:
                problems.append("clip=None (no clipping) is only possible without noise")
        elif not _finite_number(self.clip) or self.clip <= 0:
            problems.append(f"clip must be a finite number > 0 or None, got {self.clip!r}")
        if sigma == 0 and not self.allow_exact_weight_gradient:
            problems.append(
                "noise_multiplier=0 sends the exact weight gradient A^T G, from which the server "
                "can solve for the activations; set allow_exact_weight_gradient=True to accept "
                "that, or keep noise_multiplier > 0"
            )
        if (
            sigma == 0
            and isinstance(self.batch_size, int)
            and isinstance(self.out_features, int)
            and self.batch_size <= self.out_features
        ):
            problems.append(
                f"without noise, batch_size ({self.batch_size}) must exceed out_features "
                f"({self.out_features}): otherwise the exact gradient determines every activation"
            )
        if self.loss_reduction not in ("mean", "sum"):
            problems.append(f"loss_reduction must be 'mean' or 'sum', got {self.loss_reduction!r}")
        bound = self.activation_bound
        if not _finite_number(bound) or bound <= 0:
            problems.append(f"activation_bound must be a finite number > 0, got {bound!r}")
        rate = self.sample_rate
        if not _finite_number(rate) or not 0 < rate <= 1:
            problems.append(f"sample_rate must be in (0, 1], got {rate!r}")
        elif rate != 1:
            problems.append(
                f"sample_rate={rate!r} would claim amplification by sampling, but the encrypted "
                "cut layer does not sample records (fixed batches from your loader); only 1.0 is "
                "accepted, and every step is accounted as touching every record"
            )
        if problems:
            raise ConfigurationError(problems)

    def summary(self) -> dict[str, Any]:
        """What the setup message binds: everything both sides must agree on."""
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "batch_size": self.batch_size,
            "encrypt_gradient": self.encrypt_gradient,
            "activation_bound": float(self.activation_bound),
            "params": self.params.to_dict(),
        }

    def summary_json(self) -> str:
        """:meth:`summary` as canonical JSON: what :class:`CutSetup` carries."""
        return json.dumps(self.summary(), sort_keys=True, separators=(",", ":"))


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ----------------------------------------------------------------------------------- messages


def _digest(kind: bytes, session_id: bytes, step: int, parts: Sequence[bytes]) -> bytes:
    h = hashlib.sha256(_DIGEST_LABEL + kind + b"\x00" + session_id + step.to_bytes(8, "big"))
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


def _array_digest(arrays: Sequence[FloatArray | None]) -> list[bytes]:
    return [b"" if a is None else np.ascontiguousarray(a, dtype="<f8").tobytes() for a in arrays]


def _check_matrix(
    value: object, shape: tuple[int, ...], what: str, *, bound: float | None = None
) -> FloatArray:
    arr = np.asarray(value)
    if arr.shape != shape or not np.issubdtype(arr.dtype, np.floating):
        raise InvalidInputError(
            f"{what} must be a float array of shape {shape}, got {arr.dtype} {arr.shape}"
        )
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise NonFiniteInputError(f"NaN or Inf in {what}; nothing was sent or applied")
    if bound is not None and float(np.abs(arr).max(initial=0.0)) > bound:
        raise InvalidInputError(
            f"{what} has entries beyond activation_bound={bound}; scale them down (or raise the "
            "bound, within what the CKKS parameters allow)"
        )
    return arr


def _received_matrix(
    value: object, shape: tuple[int, ...], what: str, *, bound: float | None = None
) -> FloatArray:
    """A flat array from a message, checked to fill ``shape`` exactly, then checked as a matrix.

    ``shape`` comes from the configuration (Python ints), so ``math.prod`` is exact.
    """
    size = math.prod(shape)
    if not isinstance(value, np.ndarray) or value.ndim != 1 or value.size != size:
        got = (
            f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray)
            else type(value).__name__
        )
        raise InvalidInputError(
            f"{what} must carry a 1-D array of {size} values (shape {shape}, flattened), "
            f"got {got}"
        )
    arr = value
    return _check_matrix(arr.reshape(shape), shape, what, bound=bound)


def _same_step(session_id: object, step: object, own_session: bytes, own_step: int) -> bool:
    return (
        isinstance(session_id, bytes | bytearray | memoryview)
        and bytes(session_id) == own_session
        and isinstance(step, int)
        and not isinstance(step, bool)
        and step == own_step
    )


def _session_text(session_id: object) -> str:
    if isinstance(session_id, bytes | bytearray | memoryview):
        return bytes(session_id[:4]).hex()
    return type(session_id).__name__


def _ciphertexts(value: object, what: str) -> tuple[bytes, ...]:
    """A message's ciphertext tuple, or MalformedMessage (a driver may skip the constructor)."""
    if not isinstance(value, tuple | list) or not all(
        isinstance(b, bytes | bytearray | memoryview) for b in value
    ):
        raise MalformedMessage(f"{what} must be a tuple of ciphertext bytes")
    return tuple(value)


def _random_canaries(count: int) -> FloatArray:
    words = np.frombuffer(os.urandom(8 * count), dtype=np.uint64)
    return (words >> np.uint64(11)).astype(np.float64) * 2.0**-52 - 1.0  # uniform on [-1, 1)


# ------------------------------------------------------------------------------------- client


class HeCutClient:
    """The client's half: encrypts activations, decrypts results, forms the DP weight gradient.

    Stages: ``setup`` -> ``ready`` -> ``forward_sent`` -> ``forward_done`` -> ``backward_sent``
    -> ``ready``; a call out of stage raises :class:`~secureagg.errors.ProtocolError`. A rejected
    response leaves the stage unchanged (nothing is applied).
    """

    def __init__(
        self,
        config: HeCutConfig,
        *,
        key: CutLayerSecretKey | None = None,
        noise: CsprngGaussian | None = None,
        event_sink: EventSink | None = None,
        party: int | None = None,
    ) -> None:
        self.config = config
        self._key = key if key is not None else CutLayerSecretKey(config.params)
        if self._key.params != config.params:
            raise ConfigurationError("the key's CKKS parameters differ from config.params")
        if config.noise_multiplier == 0:
            warnings.warn(
                "encrypted cut layer without DP noise: the server receives the exact weight "
                "gradient A^T G, which reveals the activations' projection on G's column space",
                UserWarning,
                stacklevel=2,
            )
        self._noise = noise if noise is not None else CsprngGaussian()
        self._sink = event_sink
        self._party = party
        self.session_id = os.urandom(16)
        self.step = 0
        self.stage = "setup"
        self._inputs: FloatArray | None = None
        self._canaries: FloatArray | None = None
        self._pending_digest = b""
        if event_sink is not None and self._noise.seeded:
            event_sink.emit(SeededNoise(scope="sample", party=party, source="he_cut.weight_grad"))

    def _expect(self, stage: str) -> None:
        if self.stage != stage:
            raise ProtocolError(
                f"the client is in stage {self.stage!r}, not {stage!r}", stage=self.stage
            )

    def setup(self) -> CutSetup:
        self._expect("setup")
        self.stage = "ready"
        return CutSetup(self.session_id, self._key.evaluation_context(), self.config.summary_json())

    def forward(self, activations: npt.ArrayLike) -> ForwardRequest:
        """Encrypt the batch's activations (``batch_size x in_features``)."""
        self._expect("ready")
        cfg = self.config
        a = _check_matrix(
            activations,
            (cfg.batch_size, cfg.in_features),
            "the activations",
            bound=cfg.activation_bound,
        )
        augmented = np.hstack([a, np.ones((cfg.batch_size, 1))])
        layout = choose_layout(
            cfg.batch_size, cfg.in_features + 1, cfg.out_features, self._key.slots
        )
        canaries = _random_canaries(layout.groups)
        cts = self._key.encrypt_rows(layout.pack_inputs(augmented, canaries))
        self._inputs, self._canaries = augmented, canaries
        self._pending_digest = _digest(b"forward", self.session_id, self.step, cts)
        self.stage = "forward_sent"
        return ForwardRequest(self.session_id, self.step, self._key.key_fingerprint, cts)

    def _check_response(self, session_id: bytes, step: int, digest: bytes, stage: str) -> None:
        self._expect(stage)
        if not _same_step(session_id, step, self.session_id, self.step):
            raise ProtocolError(
                f"a response for session {_session_text(session_id)} step {shown(step)}, "
                f"expected session {self.session_id.hex()[:8]} step {self.step}: wrong batch or "
                "order",
                stage=self.stage,
            )
        if digest != self._pending_digest:
            raise ProtocolError(
                "the response is bound to another request (digest mismatch)", stage=self.stage
            )

    def finish_forward(self, response: ForwardResponse) -> FloatArray:
        """Decrypt Z = A W + b (``batch_size x out_features``)."""
        self._check_response(
            response.session_id, response.step, response.request_digest, "forward_sent"
        )
        cfg = self.config
        layout = choose_layout(
            cfg.batch_size, cfg.in_features + 1, cfg.out_features, self._key.slots
        )
        expected = layout.groups * layout.outputs_per_group
        results = _ciphertexts(response.ciphertexts, "the forward results")
        if len(results) != expected:
            raise MalformedMessage(f"expected {expected} result ciphertexts, got {len(results)}")
        z = layout.unpack_outputs(
            self._key.decrypt_products(results), _held(self._canaries, self.stage)
        )
        self.stage = "forward_done"
        return z

    def backward(self, grad_output: npt.ArrayLike) -> BackwardRequest:
        """``grad_output`` = dL/dZ; returns Enc(G) and the clipped, noised gradient of W, b."""
        self._expect("forward_done")
        cfg = self.config
        g = _check_matrix(
            grad_output,
            (cfg.batch_size, cfg.out_features),
            "the gradient dL/dZ",
            bound=cfg.activation_bound if cfg.encrypt_gradient else None,
        )
        grad = self._weight_gradient(_held(self._inputs, self.stage), g)
        forward_digest = self._pending_digest
        cts: tuple[bytes, ...] = ()
        if cfg.encrypt_gradient:
            layout = choose_layout(
                cfg.batch_size, cfg.out_features, cfg.in_features, self._key.slots
            )
            canaries = _random_canaries(layout.groups)
            cts = self._key.encrypt_rows(layout.pack_inputs(g, canaries))
            self._canaries = canaries
        request = BackwardRequest(
            self.session_id,
            self.step,
            forward_digest,
            grad[:-1].ravel(),  # a fresh array: grad is this call's own
            grad[-1].copy(),
            gradient_ciphertexts=cts if cfg.encrypt_gradient else (),
            plain_gradient=None if cfg.encrypt_gradient else g.ravel(),
        )
        self._pending_digest = _backward_digest(request)
        self.stage = "backward_sent"
        if self._sink is not None and cfg.noise_multiplier > 0 and cfg.clip is not None:
            self._sink.emit(weight_gradient_event(cfg, party=self._party, steps=1))
        return request

    def privacy_scope(self, *, epsilon: float | None = None, delta: float | None = None,
                      accountant: str | None = None) -> dict[str, Any]:
        """What the ε of the weight-gradient release covers and what it does not (see
        :func:`weight_gradient_scope`)."""
        return weight_gradient_scope(
            self.config, epsilon=epsilon, delta=delta, accountant=accountant
        )

    def _weight_gradient(self, a: FloatArray, g: FloatArray) -> FloatArray:
        """Gradient of [W; b] ((in+1) x out) in loss units: per-example clipped, noised."""
        cfg = self.config
        per_example = g * cfg.batch_size if cfg.loss_reduction == "mean" else g
        if cfg.clip is not None:
            norms = np.linalg.norm(a, axis=1) * np.linalg.norm(per_example, axis=1)
            factors = np.minimum(1.0, cfg.clip / np.maximum(norms, 1e-300))
            per_example = per_example * factors[:, None]
        total = a.T @ per_example
        if cfg.noise_multiplier > 0 and cfg.clip is not None:
            std = float(cfg.noise_multiplier * cfg.clip)
            total += self._noise.sample(total.size, std).reshape(total.shape)
        if cfg.loss_reduction == "mean":
            total /= cfg.batch_size
        return total

    def finish_backward(self, response: BackwardResponse) -> FloatArray:
        """dL/dA (``batch_size x in_features``), for the client's bottom layers."""
        self._check_response(
            response.session_id, response.step, response.request_digest, "backward_sent"
        )
        cfg = self.config
        if cfg.encrypt_gradient:
            layout = choose_layout(
                cfg.batch_size, cfg.out_features, cfg.in_features, self._key.slots
            )
            expected = layout.groups * layout.outputs_per_group
            results = _ciphertexts(response.ciphertexts, "the input-gradient results")
            if response.plain_input_gradient is not None or len(results) != expected:
                raise MalformedMessage(f"expected {expected} encrypted input-gradient ciphertexts")
            da = layout.unpack_outputs(
                self._key.decrypt_products(results), _held(self._canaries, self.stage)
            )
        else:
            if _ciphertexts(response.ciphertexts, "the input-gradient results"):
                raise MalformedMessage("expected a plaintext input gradient, got ciphertexts")
            da = _received_matrix(
                response.plain_input_gradient,
                (cfg.batch_size, cfg.in_features),
                "the input gradient",
            )
        self.stage = "ready"
        self.step += 1
        self._inputs = self._canaries = None
        return da


def _held(value: FloatArray | None, stage: str) -> FloatArray:
    if value is None:
        raise ProtocolError("no batch is in flight", stage=stage)
    return value


def _backward_digest(request: BackwardRequest) -> bytes:
    parts = [request.forward_digest, *request.gradient_ciphertexts]
    parts += _array_digest([request.weight_gradient, request.bias_gradient, request.plain_gradient])
    return _digest(b"backward", request.session_id, request.step, parts)


# ------------------------------------------------------------------------------------- server


class HeCutServer:
    """The server's half: holds W and b, evaluates on ciphertexts, applies the noised update.

    ``weight`` is ``in_features x out_features``, ``bias`` ``out_features``; both are copied.
    The SGD step ``W -= learning_rate * dW`` happens only after the whole backward request has
    been validated and dL/dA computed (with the W of the forward pass).
    """

    def __init__(
        self,
        config: HeCutConfig,
        *,
        weight: npt.ArrayLike,
        bias: npt.ArrayLike,
        learning_rate: float,
    ) -> None:
        self.config = config
        self._weight = _check_matrix(weight, (config.in_features, config.out_features), "weight")
        self._bias = _check_matrix(bias, (config.out_features,), "bias")
        if not _finite_number(learning_rate) or learning_rate <= 0:
            raise ConfigurationError(
                f"learning_rate must be a finite number > 0, got {learning_rate!r}"
            )
        self.learning_rate = float(learning_rate)
        self._evaluator: CutLayerEvaluator | None = None
        self.session_id = b""
        self.step = 0
        self.stage = "setup"
        self._forward_digest = b""

    @property
    def weight(self) -> FloatArray:
        return self._weight.copy()

    @property
    def bias(self) -> FloatArray:
        return self._bias.copy()

    def _expect(self, stage: str, session_id: bytes, step: int) -> None:
        if self.stage != stage:
            raise ProtocolError(
                f"the server is in stage {self.stage!r}, not {stage!r}", stage=self.stage
            )
        if not _same_step(session_id, step, self.session_id, self.step):
            raise ProtocolError(
                f"a message for session {_session_text(session_id)} step {shown(step)}, "
                f"expected session {self.session_id.hex()[:8]} step {self.step}: wrong batch or "
                "order",
                stage=self.stage,
            )

    def accept_setup(self, setup: CutSetup) -> None:
        """Validate the client's context (key-free, expected parameters) and configuration."""
        if self.stage != "setup":
            raise ProtocolError("setup was already accepted", stage=self.stage)
        config: object = setup.config_json
        if not isinstance(config, str) or config != self.config.summary_json():
            shown = config if isinstance(config, str) else "(not a str)"
            if len(shown) > 400:
                shown = shown[:400] + f"... ({len(shown)} characters)"
            raise ConfigurationError(
                f"the client's configuration {shown} differs from "
                f"the server's {self.config.summary_json()}"
            )
        if not isinstance(setup.session_id, bytes) or len(setup.session_id) != 16:
            raise MalformedMessage("the session id must be 16 bytes")
        self._evaluator = CutLayerEvaluator(setup.evaluation_context, expected=self.config.params)
        self.session_id = setup.session_id
        self.stage = "ready"

    def _require_evaluator(self) -> CutLayerEvaluator:
        if self._evaluator is None:
            raise ProtocolError("no setup accepted yet", stage=self.stage)
        return self._evaluator

    def _products(self, cts: Sequence[bytes], matrix: FloatArray, layout: CutLayout) -> list[bytes]:
        evaluator = self._require_evaluator()
        p = layout.inputs_per_group
        weights = layout.pack_weights(matrix)
        out: list[bytes] = []
        for g in range(layout.groups):
            out.extend(
                evaluator.weighted_sums(
                    cts[g * p : (g + 1) * p],
                    weights,
                    input_bound=float(self.config.activation_bound),
                )
            )
        return out

    def forward(self, request: ForwardRequest) -> ForwardResponse:
        """Enc(A') -> Enc(partial sums of A' [W; b]). The server sees ciphertexts only."""
        self._expect("ready", request.session_id, request.step)
        evaluator = self._require_evaluator()
        if request.key_fingerprint != evaluator.key_fingerprint:
            raise MalformedMessage("the request is bound to another key (fingerprint mismatch)")
        cfg = self.config
        layout = choose_layout(
            cfg.batch_size, cfg.in_features + 1, cfg.out_features, evaluator.slots
        )
        cts = _ciphertexts(request.ciphertexts, "the activation ciphertexts")
        expected = layout.groups * layout.inputs_per_group
        if len(cts) != expected:
            raise MalformedMessage(
                f"expected {expected} activation ciphertexts for a batch of {cfg.batch_size}, "
                f"got {len(cts)}: wrong batch size"
            )
        out = self._products(cts, np.vstack([self._weight, self._bias[None, :]]), layout)
        digest = _digest(b"forward", request.session_id, request.step, cts)
        self._forward_digest = digest
        self.stage = "forward_done"
        return ForwardResponse(self.session_id, self.step, digest, tuple(out))

    def backward(self, request: BackwardRequest) -> BackwardResponse:
        """Validate everything, compute dL/dA with the current W, then take the SGD step."""
        self._expect("forward_done", request.session_id, request.step)
        if request.forward_digest != self._forward_digest:
            raise ProtocolError(
                "the backward request belongs to another forward pass", stage=self.stage
            )
        cfg = self.config
        dw = _received_matrix(
            request.weight_gradient, (cfg.in_features, cfg.out_features), "the weight gradient"
        )
        db = _received_matrix(request.bias_gradient, (cfg.out_features,), "the bias gradient")
        if cfg.encrypt_gradient:
            if request.plain_gradient is not None:
                raise MalformedMessage("this session encrypts G: a plaintext gradient is refused")
            layout = choose_layout(
                cfg.batch_size, cfg.out_features, cfg.in_features, self._require_evaluator().slots
            )
            cts = _ciphertexts(request.gradient_ciphertexts, "the gradient ciphertexts")
            expected = layout.groups * layout.inputs_per_group
            if len(cts) != expected:
                raise MalformedMessage(
                    f"expected {expected} gradient ciphertexts, got {len(cts)}: wrong batch size"
                )
            response = BackwardResponse(
                self.session_id,
                self.step,
                _backward_digest(request),
                ciphertexts=tuple(self._products(cts, self._weight.T, layout)),
            )
        else:
            if _ciphertexts(request.gradient_ciphertexts, "the gradient ciphertexts"):
                raise MalformedMessage("this session sends G in plaintext, got ciphertexts")
            g = _received_matrix(
                request.plain_gradient, (cfg.batch_size, cfg.out_features), "the gradient dL/dZ"
            )
            response = BackwardResponse(
                self.session_id,
                self.step,
                _backward_digest(request),
                plain_input_gradient=(g @ self._weight.T).ravel(),
            )
        self._weight -= self.learning_rate * dw
        self._bias -= self.learning_rate * db
        self.stage = "ready"
        self.step += 1
        return response
