"""The two sides of split learning as sans-I/O objects: :class:`SplitClient`, :class:`SplitServer`.

Both are parties of the one party contract (:class:`secureagg.protocols.base.Party`): every
message reaches them through ``receive(sender, message)``, which returns the
:class:`~secureagg.protocols.base.Envelope` s it causes. The client's training loop starts each
step with :meth:`SplitClient.send_forward` (the activations, as the envelope to the server). The
messages are those of :mod:`secureagg.split.messages`; a driver (:class:`secureagg.split.
SplitLearning` through :class:`secureagg.transport.driver.ExchangeDriver`, or your own transport)
moves their bytes through the codec. Neither side opens sockets or reads clocks.

Topologies (chosen by which parts the client holds):

* **vanilla** - the client holds the bottom, the server the top and the labels. One step:
  ``Activations`` (client -> server), ``CutGradients`` (server -> client).
* **U-shaped** - the client holds the bottom *and* the head and the labels; the server holds the
  middle. One step: ``Activations``, ``ServerOutputs``, ``OutputGradients``, ``CutGradients``.

Atomicity: a party validates everything it receives (:mod:`secureagg.split.cut_validation`)
before it runs a backward pass or an optimizer step, and steps its optimizers only when the step is
complete, so a refused message (NaN, wrong shape, wrong batch, another step) leaves every model
unchanged; the party stays in its stage and may still take the genuine message, or the driver
calls :meth:`SplitClient.abandon` / :meth:`SplitServer.abandon` to drop the step.

Threat model: semi-honest by default - each side follows the protocol and tries to learn from
what it receives. Raw inputs never leave the client; labels leave it only in the vanilla set-up
with ``labels at the server``. What still leaks, and the protections, are in ``docs/split.md``.

>>> import torch
>>> from secureagg.split.model import split_sequential
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> bottom, top = split_sequential(net, [2])
>>> sid = b"s" * 16
>>> client = SplitClient(bottom, torch.optim.SGD(bottom.parameters(), lr=0.1), session_id=sid)
>>> server = SplitServer(top, torch.optim.SGD(top.parameters(), lr=0.1), session_id=sid,
...                      labels=torch.tensor([0, 1, 1]))
>>> [up] = client.send_forward(torch.randn(3, 4), example_ids=torch.arange(3))
>>> [down] = server.receive(up.sender, up.message)   # the cut gradients, back to client 0
>>> client.receive(down.sender, down.message)        # nothing more to send: both sides stepped
[]
>>> client.step, server.steps_done
(1, 1)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from secureagg.dp.torch_import import require_torch
from secureagg.errors import (
    ConfigurationError,
    InvalidInputError,
    NonFiniteInputError,
    ProtocolError,
)
from secureagg.protocols.base import SERVER, Envelope, Message, Party
from secureagg.split.cut_validation import check_class_labels, check_example_ids, receive_tensor
from secureagg.split.messages import (
    Activations,
    CutGradients,
    CutTensor,
    OutputGradients,
    ServerOutputs,
)
from secureagg.split.protections import ActivationDP, NoPeek
from secureagg.split.scope import SplitSetting
from secureagg.validation import is_int

__all__ = ["GradientProtection", "SplitClient", "SplitServer"]

#: ``protect(gradients, labels) -> gradients``: applied by the label holder (vanilla server) to
#: the per-example cut gradients before they are sent; see :mod:`secureagg.split.label_protection`.
GradientProtection = Callable[[Any, Any], Any]


def _protected(protect: GradientProtection | None, grad: Any, labels: Any) -> Any:
    """``grad`` after the label protection, checked (finite, same shape) before it is sent."""
    if protect is None:
        return grad
    torch = require_torch()
    out = protect(grad, labels)
    if not bool(torch.isfinite(out).all()) or tuple(out.shape) != tuple(grad.shape):
        raise InvalidInputError("the label protection returned a bad gradient; nothing was sent")
    return out


_T = TypeVar("_T", bound=CutTensor)


def _tensor_message(cls: type[_T], session_id: bytes, step: int, value: Any) -> _T:
    array = value.detach().float().cpu().numpy()
    return cls(
        session_id=session_id,
        step=step,
        shape=tuple(int(s) for s in array.shape),
        values=np.ascontiguousarray(array, dtype=np.float32).reshape(-1),
    )


def _finite_loss(loss: Any, who: str) -> float:
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteInputError(
            f"the {who}'s loss is {value}: its model or inputs diverged; nothing was applied"
        )
    return value


#: What a torch module raises when a tensor does not fit it (wrong width, rank or class index).
_MISFIT = (RuntimeError, ValueError, IndexError, TypeError)


def _misfit(what: str, exc: BaseException) -> InvalidInputError:
    """The refusal of a tensor from the other party that the receiving model cannot take."""
    detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return InvalidInputError(
        f"{what} from the other party does not fit this party's model ({detail}); refused, "
        "nothing applied"
    )


def _labels_array(labels: Any) -> Any:
    torch = require_torch()
    out = torch.as_tensor(labels)
    if out.ndim != 1 or out.dtype.is_floating_point:
        raise ConfigurationError("labels must be a 1-D integer tensor (one label per example id)")
    return out.long()


@dataclass
class _Pending:
    inputs: Any
    sent: Any
    labels: Any
    nopeek: Any
    outputs: Any = None  # U-shaped: the server outputs as a leaf tensor with grad
    head_loss: float = math.nan


class SplitClient(Party):
    """The data holder: runs the bottom (and, U-shaped, the head), keeps inputs (and labels).

    ``bottom``/``optimizer``: the client's first part and its optimizer. ``head``/
    ``head_optimizer``/``loss_fn``: give them for the U-shaped topology (the client keeps the
    labels). ``activation_dp`` clips and noises what is sent; ``nopeek`` adds the decorrelation
    loss. ``send_labels=True`` (vanilla only) sends the labels with the batch, when the server
    has no label table of its own - then the server knows the labels, which is the user's choice.
    ``client_id`` is its party id: the sender of its envelopes (default 0).
    """

    def __init__(
        self,
        bottom: Any,
        optimizer: Any,
        *,
        session_id: bytes,
        head: Any = None,
        head_optimizer: Any = None,
        loss_fn: Callable[[Any, Any], Any] | None = None,
        activation_dp: ActivationDP | None = None,
        nopeek: NoPeek | None = None,
        send_labels: bool = False,
        protect: GradientProtection | None = None,
        client_id: int = 0,
    ) -> None:
        problems = []
        if not is_int(client_id) or client_id < 0:
            problems.append(f"client_id must be an integer >= 0, got {client_id!r}")
        if protect is not None and head is None:
            problems.append("a client's label protection is for the U-shaped topology (head=)")
        if head is not None and (head_optimizer is None or loss_fn is None):
            problems.append("a U-shaped client needs head_optimizer= and loss_fn= with head=")
        if head is None and (head_optimizer is not None or loss_fn is not None):
            problems.append("head_optimizer= and loss_fn= are for the U-shaped client (head=)")
        if head is not None and send_labels:
            problems.append("send_labels=True is for the vanilla topology; U-shaped keeps them")
        if not isinstance(session_id, bytes) or len(session_id) < 16:
            problems.append("session_id must be at least 16 bytes")
        if problems:
            raise ConfigurationError(problems)
        self.bottom, self.optimizer = bottom, optimizer
        self.head, self.head_optimizer, self.loss_fn = head, head_optimizer, loss_fn
        self.activation_dp, self.nopeek = activation_dp, nopeek
        self.send_labels = send_labels
        self.protect = protect
        self.session_id = session_id
        self.party_id = int(client_id)
        self.topology = "u-shaped" if head is not None else "vanilla"
        self.step = 0
        self.stage = "ready"
        self.losses: list[float] = []
        self._pending: _Pending | None = None
        if activation_dp is not None and activation_dp.setting is None:
            # What this client knows of the set-up; a driver (SplitLearning) says more.
            activation_dp.setting = SplitSetting(
                topology="u-shaped" if head is not None else "vanilla",
                sharing="unknown",
                label_protection=None
                if protect is None
                else str(getattr(protect, "method", type(protect).__name__)),
                nopeek=nopeek is not None,
            )

    def send_forward(
        self, inputs: Any, *, labels: Any = None, example_ids: Any = None
    ) -> list[Envelope]:
        """Start a step: the activations of :meth:`forward`, as the envelope to the server."""
        message = self.forward(inputs, labels=labels, example_ids=example_ids)
        return [Envelope(self.party_id, SERVER, message)]

    def forward(self, inputs: Any, *, labels: Any = None, example_ids: Any = None) -> Activations:
        """Run the bottom on a batch and return the activations to send (the bare message;
        :meth:`send_forward` addresses it)."""
        torch = require_torch()
        if self.stage != "ready":
            raise ProtocolError("client: forward() before the step finished", stage=self.stage)
        if self.topology == "u-shaped" and labels is None:
            raise InvalidInputError("the U-shaped client computes the loss: pass labels=")
        if self.send_labels and labels is None:
            raise InvalidInputError("send_labels=True: pass labels=")
        batch = int(inputs.shape[0])
        if batch < 1:
            raise InvalidInputError("an empty batch: nothing to send")
        if labels is not None and int(torch.as_tensor(labels).shape[0]) != batch:
            raise InvalidInputError(f"{len(labels)} labels for a batch of {batch}")
        self.optimizer.zero_grad()
        acts = self.bottom(inputs)
        if not bool(torch.isfinite(acts).all()):
            raise NonFiniteInputError("the client's bottom produced NaN/Inf; nothing was sent")
        sent = self.activation_dp.apply(acts) if self.activation_dp is not None else acts
        term = self.nopeek.loss(inputs, acts) if self.nopeek is not None else None
        ids = None
        if example_ids is not None:
            ids = np.asarray(torch.as_tensor(example_ids).cpu().numpy(), dtype=np.int64)
            if ids.shape != (batch,):
                raise InvalidInputError(f"example_ids must have one id per row ({batch})")
        self._pending = _Pending(inputs=inputs, sent=sent, labels=labels, nopeek=term)
        self.stage = "awaiting-outputs" if self.topology == "u-shaped" else "awaiting-gradients"
        base = _tensor_message(CutTensor, self.session_id, self.step, sent)
        return Activations(
            session_id=base.session_id,
            step=base.step,
            shape=base.shape,
            values=base.values,
            example_ids=ids,
            labels=(
                np.asarray(torch.as_tensor(labels).cpu().numpy(), dtype=np.int64)
                if self.send_labels
                else None
            ),
        )

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        """Take the server's reply; returns the next envelope to send (U-shaped: the output
        gradients), or none when the step is done."""
        torch = require_torch()
        if sender != SERVER:
            raise ProtocolError(
                f"client: a {getattr(message, 'KIND', '?')} message from party {sender}, not the "
                "server; refused",
                stage=self.stage,
                node_ids=(sender,) if is_int(sender) else (),
            )
        pending = self._pending
        if pending is not None and isinstance(message, ServerOutputs) and (
            self.stage == "awaiting-outputs"
        ):
            batch = int(pending.sent.shape[0])
            z = receive_tensor(
                message, session_id=self.session_id, step=self.step, shape=(batch, None),
                what="server outputs",
            )
            outputs = torch.from_numpy(z.copy()).requires_grad_(True)
            self.head_optimizer.zero_grad()
            try:
                loss = self.loss_fn(self.head(outputs), pending.labels)  # type: ignore[misc]
            except _MISFIT as exc:
                raise _misfit("the server outputs", exc) from exc
            value = _finite_loss(loss, "client head")
            loss.backward()
            try:
                grad = _protected(self.protect, outputs.grad, pending.labels)
            except InvalidInputError:
                self.head_optimizer.zero_grad()
                raise
            pending.outputs, pending.head_loss = outputs, value
            self.stage = "awaiting-gradients"
            reply = _tensor_message(OutputGradients, self.session_id, self.step, grad)
            return [Envelope(self.party_id, SERVER, reply)]
        if pending is not None and isinstance(message, CutGradients) and (
            self.stage == "awaiting-gradients"
        ):
            g = receive_tensor(
                message, session_id=self.session_id, step=self.step,
                shape=tuple(pending.sent.shape), what="cut gradients",
            )
            grad = torch.from_numpy(g.copy()).to(pending.sent.dtype)
            if pending.nopeek is not None:
                torch.autograd.backward([pending.sent, pending.nopeek], [grad, None])
            else:
                pending.sent.backward(grad)
            self.optimizer.step()
            if self.head is not None:
                self.head_optimizer.step()
                self.losses.append(pending.head_loss)
            self._pending = None
            self.stage = "ready"
            self.step += 1
            return []
        raise ProtocolError(
            f"client: {type(message).__name__} ({getattr(message, 'KIND', '?')}) is out of stage "
            f"{self.stage!r}; refused",
            stage=self.stage,
            node_ids=(sender,),
        )

    def abandon(self) -> None:
        """Drop the step in progress: nothing is applied; the next step gets a new number."""
        self.optimizer.zero_grad()
        if self.head_optimizer is not None:
            self.head_optimizer.zero_grad()
        if self._pending is not None:
            self.step += 1
        self._pending = None
        self.stage = "ready"


@dataclass
class _ServerPending:
    inputs: Any
    outputs: Any


class SplitServer(Party):
    """The server: runs the top (vanilla, with the labels) or the middle (U-shaped).

    ``labels`` (vanilla): the server's label table, indexed by the ``example_ids`` that come with
    each batch; without it, the vanilla server expects the client to send labels. ``loss_fn``:
    default cross-entropy (vanilla only). ``protect``: label protection applied to the cut
    gradients before they are sent (vanilla). The server serves several clients (SplitFed): it
    keeps a step counter and at most one step in progress per client id (the sender of each
    message, ``>= 0``).
    """

    party_id = SERVER

    def __init__(
        self,
        model: Any,
        optimizer: Any,
        *,
        session_id: bytes,
        topology: str = "vanilla",
        labels: Any = None,
        loss_fn: Callable[[Any, Any], Any] | None = None,
        protect: GradientProtection | None = None,
    ) -> None:
        torch = require_torch()
        problems = []
        if topology not in ("vanilla", "u-shaped"):
            problems.append(f"topology must be 'vanilla' or 'u-shaped', got {topology!r}")
        if topology == "u-shaped" and (labels is not None or loss_fn is not None):
            problems.append("the U-shaped server holds no labels and no loss (the client does)")
        if topology == "u-shaped" and protect is not None:
            problems.append("label protection is for the vanilla server; U-shaped keeps labels")
        if not isinstance(session_id, bytes) or len(session_id) < 16:
            problems.append("session_id must be at least 16 bytes")
        if problems:
            raise ConfigurationError(problems)
        self.model, self.optimizer = model, optimizer
        self.topology = topology
        self.session_id = session_id
        self.labels = None if labels is None else _labels_array(labels)
        self.loss_fn = loss_fn or torch.nn.functional.cross_entropy
        self.protect = protect
        self.steps_done = 0
        self.losses: list[float] = []
        self._expected: dict[int, int] = {}
        self._pending: dict[int, _ServerPending] = {}
        self._feature_shape: tuple[int, ...] | None = None

    def _activations(self, message: Activations, sender: int) -> Any:
        """The checked activations as a leaf tensor. The feature shape of the first batch is
        remembered only once a step with it has succeeded (:meth:`_fix_features`), so that a
        refused first message cannot lock out the genuine ones."""
        torch = require_torch()
        step = self._expected.get(sender, 0)
        declared = message.shape if isinstance(message.shape, tuple | list) else ()
        features = self._feature_shape or (None,) * max(len(declared) - 1, 1)
        shape: tuple[int | None, ...] = (None, *features)
        a = receive_tensor(
            message, session_id=self.session_id, step=step, shape=shape, what="activations"
        )
        return torch.from_numpy(a.copy()).requires_grad_(True)

    def _fix_features(self, a: Any) -> None:
        if self._feature_shape is None:
            self._feature_shape = tuple(int(d) for d in a.shape[1:])

    def _forward(self, a: Any) -> Any:
        try:
            return self.model(a)
        except _MISFIT as exc:
            raise _misfit("the activations", exc) from exc

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        """Take one client message; return the reply to that client (one envelope)."""
        if not is_int(sender) or sender < 0:
            raise ProtocolError(
                f"server: a {getattr(message, 'KIND', '?')} message from party {sender!r}; only "
                "clients (ids >= 0) send to the server; refused",
                stage="awaiting-inputs",
            )
        return [Envelope(SERVER, sender, self._reply(sender, message))]

    def _reply(self, sender: int, message: Message) -> Message:
        torch = require_torch()
        if isinstance(message, Activations):
            if sender in self._pending:
                raise ProtocolError(
                    f"server: new activations from client {sender} while its step "
                    f"{self._expected.get(sender, 0)} is in progress; refused",
                    stage="awaiting-output-gradients",
                    node_ids=(sender,),
                )
            if self.topology == "u-shaped":
                if message.labels is not None or message.example_ids is not None:
                    raise InvalidInputError("U-shaped: the server takes no labels or example ids")
                a = self._activations(message, sender)
                with torch.enable_grad():
                    out = self._forward(a)
                if not bool(torch.isfinite(out).all()):
                    raise NonFiniteInputError("the server's middle produced NaN/Inf; refused")
                self._fix_features(a)
                self._pending[sender] = _ServerPending(inputs=a, outputs=out)
                return _tensor_message(ServerOutputs, self.session_id, message.step, out)
            a = self._activations(message, sender)
            batch = int(a.shape[0])
            if self.labels is not None:
                if message.labels is not None:
                    raise InvalidInputError("the server holds the labels; the client sent some")
                ids = check_example_ids(
                    message.example_ids, batch=batch, table_size=int(self.labels.shape[0]),
                    what="activations",
                )
                labels = self.labels[torch.from_numpy(ids.copy())]
            else:
                sent = check_class_labels(message.labels, batch=batch, what="activations")
                labels = torch.from_numpy(sent.copy())
            self.optimizer.zero_grad()
            try:
                loss = self.loss_fn(self._forward(a), labels)
            except _MISFIT as exc:
                self.optimizer.zero_grad()
                raise _misfit("the activations or the labels", exc) from exc
            value = _finite_loss(loss, "server")
            loss.backward()
            try:
                grad = _protected(self.protect, a.grad, labels)
            except InvalidInputError:
                self.optimizer.zero_grad()
                raise
            self.optimizer.step()
            self.losses.append(value)
            self._fix_features(a)
            return self._finish(sender, grad)
        if isinstance(message, OutputGradients) and sender in self._pending:
            pending = self._pending[sender]
            g = receive_tensor(
                message, session_id=self.session_id, step=self._expected.get(sender, 0),
                shape=tuple(pending.outputs.shape), what="output gradients",
            )
            self.optimizer.zero_grad()
            pending.outputs.backward(torch.from_numpy(g.copy()).to(pending.outputs.dtype))
            self.optimizer.step()
            del self._pending[sender]
            return self._finish(sender, pending.inputs.grad)
        raise ProtocolError(
            f"server: {type(message).__name__} from client {sender} is out of stage"
            "; refused",
            stage="awaiting-output-gradients" if sender in self._pending else "awaiting-inputs",
            node_ids=(sender,),
        )

    def _finish(self, sender: int, grad: Any) -> CutGradients:
        step = self._expected.get(sender, 0)
        self._expected[sender] = step + 1
        self.steps_done += 1
        return _tensor_message(CutGradients, self.session_id, step, grad)

    def abandon(self, sender: int) -> None:
        """Drop ``sender``'s step in progress (U-shaped), so that it may start a new one."""
        if self._pending.pop(sender, None) is not None:
            self._expected[sender] = self._expected.get(sender, 0) + 1
        self.optimizer.zero_grad()
