"""Adapter to Opacus and torch: the only ``secureagg.dp`` module that imports them at load time.

Imported lazily by :func:`secureagg.dp.dpsgd.make_private`, never by ``secureagg.dp``'s
``__init__``. Nothing here patches Opacus globally: we subclass its ``PrivacyEngine`` (to build
the data loader and the optimizer ourselves) and, per optimizer class, derive a subclass whose
``add_noise`` draws from :class:`~secureagg.dp.noise.CsprngGaussian` and whose ``pre_step``
checks the privacy budget before a step and emits the step's event after it.

Invariants:

* the Poisson sampler draws each record independently with probability ``q = 1 / len(loader)``
  from the AES-CTR keystream, for ``len(loader)`` batches per epoch (Opacus's schedule), and
  an empty batch is still a step (noise added, step counted);
* a data loader whose sampler would make ``q`` wrong is refused (:func:`check_data_loader`);
* the step's :class:`~secureagg.dp.events.GaussianSteps` carries the same ``(σ, q)`` Opacus's
  own accountant records, so both account the same history;
* with ghost clipping, only gradients made by the wrapped criterion's clipped double backward can
  be stepped (:class:`GhostClippingGuard`): Opacus's ghost-clipping optimizer does not clip, it
  trusts ``p.grad`` to be clipped already, so the user's own ``loss.backward()`` would otherwise
  release unclipped gradients as if they were DP.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from opacus import PrivacyEngine
from opacus.data_loader import dtype_safe, shape_safe, wrap_collate_with_empty
from opacus.grad_sample.grad_sample_module_fast_gradient_clipping import (
    GradSampleModuleFastGradientClipping,
)
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping, get_optimizer_class
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from opacus.validators.errors import UnsupportedModuleError
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)
from torch.utils.data.distributed import DistributedSampler

from secureagg.dp.accounting import PrivacyAccountant
from secureagg.dp.events import GaussianSteps
from secureagg.dp.noise import CsprngGaussian
from secureagg.errors import ConfigurationError

__all__ = [
    "CsprngPoissonSampler",
    "GhostClippingGuard",
    "SecureAggPrivacyEngine",
    "check_data_loader",
    "ghost_layer_counts",
]

_SUPPORTED_BASES = (DPOptimizer, DPOptimizerFastGradientClipping)


def check_data_loader(loader: Any) -> None:
    """Raise :class:`ConfigurationError` if ``loader``'s sampling would make ``q`` wrong."""
    if not isinstance(loader, DataLoader):
        raise ConfigurationError(
            f"data_loader must be a torch DataLoader, got {type(loader).__name__}"
        )
    problems = []
    fix = "use DataLoader(dataset, batch_size=B, shuffle=True) (the wrapper re-samples it Poisson)"
    if isinstance(loader.dataset, IterableDataset):
        problems.append("an IterableDataset cannot be Poisson-sampled; use a map-style Dataset")
    batch_sampler = loader.batch_sampler
    if batch_sampler is None:
        problems.append("batch_size=None loaders have no batch dimension; DP-SGD needs batches")
    elif type(batch_sampler) is not BatchSampler:
        problems.append(
            f"custom batch_sampler {type(batch_sampler).__name__}: the probability that a record "
            f"is in a batch cannot be verified, so the accounted sample rate could be wrong; {fix}"
        )
    else:
        sampler = batch_sampler.sampler
        if isinstance(sampler, WeightedRandomSampler):
            problems.append(
                "WeightedRandomSampler draws records with unequal probabilities, but the "
                "accountant assumes every record is in a batch with the same probability "
                "q = 1/len(loader): epsilon would be wrong for the up-weighted records (Opacus "
                "#813). Put the weighting in the loss (e.g. CrossEntropyLoss(weight=...)) and "
                f"{fix}"
            )
        elif isinstance(sampler, SubsetRandomSampler):
            problems.append(
                "SubsetRandomSampler: q = 1/len(loader) counts the subset while the sampler would "
                "draw from the whole dataset; pass torch.utils.data.Subset(dataset, indices) as "
                "the dataset instead"
            )
        elif isinstance(sampler, DistributedSampler):
            problems.append("DistributedSampler is not supported; train on one process per client")
        elif isinstance(sampler, RandomSampler):
            size = len(loader.dataset)  # type: ignore[arg-type]  # map-style: has __len__
            if sampler.replacement or sampler.num_samples != size:
                problems.append(
                    "RandomSampler with replacement or num_samples != len(dataset) changes the "
                    f"sample rate; {fix}"
                )
        elif not isinstance(sampler, SequentialSampler):
            problems.append(
                f"custom sampler {type(sampler).__name__}: its per-record sampling probability "
                f"cannot be verified; {fix}"
            )
    if not problems and len(loader) == 0:
        problems.append("the data loader yields no batches (empty dataset?)")
    if problems:
        raise ConfigurationError(problems)


