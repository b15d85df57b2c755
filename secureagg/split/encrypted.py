"""U-shaped split learning with an encrypted cut layer, over the versioned codec.

The server's part is one linear layer that it evaluates on CKKS ciphertexts
(:mod:`secureagg.split.he_cut`): the client sends ``Enc(A)``, gets ``Enc(A W + b)`` back and
decrypts it; the server never sees an activation, an output or (by default) a gradient in the
clear, only the client's clipped and noised weight gradient that it needs for its SGD step. What
each side learns is in :mod:`secureagg.split.he_cut` and ``protocols/split_he_cut/spec.md``.

This module gives :class:`EncryptedSplitLearning`, which trains the user's ``(bottom, nn.Linear,
head)`` with the user's optimizer on the client parts; the :mod:`~secureagg.split.he_cut` messages
(codec-registered, strict, no pickle) move through the codec with
:class:`~secureagg.transport.driver.ExchangeDriver` (the setup, then per step the forward and the
backward exchange), which records the transcript of what the server received.

>>> import torch
>>> from torch.utils.data import DataLoader, TensorDataset
>>> torch.manual_seed(0) and None
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 5),
...                           torch.nn.ReLU(), torch.nn.Linear(5, 2))
>>> data = TensorDataset(torch.rand(16, 4), torch.randint(0, 2, (16,)))
>>> sl = EncryptedSplitLearning(net, cuts=[2, 3], client=DataLoader(data, batch_size=8),
...                             optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
>>> sorted({e.kind for e in sl.fit(epochs=1) and sl.transcript})
['split/he-backward', 'split/he-forward', 'split/he-setup']
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from secureagg.dp.accounting import PrivacyAccountant
from secureagg.dp.torch_import import require_torch
from secureagg.errors import ConfigurationError
from secureagg.protocols.base import SERVER, Envelope, Party
from secureagg.split import he_cut
from secureagg.split.model import split_sequential
from secureagg.split.run import SplitStats, _batches
from secureagg.transport import TranscriptEntry
from secureagg.transport.driver import ExchangeDriver

__all__ = ["EncryptedSplitLearning"]


def _arrived(value: Any) -> Any:
    """What the last exchange left with the client (the server always answers a request)."""
    if value is None:  # pragma: no cover - a refused response raises before this
        raise ConfigurationError("the server's response did not arrive")
    return value


class EncryptedSplitLearning:
    """U-shaped split training whose server part is one linear layer evaluated on ciphertexts.

    ``model`` with ``cuts=[i, i + 1]`` (``model[i]`` must be an ``nn.Linear``), or ``parts``
    ``(bottom, linear, head)``. ``client``: the data holder's ``DataLoader``; batches of another
    size than the first are skipped (the CKKS packing is fixed per batch size; use
    ``drop_last=True`` to make that explicit). ``optimizer``: a factory for the client's parts;
    the server's layer takes plain SGD steps at ``server_lr``. ``noise_multiplier``/``clip``:
    the DP noise on the weight gradient the server receives (see :class:`~secureagg.split.he_cut.
    HeCutConfig`); ``encrypt_gradient=False`` sends G in plaintext (cheaper, leaks labels). After
    :meth:`fit`, the user's ``nn.Linear`` holds the server's trained weights. ``keep_raw`` keeps
    the bytes of every message the server received in :attr:`raw_uplink` (for audits and tests).

    Privacy: with noise, every epoch is accounted *before* its first release as one Gaussian
    mechanism per record (replace-one, sensitivity ``2 * clip``; a loader that draws a record
    twice in an epoch is refused) by ``accountant`` (default: RDP at ``delta``; its
    ``max_epsilon`` stops training before an epoch that would exceed it). :meth:`privacy` gives ε
    and, in words, what it covers - the noised weight gradient - and what it does not (the
    client's bottom and head, trained on every record; G in the clear with
    ``encrypt_gradient=False``); see :func:`~secureagg.split.he_cut.weight_gradient_scope`.
    ``noise_multiplier=0`` needs ``allow_exact_weight_gradient=True`` and claims no ε.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        client: Any,
        optimizer: Callable[[Any], Any],
        cuts: Sequence[int] | None = None,
        parts: Sequence[Any] | None = None,
        loss_fn: Callable[[Any, Any], Any] | None = None,
        server_lr: float = 0.1,
        noise_multiplier: float = 1.0,
        clip: float = 1.0,
        encrypt_gradient: bool = True,
        activation_bound: float = 16.0,
        allow_exact_weight_gradient: bool = False,
        delta: float = 1e-5,
        accountant: PrivacyAccountant | None = None,
        keep_raw: bool = False,
    ) -> None:
        torch = require_torch()
        if (model is None) == (parts is None):
            raise ConfigurationError("give model= with cuts=, or parts=, not both")
        if model is not None:
            parts = split_sequential(model, cuts or [])
        parts = tuple(parts or ())
        if len(parts) != 3:
            raise ConfigurationError("the encrypted cut layer is U-shaped: 3 parts (two cuts)")
        linear = parts[1]
        if isinstance(linear, torch.nn.Sequential) and len(linear) == 1:
            linear = linear[0]
        if not isinstance(linear, torch.nn.Linear) or linear.bias is None:
            raise ConfigurationError(
                "the server part must be one nn.Linear with a bias: it is all the server can "
                f"evaluate on ciphertexts (got {type(linear).__name__})"
            )
        self.bottom, self.linear, self.head = parts[0], linear, parts[2]
        self.model = model if model is not None else torch.nn.Sequential(*parts)
        self.loader = client
        self.optimizer = optimizer(
            [*self.bottom.parameters(), *self.head.parameters()]
        )
        self.loss_fn = loss_fn or torch.nn.functional.cross_entropy
        self.server_lr = server_lr
        self.options = {
            "noise_multiplier": noise_multiplier, "clip": clip,
            "encrypt_gradient": encrypt_gradient, "activation_bound": activation_bound,
            "allow_exact_weight_gradient": allow_exact_weight_gradient,
        }
        if accountant is not None and not isinstance(accountant, PrivacyAccountant):
            raise ConfigurationError("accountant must be a secureagg.dp.PrivacyAccountant")
        self.accountant = accountant or PrivacyAccountant(delta=delta)
        self.epochs_released = 0
        self.transcript: list[TranscriptEntry] = []
        self.stats = SplitStats()
        self.history: list[dict[str, Any]] = []
        self.skipped_batches = 0
        self.raw_uplink: list[bytes] | None = [] if keep_raw else None
        self._client: he_cut.HeCutClient | None = None
        self._server: he_cut.HeCutServer | None = None
        self._batch = 0

    def _setup(self, batch: int) -> None:
        cfg = he_cut.HeCutConfig(
            in_features=self.linear.in_features, out_features=self.linear.out_features,
            batch_size=batch, **self.options,  # type: ignore[arg-type]
        )
        self._client = he_cut.HeCutClient(cfg)
        self._server = he_cut.HeCutServer(
            cfg, weight=self.linear.weight.detach().double().numpy().T,
            bias=self.linear.bias.detach().double().numpy(), learning_rate=self.server_lr,
        )
        self._batch = batch
        self._exchange(self._client, self._server, self._client.start(), step=-1)

    def _exchange(
        self, client: Party, server: Party, envelopes: list[Envelope], *, step: int
    ) -> None:
        """Deliver the client's envelopes and the replies (the one delivery loop,
        :class:`ExchangeDriver`); record what the server received."""
        wire = ExchangeDriver(
            {client.party_id: client, SERVER: server},
            stage="u-shaped-encrypted", round_id=step, keep_raw=self.raw_uplink is not None,
        )
        try:
            wire.run(envelopes)
        finally:
            if self.raw_uplink is not None:
                self.raw_uplink.extend(wire.raw_uplink)
            self.transcript.extend(wire.transcript)
            self.stats.add_exchange(wire)

    def _step(self, x: Any, y: Any) -> float:
        torch = require_torch()
        client, server = self._client, self._server
        if client is None or server is None:
            raise ConfigurationError("set-up missing")  # unreachable: fit() sets up first
        step = client.step
        t = time.perf_counter()
        self.optimizer.zero_grad()
        acts = self.bottom(x)
        sent = client.send_forward(acts.detach().double().numpy())
        self.stats.client_seconds += time.perf_counter() - t
        self._exchange(client, server, sent, step=step)  # the server evaluates; client decrypts
        t = time.perf_counter()
        z = torch.from_numpy(_arrived(client.outputs)).float().requires_grad_(True)
        loss = self.loss_fn(self.head(z), y)
        loss.backward()
        if z.grad is None:
            raise ConfigurationError("the head does not depend on the cut layer's output")
        sent = client.send_backward(z.grad.double().numpy())
        self.stats.client_seconds += time.perf_counter() - t
        self._exchange(client, server, sent, step=step)  # the server steps; client decrypts
        t = time.perf_counter()
        grad_a = _arrived(client.input_gradient)
        acts.backward(torch.from_numpy(grad_a).to(acts.dtype))
        self.optimizer.step()
        self.stats.client_seconds += time.perf_counter() - t
        self.stats.steps += 1
        return float(loss.detach())

    def _config(self) -> he_cut.HeCutConfig | None:
        return None if self._client is None else self._client.config

    def _account_epoch(self) -> None:
        """Charge one release per record for the coming epoch (budget checked first)."""
        cfg = self._config()
        if cfg is None or cfg.noise_multiplier <= 0 or cfg.clip is None:
            return
        event = he_cut.weight_gradient_event(cfg, party=0, steps=1)
        self.accountant.check(event)
        self.accountant.emit(event)
        self.epochs_released += 1

    @property
    def epsilon(self) -> float | None:
        """ε spent on the weight gradient so far (``None``: no noise, no ε claimed)."""
        if float(self.options["noise_multiplier"]) <= 0:
            return None
        if self.epochs_released == 0:
            return 0.0
        return self.accountant.epsilon(scope="sample", party=0)

    def privacy(self) -> dict[str, Any]:
        """ε of the weight-gradient release and, in words, what it covers and what not."""
        cfg = self._config() or he_cut.HeCutConfig(
            in_features=self.linear.in_features, out_features=self.linear.out_features,
            batch_size=max(self._batch, self.linear.out_features + 1),
            **self.options,  # type: ignore[arg-type]
        )
        epsilon = self.epsilon
        method = (
            f"{self.accountant.accountant}: {self.accountant.method(scope='sample', party=0)}; "
            "one Gaussian mechanism per record per epoch"
            if epsilon is not None
            else None
        )
        scope = he_cut.weight_gradient_scope(
            cfg, epsilon=epsilon, delta=None if epsilon is None else self.accountant.delta,
            accountant=method,
        )
        return {
            "epsilon": epsilon,
            "delta": None if epsilon is None else self.accountant.delta,
            "epochs_accounted": self.epochs_released,
            "scope": scope,
            "summary": scope["summary"],
            # the accountant's ledger (its events), for an auditor to re-account independently
            "ledgers": {} if epsilon is None else {"0": self.accountant.report()},
        }

    def report(self) -> dict[str, Any]:
        """JSON-ready summary: privacy (with its scope), cost, history."""
        return {
            "topology": "u-shaped-encrypted",
            "privacy": self.privacy(),
            "options": dict(self.options),
            "cost": self.stats.to_dict(),
            "skipped_batches": self.skipped_batches,
            "history": list(self.history),
        }

    def _sync(self) -> None:
        """Copy the server's trained weights into the user's ``nn.Linear``."""
        torch = require_torch()
        if self._server is None:
            return
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(self._server.weight.T))
            self.linear.bias.copy_(torch.from_numpy(self._server.bias))

    def fit(self, epochs: int = 1) -> list[dict[str, Any]]:
        """Train for ``epochs``; returns one entry per epoch (loss, seconds, bytes)."""
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigurationError(f"epochs must be an integer >= 1, got {epochs!r}")
        entries = []
        for _ in range(epochs):
            t0, up, down = time.perf_counter(), self.stats.bytes_up, self.stats.bytes_down
            losses: list[float] = []
            seen: set[int] = set()
            accounted = False
            for ids, x, y in _batches(self.loader):
                batch = int(x.shape[0])
                if self._client is None:
                    self._setup(batch)
                if batch != self._batch:
                    self.skipped_batches += 1
                    continue
                if not accounted:
                    self._account_epoch()  # before the epoch's first release
                    accounted = True
                if seen.intersection(ids) or len(set(ids)) != len(ids):
                    raise ConfigurationError(
                        "the loader drew a record twice in one epoch (a sampler with replacement "
                        "or weighting): each epoch is accounted as one release per record; use "
                        "shuffle=True or a SequentialSampler"
                    )
                seen.update(ids)
                losses.append(self._step(x, y))
            self._sync()
            entry = {
                "epoch": len(self.history) + 1,
                "loss": float(np.mean(losses)) if losses else float("nan"),
                "seconds": time.perf_counter() - t0,
                "bytes_up": self.stats.bytes_up - up,
                "bytes_down": self.stats.bytes_down - down,
                "steps": len(losses),
                "skipped_batches": self.skipped_batches,
            }
            self.history.append(entry)
            entries.append(entry)
        return entries
