"""DP-SGD through Opacus: clipping, noise from our CSPRNG, samplers, empty batches, budget."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")

from torch import nn  # noqa: E402
from torch.utils.data import (  # noqa: E402
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
)

from secureagg.dp import PrivacyAccountant, SeededNoise, make_private  # noqa: E402
from secureagg.dp.noise import SeededNoiseWarning  # noqa: E402
from secureagg.errors import ConfigurationError, PrivacyBudgetExceeded  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:Full backward hook is firing:UserWarning",
    "ignore:Using a non-full backward hook:UserWarning",
)
ROOT = Path(__file__).resolve().parents[2]


def _data(n: int = 64, d: int = 5, *, scale: float = 1.0) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g) * scale
    return TensorDataset(x, torch.randint(0, 2, (n,), generator=g))


def _model(d: int = 5, out: int = 2) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(d, out))


def _zero_model(d: int = 5, out: int = 2) -> nn.Module:
    """Zero weights: logits 0, so every sample's gradient is about 0.7 |x| (no saturation)."""
    model = nn.Sequential(nn.Linear(d, out))
    for p in model.parameters():
        nn.init.zeros_(p)
    return model


def _wrap(model=None, *, loader=None, **kwargs):
    model = model or _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = loader or DataLoader(_data(), batch_size=16, shuffle=True)
    kwargs.setdefault("max_grad_norm", 1.0)
    if "target_epsilon" not in kwargs:
        kwargs.setdefault("noise_multiplier", 1.0)
    return make_private(model, opt, loader, **kwargs)


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _one_step(run, x, y) -> None:
    model, opt, _ = run
    opt.zero_grad()
    nn.CrossEntropyLoss()(model(x), y).backward()
    opt.step()


def test_batch_of_one_is_clipped_to_exactly_max_grad_norm() -> None:
    ds = _data(scale=30.0)  # raw per-sample gradient norms far above the bound
    x, y = ds.tensors[0][:1], ds.tensors[1][:1]
    norms = []
    for bound in (0.5, 2.0):
        run = _wrap(_zero_model(), max_grad_norm=bound)
        _one_step(run, x, y)
        params = run.optimizer.params
        raw = _flat(p.grad_sample for p in params).norm().item()
        clipped = _flat(p.summed_grad for p in params).norm().item()
        assert raw > 10 * bound
        assert clipped == pytest.approx(bound, rel=1e-5)
        norms.append(_flat(p.summed_grad for p in params))
    assert not torch.allclose(norms[0], norms[1])  # changing the bound changes the result
    assert torch.allclose(norms[0] * 4, norms[1], rtol=1e-4)


def test_each_sample_contribution_is_bounded_in_a_batch() -> None:
    ds = _data(scale=30.0)
    x, y = ds.tensors[0][:8], ds.tensors[1][:8]
    run = _wrap(_zero_model(), max_grad_norm=1.0)
    _one_step(run, x, y)
    params = run.optimizer.params
    per_sample = torch.cat([p.grad_sample.reshape(8, -1) for p in params], dim=1).norm(dim=1)
    assert (per_sample > 1.0).all()
    factors = (1.0 / (per_sample + 1e-6)).clamp(max=1.0)  # Opacus's flat clipping
    clipped = [torch.einsum("i,i...", factors, p.grad_sample) for p in params]
    contributions = torch.stack(
        [_flat(torch.einsum("i,i...", factors[i : i + 1], p.grad_sample[i : i + 1]) for p in params)
         for i in range(8)]
    ).norm(dim=1)
    assert (contributions <= 1.0 + 1e-5).all()
    assert torch.allclose(_flat(clipped), _flat(p.summed_grad for p in params), atol=1e-5)
    assert _flat(p.summed_grad for p in params).norm().item() <= 8.0 + 1e-4