class CsprngPoissonSampler(Sampler[list[int]]):
    """``steps`` batches; each includes each of ``num_samples`` records with prob ``sample_rate``.

    ``draw(n)`` returns ``n`` uniforms on ``[0, 1)`` from the AES-CTR keystream. Batches may be
    empty (that is Poisson sampling); the optimizer step still adds noise and is counted.
    """

    def __init__(
        self,
        *,
        num_samples: int,
        sample_rate: float,
        steps: int,
        draw: Callable[[int], npt.NDArray[np.float64]],
    ) -> None:
        self.num_samples = num_samples
        self.sample_rate = sample_rate
        self.steps = steps
        self._draw = draw

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            chosen = np.flatnonzero(self._draw(self.num_samples) < self.sample_rate)
            yield chosen.tolist()


def _poisson_loader(
    loader: DataLoader[Any],
    *,
    draw: Callable[[int], npt.NDArray[np.float64]],
    batch_first: bool,
    batches: int,
) -> DataLoader[Any]:
    dataset = loader.dataset
    size = len(dataset)  # type: ignore[arg-type]
    sampler = CsprngPoissonSampler(
        num_samples=size, sample_rate=1.0 / batches, steps=batches, draw=draw
    )
    first = dataset[0]
    collate = wrap_collate_with_empty(
        collate_fn=loader.collate_fn,
        batch_first=batch_first,
        rand_on_empty=False,
        sample_empty_shapes=[(0, *shape_safe(x)) for x in first],
        dtypes=[dtype_safe(x) for x in first],
    )
    out = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        prefetch_factor=loader.prefetch_factor,
        persistent_workers=loader.persistent_workers,
    )
    out.sample_rate = sampler.sample_rate  # like Opacus's DPDataLoader
    return out


@dataclass
class _StepHooks:
    """What our optimizer subclasses need: where events go and where noise comes from."""

    privacy: PrivacyAccountant
    party: int | None
    sample_rate: float
    noise: CsprngGaussian

    def event(self, optimizer: Any) -> GaussianSteps:
        return GaussianSteps(
            scope="sample",
            party=self.party,
            noise_multiplier=float(optimizer.noise_multiplier),
            sample_rate=self.sample_rate,
            clip=float(optimizer.max_grad_norm),
            steps=1,
            mechanism="dp-sgd",
        )


def _add_noise(self: Any) -> None:
    """``DPOptimizer.add_noise`` with the noise drawn from our CSPRNG Gaussian.

    One draw per step for all parameters (the per-call overhead dominates for small layers).
    """
    hooks: _StepHooks = self._secureagg_hooks
    multiplier = getattr(self, "_adjusted_noise_multiplier", self.noise_multiplier)
    std = float(multiplier) * float(self.max_grad_norm)
    params = list(self.params)
    for p in params:
        _check_processed_flag(p.summed_grad)
    sizes = [int(p.summed_grad.numel()) for p in params]
    # float32 parameters get float32 noise (Opacus's secure_mode precision), others float64
    narrow = (torch.float32, torch.float16, torch.bfloat16)
    single = all(p.summed_grad.dtype in narrow for p in params)
    draw = torch.from_numpy(
        hooks.noise.sample(sum(sizes), std, dtype=np.float32 if single else np.float64)
    )
    start = 0
    for p, size in zip(params, sizes, strict=True):
        reference = p.summed_grad
        noise = draw[start : start + size].to(dtype=reference.dtype, device=reference.device)
        start += size
        p.grad = (reference + noise.view_as(reference)).view_as(p)
        _mark_as_processed(p.summed_grad)


