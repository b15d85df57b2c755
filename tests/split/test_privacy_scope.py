"""Every split-learning ε states what it covers and what it does not, for the set-up that ran.

ActivationDP's ε covers the cut-layer activations only. Each topology opens other channels
through which a client's records reach the server (or the next client): the labels (vanilla), the
output gradients (U-shaped), the client model trained on every record (always), the averaged
client parts (SplitFed, unless the aggregator adds DP of its own), the parts handed over
(sequential). The report must name exactly the channels the set-up has - never fewer - and the
encrypted cut layer's ε (the noised weight gradient) must do the same.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from secureagg.errors import ConfigurationError  # noqa: E402
from secureagg.split import (  # noqa: E402
    ActivationDP,
    MarvellNoise,
    SplitClient,
    SplitLearning,
    split_sequential,
)

pytestmark = pytest.mark.filterwarnings("ignore::secureagg.dp.SeededNoiseWarning")

ALWAYS = {"client_model_training"}


def make_net() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8), torch.nn.ReLU(),
        torch.nn.Linear(8, 2),
    )


def loaders(n: int = 1) -> list[Any]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16 * n, 6, generator=g)
    y = (x[:, 0] > 0).long()
    return [DataLoader(TensorDataset(x[i::n], y[i::n]), batch_size=8) for i in range(n)]


def dp_factory(c: int) -> ActivationDP:
    return ActivationDP(clip=1.0, noise_multiplier=2.0, party=c)


def run(cuts: list[int], *, clients: int = 1, **kw: Any) -> SplitLearning:
    dp: Any = dp_factory if clients > 1 else dp_factory(0)
    sl = SplitLearning(make_net(), cuts=cuts, clients=loaders(clients),
                       optimizer=lambda p: torch.optim.SGD(p, lr=0.1), activation_dp=dp, **kw)
    sl.fit(epochs=1)
    return sl


def channels(scope: dict[str, Any], key: str) -> set[str]:
    return {c["channel"] for c in scope[key]}


def check_words(scope: dict[str, Any]) -> None:
    """What an auditor reads: adjacency, unit, public facts and a summary naming every gap."""
    assert "replace-one" in scope["adjacency"]
    assert scope["unit"] and scope["public"] and scope["mechanism"] and scope["accountant"]
    for c in scope["epsilon_does_not_cover"]:
        assert len(c["what"]) > 40 and c["direction"]
        assert c["channel"] in scope["summary"]
    json.dumps(scope)  # JSON-ready for the run record


def test_vanilla_report_names_the_labels_and_not_the_output_gradients() -> None:
    sl = run([2])
    report = sl.report()
    scope = report["protections"]["activation_dp"][0]["privacy_scope"]
    assert scope == report["privacy"]["scope"]
    assert channels(scope, "epsilon_covers") == {"activations"}
    assert channels(scope, "epsilon_does_not_cover") == {"labels"} | ALWAYS
    assert report["privacy"]["epsilon"] == pytest.approx(sl._dp[0].epsilon)
    assert report["privacy"]["epsilon"] > 0
    check_words(scope)


def test_u_shaped_report_names_the_output_gradients_and_not_the_labels() -> None:
    scope = run([2, 4]).report()["privacy"]["scope"]
    assert channels(scope, "epsilon_covers") == {"activations"}
    assert channels(scope, "epsilon_does_not_cover") == {"output_gradients"} | ALWAYS
    check_words(scope)


def test_label_protection_is_named_on_its_channel_which_stays_uncovered() -> None:
    scope = run([2, 4], label_protection=MarvellNoise(power_scale=4.0)).privacy()["scope"]
    gaps = {c["channel"]: c for c in scope["epsilon_does_not_cover"]}
    assert "output_gradients" in gaps and "marvell" in gaps["output_gradients"]["what"]
    assert "no ε is claimed" in gaps["output_gradients"]["what"]


@pytest.mark.parametrize(("cuts", "own"), [([2], "labels"), ([2, 4], "output_gradients")])
def test_splitfed_report_names_the_averaged_client_parts(cuts: list[int], own: str) -> None:
    sl = run(cuts, clients=2, aggregator="plain")
    privacy = sl.privacy()
    assert channels(privacy["scope"], "epsilon_does_not_cover") == (
        {own, "averaged_client_parts"} | ALWAYS
    )
    assert [p["client"] for p in privacy["per_client"]] == [0, 1]
    check_words(privacy["scope"])


def test_splitfed_with_a_dp_aggregator_moves_the_parts_to_protected_otherwise() -> None:
    from secureagg.dp import DistributedDP

    net = make_net()
    dim = sum(p.numel() for i in (0, 4) for p in net[i].parameters())  # bottom + head
    ddp = DistributedDP(l2_clip=1.0, noise_multiplier=1.0, dimension=dim)
    sl = SplitLearning(
        net, cuts=[2, 4], clients=loaders(3),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1), activation_dp=dp_factory,
        aggregator="secagg",
        aggregator_options={"distributed_dp": ddp, "dropout_rate": 0.0, "corrupt_rate": 0.0},
    )
    scope = sl.privacy()["scope"]
    assert "averaged_client_parts" not in channels(scope, "epsilon_does_not_cover")
    other = {c["channel"]: c for c in scope["protected_otherwise"]}
    assert "separate ε" in other["averaged_client_parts"]["protection"]


def test_sequential_split_learning_names_the_client_parts_handed_over() -> None:
    scope = run([2], clients=2, aggregator=None).privacy()["scope"]
    assert channels(scope, "epsilon_does_not_cover") == (
        {"labels", "client_parts_handover"} | ALWAYS
    )


def test_a_bare_activation_dp_lists_every_channel_that_may_exist() -> None:
    dp = ActivationDP(clip=1.0, noise_multiplier=2.0)
    scope = dp.report()["privacy_scope"]
    assert channels(scope, "epsilon_covers") == {"activations"}
    assert channels(scope, "epsilon_does_not_cover") == {
        "labels", "output_gradients", "client_parts_shared"
    } | ALWAYS


def test_a_sans_io_client_tells_its_activation_dp_the_topology() -> None:
    bottom, _middle, head = split_sequential(make_net(), [2, 4])
    dp = ActivationDP(clip=1.0, noise_multiplier=2.0)
    SplitClient(bottom, torch.optim.SGD(bottom.parameters(), lr=0.1), session_id=b"s" * 16,
                head=head, head_optimizer=torch.optim.SGD(head.parameters(), lr=0.1),
                loss_fn=torch.nn.functional.cross_entropy, activation_dp=dp)
    scope = dp.report()["privacy_scope"]
    assert channels(scope, "epsilon_does_not_cover") == {
        "output_gradients", "client_parts_shared"
    } | ALWAYS


def test_a_run_without_dp_claims_no_epsilon_and_lists_the_activations_as_uncovered() -> None:
    sl = SplitLearning(make_net(), cuts=[2], clients=loaders(),
                       optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    privacy = sl.report()["privacy"]
    assert privacy["epsilon"] is None and not privacy["scope"]["differential_privacy"]
    assert privacy["scope"]["epsilon_covers"] == []
    gaps = channels(privacy["scope"], "epsilon_does_not_cover")
    assert gaps == {"activations", "labels"} | ALWAYS
    assert "No ε is claimed" in privacy["summary"]


def test_experiments_record_the_scope_of_each_run() -> None:
    from secureagg.demos import split_experiments as ex

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    r = ex.train_split(x[:40], y[:40], x[40:], y[40:], topology="u-shaped", epochs=1,
                       epsilon=8.0)
    scope = r["privacy"]["scope"]
    assert channels(scope, "epsilon_does_not_cover") == {"output_gradients"} | ALWAYS
    assert r["privacy"]["epsilon"] == pytest.approx(r["epsilon"])
    plain = ex.train_split(x[:40], y[:40], x[40:], y[40:], topology="vanilla", epochs=1)
    assert plain["privacy"]["epsilon"] is None
    inv = ex.inversion(x, y, epochs=1, epsilon=8.0)
    assert channels(inv["privacy"]["scope"], "epsilon_covers") == {"activations"}


# ------------------------------------------------------------------ the encrypted cut layer



def _encrypted(**kw: Any) -> Any:
    pytest.importorskip("tenseal")
    from secureagg.split.encrypted import EncryptedSplitLearning

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4),
                              torch.nn.ReLU(), torch.nn.Linear(4, 2))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 6, generator=g)
    data = TensorDataset(x, (x[:, 0] > 0.5).long())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sl = EncryptedSplitLearning(net, cuts=[2, 3], client=DataLoader(data, batch_size=8),
                                    optimizer=lambda p: torch.optim.SGD(p, lr=0.1), **kw)
        sl.fit(epochs=2)
    return sl


def test_encrypted_cut_layer_reports_its_epsilon_and_what_it_covers() -> None:
    sl = _encrypted()
    privacy = sl.report()["privacy"]
    scope = privacy["scope"]
    assert privacy["epsilon"] > 0
    assert channels(scope, "epsilon_covers") == {"weight_gradient"}
    assert channels(scope, "epsilon_does_not_cover") == ALWAYS
    assert channels(scope, "protected_otherwise") == {"activations", "output_gradients"}
    check_words(scope)
    # replace-one, one release per record per epoch: ε of 2 Gaussian mechanisms of z/2
    from secureagg.dp import PrivacyAccountant
    from secureagg.dp.events import GaussianSteps

    acc = PrivacyAccountant(delta=1e-5)
    acc.emit(GaussianSteps(scope="sample", party=0, noise_multiplier=0.5, sample_rate=1.0,
                           clip=2.0, steps=2))
    assert privacy["epsilon"] == pytest.approx(acc.epsilon(scope="sample", party=0))


def test_encrypted_cut_layer_with_plain_gradients_lists_them_as_uncovered() -> None:
    scope = _encrypted(encrypt_gradient=False).privacy()["scope"]
    assert channels(scope, "epsilon_does_not_cover") == {"output_gradients"} | ALWAYS


def test_encrypted_cut_layer_without_noise_claims_no_epsilon() -> None:
    sl = _encrypted(noise_multiplier=0.0, allow_exact_weight_gradient=True)
    privacy = sl.privacy()
    assert privacy["epsilon"] is None
    assert "weight_gradient" in channels(privacy["scope"], "epsilon_does_not_cover")


def test_he_cut_config_refuses_a_sampling_rate_it_does_not_carry_out() -> None:
    pytest.importorskip("tenseal")
    from secureagg.split.he_cut import HeCutConfig

    with pytest.raises(ConfigurationError, match="sample"):
        HeCutConfig(in_features=4, out_features=2, batch_size=8, sample_rate=0.1)


def test_demo_split_run_record_carries_each_epsilon_and_its_scope(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("tenseal")
    from secureagg.cli import main

    run_dir = tmp_path / "split"
    assert main(["demo", "split", "--quick", "--rounds", "1",
                 "--out", str(run_dir)]) == 0
    out = capsys.readouterr().out
    record = json.loads((run_dir / "split.json").read_text())
    scopes = record["privacy_scopes"]
    dp = scopes["accuracy/u-shaped-activation-dp"]
    assert dp["epsilon"] > 0
    assert channels(dp["scope"], "epsilon_covers") == {"activations"}
    assert channels(dp["scope"], "epsilon_does_not_cover") == (
        {"output_gradients", "averaged_client_parts"} | ALWAYS
    )
    assert record["accuracy"]["u-shaped-activation-dp"]["privacy"] == dp
    vanilla = scopes["accuracy/vanilla"]
    assert vanilla["epsilon"] is None
    assert {"activations", "labels"} <= channels(vanilla["scope"], "epsilon_does_not_cover")
    enc = scopes["accuracy/u-shaped-encrypted-cut"]
    assert channels(enc["scope"], "epsilon_covers") == {"weight_gradient"} and enc["epsilon"] > 0
    assert any(k.startswith("inversion/") for k in scopes)
    assert "It does not cover: the output gradients sent to the server [output_gradients]" in out
