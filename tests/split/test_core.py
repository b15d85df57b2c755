"""Split learning core: equivalence with unsplit training, SplitFed averaging, bad input."""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from secureagg.dp import PrivacyAccountant  # noqa: E402
from secureagg.errors import (  # noqa: E402
    ConfigurationError,
    InvalidInputError,
    NonFiniteInputError,
    PrivacyBudgetExceeded,
    ProtocolError,
)
from secureagg.split import (  # noqa: E402
    ActivationDP,
    Activations,
    CutGradients,
    NoPeek,
    SplitClient,
    SplitLearning,
    SplitServer,
    distance_correlation,
    split_sequential,
)
from secureagg.transport import decode, encode  # noqa: E402
from tests.split.exchange import to_client, to_server  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::secureagg.dp.SeededNoiseWarning")

SID = b"s" * 16


def make_net(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8), torch.nn.ReLU(),
        torch.nn.Linear(8, 3),
    )


def make_data(n: int = 48, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    w = torch.randn(6, 3, generator=g)
    return TensorDataset(x, (x @ w).argmax(1))


def sgd(params: Any) -> Any:
    return torch.optim.SGD(params, lr=0.2)


def unsplit_losses(net: Any, loader: Any, epochs: int) -> list[float]:
    opt = sgd(net.parameters())
    out = []
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            out.append(loss.item())
    return out


def flat(net: Any) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]).numpy()


# ---------------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("cuts", [[2], [2, 4]], ids=["vanilla", "u-shaped"])
def test_split_training_matches_unsplit_training(cuts: list[int]) -> None:
    data = make_data()
    reference = make_net()
    expected = unsplit_losses(reference, DataLoader(data, batch_size=8), epochs=3)
    net = make_net()
    sl = SplitLearning(net, cuts=cuts, clients=[DataLoader(data, batch_size=8)], optimizer=sgd)
    sl.fit(epochs=3)
    np.testing.assert_allclose(sl._loss_log, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat(net), flat(reference), rtol=1e-5, atol=1e-6)
    assert expected[-1] < expected[0]  # it trained: the comparison is not between two no-ops
    assert sl.topology == ("vanilla" if len(cuts) == 1 else "u-shaped")


def test_server_sees_activations_not_inputs_and_no_labels_in_u_shape() -> None:
    data = make_data()
    sl = SplitLearning(make_net(), cuts=[2, 4], clients=[DataLoader(data, batch_size=8)],
                       optimizer=sgd)
    sl.fit(epochs=1)
    kinds = {e.kind for e in sl.transcript}
    assert kinds == {"split/activations", "split/output-gradients"}
    assert all(e.recipient == -1 for e in sl.transcript)
    assert sl.stats.steps == 6 and sl.stats.bytes_up > 0 and sl.stats.bytes_down > 0


def test_split_sequential_validates_cuts() -> None:
    net = make_net()
    for bad in ([0], [5], [3, 2], [1, 1], [1, 2, 3]):
        with pytest.raises(ConfigurationError):
            split_sequential(net, bad)
    with pytest.raises(ConfigurationError, match="no parameters"):
        split_sequential(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(2, 2)), [1])
    with pytest.raises(ConfigurationError, match="Sequential"):
        split_sequential(torch.nn.Linear(2, 2), [1])


# ------------------------------------------------------------------------------------- SplitFed


def test_splitfed_average_equals_plaintext_average_within_quantization() -> None:
    net = make_net()
    loaders = [DataLoader(make_data(seed=s), batch_size=8) for s in range(3)]
    sl = SplitLearning(net, cuts=[2], clients=loaders, optimizer=sgd, aggregator="secagg+",
                       clip=1.0)
    bottom = sl.parts[0]
    start = flat(bottom)
    copies = []
    rng = np.random.default_rng(0)
    for _ in range(3):
        m = copy.deepcopy(bottom)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.from_numpy(rng.normal(0, 0.1, p.shape).astype(np.float32)))
        copies.append([m])
    expected = np.mean([flat(c[0]) for c in copies], axis=0)
    sl._average(copies, [16, 16, 16])
    got = flat(bottom)
    assert np.max(np.abs(got - start)) > 0.01  # the average moved the global part
    err = np.max(np.abs(got - expected))
    assert err < 1e-4, err  # secagg+ fixed point over clip=1.0: quantization error only
    assert {e.kind for e in sl.transcript} >= {"secagg/masked-input"}