class GhostClippingGuard:
    """Lets a ghost-clipping optimizer step only on gradients from the clipped backward.

    Opacus's ghost clipping clips in the *loss*: the wrapped criterion's ``backward`` runs a first
    pass for the per-sample norms, then a second pass on the loss re-weighted by the clipping
    coefficients, between ``module.disable_hooks()`` and ``module.enable_hooks()``. Its optimizer
    adds noise to ``p.grad`` as it finds it. The guard records, when that second pass ends, which
    gradient tensor each parameter holds and its version counter; :meth:`check` (before a step)
    refuses anything else - a backward of the user's own loss, gradients accumulated or edited
    after the clipped pass, a second step on the same gradients - clears the gradients so that
    they cannot be stepped later, and raises :class:`~secureagg.errors.ConfigurationError`.
    """

    def __init__(self, module: Any, optimizer: Any) -> None:
        self._optimizer = optimizer
        self._coefficients_taken = False
        self._clipped: list[tuple[Any, int]] | None = None
        get_coef, enable = module.get_clipping_coef, module.enable_hooks

        def get_clipping_coef() -> Any:
            self._coefficients_taken = True
            return get_coef()

        def enable_hooks() -> None:
            enable()
            if self._coefficients_taken:  # the re-weighted (clipped) backward just ended
                self._coefficients_taken = False
                self._clipped = [(p.grad, p.grad._version if p.grad is not None else -1)
                                 for p in optimizer.params]

        # instance attributes: Opacus's DPTensorFastGradientClipping calls module.<name>()
        object.__setattr__(module, "get_clipping_coef", get_clipping_coef)
        object.__setattr__(module, "enable_hooks", enable_hooks)

    def check(self) -> None:
        """Raise (and clear the gradients) unless they are exactly the clipped pass's output."""
        params = list(self._optimizer.params)
        clipped, self._clipped = self._clipped, None  # one step per clipped backward
        ok = clipped is not None and len(clipped) == len(params) and all(
            p.grad is grad and (grad is None or grad._version == version)
            for p, (grad, version) in zip(params, clipped, strict=True)
        )
        if ok:
            return
        for p in params:
            p.grad = None
            p.summed_grad = None
        raise ConfigurationError(
            "ghost clipping: these gradients did not come from the criterion make_private "
            "returned (its backward clips each record's gradient; your own loss's backward does "
            "not, and Opacus's ghost-clipping optimizer would noise and release the unclipped "
            "sum). Nothing was stepped or accounted and the gradients were cleared. Use "
            "`model, optimizer, criterion, loader = make_private(..., ghost_clipping=True)` and "
            "`criterion(output, target).backward()` once before each `optimizer.step()`"
        )


def _pre_step(self: Any, closure: Callable[[], float] | None = None) -> bool | None:
    """Check the budget, run Opacus's pre_step (clip, noise, scale, accountant hook), emit."""
    hooks: _StepHooks = self._secureagg_hooks
    guard: GhostClippingGuard | None = getattr(self, "_secureagg_ghost_guard", None)
    if guard is not None:
        guard.check()  # before anything: unclipped gradients are never noised nor accounted
    event = hooks.event(self)
    hooks.privacy.check(event)  # raises PrivacyBudgetExceeded before anything is changed
    done = super(type(self), self).pre_step(closure)
    if done:
        hooks.privacy.emit(event)
    return bool(done)