def test_empty_poisson_batch_still_adds_noise_and_is_counted() -> None:
    model = nn.Linear(100, 100)
    run = _wrap(model, loader=DataLoader(_data(64, 100), batch_size=16, shuffle=True))
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.empty(0, 100), torch.empty(0, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mean of an empty loss
        _one_step(run, x, y)
    grads = _flat(p.grad for p in run.optimizer.params)
    # Only noise: std = σ C / expected batch size, on 10100 coordinates.
    expected = 1.0 * 1.0 / run.optimizer.expected_batch_size
    assert grads.std().item() == pytest.approx(expected, rel=0.05)
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert run.privacy.report()["streams"][0]["steps"] == 1
    assert len(run.engine.accountant) == 1  # Opacus counted it too


def test_the_poisson_loader_yields_empty_batches_and_counts_them() -> None:
    ds = _data(8, 3)
    loader = DataLoader(ds, batch_size=4, shuffle=True)  # q = 1/2, 2 batches per epoch
    with pytest.warns(SeededNoiseWarning):
        run = _wrap(_model(3), loader=loader, seed=b"empty", test_mode=True)
    model, opt, dp_loader = run
    sizes, steps = [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(20):
            for xb, yb in dp_loader:
                sizes.append(len(xb))
                assert xb.shape[1:] == (3,)
                opt.zero_grad()
                nn.CrossEntropyLoss(reduction="sum")(model(xb), yb).backward()
                opt.step()
                steps += 1
    assert 0 in sizes and steps == 40  # P(empty) = 2^-8 per batch; the seed gives some
    assert run.privacy.report()["streams"][0]["steps"] == 40
    assert 2.0 < float(np.mean(sizes)) * 1.0 < 6.0


class _EveryOther(BatchSampler):
    pass


@pytest.mark.parametrize(
    ("make_loader", "match"),
    [
        (lambda ds: DataLoader(ds, batch_size=8, sampler=WeightedRandomSampler([1.0] * 64, 64)),
         "WeightedRandomSampler"),
        (lambda ds: DataLoader(ds, batch_size=8, sampler=SubsetRandomSampler(range(32))), "Subset"),
        (lambda ds: DataLoader(ds, batch_size=8, sampler=RandomSampler(ds, replacement=True)),
         "replacement"),
        (lambda ds: DataLoader(ds, batch_sampler=_EveryOther(SequentialSampler(ds), 8, False)),
         "custom batch_sampler"),
    ],
)
def test_a_sampler_that_breaks_the_sample_rate_is_refused(make_loader, match) -> None:
    with pytest.raises(ConfigurationError, match=match):
        _wrap(loader=make_loader(_data()))


def test_non_poisson_sampling_and_unsafe_arguments_are_refused() -> None:
    with pytest.raises(ConfigurationError) as info:
        _wrap(poisson_sampling=False, seed=b"x", noise_multiplier=0.0, max_grad_norm=-1.0)
    text = str(info.value)
    for part in ("poisson_sampling=False", "test_mode=True", "noise_multiplier", "max_grad_norm"):
        assert part in text


def test_accounting_agrees_exactly_with_opacus() -> None:
    for name in ("rdp", "prv"):
        run = _wrap(accountant=name)
        model, opt, loader = run
        for xb, yb in loader:
            opt.zero_grad()
            nn.CrossEntropyLoss()(model(xb), yb).backward()
            opt.step()
        assert run.epsilon() == run.engine.accountant.get_epsilon(delta=1e-5)
        assert len(run.privacy.events) == 1 + 4  # configuration + one event per step


def test_budget_stops_training_at_the_right_step() -> None:
    run = _wrap(max_epsilon=6.0, noise_multiplier=0.9)
    model, opt, loader = run
    done: list[list[torch.Tensor]] = []  # parameters before each attempted step

    def train() -> None:
        for _ in range(100):
            for xb, yb in loader:
                opt.zero_grad()
                nn.CrossEntropyLoss()(model(xb), yb).backward()
                done.append([p.detach().clone() for p in model.parameters()])
                opt.step()

    with pytest.raises(PrivacyBudgetExceeded) as info:
        train()
    taken, params = len(done) - 1, done[-1]
    # The refused step changed nothing and was not counted, by us or by Opacus.
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters(), strict=True))
    assert len(run.engine.accountant.history) == 1 and run.engine.accountant.history[0][2] == taken
    from opacus.accountants import RDPAccountant

    def eps(k: int) -> float:
        acc = RDPAccountant()
        acc.history = [(0.9, 0.25, k)]
        return acc.get_epsilon(delta=1e-5)

    assert eps(taken) <= 6.0 < eps(taken + 1)
    assert info.value.index == taken and run.steps_remaining() == 0


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_target_epsilon_calibrates_sigma_and_sets_the_budget() -> None:
    run = _wrap(target_epsilon=4.0, epochs=3)
    assert run.privacy.max_epsilon == 4.0 and run.noise_multiplier > 0.3
    model, opt, loader = run
    for _ in range(3):
        for xb, yb in loader:
            opt.zero_grad()
            nn.CrossEntropyLoss()(model(xb), yb).backward()
            opt.step()
    assert 3.9 <= run.epsilon() <= 4.0


