"""The in-memory simulator, driven with the plain baseline and a small helper-party protocol."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pytest

import secureagg as sa
from secureagg.aggregators.plain import PlainAggregator
from secureagg.errors import (
    ConfigurationError,
    InsufficientSurvivors,
    InvalidInputError,
    NonFiniteInputError,
    ProtocolError,
)
from secureagg.protocols.base import (
    KEY_HOLDER,
    SERVER,
    AggregateOutcome,
    ClientParty,
    Envelope,
    Message,
    Party,
    RoundFactory,
    ServerParty,
)
from secureagg.protocols.plain import PlainClient, PlainUpload
from secureagg.protocols.spec import RoundSpec
from secureagg.transport import (
    Delay,
    Drop,
    Reorder,
    Replay,
    SeededRunWarning,
    Tamper,
    TranscriptEntry,
    decode,
    simulate,
)
from secureagg.transport.simulator import ClippingWarning


def make_updates(n: int, *, seed: int = 0) -> list[list[npt.NDArray[np.float64]]]:
    rng = np.random.default_rng(seed)
    return [[rng.uniform(-1, 1, size=(2, 3)), rng.uniform(-1, 1, size=4)] for _ in range(n)]


def plain_sum(
    updates: Sequence[Sequence[npt.NDArray[np.float64]]], ids: Sequence[int]
) -> list[npt.NDArray[np.float64]]:
    out = [np.zeros_like(t) for t in updates[0]]
    for i in ids:
        for acc, t in zip(out, updates[i], strict=True):
            acc += t
    return out


def assert_aggregate(res: sa.SimulationResult, expected: list[npt.NDArray[np.float64]]) -> None:
    assert len(res.aggregate) == len(expected)
    for got, want in zip(res.aggregate, expected, strict=True):
        assert got.dtype == np.float64
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------ basics


def test_plain_sum_is_exact_and_in_the_callers_shapes() -> None:
    ups = make_updates(5)
    res = simulate(PlainAggregator(5), ups)
    assert res.survivors == (0, 1, 2, 3, 4)
    assert res.total_weight == 5.0
    for got, want in zip(res.aggregate, plain_sum(ups, range(5)), strict=True):
        assert np.array_equal(got, want)  # summed in the same order: bit-exact
    assert res.parameters["protocol"] == "plain"
    assert res.seeded is False
    assert len(res.session_id) == 16


def test_weighted_sum() -> None:
    ups = make_updates(3)
    weights = [1.0, 2.0, 0.5]
    res = simulate(PlainAggregator(3), ups, weights=weights)
    expected = [sum(w * u[j] for w, u in zip(weights, ups, strict=True)) for j in range(2)]
    assert_aggregate(res, expected)
    assert res.total_weight == pytest.approx(3.5)


class FakeTensor:
    """Duck-typed like a torch tensor: detach().cpu().numpy()."""

    def __init__(self, array: npt.NDArray[Any]) -> None:
        self.array = array
        self.calls: list[str] = []

    def detach(self) -> FakeTensor:
        self.calls.append("detach")
        return self

    def cpu(self) -> FakeTensor:
        self.calls.append("cpu")
        return self

    def numpy(self) -> npt.NDArray[Any]:
        self.calls.append("numpy")
        return self.array


def test_tensor_like_inputs_are_converted_and_copied() -> None:
    arrays = [np.arange(3, dtype=np.float32) + i for i in range(3)]
    tensors = [FakeTensor(a) for a in arrays]
    res = simulate(PlainAggregator(3), [[t] for t in tensors])
    assert tensors[0].calls == ["detach", "cpu", "numpy"]
    assert res.aggregate[0].tolist() == [3.0, 6.0, 9.0]
    single = simulate(PlainAggregator(3), [np.ones(2)] * 3)  # a bare array = one tensor
    assert single.aggregate[0].tolist() == [3.0, 3.0]


def test_dropouts_remove_clients_from_survivors_sum_and_uplink() -> None:
    ups = make_updates(6)
    res = simulate(PlainAggregator(6), ups, dropouts={1: "upload", 4: "upload"})
    assert res.survivors == (0, 2, 3, 5)
    assert_aggregate(res, plain_sum(ups, [0, 2, 3, 5]))
    assert sorted(e.sender for e in res.transcript) == [0, 2, 3, 5]
    assert sorted(e.recipient for e in res.downlink) == list(range(6))  # the server still asked
    assert res.metrics["silent"] == {"1": "upload", "4": "upload"}
    assert res.total_weight == 4.0


def test_drop_fault_is_the_same_as_a_dropout() -> None:
    ups = make_updates(4)
    res = simulate(PlainAggregator(4), ups, faults=[Drop(client=2, stage="upload")])
    assert res.survivors == (0, 1, 3)


# ------------------------------------------------------------------------------ validation


def test_bad_dropouts_collect_every_problem() -> None:
    with pytest.raises(ConfigurationError) as info:
        simulate(PlainAggregator(3), make_updates(3), dropouts={7: "upload", 0: "masked", -1: "x"})
    problems = info.value.problems
    assert len(problems) == 4
    text = " ".join(problems)
    assert "7" in text
    assert "'masked'" in text
    assert "['upload']" in text
    assert "-1" in text


@pytest.mark.parametrize(
    ("weights", "needle"),
    [
        ([1.0, 2.0], "2 weights for 3"),
        ([1.0, -1.0, 1.0], "client 1"),
        ([1.0, float("nan"), 0.0], "client 2"),
        ([1.0, "2", 1.0], "not a number"),
        ([True, 1.0, 1.0], "not a number"),
    ],
)
def test_bad_weights(weights: list[Any], needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        simulate(PlainAggregator(3), make_updates(3), weights=weights)


def test_update_count_and_shape_mismatches_name_the_client_and_tensor() -> None:
    with pytest.raises(InvalidInputError, match="num_clients=3"):
        simulate(PlainAggregator(3), make_updates(2))
    ups = make_updates(3)
    ups[2][1] = np.zeros(5)
    with pytest.raises(InvalidInputError, match=r"client 2, tensor 1: shape \(5,\)"):
        simulate(PlainAggregator(3), ups)
    ups = make_updates(3)
    ups[1] = ups[1][:1]
    with pytest.raises(InvalidInputError, match="client 1 has 1 tensors"):
        simulate(PlainAggregator(3), ups)
    with pytest.raises(InvalidInputError, match="client 0, tensor 0: dtype"):
        simulate(PlainAggregator(1), [[np.array(["a"])]])


def test_nan_propagates_from_the_client() -> None:
    ups = make_updates(3)
    ups[1][0][0, 0] = np.nan
    with pytest.raises(NonFiniteInputError, match="client 1"):
        simulate(PlainAggregator(3), ups)


def test_bad_faults_and_arguments_are_configuration_errors() -> None:
    ups = make_updates(3)
    with pytest.raises(ConfigurationError) as info:
        simulate(
            PlainAggregator(3),
            ups,
            faults=[
                Tamper(client=9, stage="upload"),
                Tamper(client=0, stage="upload", xor=0),
                Replay(client=0, stage="upload"),
                "not a fault",  # type: ignore[list-item]
            ],
            round_id=-1,
            session_id=b"",
        )
    assert len(info.value.problems) == 6
    with pytest.raises(ConfigurationError, match="not one of the server's stages"):
        simulate(PlainAggregator(3), ups, faults=[Delay(client=0, stage="masked")])
    with pytest.raises(ConfigurationError, match="aggregator"):
        simulate("plain", ups)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- faults


def test_tampered_header_is_rejected_and_the_client_excluded() -> None:
    ups = make_updates(4)
    res = simulate(PlainAggregator(4), ups, faults=[Tamper(client=2, stage="upload", offset=0)])
    assert res.survivors == (0, 1, 3)
    assert_aggregate(res, plain_sum(ups, [0, 1, 3]))
    [rejected] = res.metrics["rejected"]
    assert rejected["sender"] == 2
    assert rejected["stage"] == "upload"
    assert rejected["error"].startswith("MalformedMessage")
    kinds = {e.sender: e.kind for e in res.transcript}
    assert kinds[2] == "<malformed>"
    assert res.metrics["faults"][0]["fault"] == "tamper"


def test_tampered_payload_reaches_the_plain_server_which_has_no_integrity() -> None:
    ups = make_updates(3)
    res = simulate(
        PlainAggregator(3), ups, faults=[Tamper(client=0, stage="upload")], keep_raw=True
    )
    assert res.survivors == (0, 1, 2)
    assert res.metrics["rejected"] == []
    assert res.raw_uplink is not None
    received = decode(res.raw_uplink[0])
    assert isinstance(received, PlainUpload)
    assert received.weight == np.nextafter(1.0, 2.0)  # last byte of the weight: plain can't tell


def test_replayed_message_is_rejected_as_a_duplicate() -> None:
    ups = make_updates(3)
    res = simulate(
        PlainAggregator(3), ups, faults=[Replay(client=1, stage="upload", from_stage="upload")]
    )
    assert res.survivors == (0, 1, 2)
    assert_aggregate(res, plain_sum(ups, range(3)))  # counted once
    [rejected] = res.metrics["rejected"]
    assert rejected["sender"] == 1
    assert "duplicate" in rejected["error"]
    senders = [e.sender for e in res.transcript]
    assert senders.count(1) == 2
    same = [e.sha256 for e in res.transcript if e.sender == 1]
    assert same[0] == same[1]


def test_replay_from_another_session_is_rejected() -> None:
    ups = make_updates(3)
    with pytest.warns(SeededRunWarning):
        first = simulate(PlainAggregator(3), ups, seed=1, keep_raw=True)
    assert first.raw_uplink is not None
    captured = first.raw_uplink[0]
    res = simulate(
        PlainAggregator(3),
        ups,
        dropouts={0: "upload"},
        faults=[Replay(client=0, stage="upload", captured=captured)],
    )
    assert res.survivors == (1, 2)
    assert "another round or session" in res.metrics["rejected"][0]["error"]


def test_delayed_message_arrives_late_and_is_not_in_the_sum() -> None:
    ups = make_updates(4)
    res = simulate(PlainAggregator(4), ups, faults=[Delay(client=3, stage="upload")])
    assert res.survivors == (0, 1, 2)
    assert_aggregate(res, plain_sum(ups, [0, 1, 2]))
    late = [e for e in res.transcript if e.sender == 3]
    assert len(late) == 1
    assert late[0].stage == "done"
    [rejected] = res.metrics["rejected"]
    assert rejected["sender"] == 3
    assert "not collecting" in rejected["error"]
    delay = {"fault": "delay", "client": 3, "stage": "upload", "delivered_in": "done"}
    assert delay in res.metrics["faults"]


def test_reorder_is_a_reproducible_permutation() -> None:
    ups = make_updates(8)
    orders = []
    for seed in (1, 1, 2, 3):
        with pytest.warns(SeededRunWarning):
            res = simulate(PlainAggregator(8), ups, seed=seed, faults=[Reorder(stage="upload")])
        assert sorted(e.sender for e in res.transcript) == list(range(8))
        np.testing.assert_allclose(res.aggregate[0], plain_sum(ups, range(8))[0], atol=1e-12)
        orders.append([e.sender for e in res.transcript])  # the order the server received
    assert orders[0] == orders[1]  # same seed, same order
    assert any(order != list(range(8)) for order in orders)


# ------------------------------------------------------------------------ transcript/metrics


def test_transcript_hashes_and_sizes_match_the_raw_bytes_and_metrics() -> None:
    ups = make_updates(5)
    res = simulate(PlainAggregator(5), ups, dropouts={2: "upload"}, keep_raw=True)
    assert res.raw_uplink is not None
    assert len(res.raw_uplink) == len(res.transcript) == 4
    for entry, raw in zip(res.transcript, res.raw_uplink, strict=True):
        assert isinstance(entry, TranscriptEntry)
        assert entry.sha256 == hashlib.sha256(raw).hexdigest()
        assert entry.size == len(raw)
        assert entry.kind == "plain/upload"
        assert entry.recipient == SERVER
        assert entry.round_id == 0
        assert entry.stage == "upload"
    stage = res.metrics["stages"]["upload"]
    totals = res.metrics["totals"]
    assert sum(e.size for e in res.transcript) == stage["bytes_up"] == totals["bytes_up"]
    assert sum(e.size for e in res.downlink) == stage["bytes_down"] == totals["bytes_down"]
    assert stage["messages_up"] == 4
    assert stage["messages_down"] == 5
    # 10 float64 values per upload on the wire, plus a small fixed header
    assert 80 < res.transcript[0].size < 160
    for key in ("client_seconds_total", "client_seconds_max", "server_seconds"):
        assert stage[key] >= 0.0
    assert res.metrics["clipped"] == {"per_client": dict.fromkeys("01234", 0), "total": 0}


def test_raw_uplink_is_off_by_default_and_round_id_is_recorded() -> None:
    res = simulate(PlainAggregator(2), make_updates(2), round_id=9)
    assert res.raw_uplink is None
    assert {e.round_id for e in res.transcript} == {9}
    assert res.round_id == 9


def test_clipping_is_counted_per_client() -> None:
    ups = [[np.array([0.5, 2.0, -3.0])], [np.array([0.1, 0.2, 0.3])]]
    with pytest.warns(ClippingWarning):
        res = simulate(PlainAggregator(2, clip=1.0), ups)
    assert res.metrics["clipped"] == {"per_client": {"0": 2, "1": 0}, "total": 2}
    assert res.aggregate[0].tolist() == pytest.approx([0.6, 1.2, -0.7])


@pytest.mark.parametrize("name", ["plain", "secagg"])
def test_clipping_warns_once_per_round_with_count_bound_and_how_to_raise_it(name: str) -> None:
    ups = [[np.array([0.5, 2.0, -3.0, 0.0])], [np.array([0.1, 0.9, 0.3, 1.5])], [np.zeros(4)]]
    agg = sa.make_aggregator(name, num_clients=3, clip=0.75, dropout_rate=0.0,
                             corrupt_rate=0.0) if name != "plain" else PlainAggregator(3, clip=0.75)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = simulate(agg, ups)
    clipping = [w for w in caught if issubclass(w.category, ClippingWarning)]
    assert len(clipping) == 1 and issubclass(ClippingWarning, UserWarning)
    text = str(clipping[0].message)
    assert res.metrics["clipped"]["total"] == 4
    assert "4 values (of 12 in the 3 updates)" in text and "by 2 of 3 clients" in text
    assert "[-0.75, 0.75]" in text and "make_aggregator(..., clip=...)" in text
    assert clipping[0].filename == __file__  # attributed to the caller of simulate


def test_no_clipping_no_clipping_warning() -> None:
    ups = [[np.array([0.5, -0.25])], [np.array([0.1, 0.2])]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = simulate(PlainAggregator(2, clip=1.0), ups)
    assert res.metrics["clipped"]["total"] == 0


def test_seeded_runs_warn_and_are_reproducible() -> None:
    ups = make_updates(3)
    with pytest.warns(SeededRunWarning, match="NOT secret"):
        a = simulate(PlainAggregator(3), ups, seed=b"test-seed")
    with pytest.warns(SeededRunWarning):
        b = simulate(PlainAggregator(3), ups, seed=b"test-seed")
    with pytest.warns(SeededRunWarning):
        c = simulate(PlainAggregator(3), ups, seed=12345)
    assert a.seeded
    assert b.seeded
    assert c.seeded
    assert a.session_id == b.session_id != c.session_id
    assert [e.sha256 for e in a.transcript] == [e.sha256 for e in b.transcript]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = simulate(PlainAggregator(3), ups)
        e = simulate(PlainAggregator(3), ups)
    assert not d.seeded
    assert d.session_id != e.session_id
    with pytest.raises(ConfigurationError, match="seed"):
        simulate(PlainAggregator(3), ups, seed=-1)


def test_insufficient_survivors_propagates_with_partial_transcript() -> None:
    ups = make_updates(4)
    with pytest.raises(InsufficientSurvivors) as info:
        simulate(
            PlainAggregator(4, min_clients=3), ups, dropouts={0: "upload", 1: "upload"}
        )
    exc = info.value
    assert exc.survivors == 2
    assert exc.threshold == 3
    transcript = exc.transcript  # type: ignore[attr-defined]
    assert sorted(e.sender for e in transcript) == [2, 3]
    assert exc.metrics["totals"]["bytes_up"] == sum(e.size for e in transcript)  # type: ignore[attr-defined]


# ----------------------------------------------------------- misbehaving parties (custom setups)


class WrappedPlain(RoundFactory):
    """The plain aggregator with some clients replaced."""

    name = "wrapped-plain"
    dropout_stages = ("upload",)

    def __init__(self, n: int, replace: dict[int, type[PlainClient]]) -> None:
        self.num_clients = n
        self.inner = PlainAggregator(n)
        self.replace = replace

    def spec_options(self) -> dict[str, Any]:
        return self.inner.spec_options()

    def round_spec(self, **kwargs: Any) -> RoundSpec:
        return self.inner.round_spec(**kwargs)

    def server_from_spec(self, spec: RoundSpec, **kwargs: Any) -> ServerParty:
        return self.inner.server_from_spec(spec, **kwargs)

    def client_from_spec(self, spec: RoundSpec, client_id: int, update: Any,
                         **kwargs: Any) -> ClientParty:
        cls = self.replace.get(client_id)
        if cls is None:
            return self.inner.client_from_spec(spec, client_id, update, **kwargs)
        return cls(client_id, update, session_id=spec.session_id, round_id=spec.round_id)

    def parameters(self) -> dict[str, Any]:
        return {"protocol": self.name}


class AbortingClient(PlainClient):
    def receive(self, sender: int, message: Message) -> list[Envelope]:
        raise ProtocolError("refusing", stage="upload", node_ids=[self.party_id])


class ShortUploadClient(PlainClient):
    def receive(self, sender: int, message: Message) -> list[Envelope]:
        [env] = super().receive(sender, message)
        assert isinstance(env.message, PlainUpload)
        bad = PlainUpload(
            round_id=env.message.round_id,
            session_id=env.message.session_id,
            values=env.message.values[:-1],
            weight=1.0,
        )
        return [Envelope(self.party_id, SERVER, bad)]


class ImpersonatingClient(PlainClient):
    def receive(self, sender: int, message: Message) -> list[Envelope]:
        [env] = super().receive(sender, message)
        return [Envelope(0, SERVER, env.message)]


def test_a_client_that_raises_protocol_error_aborts_and_is_recorded() -> None:
    ups = make_updates(3)
    res = simulate(WrappedPlain(3, {1: AbortingClient}), ups)
    assert res.survivors == (0, 2)
    [abort] = res.metrics["client_aborts"]
    assert abort["client"] == 1
    assert abort["stage"] == "upload"
    assert "refusing" in abort["error"]
    assert res.metrics["silent"] == {"1": "upload"}


def test_a_wrong_length_upload_is_rejected_never_broadcast() -> None:
    ups = make_updates(3)
    res = simulate(WrappedPlain(3, {2: ShortUploadClient}), ups)
    assert res.survivors == (0, 1)
    assert_aggregate(res, plain_sum(ups, [0, 1]))
    [rejected] = res.metrics["rejected"]
    assert rejected["sender"] == 2
    assert "expected 10" in rejected["error"]


def test_a_party_cannot_send_in_another_partys_name() -> None:
    with pytest.raises(ProtocolError, match="own name"):
        simulate(WrappedPlain(3, {2: ImpersonatingClient}), make_updates(3))


# --------------------------------------------------- a protocol with a helper party (routing)


@dataclass(frozen=True)
class Note(Message):
    KIND: ClassVar[str] = "test/sim-note"
    round_id: int
    value: int


class RelayServer(ServerParty):
    """Asks every client for a value; clients send it to the key holder, which doubles it."""

    stages: ClassVar[Sequence[str]] = ("collect",)

    def __init__(self, n: int) -> None:
        self.n = n
        self._stage = "init"
        self.total = 0
        self.senders: list[int] = []

    @property
    def stage(self) -> str:
        return self._stage

    @property
    def finished(self) -> bool:
        return self._stage == "done"

    def start(self) -> list[Envelope]:
        self._stage = "collect"
        return [Envelope(SERVER, c, Note(round_id=0, value=0)) for c in range(self.n)]

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        if sender != KEY_HOLDER or not isinstance(message, Note) or self._stage != "collect":
            raise ProtocolError("unexpected", stage=self._stage, node_ids=[sender])
        self.total += message.value
        self.senders.append(sender)
        return []

    def end_stage(self) -> list[Envelope]:
        self._stage = "done"
        return []

    def result(self) -> AggregateOutcome:
        return AggregateOutcome([np.array([float(self.total)])], tuple(range(self.n)), self.n)


class RelayClient(ClientParty):
    def __init__(self, cid: int, value: int) -> None:
        self.party_id = cid
        self.value = value

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        return [Envelope(self.party_id, KEY_HOLDER, Note(round_id=0, value=self.value))]


class KeyHolder(Party):
    party_id = KEY_HOLDER

    def receive(self, sender: int, message: Message) -> list[Envelope]:
        assert isinstance(message, Note)
        return [Envelope(KEY_HOLDER, SERVER, Note(round_id=0, value=2 * message.value))]


class RelayFactory(RoundFactory):
    name = "relay"
    dropout_stages = ("collect",)

    def __init__(self, n: int) -> None:
        self.num_clients = n

    def spec_options(self) -> dict[str, Any]:
        return {}

    def round_spec(self, **kwargs: Any) -> RoundSpec:
        kwargs.pop("public_keys", None)
        return RoundSpec.build(protocol="relay", options={}, num_clients=self.num_clients,
                               **kwargs)

    def server_from_spec(self, spec: RoundSpec, **kwargs: Any) -> ServerParty:
        return RelayServer(self.num_clients)

    def client_from_spec(self, spec: RoundSpec, client_id: int, update: Any,
                         **kwargs: Any) -> ClientParty:
        return RelayClient(client_id, int(update[0][0]))

    def helpers_from_spec(self, spec: RoundSpec, secrets: Any, **kwargs: Any) -> dict[int, Party]:
        return {KEY_HOLDER: KeyHolder()}

    def parameters(self) -> dict[str, Any]:
        return {"protocol": "relay"}


def test_helper_replies_are_routed_to_the_server_within_the_stage() -> None:
    ups = [[np.array([float(v)])] for v in (3, 5, 7, 11)]
    res = simulate(RelayFactory(4), ups, dropouts={3: "collect"})
    assert res.aggregate[0].tolist() == [2.0 * (3 + 5 + 7)]
    assert [e.sender for e in res.transcript] == [KEY_HOLDER] * 3
    assert [(e.sender, e.recipient) for e in res.peer_traffic] == [
        (0, KEY_HOLDER), (1, KEY_HOLDER), (2, KEY_HOLDER)
    ]
    stage = res.metrics["stages"]["collect"]
    assert stage["messages_peer"] == 3
    assert stage["messages_up"] == 3
    assert stage["messages_down"] == 4
