"""The split parties follow the one party contract; ExchangeDriver is the one delivery loop.

Every split party (vanilla and U-shaped client and server, both halves of the encrypted cut layer)
is a :class:`~secureagg.protocols.base.Party`: messages arrive through ``receive(sender,
message)``, which answers with envelopes in the party's own name and refuses a message from the
wrong sender. :class:`~secureagg.transport.driver.ExchangeDriver` moves an exchange through the
codec until nothing is in flight and records what the server received as the round driver does.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from secureagg.errors import ConfigurationError, NonFiniteInputError, ProtocolError  # noqa: E402
from secureagg.protocols.base import SERVER, Envelope, Message, Party  # noqa: E402
from secureagg.split import (  # noqa: E402
    Activations,
    CutGradients,
    SplitClient,
    SplitLearning,
    SplitServer,
    split_sequential,
)
from secureagg.transport import encode, message_digest  # noqa: E402
from secureagg.transport.driver import ExchangeDriver  # noqa: E402

SID = b"s" * 16
LABELS = [0, 1, 2, 0, 1, 2, 0, 1]


def sgd(params: Any) -> Any:
    return torch.optim.SGD(params, lr=0.2)


def make_net(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8), torch.nn.ReLU(),
        torch.nn.Linear(8, 3),
    )


def vanilla_pair(client_id: int = 0) -> tuple[SplitClient, SplitServer]:
    bottom, top = split_sequential(make_net(), [2])
    client = SplitClient(bottom, sgd(bottom.parameters()), session_id=SID, client_id=client_id)
    server = SplitServer(top, sgd(top.parameters()), session_id=SID,
                         labels=torch.tensor(LABELS))
    return client, server


def u_pair() -> tuple[SplitClient, SplitServer]:
    bottom, middle, head = split_sequential(make_net(), [2, 4])
    client = SplitClient(bottom, sgd(bottom.parameters()), session_id=SID, head=head,
                         head_optimizer=sgd(head.parameters()),
                         loss_fn=torch.nn.functional.cross_entropy)
    return client, SplitServer(middle, sgd(middle.parameters()), session_id=SID,
                               topology="u-shaped")


def test_every_split_party_follows_the_one_contract() -> None:
    client, server = vanilla_pair(client_id=3)
    for party in (client, server):
        assert isinstance(party, Party)
        assert party.start() == [] and party.precompute() == 0
    assert (client.party_id, server.party_id) == (3, SERVER)
    [up] = client.send_forward(torch.randn(8, 6), example_ids=torch.arange(8))
    assert (up.sender, up.recipient) == (3, SERVER) and isinstance(up.message, Activations)
    [down] = server.receive(3, up.message)
    assert (down.sender, down.recipient) == (SERVER, 3)
    assert isinstance(down.message, CutGradients)
    assert client.receive(SERVER, down.message) == [] and client.step == 1


def test_a_message_from_the_wrong_sender_is_refused_and_named() -> None:
    client, server = vanilla_pair()
    [up] = client.send_forward(torch.randn(8, 6), example_ids=torch.arange(8))
    for bad in (SERVER, -2):  # only clients send to the server
        with pytest.raises(ProtocolError):
            server.receive(bad, up.message)
    [down] = server.receive(0, up.message)
    with pytest.raises(ProtocolError, match=r"party 4.*nodes \[4\]"):
        client.receive(4, down.message)  # only the server sends to a client
    assert client.stage == "awaiting-gradients"  # refused: nothing applied
    assert client.receive(SERVER, down.message) == []
    with pytest.raises(ConfigurationError, match="client_id"):
        SplitClient(client.bottom, client.optimizer, session_id=SID, client_id=-1)


@pytest.mark.parametrize("topology", ["vanilla", "u-shaped"])
def test_the_exchange_driver_moves_one_step_and_records_what_the_server_received(
    topology: str,
) -> None:
    client, server = vanilla_pair() if topology == "vanilla" else u_pair()
    y = torch.tensor(LABELS)
    sent = (client.send_forward(torch.randn(8, 6), example_ids=torch.arange(8))
            if topology == "vanilla" else client.send_forward(torch.randn(8, 6), labels=y))
    first = encode(sent[0].message)
    seen: list[Envelope] = []
    wire = ExchangeDriver({0: client, SERVER: server}, stage=topology, round_id=0, keep_raw=True)
    wire.run(sent, observe=seen.append)
    expected = (["split/activations", "split/cut-gradients"] if topology == "vanilla" else
                ["split/activations", "split/server-outputs", "split/output-gradients",
                 "split/cut-gradients"])
    assert [e.message.KIND for e in seen] == expected  # in delivery order, decoded
    assert list(wire.bytes_by_kind) == expected
    assert [e.kind for e in wire.transcript] == expected[::2]  # what the server received
    assert [e.kind for e in wire.downlink] == expected[1::2] and wire.peer == []
    entry = wire.transcript[0]
    assert (entry.stage, entry.sender, entry.recipient, entry.round_id) == (topology, 0, -1, 0)
    assert (entry.size, entry.sha256) == (len(first), message_digest(first))
    assert wire.raw_uplink[0] == first
    assert [message_digest(raw) for raw in wire.raw_uplink] == [e.sha256 for e in wire.transcript]
    assert sum(wire.bytes_by_kind.values()) == sum(
        e.size for e in (*wire.transcript, *wire.downlink))
    assert set(wire.seconds) == {0, SERVER} and wire.codec_seconds > 0
    assert client.step == 1 and client.stage == "ready" and server.steps_done == 1


def test_a_refused_message_propagates_with_what_was_recorded_kept() -> None:
    client, server = vanilla_pair()
    [up] = client.send_forward(torch.randn(8, 6), example_ids=torch.arange(8))
    nan = np.full(up.message.values.size, np.nan, dtype=np.float32)
    bad = Envelope(0, SERVER, Activations(SID, 0, up.message.shape, nan, up.message.example_ids,
                                          None))
    wire = ExchangeDriver({0: client, SERVER: server}, stage="vanilla", round_id=0)
    with pytest.raises(NonFiniteInputError):
        wire.run([bad])
    assert [e.kind for e in wire.transcript] == ["split/activations"] and server.steps_done == 0
    wire.run([up])  # the genuine message still completes the step
    assert server.steps_done == 1 and client.step == 1


class _Echo(Party):
    """Sends every message back to its sender, forever (or in another party's name)."""

    def __init__(self, party_id: int, *, forge: int | None = None) -> None:
        self.party_id, self.forge = party_id, forge

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        me = self.party_id if self.forge is None else self.forge
        return [Envelope(me, sender, message)]


def test_the_exchange_driver_refuses_forged_senders_unknown_parties_and_endless_exchanges(
) -> None:
    msg = CutGradients(session_id=SID, step=0, shape=(1,), values=np.zeros(1, dtype=np.float32))
    forger = ExchangeDriver({0: _Echo(0), SERVER: _Echo(SERVER, forge=5)}, stage="s", round_id=0)
    with pytest.raises(ProtocolError, match="own name"):
        forger.run([Envelope(0, SERVER, msg)])
    with pytest.raises(ProtocolError, match="own name"):  # the caller speaks for a party it has
        forger.run([Envelope(7, SERVER, msg)])
    with pytest.raises(ProtocolError, match="unknown party 9"):
        forger.run([Envelope(0, 9, msg)])
    endless = ExchangeDriver({0: _Echo(0), SERVER: _Echo(SERVER)}, stage="s", round_id=0)
    with pytest.raises(ProtocolError, match="does not settle"):
        endless.run([Envelope(0, SERVER, msg)])


def test_split_learning_records_every_server_received_message_through_the_driver() -> None:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g))
    loaders = [DataLoader(data, batch_size=8), DataLoader(data, batch_size=8)]
    seen: list[Any] = []
    sl = SplitLearning(make_net(), cuts=[2, 4], clients=loaders, optimizer=sgd, aggregator=None,
                       observe=seen.append, session_id=SID)
    sl.fit(epochs=1)
    assert [(e.sender, e.round_id) for e in sl.transcript] == [
        (c, s) for c in (0, 1) for s in (0, 0, 1, 1)]  # two steps per client, two messages each
    assert len(seen) == 4 * 4 and {x.client for x in seen} == {0, 1}
    assert sl.stats.bytes_up == sum(e.size for e in sl.transcript)
    assert sl.stats.bytes_up + sl.stats.bytes_down == sum(sl.stats.by_kind.values())