def test_seeded_training_is_reproducible_only_in_test_mode_and_flagged() -> None:
    results = []
    for _ in range(2):
        torch.manual_seed(5)
        model = _model()
        with pytest.warns(SeededNoiseWarning):
            run = _wrap(model, seed=b"repro", test_mode=True)
        m, opt, loader = run
        for xb, yb in loader:
            opt.zero_grad()
            nn.CrossEntropyLoss()(m(xb), yb).backward()
            opt.step()
        results.append(_flat(p.detach() for p in model.parameters()))
        assert any(isinstance(e, SeededNoise) for e in run.privacy.events)
        assert run.privacy.report()["seeded"] is True
    assert torch.equal(results[0], results[1])
    with pytest.raises(ConfigurationError, match="test_mode"):
        _wrap(seed=b"repro")


def test_ghost_clipping_trains_and_accounts_the_same() -> None:
    run = _wrap(nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2)), ghost_clipping=True)
    model, opt, criterion, loader = run
    for xb, yb in loader:
        opt.zero_grad()
        criterion(model(xb), yb).backward()
        opt.step()
    assert run.epsilon() == run.engine.accountant.get_epsilon(delta=1e-5)
    params = run.privacy.events[0].parameters
    assert params["ghost_layers"] == 2 and params["per_sample_gradient_layers"] == 0


def test_one_accountant_across_calls_keeps_counting() -> None:
    acc = PrivacyAccountant(max_epsilon=50.0)
    for _ in range(2):
        run = _wrap(privacy=acc, party=7)
        model, opt, loader = run
        for xb, yb in loader:
            opt.zero_grad()
            nn.CrossEntropyLoss()(model(xb), yb).backward()
            opt.step()
    assert acc.report()["streams"][0]["steps"] == 8
    with pytest.raises(ConfigurationError, match="conflicts"):
        _wrap(privacy=acc, delta=1e-3)


def test_unsupported_layers_are_a_configuration_error() -> None:
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(ConfigurationError, match=r"ModuleValidator\.fix"):
        _wrap(model)


