"""Sample-level DP-SGD around the user's own model, optimizer and data loader, through Opacus.

Threat model: whoever sees the trained model (or a client's released update) learns about any one
training record only what ``(ε, δ)`` allows (add/remove adjacency of one record). Every step clips
each record's gradient to ``max_grad_norm`` and adds Gaussian noise of standard deviation
``noise_multiplier * max_grad_norm`` - drawn from our AES-CTR keystream with the Holohan-Braghin
mitigation (:class:`~secureagg.dp.noise.CsprngGaussian`), because Opacus's ``secure_mode`` needs
torchcsprng, which does not build on current torch. Batches are Poisson-sampled with rate
``q = 1 / len(data_loader)`` from the same kind of keystream.

What you get back are the same kinds of objects you passed in (Opacus's wrapped model, a DP
optimizer, a data loader; plus the wrapped criterion with ghost clipping), so the loop is
unchanged::

    from secureagg.dp import make_private
    run = make_private(model, optimizer, loader, max_grad_norm=1.0, target_epsilon=3.0,
                       epochs=10, max_epsilon=3.0)
    model, optimizer, loader = run
    for epoch in range(10):
        for x, y in loader:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()          # raises PrivacyBudgetExceeded before exceeding max_epsilon
    print(run.epsilon())

Refused at once (``ConfigurationError``): a loader whose sampler would make the accounted ``q``
wrong (weighted, subset, custom, distributed samplers; Opacus #813), ``poisson_sampling=False``
(shuffled fixed-size batches are not what the accountant analyses), a seed without
``test_mode=True``, models with layers Opacus cannot handle. Each step emits a
:class:`~secureagg.dp.events.GaussianSteps` to the
:class:`~secureagg.dp.accounting.PrivacyAccountant` (``run.privacy``), which accounts the same
history as Opacus's own accountant (``run.engine``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from secureagg.crypto import labels, prg
from secureagg.dp.accounting import PrivacyAccountant, accountant_problems
from secureagg.dp.events import MechanismConfigured, SeededNoise
from secureagg.dp.noise import CsprngGaussian
from secureagg.errors import ConfigurationError, MissingDependencyError
from secureagg.validation import is_int

__all__ = ["PrivateTraining", "make_private"]

_UNSET: Any = object()


def _adapter() -> Any:
    try:
        from secureagg.dp import _opacus
    except ImportError as exc:  # torch or opacus: both come with the "dp" extra
        raise MissingDependencyError("opacus", "dp", purpose="DP-SGD") from exc
    return _opacus


@dataclass(frozen=True)
class PrivateTraining:
    """What :func:`make_private` returns. Unpacks like Opacus's ``make_private``:
    ``model, optimizer, loader = run`` (``model, optimizer, criterion, loader`` with ghost
    clipping)."""

    module: Any
    optimizer: Any
    data_loader: Any
    criterion: Any
    privacy: PrivacyAccountant
    engine: Any
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    party: int | None
    ghost_clipping: bool

    def __iter__(self) -> Iterator[Any]:
        if self.ghost_clipping:
            return iter((self.module, self.optimizer, self.criterion, self.data_loader))
        return iter((self.module, self.optimizer, self.data_loader))

    def epsilon(self, delta: float | None = None) -> float:
        """ε (sample level) spent by this trainer so far, at ``delta`` (default: the budget's)."""
        return self.privacy.epsilon(scope="sample", party=self.party, delta=delta)

    def steps_remaining(self) -> int | None:
        """Steps left before the budget stops training (``None`` without ``max_epsilon``)."""
        return self.privacy.steps_remaining(
            scope="sample",
            party=self.party,
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
        )


def make_private(
    module: Any,
    optimizer: Any,
    data_loader: Any,
    *,
    max_grad_norm: float,
    noise_multiplier: float | None = None,
    target_epsilon: float | None = None,
    epochs: int | None = None,
    delta: float | None = None,
    accountant: str | None = None,
    max_epsilon: float | None = _UNSET,
    privacy: PrivacyAccountant | None = None,
    party: int | None = None,
    ghost_clipping: bool = False,
    criterion: Any = None,
    poisson_sampling: bool = True,
    batches_per_epoch: int | None = None,
    expected_batch_size: int | None = None,
    seed: bytes | None = None,
    test_mode: bool = False,
) -> PrivateTraining:
    """Wrap the user's ``module``, ``optimizer`` and ``data_loader`` for DP-SGD.

    Give ``noise_multiplier`` (σ), or ``target_epsilon`` with ``epochs`` to let Opacus pick σ for
    that many epochs (then ``max_epsilon`` defaults to ``target_epsilon``). ``accountant``:
    ``"rdp"`` (default) or ``"prv"`` (both upper bounds; ``"gdp"``, an approximation, is refused);
    ``delta`` defaults to 1e-5. ``max_epsilon`` is
    the hard budget: the optimizer raises
    :class:`~secureagg.errors.PrivacyBudgetExceeded` before a step that would exceed it. Pass an
    existing ``privacy`` accountant (and ``party``, e.g. a client id) to keep accounting across
    calls, such as federated rounds; ``accountant``/``delta``/``max_epsilon`` then come from it.
    Clipping is flat: one L2 bound ``max_grad_norm`` over all parameters of a record's
    gradient. ``ghost_clipping=True`` uses Opacus's ghost clipping (Linear/Embedding layers;
    other layers fall back to per-sample gradients) and returns a wrapped criterion to call
    instead of yours: its backward is what clips, so the optimizer refuses to step (and clears
    the gradients) after any other backward (:class:`~secureagg.dp._opacus.GhostClippingGuard`).
    ``seed`` makes noise and sampling reproducible and is refused unless ``test_mode=True``.

    **Record count.** By default (Opacus's schedule) ``q = 1 / len(data_loader)``, an epoch is
    ``len(data_loader)`` steps and gradients are averaged over ``int(N q)``: all three are
    functions of the record count ``N``, which is then treated as public (the standard DP-SGD
    analysis). ``batches_per_epoch=k`` (public) fixes ``q = 1/k`` and ``k`` steps per epoch, and
    the average is over ``expected_batch_size`` (public; default the loader's ``batch_size``),
    so that σ, q, the step count and the scale of the released gradients do not depend on ``N``.
    """
    problems: list[str] = []
    if not _positive(max_grad_norm):
        problems.append(f"max_grad_norm must be a finite number > 0, got {max_grad_norm!r}")
    if (noise_multiplier is None) == (target_epsilon is None):
        problems.append("give exactly one of noise_multiplier= and target_epsilon=")
    if noise_multiplier is not None and not _positive(noise_multiplier):
        problems.append(
            f"noise_multiplier must be a finite number > 0 (0 gives no privacy), got "
            f"{noise_multiplier!r}"
        )
    if target_epsilon is not None:
        if not _positive(target_epsilon):
            problems.append(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            problems.append("target_epsilon needs epochs= (an integer >= 1) to calibrate σ")
    for name, count in (
        ("batches_per_epoch", batches_per_epoch), ("expected_batch_size", expected_batch_size)
    ):
        if count is not None and not (is_int(count) and count >= 1):
            problems.append(f"{name} must be an integer >= 1, got {count!r}")
    if not poisson_sampling:
        problems.append(
            "poisson_sampling=False is refused: the accountant analyses Poisson sampling; "
            "shuffled fixed-size batches would be mis-accounted"
        )
    if seed is not None and not test_mode:
        problems.append(
            "seed= makes the noise reproducible (NOT private): only with test_mode=True"
        )
    given: object = privacy
    if given is not None:
        if not isinstance(given, PrivacyAccountant):
            problems.append(f"privacy must be a PrivacyAccountant, got {type(given).__name__}")
        elif privacy is not None:
            for name, value, have in (
                ("accountant", accountant, privacy.accountant),
                ("delta", delta, privacy.delta),
            ):
                if value is not None and value != have:
                    problems.append(f"{name}={value!r} conflicts with privacy.{name}={have!r}")
            if max_epsilon is not _UNSET and max_epsilon != privacy.max_epsilon:
                problems.append("max_epsilon conflicts with privacy.max_epsilon; set it there")
    elif accountant is not None:
        problems.extend(accountant_problems(accountant))
    if problems:
        raise ConfigurationError(problems)

    ad = _adapter()
    ad.check_data_loader(data_loader)
    batches = batches_per_epoch if batches_per_epoch is not None else len(data_loader)
    sample_rate = 1.0 / batches
    normaliser = expected_batch_size
    if normaliser is None and batches_per_epoch is not None:
        normaliser = getattr(data_loader, "batch_size", None)
        if not isinstance(normaliser, int) or normaliser < 1:
            raise ConfigurationError(
                "batches_per_epoch needs expected_batch_size= (the public number of records a "
                "step's gradient is averaged over): the data loader has no batch_size"
            )
    if privacy is None:
        budget = None if max_epsilon is _UNSET else max_epsilon
        if budget is None and target_epsilon is not None and max_epsilon is _UNSET:
            budget = target_epsilon
        privacy = PrivacyAccountant(
            accountant=accountant or "rdp",  # type: ignore[arg-type]
            delta=1e-5 if delta is None else delta,
            max_epsilon=budget,
        )
    sigma = float(noise_multiplier) if noise_multiplier is not None else _calibrate(
        privacy, float(target_epsilon or 0.0), sample_rate, int(epochs or 0)
    )
    if seed is not None:
        noise = CsprngGaussian(seed=seed, test_mode=True)
        key = hashlib.sha256(b"secureagg dp seeded sampling" + bytes(seed)).digest()
        sampling = prg.Keystream(key, label=labels.DP_SAMPLING)
        privacy.emit(SeededNoise(scope="sample", party=party, source="dp-sgd noise and sampling"))
    else:
        noise = CsprngGaussian()
        sampling = prg.Keystream(prg.random_seed(), label=labels.DP_SAMPLING)
    hooks = ad._StepHooks(privacy=privacy, party=party, sample_rate=sample_rate, noise=noise)
    engine = ad.SecureAggPrivacyEngine(
        accountant=privacy.accountant, hooks=hooks, draw=sampling.uniform, batches=batches,
        expected_batch_size=normaliser,
    )
    if criterion is None:
        import torch

        criterion = torch.nn.CrossEntropyLoss()
    out = engine.make_private_checked(
        module=module,
        optimizer=optimizer,
        criterion=criterion,
        data_loader=data_loader,
        noise_multiplier=sigma,
        max_grad_norm=float(max_grad_norm),
        poisson_sampling=True,
        clipping="flat",
        grad_sample_mode="ghost" if ghost_clipping else "hooks",
    )
    if ghost_clipping:
        model, dp_optimizer, dp_criterion, loader = out
        dp_optimizer._secureagg_ghost_guard = ad.GhostClippingGuard(model, dp_optimizer)
    else:
        (model, dp_optimizer, loader), dp_criterion = out, criterion
    parameters = {
        "noise_multiplier": sigma,
        "max_grad_norm": float(max_grad_norm),
        "sample_rate": sample_rate,
        "expected_batch_size": dp_optimizer.expected_batch_size,
        "steps_per_epoch": len(loader),
        "record_count": (
            "public (q, steps per epoch and the gradient average are functions of it)"
            if batches_per_epoch is None
            else "not used (q, steps per epoch and the gradient average are public constants)"
        ),
        "accountant": privacy.accountant,
        "delta": privacy.delta,
        "max_epsilon": privacy.max_epsilon,
        "target_epsilon": target_epsilon,
        "clipping": "flat (one L2 bound over all parameters)",
        "ghost_clipping": ghost_clipping,
        "noise_source": "AES-CTR keystream, sum of 4 Gaussians (Holohan-Braghin)",
        "sampler": "Poisson, AES-CTR keystream",
        "seeded": seed is not None,
        **(ad.ghost_layer_counts(module) if ghost_clipping else {}),
    }
    privacy.emit(
        MechanismConfigured(scope="sample", party=party, mechanism="dp-sgd", parameters=parameters)
    )
    return PrivateTraining(
        module=model,
        optimizer=dp_optimizer,
        data_loader=loader,
        criterion=dp_criterion,
        privacy=privacy,
        engine=engine,
        noise_multiplier=sigma,
        max_grad_norm=float(max_grad_norm),
        sample_rate=sample_rate,
        party=party,
        ghost_clipping=ghost_clipping,
    )


def _positive(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _calibrate(privacy: PrivacyAccountant, target: float, sample_rate: float, epochs: int) -> float:
    """σ such that ``epochs`` epochs at ``sample_rate`` spend at most ``target`` (Opacus)."""
    from opacus.accountants.utils import get_noise_multiplier

    kwargs: dict[str, Any] = {}
    if privacy.accountant == "prv":
        kwargs["eps_error"] = privacy.eps_error
    return float(
        get_noise_multiplier(
            target_epsilon=target,
            target_delta=privacy.delta,
            sample_rate=sample_rate,
            epochs=epochs,
            accountant=privacy.accountant,
            **kwargs,
        )
    )