def test_splitfed_trains_and_server_sees_only_masked_weights() -> None:
    net = make_net()
    loaders = [DataLoader(make_data(seed=s), batch_size=8) for s in range(3)]
    sl = SplitLearning(net, cuts=[2, 4], clients=loaders, optimizer=sgd, aggregator="secagg+")
    hist = sl.fit(epochs=4)
    assert hist[-1]["loss"] < hist[0]["loss"]
    kinds = {e.kind for e in sl.transcript}
    assert "secagg/masked-input" in kinds and "plain/upload" not in kinds
    assert sl.stats.aggregation_bytes > 0


# ------------------------------------------------------------------------------------ bad input


def vanilla_pair() -> tuple[Any, Any, Any]:
    net = make_net()
    bottom, top = split_sequential(net, [2])
    client = SplitClient(bottom, sgd(bottom.parameters()), session_id=SID)
    server = SplitServer(top, sgd(top.parameters()), session_id=SID,
                         labels=torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    return net, client, server


def tampered(msg: Any, **changes: Any) -> Any:
    return dataclasses.replace(msg, **changes)


def check_unchanged(net: Any, before: np.ndarray) -> None:
    np.testing.assert_array_equal(flat(net), before)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"values": np.full(8 * 16, np.nan, dtype=np.float32)}, NonFiniteInputError),
        ({"values": np.full(8 * 16, np.inf, dtype=np.float32)}, NonFiniteInputError),
        ({"shape": (8, 15)}, InvalidInputError),
        ({"shape": (4, 32)}, InvalidInputError),  # batch of 4 with 8 example ids
        ({"example_ids": np.arange(7, dtype=np.int64)}, InvalidInputError),
        ({"example_ids": np.array([0, 1, 2, 3, 4, 5, 6, 6], dtype=np.int64)}, InvalidInputError),
        ({"example_ids": np.arange(1, 9, dtype=np.int64)}, InvalidInputError),
        ({"example_ids": None}, InvalidInputError),
        ({"step": 1}, ProtocolError),
        ({"session_id": b"t" * 16}, ProtocolError),
        ({"values": np.zeros(8 * 16, dtype=np.float64)}, InvalidInputError),
    ],
)
def test_server_rejects_bad_activations_without_applying(change: dict[str, Any],
                                                           error: type) -> None:
    net, client, server = vanilla_pair()
    good = client.forward(torch.randn(8, 6), example_ids=torch.arange(8))
    to_server(server, good)  # fixes the feature shape (8, 16) and step 0 -> 1
    nxt = Activations(session_id=SID, step=1, shape=good.shape, values=good.values,
                      example_ids=good.example_ids, labels=None)
    if "step" in change:
        change = {"step": 0}  # a replay of step 0
    before = flat(net)
    with pytest.raises(error):
        to_server(server, tampered(nxt, **change))
    check_unchanged(net, before)
    assert server.steps_done == 1
    to_server(server, nxt)  # the genuine message is still accepted
    assert server.steps_done == 2


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"values": np.full(8 * 16, np.nan, dtype=np.float32)}, NonFiniteInputError),
        ({"shape": (16, 8)}, InvalidInputError),
        ({"shape": (8, 16, 1)}, InvalidInputError),
        ({"values": np.zeros(8 * 15, dtype=np.float32)}, InvalidInputError),
        ({"step": 5}, ProtocolError),
    ],
)
def test_client_rejects_bad_gradients_without_applying(change: dict[str, Any],
                                                         error: type) -> None:
    _net, client, server = vanilla_pair()
    reply = to_server(server, client.forward(torch.randn(8, 6), example_ids=torch.arange(8)))
    bottom_before = flat(client.bottom)
    with pytest.raises(error):
        to_client(client, tampered(reply, **change))
    np.testing.assert_array_equal(flat(client.bottom), bottom_before)
    assert client.step == 0 and client.stage == "awaiting-gradients"
    to_client(client, reply)
    assert client.step == 1
    assert not np.array_equal(flat(client.bottom), bottom_before)


