"""The engine link over Flower's Grid: push our bytes to SuperNodes, pull their replies.

:class:`FlowerLink` implements :class:`secureagg.engine.Link` with Flower's own
``grid.push_messages`` / ``grid.pull_messages`` (the SuperLink does the networking; we write no
network layer). What ``send`` is given is buffered and pushed in one call at the next
``collect``; ``collect`` pulls the replies of every outstanding message with a short poll, so a
stage ends as soon as its last answer arrived rather than on Flower's fixed 3 s cadence.

Replies are matched by the message id they answer (``reply_to_message_id``), never by node id:
Flower reports an unreachable node from another node id. A reply whose source is not the node the
message went to is handed to the engine under another party, which records it as late/forged and
never delivers it. Flower errors (the node's ClientApp raised, the node is unavailable, the TTL
lapsed) become :class:`~secureagg.engine.Answer` errors: a dropout of that stage. Every message
carries a TTL close to the stage deadline, so a stale stage is never delivered later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from secureagg.engine import Answer
from secureagg.errors import MalformedMessage
from secureagg.flower import records

__all__ = ["FlowerLink"]

#: A party id no party has: the engine records an answer under it as forged.
UNKNOWN_PARTY = -(2**31)


class FlowerLink:
    """Moves one round's bytes over ``grid``; ``nodes`` maps our party ids to Flower node ids.

    ``content(party, sender, data, first)`` builds the RecordDict of one message (the strategy's
    business: it adds the spec to a party's first message, and the user's training content to the
    client's message of the stage where it trains). ``ttl`` is each message's time to live in
    seconds.
    """

    def __init__(
        self,
        grid: Any,
        nodes: Mapping[int, int],
        *,
        content: Callable[[int, int, bytes, bool], Any],
        group_id: str,
        ttl: float,
        poll: float = 0.2,
        message_type: str = "train",
        raw: bool = False,
    ) -> None:
        self.grid = grid
        self.nodes = dict(nodes)
        self.party_of = {node: party for party, node in self.nodes.items()}
        self.content = content
        self.group_id = group_id
        self.ttl = float(ttl)
        self.poll = float(poll)
        self.message_type = message_type
        self.raw = raw
        #: With ``raw=True``: each answered ticket's ``secureagg`` record, as a dict.
        self.records: dict[int, dict[str, Any]] = {}
        #: What a client's node reported about its training (the ``report`` of the answer to
        #: the step at which it trained).
        self.reports: dict[int, str] = {}
        self._next_ticket = 0
        self._first_sent: set[int] = set()
        self._pending: list[tuple[int, Any]] = []  # (ticket, Flower message) not pushed yet
        self._outstanding: dict[str, int] = {}  # Flower message id -> ticket
        self._ticket_party: dict[int, int] = {}
        self._undeliverable: list[int] = []  # tickets Flower refused to queue
        self.bytes_down = 0
        self.pushed = 0
        self.push_seconds = 0.0
        self.pull_seconds = 0.0

    def send(self, recipient: int, sender: int, data: bytes) -> int:
        if recipient not in self.nodes:  # a party without a node: it answers nothing
            ticket = self._next_ticket
            self._next_ticket += 1
            self._ticket_party[ticket] = recipient
            self._undeliverable.append(ticket)
            return ticket
        first = recipient not in self._first_sent
        self._first_sent.add(recipient)
        content = self.content(recipient, sender, data, first)
        from flwr.app import Message

        message = Message(
            content, dst_node_id=self.nodes[recipient], message_type=self.message_type,
            group_id=self.group_id, ttl=self.ttl,
        )
        ticket = self._next_ticket
        self._next_ticket += 1
        self._ticket_party[ticket] = recipient
        self._pending.append((ticket, message))
        return ticket

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        t0 = time.perf_counter()
        ids = list(self.grid.push_messages([m for _, m in pending]))
        self.push_seconds += time.perf_counter() - t0
        for (ticket, _), message_id in zip(pending, ids, strict=True):
            if message_id:  # an empty id: Flower refused to queue it (the node is gone)
                self._outstanding[message_id] = ticket
            else:
                self._undeliverable.append(ticket)
        self.pushed += len(pending)

    def collect(self, *, until: float) -> list[Answer]:
        self._flush()
        answers = [
            Answer(party=self._ticket_party[t], ticket=t,
                   error="no node for this party, or Flower did not queue the message")
            for t in self._undeliverable
        ]
        self._undeliverable = []
        while not answers and self._outstanding:
            t0 = time.perf_counter()
            replies = list(self.grid.pull_messages(list(self._outstanding)))
            self.pull_seconds += time.perf_counter() - t0
            for reply in replies:
                answer = self._answer(reply)
                if answer is not None:
                    answers.append(answer)
            if answers or time.monotonic() >= until:
                break
            time.sleep(min(self.poll, max(0.0, until - time.monotonic())))
        return answers

    def _answer(self, reply: Any) -> Answer | None:
        meta = reply.metadata
        ticket = self._outstanding.pop(meta.reply_to_message_id, None)
        if ticket is None:
            return None  # not one of ours (or already answered): Flower's business
        party = self._ticket_party[ticket]
        if reply.has_error():
            err = reply.error
            return Answer(party=party, ticket=ticket,
                          error=f"Flower error {err.code}: {err.reason}")
        if meta.src_node_id != self.nodes[party]:
            return Answer(party=self.party_of.get(meta.src_node_id, UNKNOWN_PARTY), ticket=ticket)
        try:
            record = reply.content.config_records.get(records.RECORD)
            if record is None:
                raise MalformedMessage(f"the reply carries no {records.RECORD!r} record")
            if self.raw:
                self.records[ticket] = dict(record)
                return Answer(party=party, ticket=ticket)
            if "report" in record:
                self.reports[party] = records.field(record, "report", str)
            recipients = records.int_list(record, "recipients")
            messages = records.bytes_list(record, "messages")
            if len(recipients) != len(messages):
                raise MalformedMessage("recipients and messages differ in length")
        except (MalformedMessage, AttributeError, TypeError) as exc:
            return Answer(party=party, ticket=ticket, error=f"malformed reply: {exc}")
        compute = record.get("compute", 0.0)
        return Answer(party=party, ticket=ticket,
                      replies=tuple(zip(recipients, messages, strict=True)),
                      compute=float(compute) if isinstance(compute, float) else 0.0)

    def outstanding(self) -> int:
        """Messages sent whose answer has not come (yet)."""
        return len(self._outstanding) + len(self._pending)