def test_importing_secureagg_dp_does_not_import_torch() -> None:
    code = (
        "import sys, secureagg, secureagg.dp, secureagg.dp.accounting, secureagg.aggregators.dp\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'opacus')]\n"
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_missing_opacus_is_a_missing_dependency_error() -> None:
    code = (
        "import sys\n"
        "sys.modules['opacus'] = sys.modules['torch'] = None\n"  # as if not installed
        "from secureagg.dp import make_private, PrivacyAccountant, GaussianSteps\n"
        "from secureagg.errors import MissingDependencyError\n"
        "acc = PrivacyAccountant()\n"
        "acc.emit(GaussianSteps(scope='sample', party=None, noise_multiplier=1.0,\n"
        "                       sample_rate=0.1, clip=1.0))\n"
        "msgs = []\n"
        "for fn in (lambda: make_private(None, None, None, max_grad_norm=1.0,\n"
        "                                noise_multiplier=1.0), acc.epsilon):\n"
        "    try:\n"
        "        fn()\n"
        "    except MissingDependencyError as exc:\n"
        "        msgs.append(str(exc))\n"
        "print(len(msgs), all(\"secureagg[dp]\" in m for m in msgs))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "2 True"


def _one_record_ghost_run(**kwargs):
    """One record, q = 1, σ tiny, SGD lr = 1: the parameter change IS that record's contribution
    (summed clipped gradient + noise, averaged over the expected batch of 1)."""
    ds = _data(1, scale=300.0)  # raw gradient norm in the hundreds
    model = _zero_model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    loader = DataLoader(ds, batch_size=1)
    run = make_private(model, opt, loader, max_grad_norm=1.0, noise_multiplier=1e-9,
                       ghost_clipping=True, **kwargs)
    x, y = ds.tensors
    return run, x, y


def _contribution_norm(run, before) -> float:
    after = [p.detach().clone() for p in run.module.parameters()]
    return _flat(a - b for a, b in zip(after, before, strict=True)).norm().item()


def test_ghost_clipping_with_the_users_own_loss_cannot_step_unclipped() -> None:
    """Review: with ghost clipping and the user's own loss, one record contributed norm 221 at a
    clip of 1, noised and accounted as DP. The real optimizer step must refuse it."""
    run, x, y = _one_record_ghost_run()
    model, opt, _criterion, _loader = run
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    nn.CrossEntropyLoss()(model(x), y).backward()  # the user's own loss, not the wrapped one
    raw = _flat(p.grad for p in model.parameters()).norm().item()
    assert raw > 50.0
    with pytest.raises(ConfigurationError, match="criterion"):
        opt.step()
    assert _contribution_norm(run, before) == 0.0  # nothing moved
    assert run.privacy.report()["streams"][0]["steps"] == 0  # nothing accounted
    # the unclipped gradients cannot be stepped later either
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_ghost_clipping_one_records_contribution_on_the_real_step_is_at_most_the_clip() -> None:
    run, x, y = _one_record_ghost_run()
    model, opt, criterion, _loader = run
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    criterion(model(x), y).backward()
    opt.step()
    norm = _contribution_norm(run, before)
    assert 0.5 < norm <= 1.0 + 1e-4  # clipped to max_grad_norm = 1 (the raw norm is > 50)
    assert run.privacy.report()["streams"][0]["steps"] == 1


def test_ghost_clipping_refuses_unclipped_gradients_added_after_the_clipped_backward() -> None:
    run, x, y = _one_record_ghost_run()
    model, opt, criterion, _loader = run
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    criterion(model(x), y).backward()
    nn.CrossEntropyLoss()(model(x), y).backward()  # accumulates an unclipped gradient on top
    with pytest.raises(ConfigurationError, match="criterion"):
        opt.step()
    assert _contribution_norm(run, before) == 0.0


def test_public_schedule_makes_q_steps_and_gradient_average_independent_of_record_count() -> None:
    """By default q = 1/len(loader), the steps per epoch and Opacus's gradient average int(N q)
    are functions of the record count N; batches_per_epoch (public) removes all three."""
    def wrap(n: int, **kwargs):
        loader = DataLoader(_data(n), batch_size=64, shuffle=True)
        return _wrap(loader=loader, **kwargs)

    default = [wrap(n) for n in (60, 65)]
    assert [r.sample_rate for r in default] == [1.0, 0.5]
    assert [r.optimizer.expected_batch_size for r in default] == [60, 32]
    public = [wrap(n, batches_per_epoch=2) for n in (60, 65)]
    assert [r.sample_rate for r in public] == [0.5, 0.5]
    assert [len(r.data_loader) for r in public] == [2, 2]
    assert [r.optimizer.expected_batch_size for r in public] == [64, 64]
    params = next(e for e in public[0].privacy.events if hasattr(e, "parameters")).parameters
    assert params["record_count"].startswith("not used")
    with pytest.raises(ConfigurationError, match="batches_per_epoch"):
        wrap(60, batches_per_epoch=0)


def test_make_private_and_federated_dp_refuse_the_gdp_approximation() -> None:
    """The GDP accountant is refused wherever an accountant is named, not only by
    PrivacyAccountant: make_private and FederatedDP share the one check (issue 11.1)."""
    from secureagg.fl import FederatedDP

    with pytest.raises(ConfigurationError, match="not an upper bound"):
        _wrap(noise_multiplier=1.0, max_grad_norm=1.0, accountant="gdp")
    with pytest.raises(ConfigurationError, match="not an upper bound"):
        FederatedDP(noise_multiplier=1.0, accountant="gdp")  # type: ignore[arg-type]
