"""The whole stage-transition matrix of the SecAgg client and server."""

from __future__ import annotations

import numpy as np
import pytest

import secureagg as sa
from secureagg.errors import ProtocolError
from secureagg.protocols.base import SERVER
from secureagg.protocols.secagg import messages as m
from tests.protocols.secagg.driver import make_setup

S = b"S" * 16
SERVER_MESSAGES = {
    "advertise-request": m.AdvertiseRequest(session_id=S, round_id=0, model_digest=b""),
    "key-broadcast": m.KeyBroadcast(session_id=S, round_id=0, keys={}),
    "share-delivery": m.ShareDelivery(session_id=S, round_id=0, ciphertexts={}),
    "consistency-request": m.ConsistencyRequest(session_id=S, round_id=0, survivors=(0,)),
    "unmask-request": m.UnmaskRequest(
        session_id=S, round_id=0, survivors=(0,), dropped=(), signatures={}
    ),
}
CLIENT_MESSAGES = {
    "key-advertisement": m.KeyAdvertisement(
        session_id=S,
        round_id=0,
        cipher_public_key=b"a" * 32,
        mask_public_key=b"b" * 32,
        signature=b"",
    ),
    "encrypted-shares": m.EncryptedShares(session_id=S, round_id=0, ciphertexts={}),
    "masked-input": m.MaskedInput(session_id=S, round_id=0, values=np.zeros(9, np.uint32)),
    "consistency-signature": m.ConsistencySignature(session_id=S, round_id=0, signature=bytes(64)),
    "unmask-shares": m.UnmaskShares(
        session_id=S, round_id=0, self_mask_shares={}, mask_key_shares={}
    ),
}
CLIENT_EXPECTS = {
    "advertise": "advertise-request",
    "share": "key-broadcast",
    "masked": "share-delivery",
    "consistency": "consistency-request",
    "unmask": "unmask-request",
}
SERVER_EXPECTS = {
    "advertise": "key-advertisement",
    "share": "encrypted-shares",
    "masked": "masked-input",
    "consistency": "consistency-signature",
    "unmask": "unmask-shares",
}


def _advance_client(threat: str, stage: str):
    """A client of a fresh honest round, driven until it waits in ``stage``."""
    agg = sa.make_aggregator(
        "secagg", num_clients=5, clip=1.0, threat=threat, dropout_rate=0.0, corrupt_rate=0.0
    )
    rng = np.random.default_rng(0)
    setup = make_setup(agg, [[rng.uniform(-1, 1, size=8)] for _ in range(5)])
    server, clients = setup.server, setup.clients
    out = server.start()
    while clients[0].stage != stage:
        for env in out:
            for reply in clients[env.recipient].receive(SERVER, env.message):
                server.receive(env.recipient, reply.message)
        out = server.end_stage()
    return setup, out


@pytest.mark.parametrize("threat", ["curious", "malicious"])
@pytest.mark.parametrize("stage", ["advertise", "share", "masked", "consistency", "unmask"])
@pytest.mark.parametrize("kind", list(SERVER_MESSAGES))
def test_client_transition_matrix(threat, stage, kind):
    if threat == "curious" and stage == "consistency":
        pytest.skip("no consistency stage in curious mode")
    setup, out = _advance_client(threat, stage)
    client = setup.clients[0]
    assert client.stage == stage
    if CLIENT_EXPECTS[stage] == kind:
        # The expected kind is accepted when it is the real message for this client.
        real = next(env.message for env in out if env.recipient == 0)
        assert real.KIND.endswith(kind)
        replies = client.receive(SERVER, real)
        assert len(replies) == 1 and client.stage != stage
    else:
        with pytest.raises(ProtocolError) as info:
            client.receive(SERVER, SERVER_MESSAGES[kind])
        assert info.value.stage == stage and 0 in info.value.node_ids
        assert client.aborted and client.stage == "aborted"
        with pytest.raises(ProtocolError, match="aborted"):
            client.receive(SERVER, SERVER_MESSAGES[CLIENT_EXPECTS[stage]])


def test_client_rejects_messages_from_other_clients():
    setup, _ = _advance_client("curious", "advertise")
    with pytest.raises(ProtocolError, match="not the server"):
        setup.clients[0].receive(3, SERVER_MESSAGES["advertise-request"])


