"""The evaluator's half of the encrypted cut layer: :class:`HeCutServer`.

The server holds the cut layer's ``W`` and ``b`` and a key-free evaluation context: a context
that holds a secret key, or other CKKS parameters, is refused at setup, as is a configuration
that differs from its own. It computes on ciphertexts only - ciphertext x plaintext products and
additions, no rotations - after proving from ``activation_bound`` that its sums cannot wrap around
the modulus, and never sees Z, dL/dA, or G (unless ``encrypt_gradient=False``). Atomicity: a
backward request is validated in full, and dL/dA computed with the W of the forward pass, before
the SGD step is applied; a refused message changes nothing. Protocol, threat model and an example:
:mod:`secureagg.split.he_cut`.

It is a party of the one contract (:class:`~secureagg.protocols.base.Party`): ``receive(sender,
message)`` takes the setup (no reply), a forward or a backward request (the response, to the
sender), each through its message-level step (:meth:`~HeCutServer.accept_setup`,
:meth:`~HeCutServer.forward`, :meth:`~HeCutServer.backward`); once a setup has arrived that way, a
message from another party is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from secureagg.errors import ConfigurationError, MalformedMessage, ProtocolError
from secureagg.he.ckks import CutLayerEvaluator
from secureagg.protocols.base import SERVER, Envelope, Message, Party
from secureagg.split.cut_slots import CutLayout, choose_layout
from secureagg.split.he_cut_config import HeCutConfig
from secureagg.split.he_cut_messages import (
    BackwardRequest,
    BackwardResponse,
    CutSetup,
    ForwardRequest,
    ForwardResponse,
)
from secureagg.split.he_cut_validation import (
    backward_digest,
    check_matrix,
    ciphertext_tuple,
    finite_number,
    received_matrix,
    request_digest,
    same_step,
    session_text,
)
from secureagg.validation import shown

__all__ = ["HeCutServer"]

FloatArray = npt.NDArray[np.float64]


class HeCutServer(Party):
    """The server's half: holds W and b, evaluates on ciphertexts, applies the noised update.

    ``weight`` is ``in_features x out_features``, ``bias`` ``out_features``; both are copied.
    The SGD step ``W -= learning_rate * dW`` happens only after the whole backward request has
    been validated and dL/dA computed (with the W of the forward pass).
    """

    party_id = SERVER

    def __init__(
        self,
        config: HeCutConfig,
        *,
        weight: npt.ArrayLike,
        bias: npt.ArrayLike,
        learning_rate: float,
    ) -> None:
        self.config = config
        self._weight = check_matrix(weight, (config.in_features, config.out_features), "weight")
        self._bias = check_matrix(bias, (config.out_features,), "bias")
        if not finite_number(learning_rate) or learning_rate <= 0:
            raise ConfigurationError(
                f"learning_rate must be a finite number > 0, got {learning_rate!r}"
            )
        self.learning_rate = float(learning_rate)
        self._evaluator: CutLayerEvaluator | None = None
        self.session_id = b""
        self.step = 0
        self.stage = "setup"
        self._forward_digest = b""
        self._peer: int | None = None  # the client whose setup arrived through receive()

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        """Take the client's setup (no reply), forward request or backward request (the
        response, to the sender). A message from another party than the setup's is refused."""
        if self._peer is not None and sender != self._peer:
            raise ProtocolError(
                f"a {getattr(message, 'KIND', '?')} message from party {sender}; this session "
                f"belongs to party {self._peer}; refused",
                stage=self.stage,
                node_ids=(sender,),
            )
        if isinstance(message, CutSetup):
            self.accept_setup(message)
            self._peer = sender
            return []
        if isinstance(message, ForwardRequest):
            return [Envelope(SERVER, sender, self.forward(message))]
        if isinstance(message, BackwardRequest):
            return [Envelope(SERVER, sender, self.backward(message))]
        raise ProtocolError(
            f"the server takes a setup, forward or backward request, not "
            f"{type(message).__name__}; refused",
            stage=self.stage,
        )

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
        if not same_step(session_id, step, self.session_id, self.step):
            raise ProtocolError(
                f"a message for session {session_text(session_id)} step {shown(step)}, "
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
        cts = ciphertext_tuple(request.ciphertexts, "the activation ciphertexts")
        expected = layout.groups * layout.inputs_per_group
        if len(cts) != expected:
            raise MalformedMessage(
                f"expected {expected} activation ciphertexts for a batch of {cfg.batch_size}, "
                f"got {len(cts)}: wrong batch size"
            )
        out = self._products(cts, np.vstack([self._weight, self._bias[None, :]]), layout)
        digest = request_digest(b"forward", request.session_id, request.step, cts)
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
        dw = received_matrix(
            request.weight_gradient, (cfg.in_features, cfg.out_features), "the weight gradient"
        )
        db = received_matrix(request.bias_gradient, (cfg.out_features,), "the bias gradient")
        if cfg.encrypt_gradient:
            if request.plain_gradient is not None:
                raise MalformedMessage("this session encrypts G: a plaintext gradient is refused")
            layout = choose_layout(
                cfg.batch_size, cfg.out_features, cfg.in_features, self._require_evaluator().slots
            )
            cts = ciphertext_tuple(request.gradient_ciphertexts, "the gradient ciphertexts")
            expected = layout.groups * layout.inputs_per_group
            if len(cts) != expected:
                raise MalformedMessage(
                    f"expected {expected} gradient ciphertexts, got {len(cts)}: wrong batch size"
                )
            response = BackwardResponse(
                self.session_id,
                self.step,
                backward_digest(request),
                ciphertexts=tuple(self._products(cts, self._weight.T, layout)),
            )
        else:
            if ciphertext_tuple(request.gradient_ciphertexts, "the gradient ciphertexts"):
                raise MalformedMessage("this session sends G in plaintext, got ciphertexts")
            g = received_matrix(
                request.plain_gradient, (cfg.batch_size, cfg.out_features), "the gradient dL/dZ"
            )
            response = BackwardResponse(
                self.session_id,
                self.step,
                backward_digest(request),
                plain_input_gradient=(g @ self._weight.T).ravel(),
            )
        self._weight -= self.learning_rate * dw
        self._bias -= self.learning_rate * db
        self.stage = "ready"
        self.step += 1
        return response
