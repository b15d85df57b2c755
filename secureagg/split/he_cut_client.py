"""The key holder's half of the encrypted cut layer: :class:`HeCutClient`.

The client holds the CKKS secret key. It encrypts the cut-layer activations ``A' = [A, 1]`` (and,
by default, the gradient G), decrypts the server's partial sums and finishes the inner sums, and
forms the weight gradient the server applies: per-example clipped to ``clip`` and Gaussian-noised
(CSPRNG) - the one release the accountant charges (:func:`~secureagg.split.he_cut_privacy.
weight_gradient_event`). Every batch group carries a fresh secret random canary in its last slot;
a result that does not decrypt to it (made under another key, for another group, or replayed
from another step) is refused with :class:`~secureagg.errors.MalformedMessage`, and a response
that is not bound to the pending request with :class:`~secureagg.errors.ProtocolError`; a refused
response leaves the stage unchanged. Activations and gradients are checked against
``activation_bound`` here, before anything is encrypted or sent. Protocol, threat model and an
example: :mod:`secureagg.split.he_cut`.

It is a party of the one contract (:class:`~secureagg.protocols.base.Party`): :meth:`~HeCutClient.
start` is the setup envelope, the training loop's steps :meth:`~HeCutClient.send_forward` and
:meth:`~HeCutClient.send_backward` return envelopes to the server, and the responses arrive
through ``receive(sender, message)``, which leaves Z in :attr:`~HeCutClient.outputs` and dL/dA in
:attr:`~HeCutClient.input_gradient`. The message-level steps (:meth:`~HeCutClient.setup`,
:meth:`~HeCutClient.forward`, :meth:`~HeCutClient.finish_forward`, ...) are what those call.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.dp.events import EventSink, SeededNoise
from secureagg.dp.noise import CsprngGaussian
from secureagg.errors import ConfigurationError, MalformedMessage, ProtocolError
from secureagg.he.ckks import CutLayerSecretKey
from secureagg.protocols.base import SERVER, Envelope, Message, Party
from secureagg.split.cut_slots import choose_layout
from secureagg.split.he_cut_config import HeCutConfig
from secureagg.split.he_cut_messages import (
    BackwardRequest,
    BackwardResponse,
    CutSetup,
    ForwardRequest,
    ForwardResponse,
)
from secureagg.split.he_cut_privacy import weight_gradient_event, weight_gradient_scope
from secureagg.split.he_cut_validation import (
    backward_digest,
    check_matrix,
    ciphertext_tuple,
    received_matrix,
    request_digest,
    same_step,
    session_text,
)
from secureagg.validation import shown

__all__ = ["HeCutClient"]

FloatArray = npt.NDArray[np.float64]


def _random_canaries(count: int) -> FloatArray:
    words = np.frombuffer(os.urandom(8 * count), dtype=np.uint64)
    return (words >> np.uint64(11)).astype(np.float64) * 2.0**-52 - 1.0  # uniform on [-1, 1)


class HeCutClient(Party):
    """The client's half: encrypts activations, decrypts results, forms the DP weight gradient.

    Stages: ``setup`` -> ``ready`` -> ``forward_sent`` -> ``forward_done`` -> ``backward_sent``
    -> ``ready``; a call out of stage raises :class:`~secureagg.errors.ProtocolError`. A rejected
    response leaves the stage unchanged (nothing is applied). Its party id is ``party`` (default
    0); it speaks to :data:`~secureagg.protocols.base.SERVER` only.
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
        self.party_id = 0 if party is None else party
        #: Z of the last forward response received (``batch_size x out_features``), else None
        self.outputs: FloatArray | None = None
        #: dL/dA of the last backward response received (``batch_size x in_features``), else None
        self.input_gradient: FloatArray | None = None
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

    def start(self) -> list[Envelope]:
        """The setup (the key-free evaluation context and the configuration), to the server."""
        return [Envelope(self.party_id, SERVER, self.setup())]

    def send_forward(self, activations: npt.ArrayLike) -> list[Envelope]:
        """:meth:`forward`'s encrypted activations, as the envelope to the server."""
        request = self.forward(activations)
        self.outputs = None
        return [Envelope(self.party_id, SERVER, request)]

    def send_backward(self, grad_output: npt.ArrayLike) -> list[Envelope]:
        """:meth:`backward`'s request (Enc(G), the noised weight gradient), to the server."""
        request = self.backward(grad_output)
        self.input_gradient = None
        return [Envelope(self.party_id, SERVER, request)]

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        """Take the server's response: Z into :attr:`outputs` (a forward response) or dL/dA into
        :attr:`input_gradient` (a backward response). Nothing is sent back."""
        if sender != SERVER:
            raise ProtocolError(
                f"a {getattr(message, 'KIND', '?')} message from party {sender}, not the server; "
                "refused",
                stage=self.stage,
                node_ids=(sender,),
            )
        if isinstance(message, ForwardResponse):
            self.outputs = self.finish_forward(message)
        elif isinstance(message, BackwardResponse):
            self.input_gradient = self.finish_backward(message)
        else:
            raise ProtocolError(
                f"the client takes the server's responses, not {type(message).__name__}; refused",
                stage=self.stage,
                node_ids=(sender,),
            )
        return []

    def setup(self) -> CutSetup:
        self._expect("setup")
        self.stage = "ready"
        return CutSetup(self.session_id, self._key.evaluation_context(), self.config.summary_json())

    def forward(self, activations: npt.ArrayLike) -> ForwardRequest:
        """Encrypt the batch's activations (``batch_size x in_features``)."""
        self._expect("ready")
        cfg = self.config
        a = check_matrix(
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
        self._pending_digest = request_digest(b"forward", self.session_id, self.step, cts)
        self.stage = "forward_sent"
        return ForwardRequest(self.session_id, self.step, self._key.key_fingerprint, cts)

    def _check_response(self, session_id: bytes, step: int, digest: bytes, stage: str) -> None:
        self._expect(stage)
        if not same_step(session_id, step, self.session_id, self.step):
            raise ProtocolError(
                f"a response for session {session_text(session_id)} step {shown(step)}, "
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
        results = ciphertext_tuple(response.ciphertexts, "the forward results")
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
        g = check_matrix(
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
        self._pending_digest = backward_digest(request)
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
            results = ciphertext_tuple(response.ciphertexts, "the input-gradient results")
            if response.plain_input_gradient is not None or len(results) != expected:
                raise MalformedMessage(f"expected {expected} encrypted input-gradient ciphertexts")
            da = layout.unpack_outputs(
                self._key.decrypt_products(results), _held(self._canaries, self.stage)
            )
        else:
            if ciphertext_tuple(response.ciphertexts, "the input-gradient results"):
                raise MalformedMessage("expected a plaintext input gradient, got ciphertexts")
            da = received_matrix(
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
