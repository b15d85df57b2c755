"""Secure GNMax with the votes computed on Flower nodes (FlowerVotes + vote_node), over the
in-process stand-in Grid: with the same seed, the same noisy histograms, labels, survivors and ε
as the in-process aggregator on the same teachers' votes, bit for bit; a malformed vote or a failed
teacher is counted out; too few nodes abort and spend nothing; the votes leave a node only
through the protocol."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")
torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

sys.path.insert(0, str(Path(__file__).parents[1] / "flower"))

from fake_grid import FakeGrid  # noqa: E402
from flwr.app import Message  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.common.serde import message_to_proto  # noqa: E402

from secureagg.demos.ensemble import _loaders, _split  # noqa: E402
from secureagg.ensemble.aggregate import SecureVoteAggregator  # noqa: E402
from secureagg.ensemble.deployed import (  # noqa: E402
    NodeVoteReport,
    report_from_json,
    report_to_json,
    teacher_summary,
)
from secureagg.ensemble.teachers import TeacherSet, train_teachers  # noqa: E402
from secureagg.ensemble.votes import VoteSpec  # noqa: E402
from secureagg.errors import MalformedMessage  # noqa: E402
from secureagg.flower.ensemble import (  # noqa: E402
    TEACHER,
    TEACHER_STATUS,
    FlowerVotes,
    VoteNode,
    vote_node,
)
from secureagg.flower.mod import secureagg_mod  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

N, C = 4, 10
SEED = 5
NODE0 = 7_000_000_000
SPEC = VoteSpec("one-hot", C)


def make_teacher() -> Any:
    return torch.nn.Linear(64, C)


def train_teacher(model: Any, loader: Any) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(3):
        for xb, yb in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()


#: what a failing training quotes from the party's data: it must never leave the node
SECRET = "SECRET-ROW-42"


def broken_train(model: Any, loader: Any) -> None:
    raise RuntimeError(f"this party's training code failed on row {SECRET}")


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    return _split(N, 300, 347)


@pytest.fixture(scope="module")
def local(data: dict[str, Any]) -> TeacherSet:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the nodes train: one thread (results can depend on it)
    try:
        return train_teachers(make_teacher, train_teacher, _loaders(data["parts"]), workers=1,
                              seed=SEED)
    finally:
        torch.set_num_threads(threads)


def _grid(data: dict[str, Any], *, train: dict[int, Callable[..., None]] | None = None,
          votes: dict[int, Callable[[Any, Any], Any]] | None = None, spec: VoteSpec = SPEC,
          seeded: bool = True, tamper: Any = None) -> FakeGrid:
    loaders = _loaders(data["parts"])

    def build(context: Any) -> VoteNode:
        p = int(context.node_config["partition-id"])
        return VoteNode(make_teacher, (train or {}).get(p, train_teacher), loaders[p], spec,
                        seed=SEED, votes=(votes or {}).get(p))

    app = ClientApp(mods=[secureagg_mod])
    app.train()(vote_node(build))
    nodes = {NODE0 + 17 * i: {"partition-id": i, "secureagg-allow-seeded": seeded}
             for i in range(N)}
    return FakeGrid(app, nodes, tamper=tamper)


def _deployment(grid: FakeGrid) -> FlowerVotes:
    return FlowerVotes(grid, stage_deadline=3.0, train_deadline=60.0, wait_for_nodes=0.5)


def _aggregator(**extra: Any) -> SecureVoteAggregator:
    return SecureVoteAggregator(N, C, sigma=2.0, seed=b"deployed-votes", **extra)


def _batches(data: dict[str, Any]) -> list[Any]:
    x = data["x_public"]
    return [x[:12], x[12:20]]


def _same(a: Any, b: Any) -> None:
    assert a.answered and b.answered
    assert np.array_equal(a.noisy_histogram, b.noisy_histogram)
    assert np.array_equal(a.labels, b.labels)
    assert a.survivors == b.survivors
    assert a.epsilon_after == b.epsilon_after
    assert a.noise_std == b.noise_std


def test_deployed_batches_equal_the_in_process_ones_bit_for_bit(
        data: dict[str, Any], local: TeacherSet) -> None:
    grid = _grid(data)
    deployed, in_process = _aggregator(), _aggregator()
    flower = _deployment(grid)
    for x in _batches(data):
        probs = local.predict_proba(x)
        expected = in_process.aggregate({p: SPEC.encode(probs[p]) for p in range(N)})
        got = deployed.answer_deployed(x, flower)
        _same(got, expected)
        assert got.refused == {} and got.absent == () and got.dropped == {}
    assert deployed.epsilon() == in_process.epsilon() > 0
    keys = ("batch", "status", "queries", "survivors", "epsilon_after", "noise_std_votes")
    assert [{k: e.get(k) for k in keys} for e in deployed.ledger()] == [
        {k: e.get(k) for k in keys} for e in in_process.ledger()]
    # every node trained its teacher once, at the first batch, and kept it in Context.state
    assert all(t["status"] == "trained" and t["batch"] == 0 and t["train_seconds"] > 0
               for t in deployed.node_teachers.values()) and len(deployed.node_teachers) == N
    for p, context in enumerate(grid.contexts.values()):
        assert TEACHER in context.state.array_records
        state = context.state.array_records[TEACHER].to_torch_state_dict()
        for key, value in local.teachers[p].state_dict().items():
            assert torch.equal(state[key], value), (p, key)  # the same teacher, bit for bit
        assert context.state.config_records[TEACHER_STATUS]["status"] == "trained"
    # the nodes received the public queries once per batch, at the step where they vote
    with_queries = [m for _, m in grid.delivered if "arrays" in m.content.array_records]
    assert len(with_queries) == 2 * N
    # the transcript is the round's: every party's masked input reached the server in each batch
    lines = [line for line in got.transcript if line["direction"] == "up"
             and line["stage"] == "masked"]
    assert sorted(line["sender"] for line in lines) == list(range(N))


def test_a_malformed_vote_is_refused_on_the_node_and_the_party_is_not_in_the_sum(
        data: dict[str, Any], local: TeacherSet) -> None:
    def weight_two(model: Any, x: Any) -> Any:
        out = np.zeros((len(x), C))
        out[:, 3] = 2.0  # a vote of weight 2: outside the admissible set
        return out

    grid = _grid(data, votes={1: weight_two})
    deployed = _aggregator(expected_dropout=0.25)
    x = _batches(data)[0]
    probs = local.predict_proba(x)
    votes = {p: SPEC.encode(probs[p]) for p in range(N)}
    got = deployed.answer_deployed(x, _deployment(grid))
    # The node sees the queries only at its masked step: to the protocol it is a dropout of
    # that stage (it advertised its keys and shared its secrets first). In-process, the same
    # round is the one where party 1 drops at "masked"; it sends nothing from then on.
    expected = _aggregator(expected_dropout=0.25).aggregate(votes, dropouts={1: "masked"})
    _same(got, expected)
    assert got.survivors == (0, 2, 3)
    assert got.refused == {1: "not one-hot: a row has a value other than 0 or 1"}
    assert 1 not in got.dropped and deployed.ledger()[0]["refused"] == [1]
    # and in-process the same malformed vote is refused with the same reason
    votes[1] = weight_two(None, x)
    assert _aggregator(expected_dropout=0.25).aggregate(votes).refused == got.refused


def test_with_abstain_the_node_sends_the_zero_vote_and_reports_nothing(
        data: dict[str, Any], local: TeacherSet) -> None:
    def nan_scores(model: Any, x: Any) -> Any:
        return np.full((len(x), C), np.nan)

    grid = _grid(data, votes={2: nan_scores})
    deployed = _aggregator(malformed="abstain")
    in_process = _aggregator(malformed="abstain")
    x = _batches(data)[1]
    probs = local.predict_proba(x)
    votes: dict[int, Any] = {p: SPEC.encode(probs[p]) for p in range(N)}
    votes[2] = nan_scores(None, x)
    expected = in_process.aggregate(votes)
    got = deployed.answer_deployed(x, _deployment(grid))
    _same(got, expected)
    assert got.survivors == (0, 1, 2, 3)  # the zero vote is in the sum
    assert got.refused == {} and expected.refused == {2: "non-finite value (NaN or Inf)"}


def test_a_failed_teacher_is_recorded_and_its_party_is_never_asked_again(
        data: dict[str, Any], local: TeacherSet, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="secureagg")
    grid = _grid(data, train={2: broken_train})
    deployed, in_process = _aggregator(expected_dropout=0.25), _aggregator(expected_dropout=0.25)
    flower = _deployment(grid)
    node2 = NODE0 + 17 * 2
    for b, x in enumerate(_batches(data)):
        probs = local.predict_proba(x)
        # batch 0: the node learns of its failure at its masked step (a dropout of that stage);
        # batch 1: it is not asked (silent from the first stage, as a party without a vote)
        expected = in_process.aggregate(
            {p: SPEC.encode(probs[p]) for p in range(N) if b == 0 or p != 2},
            dropouts={2: "masked"} if b == 0 else None)
        before = sum(1 for node, _ in grid.delivered if node == node2)
        got = deployed.answer_deployed(x, flower)
        _same(got, expected)
        assert got.survivors == (0, 1, 3) and got.absent == (2,) and got.refused == {}
        if b == 1:  # not asked at all once its node reported the failure
            assert sum(1 for node, _ in grid.delivered if node == node2) == before
    failed = deployed.node_teachers[2]
    assert failed["status"] == "failed" and failed["stage"] == "train"
    # the node reported the type and the stage of its failure, never the message ...
    assert failed["error"] == "RuntimeError at stage train"
    assert grid.received and not [n for n, wire in grid.received if SECRET.encode() in wire]
    assert any(b"RuntimeError at stage train" in wire for _, wire in grid.received)
    record = flower.last.record if flower.last is not None else None
    server_side = json.dumps([deployed.ledger(), deployed.report(), deployed.node_teachers,
                              teacher_summary(deployed.node_teachers),
                              None if record is None else vars(record)], default=str)
    assert "RuntimeError at stage train" in server_side and SECRET not in server_side
    # ... which the node keeps in its own log, with the traceback
    local_log = [r for r in caplog.records if SECRET in r.getMessage()]
    assert local_log and all(r.levelno == logging.WARNING and r.exc_info for r in local_log)
    assert grid.contexts[node2].state.config_records[TEACHER_STATUS]["status"] == "failed"
    assert TEACHER not in grid.contexts[node2].state.array_records


def test_too_few_nodes_abort_release_nothing_and_spend_nothing(data: dict[str, Any]) -> None:
    grid = _grid(data)
    grid.silent |= {NODE0, NODE0 + 17}  # two of four parties never answer
    agg = _aggregator(expected_dropout=0.25)  # needs 3 in the sum
    res = agg.answer_deployed(_batches(data)[0], _deployment(grid))
    assert not res.answered and res.aborted is not None
    assert res.noisy_histogram is None and res.labels is None and res.survivors == ()
    assert agg.epsilon() == 0.0 and agg.ledger()[0]["status"] == "aborted"
    assert res.transcript  # what the server saw before the abort is on record


def test_a_node_silent_mid_round_is_a_dropout_of_its_stage(
        data: dict[str, Any], local: TeacherSet) -> None:
    grid = _grid(data)
    grid.answers_left[NODE0 + 17 * 3] = 2  # hello and its key advertisement, then silent
    deployed, in_process = _aggregator(expected_dropout=0.25), _aggregator(expected_dropout=0.25)
    x = _batches(data)[0]
    probs = local.predict_proba(x)
    expected = in_process.aggregate({p: SPEC.encode(probs[p]) for p in range(N)},
                                    dropouts={3: "share"})
    got = deployed.answer_deployed(x, _deployment(grid))
    _same(got, expected)
    assert got.dropped == {3: "share"} and got.absent == ()
    assert deployed.ledger()[0]["dropped"] == [3]


def test_the_budget_stops_a_batch_before_anything_is_sent(data: dict[str, Any]) -> None:
    grid = _grid(data)
    probe = _aggregator()
    probe.aggregate({p: SPEC.encode(np.eye(C)[np.zeros(12, dtype=int)]) for p in range(N)})
    agg = _aggregator(budget_epsilon=probe.epsilon() * 1.01)  # one batch of 12 queries fits
    flower = _deployment(grid)
    assert agg.answer_deployed(_batches(data)[0], flower).answered
    sent = len(grid.delivered)
    res = agg.answer_deployed(_batches(data)[0], flower)
    assert res.stopped_by_budget and not res.answered and len(grid.delivered) == sent
    assert agg.ledger()[1]["status"] == "stopped_by_budget"


def test_a_node_whose_vote_spec_differs_declines(data: dict[str, Any]) -> None:
    grid = _grid(data, spec=VoteSpec("top-k", C, top_k=2))
    agg = _aggregator()
    res = agg.answer_deployed(_batches(data)[0], _deployment(grid))
    assert not res.answered and res.refused == {
        p: "this node's vote spec differs from the server's" for p in range(N)}
    assert agg.epsilon() == 0.0


def test_votes_leave_a_node_only_masked_and_its_report_holds_no_vote(
        data: dict[str, Any], local: TeacherSet) -> None:
    replies: list[tuple[int, Message]] = []

    def keep(node: int, reply: Message) -> Message:
        replies.append((node, reply))
        return reply

    grid = _grid(data, tamper=keep)
    agg = _aggregator()
    x = _batches(data)[0]
    assert agg.answer_deployed(x, _deployment(grid)).answered
    probs = local.predict_proba(x)
    for p in range(N):
        vote = SPEC.to_integers(SPEC.encode(probs[p])).reshape(-1)
        encodings = [vote.astype(t).tobytes() for t in (np.float64, np.int64, np.int32,
                                                          np.uint32, np.float32)]
        node = NODE0 + 17 * p
        mine = [r for n, r in replies if n == node]
        assert mine
        for reply in mine:
            assert not reply.content.array_records  # no arrays: only our ConfigRecord
            wire = message_to_proto(reply).SerializeToString()
            assert not any(e in wire for e in encodings), p
            record = reply.content.config_records["secureagg"]
            if "report" in record:
                report = json.loads(record["report"])
                assert set(report) == {"format", "party", "batch", "status", "reason", "stage",
                                       "trained", "train_seconds", "startup_seconds",
                                       "teacher_epsilon"}
                assert report["status"] == "voted" and report["party"] == p


def test_a_node_report_is_read_strictly() -> None:
    report = NodeVoteReport(party=2, batch=1, status="declined", reason="negative value",
                            trained=True, train_seconds=0.5)
    assert report_from_json(report_to_json(report), party=2, batch=1) == report
    for text, party, batch in (
        (report_to_json(report), 3, 1),  # another party's
        (report_to_json(report), 2, 0),  # another batch's
        (report_to_json(report).replace("declined", "voted!"), 2, 1),
        (report_to_json(report).replace("0.5", "-1"), 2, 1),
        ('{"format": "secureagg-vote-report/1"}', 2, 1),
        ("not json", 2, 1),
    ):
        with pytest.raises(MalformedMessage):
            report_from_json(text, party=party, batch=batch)


def test_unseeded_nodes_refuse_a_seeded_batch_and_nothing_is_released(
        data: dict[str, Any]) -> None:
    grid = _grid(data, seeded=False)
    agg = _aggregator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = agg.answer_deployed(_batches(data)[0], _deployment(grid))
    assert not res.answered and agg.epsilon() == 0.0
