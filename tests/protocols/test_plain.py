"""The plain baseline's state machines, aggregator and the aggregator registry."""

from __future__ import annotations

import numpy as np
import pytest

import secureagg
from secureagg.aggregators import available, make_aggregator, register
from secureagg.aggregators import plain as plain_module
from secureagg.aggregators.plain import PlainAggregator
from secureagg.errors import (
    ConfigurationError,
    InsufficientSurvivors,
    NonFiniteInputError,
    ProtocolError,
)
from secureagg.protocols.base import KEY_HOLDER, SERVER, Envelope
from secureagg.protocols.plain import PlainClient, PlainRequest, PlainServer, PlainUpload

SID = b"s" * 16
OTHER_SID = b"o" * 16


def server(n: int = 3, *, min_clients: int = 1, start: bool = True) -> PlainServer:
    s = PlainServer(
        num_clients=n, shapes=[(2,), (1, 2)], session_id=SID, round_id=5, min_clients=min_clients
    )
    if start:
        s.start()
    return s


def upload(
    values: object = None, *, round_id: int = 5, sid: bytes = SID, weight: float = 1.0
) -> PlainUpload:
    vals = np.arange(4.0) if values is None else values
    return PlainUpload(round_id=round_id, session_id=sid, values=vals, weight=weight)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- server


def test_server_start_sends_a_request_to_every_client_once() -> None:
    s = server(start=False)
    assert s.stage == "init"
    out = s.start()
    assert [e.recipient for e in out] == [0, 1, 2]
    assert all(e.sender == SERVER and e.message == PlainRequest(5, SID) for e in out)
    assert s.stage == "upload"
    with pytest.raises(ProtocolError, match="twice"):
        s.start()


def test_server_sums_streaming_and_splits_into_shapes() -> None:
    s = server()
    s.receive(0, upload(np.array([1.0, 2.0, 3.0, 4.0])))
    s.receive(2, upload(np.array([10.0, 20.0, 30.0, 40.0]), weight=2.0))
    assert s.end_stage() == []
    assert s.finished
    assert s.stage == "done"
    out = s.result()
    assert [a.tolist() for a in out.aggregate] == [[11.0, 22.0], [[33.0, 44.0]]]
    assert out.survivor_ids == (0, 2)
    assert out.total_weight == 3.0
    assert out.details["secure"] is False


def test_server_refuses_before_start_and_after_the_stage_closed() -> None:
    s = server(start=False)
    with pytest.raises(ProtocolError, match="not collecting") as info:
        s.receive(0, upload())
    assert info.value.stage == "init"
    assert info.value.node_ids == (0,)
    s.start()
    s.receive(0, upload())
    s.end_stage()
    with pytest.raises(ProtocolError, match="not collecting") as info:
        s.receive(1, upload())
    assert info.value.stage == "done"
    with pytest.raises(ProtocolError, match="outside"):
        s.end_stage()
    assert s.result().survivor_ids == (0,)  # the late upload changed nothing


def test_result_before_the_end_is_refused() -> None:
    with pytest.raises(ProtocolError, match="not finished"):
        server().result()


@pytest.mark.parametrize("sender", [-1, 3, KEY_HOLDER, 100])
def test_unknown_senders_are_refused(sender: int) -> None:
    with pytest.raises(ProtocolError, match="unknown sender"):
        server().receive(sender, upload())


def test_wrong_message_type_is_refused() -> None:
    with pytest.raises(ProtocolError, match="expected a plain/upload"):
        server().receive(0, PlainRequest(round_id=5, session_id=SID))


@pytest.mark.parametrize(("round_id", "sid"), [(4, SID), (6, SID), (5, OTHER_SID)])
def test_other_round_or_session_is_refused_without_dropping_the_client(
    round_id: int, sid: bytes
) -> None:
    s = server()
    with pytest.raises(ProtocolError, match="another round or session"):
        s.receive(1, upload(round_id=round_id, sid=sid))
    s.receive(1, upload())  # the genuine upload still counts
    s.end_stage()
    assert s.result().survivor_ids == (1,)


def test_duplicate_upload_is_refused_and_counted_once() -> None:
    s = server()
    s.receive(1, upload())
    with pytest.raises(ProtocolError, match="duplicate"):
        s.receive(1, upload(np.full(4, 100.0)))
    s.end_stage()
    assert s.result().aggregate[0].tolist() == [0.0, 1.0]