@pytest.mark.parametrize("threat", ["curious", "malicious"])
@pytest.mark.parametrize("stage", ["advertise", "share", "masked", "consistency", "unmask"])
@pytest.mark.parametrize("kind", list(CLIENT_MESSAGES))
def test_server_transition_matrix(threat, stage, kind):
    if threat == "curious" and stage == "consistency":
        pytest.skip("no consistency stage in curious mode")
    setup, out = _advance_client(threat, stage)
    server = setup.server
    assert server.stage == stage
    if SERVER_EXPECTS[stage] == kind:
        env = next(env for env in out if env.recipient == 0)
        reply = setup.clients[0].receive(SERVER, env.message)[0].message
        server.receive(0, reply)  # accepted
        with pytest.raises(ProtocolError, match="duplicate"):
            server.receive(0, reply)
    else:
        with pytest.raises(ProtocolError) as info:
            server.receive(0, CLIENT_MESSAGES[kind])
        assert info.value.stage == stage and info.value.node_ids == (0,)


def test_server_rejects_unknown_sender_and_result_before_finish():
    setup, _ = _advance_client("curious", "advertise")
    with pytest.raises(ProtocolError, match="not a live participant"):
        setup.server.receive(42, CLIENT_MESSAGES["key-advertisement"])
    with pytest.raises(ProtocolError, match="not finished"):
        setup.server.result()


def test_client_silent_at_advertise_cannot_join_later_stages():
    agg = sa.make_aggregator(
        "secagg", num_clients=5, clip=1.0, dropout_rate=0.0, corrupt_rate=0.0
    )
    rng = np.random.default_rng(0)
    setup = make_setup(agg, [[rng.uniform(-1, 1, size=8)] for _ in range(5)])
    server, clients = setup.server, setup.clients
    for env in server.start():
        if env.recipient != 4:  # client 4 stays silent at advertise
            for reply in clients[env.recipient].receive(SERVER, env.message):
                server.receive(env.recipient, reply.message)
    server.end_stage()
    assert server.stage == "share"
    with pytest.raises(ProtocolError, match="not a live participant"):
        server.receive(4, CLIENT_MESSAGES["encrypted-shares"])


# ------------------------------------------------------- one declaration of the stage list


@pytest.mark.parametrize("threat", ["curious", "malicious"])
def test_stage_list_is_declared_once_and_read_everywhere(threat):
    from secureagg.protocols.secagg.context import STAGES

    agg = sa.make_aggregator(
        "secagg", num_clients=5, clip=1.0, threat=threat, dropout_rate=0.0, corrupt_rate=0.0
    )
    setup = make_setup(agg, [[np.zeros(3)] for _ in range(5)])
    declared = STAGES[threat]
    assert tuple(agg.dropout_stages) == declared
    assert tuple(setup.server.stages) == declared
    assert setup.server.ctx.stages == declared
    # The client walks through exactly the declared stages, in order.
    server, client = setup.server, setup.clients[0]
    walked, out = [client.stage], server.start()
    while not server.finished:
        for env in out:
            for reply in setup.clients[env.recipient].receive(SERVER, env.message):
                server.receive(env.recipient, reply.message)
        walked.append(client.stage)
        out = server.end_stage()
    assert tuple(walked) == (*declared, "done")


def test_tamper_at_consistency_is_accepted_in_malicious_mode():
    from secureagg.transport import faults

    agg = sa.make_aggregator(
        "secagg", num_clients=5, clip=1.0, threat="malicious", dropout_rate=0.0, corrupt_rate=0.0
    )
    ups = [[np.full(3, 0.1 * u)] for u in range(5)]
    res = sa.simulate(agg, ups, faults=[faults.Tamper(client=1, stage="consistency")], seed=3)
    assert [(r["sender"], r["stage"]) for r in res.metrics["rejected"]] == [(1, "consistency")]
    assert res.survivors == (0, 1, 2, 3, 4)  # its masked input is in the sum; it did not sign
    assert res.details["signers"] == [0, 2, 3, 4]


def test_consistency_fault_in_curious_mode_names_the_rounds_stages():
    from secureagg.errors import ConfigurationError
    from secureagg.transport import faults

    agg = sa.make_aggregator(
        "secagg", num_clients=5, clip=1.0, dropout_rate=0.0, corrupt_rate=0.0
    )
    with pytest.raises(ConfigurationError, match="'advertise', 'share', 'masked', 'unmask'"):
        sa.simulate(agg, [[np.zeros(3)] for _ in range(5)],
                    faults=[faults.Tamper(client=1, stage="consistency")], seed=3)