def test_out_of_stage_messages_are_refused() -> None:
    _net, client, server = vanilla_pair()
    grad = CutGradients(session_id=SID, step=0, shape=(8, 16),
                        values=np.zeros(128, dtype=np.float32))
    with pytest.raises(ProtocolError):
        to_client(client, grad)  # no step in progress
    client.forward(torch.randn(8, 6), example_ids=torch.arange(8))
    with pytest.raises(ProtocolError):
        client.forward(torch.randn(8, 6), example_ids=torch.arange(8))
    with pytest.raises(ProtocolError):
        to_server(server, grad)  # a gradient is not what a vanilla server takes
    client.abandon()
    assert client.stage == "ready" and client.step == 1


def test_u_shaped_server_rejects_bad_output_gradients() -> None:
    net = make_net()
    bottom, middle, head = split_sequential(net, [2, 4])
    client = SplitClient(bottom, sgd(bottom.parameters()), session_id=SID, head=head,
                         head_optimizer=sgd(head.parameters()),
                         loss_fn=torch.nn.functional.cross_entropy)
    server = SplitServer(middle, sgd(middle.parameters()), session_id=SID, topology="u-shaped")
    y = torch.tensor([0, 1, 2, 0])
    outputs = to_server(server, decode(encode(client.forward(torch.randn(4, 6), labels=y))))
    og = to_client(client, decode(encode(outputs)))
    assert og is not None
    before = flat(net)
    for change in ({"values": np.full(og.values.size, np.nan, dtype=np.float32)},
                   {"shape": (2, 16)}):
        with pytest.raises((InvalidInputError, NonFiniteInputError)):
            to_server(server, tampered(og, **change))
    check_unchanged(net, before)
    cut = to_server(server, og)
    assert to_client(client, cut) is None and client.step == 1
    with pytest.raises(InvalidInputError, match="labels"):
        SplitClient(bottom, sgd(bottom.parameters()), session_id=SID, head=head,
                    head_optimizer=sgd(head.parameters()),
                    loss_fn=torch.nn.functional.cross_entropy).forward(torch.randn(4, 6))


# ------------------------------------------------------------------------------------ protections


def test_activation_dp_clips_noises_and_accounts() -> None:
    dp = ActivationDP(clip=1.0, noise_multiplier=0.5, seed=b"k", test_mode=True)
    with pytest.raises(ConfigurationError, match="begin_epoch"):
        dp.apply(torch.ones(2, 4))
    dp.begin_epoch()
    big = torch.full((256, 4), 10.0)
    out = dp.apply(big)
    # clipped to norm 1 (0.5 per coordinate) plus N(0, 0.5^2) noise
    assert abs(float(out.mean()) - 0.5) < 0.05
    assert abs(float(out.std()) - 0.5) < 0.05
    assert dp.clipped == 256
    dp.begin_epoch()
    assert dp.epsilon == pytest.approx(dp.epsilon_after(epochs=2))
    assert dp.epsilon_after(epochs=2) > dp.epsilon_after(epochs=1) > 0
    calibrated = ActivationDP(clip=1.0, epsilon=8.0, epochs=5)
    assert calibrated.epsilon_after(epochs=5) <= 8.0
    assert calibrated.epsilon_after(epochs=5) > 7.9  # the smallest noise that fits, not more


def test_activation_dp_budget_stops_before_release() -> None:
    acc = PrivacyAccountant(delta=1e-5, max_epsilon=5.0)
    dp = ActivationDP(clip=1.0, noise_multiplier=6.0, accountant=acc)
    spent = 0
    while spent < 50:
        try:
            dp.begin_epoch()
        except PrivacyBudgetExceeded:
            break
        spent += 1
    assert 0 < spent < 50
    assert dp.epsilon <= 5.0