@pytest.mark.parametrize(
    ("values", "weight", "needle"),
    [
        (np.arange(3.0), 1.0, "hold 3 numbers, expected 4"),
        (np.arange(5.0), 1.0, "hold 5 numbers"),
        (np.ones(1), 1.0, "hold 1 numbers"),  # would broadcast in numpy
        (np.arange(4, dtype=np.float32), 1.0, "float32"),
        (np.arange(4, dtype=np.int64), 1.0, "int64"),
        (np.zeros((2, 2)), 1.0, "shape"),
        (np.array([0.0, np.nan, 0.0, 0.0]), 1.0, "NaN"),
        (np.array([0.0, np.inf, 0.0, 0.0]), 1.0, "NaN or Inf"),
        (np.arange(4.0), 0.0, "weight"),
        (np.arange(4.0), -1.0, "weight"),
        (np.arange(4.0), float("inf"), "weight"),
    ],
)
def test_bad_uploads_drop_the_client(values: np.ndarray, weight: float, needle: str) -> None:  # type: ignore[type-arg]
    s = server()
    with pytest.raises(ProtocolError, match=needle) as info:
        s.receive(2, upload(values, weight=weight))
    assert "treated as dropped" in str(info.value)
    assert info.value.node_ids == (2,)
    with pytest.raises(ProtocolError, match="already treated as dropped"):
        s.receive(2, upload())  # a corrected retry does not get in either
    s.receive(0, upload())
    s.end_stage()
    out = s.result()
    assert out.survivor_ids == (0,)
    assert out.aggregate[0].tolist() == [0.0, 1.0]
    assert "2" in out.details["refused"]


def test_too_few_uploads_raise_insufficient_survivors() -> None:
    s = server(min_clients=2)
    s.receive(0, upload())
    with pytest.raises(InsufficientSurvivors) as info:
        s.end_stage()
    assert info.value.survivors == 1
    assert info.value.threshold == 2
    assert info.value.node_ids == (1, 2)
    assert not s.finished
    with pytest.raises(ProtocolError):
        s.result()


def test_server_configuration_is_validated() -> None:
    with pytest.raises(ConfigurationError) as info:
        PlainServer(num_clients=0, shapes=[(1,)], session_id=b"", round_id=-1)
    assert len(info.value.problems) == 3
    with pytest.raises(ConfigurationError, match="min_clients"):
        PlainServer(num_clients=2, shapes=[(1,)], session_id=SID, round_id=0, min_clients=3)


# ---------------------------------------------------------------------------------- client


def client(update: list[np.ndarray] | None = None, **kwargs: object) -> PlainClient:  # type: ignore[type-arg]
    ups = [np.array([1.0, -2.0]), np.array([[3.0, 0.5]])] if update is None else update
    return PlainClient(1, ups, session_id=SID, round_id=5, **kwargs)  # type: ignore[arg-type]


def test_client_answers_the_request_with_its_flattened_update() -> None:
    c = client()
    [env] = c.receive(SERVER, PlainRequest(round_id=5, session_id=SID))
    assert env.sender == 1
    assert env.recipient == SERVER
    msg = env.message
    assert isinstance(msg, PlainUpload)
    assert msg.values.tolist() == [1.0, -2.0, 3.0, 0.5]
    assert msg.values.dtype == np.float64
    assert msg.weight == 1.0
    assert (msg.round_id, msg.session_id) == (5, SID)
    assert c.stage == "done"


def test_client_clips_counts_and_weights() -> None:
    c = client(clip=1.0, weight=2.0)
    assert c.clipped == 2
    [env] = c.receive(SERVER, PlainRequest(round_id=5, session_id=SID))
    assert isinstance(env.message, PlainUpload)
    assert env.message.values.tolist() == [2.0, -2.0, 2.0, 1.0]
    assert env.message.weight == 2.0


def test_client_does_not_keep_a_reference_to_the_callers_arrays() -> None:
    arr = np.array([1.0, 2.0])
    c = client([arr])
    arr[0] = 99.0
    [env] = c.receive(SERVER, PlainRequest(round_id=5, session_id=SID))
    assert isinstance(env.message, PlainUpload)
    assert env.message.values.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_update_is_refused_before_anything_is_sent(bad: float) -> None:
    with pytest.raises(NonFiniteInputError, match="client 1, tensor 1"):
        client([np.zeros(2), np.array([0.0, bad])])


