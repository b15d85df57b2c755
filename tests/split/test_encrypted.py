"""The encrypted cut layer inside the U-shaped exchange, over the codec."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tenseal")
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from secureagg.errors import ConfigurationError, InvalidInputError, MalformedMessage  # noqa: E402
from secureagg.split import he_cut  # noqa: E402
from secureagg.split.encrypted import EncryptedSplitLearning  # noqa: E402
from secureagg.split.he_cut import BackwardRequest, ForwardRequest  # noqa: E402
from secureagg.transport import decode, encode  # noqa: E402


def make_net(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5), torch.nn.ReLU(),
        torch.nn.Linear(5, 3),
    )


def make_loader(n: int = 64, seed: int = 0) -> Any:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 6, generator=g)
    y = (x @ torch.randn(6, 3, generator=g)).argmax(1)
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, drop_last=True,
                      generator=torch.Generator().manual_seed(seed))


def sgd(params: Any) -> Any:
    return torch.optim.SGD(params, lr=0.3)


def test_server_receives_only_ciphertexts_and_the_noised_weight_gradient() -> None:
    net = make_net()
    seen: list[np.ndarray] = []
    bottom = net[:2]
    hook = bottom.register_forward_hook(lambda m, i, o: seen.append(o.detach().numpy().copy()))
    sl = EncryptedSplitLearning(net, cuts=[2, 3], client=make_loader(), optimizer=sgd,
                                keep_raw=True)
    sl.fit(epochs=1)
    hook.remove()
    kinds = [e.kind for e in sl.transcript]
    assert set(kinds) == {"split/he-setup", "split/he-forward", "split/he-backward"}
    assert sl.raw_uplink is not None and len(sl.raw_uplink) == len(kinds) == 1 + 2 * 4
    for raw in sl.raw_uplink:
        message = decode(raw)
        if isinstance(message, ForwardRequest):
            assert message.ciphertexts  # Enc(A): nothing else travels forward
        if isinstance(message, BackwardRequest):
            assert message.plain_gradient is None and message.gradient_ciphertexts
        for acts in seen:  # no activation appears in any encoding the server could read
            for dtype in (np.float32, np.float64):
                row = acts[0].astype(dtype).tobytes()
                assert row not in raw


def test_training_through_the_encrypted_layer_reduces_the_loss_and_updates_the_layer() -> None:
    net = make_net()
    before = net[2].weight.detach().clone()
    sl = EncryptedSplitLearning(net, cuts=[2, 3], client=make_loader(n=128), optimizer=sgd,
                                server_lr=0.3, noise_multiplier=0.3)
    history = sl.fit(epochs=8)
    assert history[-1]["loss"] < history[0]["loss"] - 0.05, [h["loss"] for h in history]
    assert not torch.equal(net[2].weight, before)  # the user's nn.Linear got the server's W


def test_messages_cross_the_codec_and_bad_shapes_are_refused() -> None:
    cfg = he_cut.HeCutConfig(in_features=4, out_features=3, batch_size=2)
    client = he_cut.HeCutClient(cfg)
    server = he_cut.HeCutServer(cfg, weight=np.eye(4, 3), bias=np.zeros(3), learning_rate=0.1)

    def wire(message: Any) -> Any:
        data = encode(message)
        assert decode(data) == message or isinstance(message, BackwardRequest)
        return decode(data)

    server.accept_setup(wire(client.setup()))
    req = wire(client.forward(np.ones((2, 4))))
    z = client.finish_forward(wire(server.forward(req)))
    np.testing.assert_allclose(z, np.ones((2, 3)), atol=1e-3)
    back = wire(client.backward(np.full((2, 3), 0.1)))
    assert back.weight_gradient.shape == (12,)  # matrices travel flat
    weight = server.weight
    for bad in (np.zeros(9), np.full(12, np.nan)):  # wrong size, NaN: refused after the codec
        with pytest.raises(InvalidInputError):
            server.backward(wire(dataclasses.replace(back, weight_gradient=bad)))
        np.testing.assert_array_equal(server.weight, weight)  # nothing applied
    with pytest.raises(InvalidInputError):  # the codec carries 1-D arrays only
        encode(dataclasses.replace(back, weight_gradient=np.zeros((4, 3))))
    grad_a = client.finish_backward(wire(server.backward(back)))
    assert grad_a.shape == (2, 4)
    with pytest.raises(MalformedMessage):
        decode(encode(back)[:-5])  # truncated bytes: a clean codec error


def test_the_server_part_must_be_one_linear_layer() -> None:
    with pytest.raises(ConfigurationError, match=r"nn\.Linear"):
        EncryptedSplitLearning(make_net(), cuts=[2, 4], client=make_loader(), optimizer=sgd)
    with pytest.raises(ConfigurationError, match="U-shaped"):
        EncryptedSplitLearning(make_net(), cuts=[2], client=make_loader(), optimizer=sgd)