def test_activation_dp_refuses_a_sampler_with_replacement() -> None:
    data = make_data()
    sampler = torch.utils.data.RandomSampler(data, replacement=True, num_samples=48,
                                             generator=torch.Generator().manual_seed(0))
    loader = DataLoader(data, batch_size=8, sampler=sampler)
    sl = SplitLearning(make_net(), cuts=[2, 4], clients=[loader], optimizer=sgd,
                       activation_dp=ActivationDP(clip=1.0, noise_multiplier=1.0))
    with pytest.raises(ConfigurationError, match="twice in one epoch"):
        sl.fit(epochs=1)


def test_distance_correlation_known_values() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    assert float(distance_correlation(x, x)) == pytest.approx(1.0, abs=1e-5)
    assert float(distance_correlation(x, 3 * x + 1)) == pytest.approx(1.0, abs=1e-5)
    assert float(distance_correlation(x, torch.randn(64, 5, generator=g))) < 0.5


def test_nopeek_lowers_distance_correlation() -> None:
    data = make_data(n=96)
    probe = data.tensors[0]

    def dcor_after(nopeek: NoPeek | None) -> float:
        net = make_net()
        sl = SplitLearning(net, cuts=[2], clients=[DataLoader(data, batch_size=32)],
                           optimizer=sgd, nopeek=nopeek)
        sl.fit(epochs=15)
        with torch.no_grad():
            return float(distance_correlation(probe, sl.parts[0](probe)))

    plain, protected = dcor_after(None), dcor_after(NoPeek(2.0))
    assert protected < plain - 0.1, (plain, protected)


def test_a_label_protection_that_returns_garbage_is_refused_without_applying() -> None:
    net = make_net()
    bottom, top = split_sequential(net, [2])
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for garbage in (lambda g, y: g * float("nan"), lambda g, y: g[:, :-1]):
        client = SplitClient(bottom, sgd(bottom.parameters()), session_id=SID)
        server = SplitServer(top, sgd(top.parameters()), session_id=SID, labels=labels,
                             protect=garbage)
        before = flat(net)
        with pytest.raises(InvalidInputError, match="label protection"):
            to_server(server, client.forward(torch.randn(8, 6), example_ids=torch.arange(8)))
        check_unchanged(net, before)
        assert server.steps_done == 0


def test_splitfed_with_distributed_dp_accounts_the_averaged_parts_across_epochs() -> None:
    """The scope says the averaged client parts are protected by the aggregator's own ε: that ε
    must be accounted over every epoch's average and reported, not lost in a fresh accountant
    per average."""
    from secureagg.dp import DistributedDP

    net = make_net()
    parts_size = sum(p.numel() for i in (0, 1, 4) for p in net[i].parameters())
    loaders = [DataLoader(make_data(seed=s), batch_size=8) for s in range(3)]
    sl = SplitLearning(
        net, cuts=[2, 4], clients=loaders, optimizer=sgd, aggregator="secagg",
        aggregator_options={"dropout_rate": 0.0, "corrupt_rate": 0.0,
                            "distributed_dp": DistributedDP(l2_clip=1.0, noise_multiplier=1.0,
                                                            dimension=parts_size)},
    )
    sl.fit(epochs=1)
    one = sl.privacy()["averaged_client_parts"]
    sl.fit(epochs=1)
    two = sl.privacy()["averaged_client_parts"]
    assert one["mechanism"] == "distributed-skellam" and one["rounds"] == 1
    assert two["rounds"] == 2 and 0 < one["epsilon"] < two["epsilon"] < math.inf
    scope = sl.privacy()["scope"]
    assert "averaged_client_parts" in {c["channel"] for c in scope["protected_otherwise"]}


def test_splitfed_refuses_bad_aggregator_options_before_training() -> None:
    net = make_net()
    loaders = [DataLoader(make_data(seed=s), batch_size=8) for s in range(2)]
    with pytest.raises(ConfigurationError, match="degre"):
        SplitLearning(net, cuts=[2, 4], clients=loaders, optimizer=sgd, aggregator="secagg+",
                      aggregator_options={"degre": 3})