def test_the_encrypted_cut_layer_parties_follow_the_contract() -> None:
    pytest.importorskip("tenseal")
    from secureagg.split.he_cut import HeCutClient, HeCutConfig, HeCutServer

    cfg = HeCutConfig(in_features=4, out_features=3, batch_size=4, clip=None,
                      noise_multiplier=0.0, allow_exact_weight_gradient=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        client = HeCutClient(cfg)
    server = HeCutServer(cfg, weight=np.eye(4, 3), bias=np.zeros(3), learning_rate=0.1)
    assert isinstance(client, Party) and isinstance(server, Party)
    assert (client.party_id, server.party_id) == (0, SERVER) and server.start() == []
    wire = ExchangeDriver({0: client, SERVER: server}, stage="he", round_id=-1)
    wire.run(client.start())
    assert [e.kind for e in wire.transcript] == ["split/he-setup"] and wire.downlink == []
    [request] = client.send_forward(np.ones((4, 4)))
    with pytest.raises(ProtocolError, match="belongs to party 0"):
        server.receive(1, request.message)  # the session is client 0's
    [response] = server.receive(0, request.message)
    with pytest.raises(ProtocolError, match="not the server"):
        client.receive(2, response.message)
    assert client.receive(SERVER, response.message) == [] and client.outputs is not None
    np.testing.assert_allclose(client.outputs, np.ones((4, 3)), atol=1e-3)
    wire = ExchangeDriver({0: client, SERVER: server}, stage="he", round_id=0)
    wire.run(client.send_backward(np.full((4, 3), 0.1)))
    assert [e.kind for e in wire.transcript] == ["split/he-backward"]
    assert client.input_gradient is not None and client.input_gradient.shape == (4, 4)
    with pytest.raises(ProtocolError):
        server.receive(0, response.message)  # not a request