def test_client_transition_matrix() -> None:
    request = PlainRequest(round_id=5, session_id=SID)
    with pytest.raises(ProtocolError, match="expected the server"):
        client().receive(0, request)
    with pytest.raises(ProtocolError, match="expected a plain/request"):
        client().receive(SERVER, upload())
    for bad in (
        PlainRequest(round_id=4, session_id=SID),
        PlainRequest(round_id=5, session_id=OTHER_SID),
    ):
        with pytest.raises(ProtocolError, match="another round or session"):
            client().receive(SERVER, bad)
    c = client()
    c.receive(SERVER, request)
    with pytest.raises(ProtocolError, match="second upload request"):
        c.receive(SERVER, request)


def test_client_configuration_is_validated() -> None:
    with pytest.raises(ConfigurationError) as info:
        PlainClient(-1, [np.ones(1)], session_id=SID, round_id=0, weight=0.0, clip=-1.0)
    assert len(info.value.problems) == 3


# ------------------------------------------------------------------------------ aggregator


def test_aggregator_is_documented_as_insecure() -> None:
    assert "insecure" in (PlainAggregator.__doc__ or "").lower()
    assert "insecure" in (plain_module.__doc__ or "").lower()
    agg = PlainAggregator(4, clip=2.0)
    assert agg.parameters() == {
        "protocol": "plain",
        "secure": False,
        "num_clients": 4,
        "clip": 2.0,
        "min_clients": 1,
        "dropout_stages": ["upload"],
    }
    assert agg.name == "plain"
    assert agg.dropout_stages == ("upload",)


def test_aggregator_collects_every_configuration_problem() -> None:
    with pytest.raises(ConfigurationError) as info:
        PlainAggregator(0, clip=-1.0, min_clients=0)
    assert len(info.value.problems) == 3
    with pytest.raises(ConfigurationError, match="exceeds num_clients"):
        PlainAggregator(2, min_clients=3)
    with pytest.raises(ConfigurationError, match="clip"):
        PlainAggregator(2, clip=float("nan"))


def test_setup_round_builds_fresh_parties() -> None:
    agg = PlainAggregator(2)
    ups = [[np.ones(3)], [np.zeros(3)]]
    a = agg.setup_round(ups, weights=None, session_id=SID, round_id=0, seed=None)
    b = agg.setup_round(ups, weights=[1.0, 3.0], session_id=SID, round_id=1, seed=None)
    assert a.server is not b.server
    assert set(a.clients) == {0, 1}
    assert a.helpers == {}
    [env] = b.clients[1].receive(SERVER, PlainRequest(round_id=1, session_id=SID))
    assert isinstance(env, Envelope)
    assert isinstance(env.message, PlainUpload)
    assert env.message.weight == 3.0


# -------------------------------------------------------------------------------- registry


def test_registry_builds_plain_and_lists_known_names() -> None:
    assert "plain" in available()
    agg = make_aggregator("plain", num_clients=3, clip=1.0)
    assert isinstance(agg, PlainAggregator)
    assert agg.clip == 1.0
    assert secureagg.make_aggregator is make_aggregator


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown aggregator 'nope'.*plain"):
        make_aggregator("nope", num_clients=3)


def test_unknown_keyword_is_a_configuration_error_listing_accepted_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"clip.*min_clients") as info:
        make_aggregator("plain", num_clients=3, clipp=1.0)
    assert "clipp" in str(info.value)


def test_register_refuses_a_different_factory_under_a_taken_name() -> None:
    register("plain", PlainAggregator)  # same factory again: fine
    with pytest.raises(ConfigurationError, match="already registered"):
        register("plain", lambda **kw: PlainAggregator(**kw))
    with pytest.raises(ConfigurationError):
        register("", PlainAggregator)


def test_version_and_public_surface() -> None:
    assert isinstance(secureagg.__version__, str)
    assert secureagg.__version__
    assert secureagg.errors.ProtocolError is ProtocolError
    for name in ("make_aggregator", "simulate", "errors", "__version__"):
        assert name in secureagg.__all__