_CLASSES: dict[type[Any], type[Any]] = {}


def _secure_class(base: type[Any]) -> type[Any]:
    if not issubclass(base, _SUPPORTED_BASES) or base.add_noise not in (
        DPOptimizer.add_noise,
        DPOptimizerFastGradientClipping.add_noise,
    ):
        raise ConfigurationError(
            f"Opacus optimizer {base.__name__} draws noise its own way; only flat clipping on "
            "one process is supported"
        )
    if base not in _CLASSES:
        _CLASSES[base] = type(
            f"SecureAgg{base.__name__}", (base,), {"add_noise": _add_noise, "pre_step": _pre_step}
        )
    return _CLASSES[base]


class SecureAggPrivacyEngine(PrivacyEngine):  # type: ignore[misc]  # opacus is untyped
    """Opacus's engine with our Poisson loader and our noise/budget optimizer subclass."""

    def __init__(
        self,
        *,
        accountant: str,
        hooks: _StepHooks,
        draw: Callable[[int], npt.NDArray[np.float64]],
        batches: int,
        expected_batch_size: int | None = None,
    ) -> None:
        with warnings.catch_warnings():  # "Secure RNG turned off": ours is on, not torchcsprng
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            super().__init__(accountant=accountant, secure_mode=False)
        self._hooks = hooks
        self._draw = draw
        self._batches = batches  # Poisson batches per epoch: q = 1 / batches
        self._expected_batch_size = expected_batch_size  # None: Opacus's int(N q)

    def _prepare_data_loader(
        self,
        data_loader: DataLoader[Any],
        *,
        poisson_sampling: bool,
        distributed: bool,
        batch_first: bool = True,
        rand_on_empty: bool = False,
    ) -> DataLoader[Any]:
        if not poisson_sampling or distributed or rand_on_empty:
            raise ConfigurationError("only single-process Poisson sampling is supported")
        if getattr(self, "dataset", None) is None:
            self.dataset = data_loader.dataset
        return _poisson_loader(
            data_loader, draw=self._draw, batch_first=batch_first, batches=self._batches
        )

    def _prepare_optimizer(self, **kwargs: Any) -> Any:
        optimizer = kwargs.pop("optimizer")
        if isinstance(optimizer, DPOptimizer):
            optimizer = optimizer.original_optimizer
        kwargs.pop("noise_generator", None)
        base = get_optimizer_class(
            clipping=kwargs.get("clipping", "flat"),
            distributed=kwargs.pop("distributed", False),
            grad_sample_mode=kwargs.get("grad_sample_mode", "hooks"),
        )
        kwargs.pop("clipping", None)
        kwargs.pop("grad_sample_mode", None)
        if self._expected_batch_size is not None:  # public, instead of int(N q)
            kwargs["expected_batch_size"] = self._expected_batch_size
        cls = _secure_class(base)
        dp_optimizer = cls(optimizer=optimizer, generator=None, secure_mode=False, **kwargs)
        dp_optimizer._secureagg_hooks = self._hooks
        return dp_optimizer

    def make_private_checked(self, **kwargs: Any) -> Any:
        """``make_private`` with Opacus's module errors turned into ConfigurationError."""
        try:
            return self.make_private(**kwargs)
        except UnsupportedModuleError as exc:
            raise ConfigurationError(
                f"the model has layers DP-SGD cannot handle ({exc}); replace them, e.g. "
                "opacus.validators.ModuleValidator.fix(model) swaps BatchNorm for GroupNorm"
            ) from exc


def ghost_layer_counts(module: torch.nn.Module) -> dict[str, int]:
    """How many trainable layers get ghost clipping and how many per-sample gradients."""
    ghost = other = 0
    for m in module.modules():
        if any(p.requires_grad for p in m.parameters(recurse=False)):
            if type(m) in GradSampleModuleFastGradientClipping.NORM_SAMPLERS:
                ghost += 1
            else:
                other += 1
    return {"ghost_layers": ghost, "per_sample_gradient_layers": other}
