"""An in-process stand-in for Flower's Grid, for fast tests of the strategy, link and mod.

Every pushed message goes through Flower's own protobuf serialisation, is handed to the node's
ClientApp as a fresh call (as a SuperNode starts a fresh ClientApp process per message), with the
node's ``Context`` kept between calls (as the SuperNode keeps it), and the reply is serialised
back. ``silent`` nodes never answer; ``tamper(node_id, reply)`` may rewrite a reply. Nothing here
is a network layer: the real-process tests use Flower's SuperLink and SuperNodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.common.serde import message_from_proto, message_to_proto


def _roundtrip(message: Message) -> Message:
    return message_from_proto(message_to_proto(message))


class FakeGrid:
    def __init__(
        self,
        app: Any,
        node_configs: Mapping[int, Mapping[str, Any]],
        *,
        tamper: Callable[[int, Message], Message] | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        # What Flower's runtime sets in a ServerApp process (Message() reads it).
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
        self.app = app
        self.contexts = {
            node: Context(run_id=1, node_id=node, node_config=dict(cfg), state=RecordDict(),
                          run_config=dict(run_config or {}))
            for node, cfg in node_configs.items()
        }
        self.silent: set[int] = set()
        #: node -> how many more messages it answers before it goes silent (a killed node)
        self.answers_left: dict[int, int] = {}
        self.tamper = tamper
        self.replies: dict[str, Message] = {}
        self.delivered: list[tuple[int, Message]] = []
        #: every reply as the server side receives it (Flower's wire bytes), kept for the tests
        self.received: list[tuple[int, bytes]] = []
        self._count = 0

    @staticmethod
    def copy_message(message: Message) -> Message:
        """A copy of ``message`` as a node would receive it (through Flower's serialisation)."""
        return _roundtrip(message)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for message in messages:
            self._count += 1
            message_id = f"m{self._count:06d}"
            message.metadata.__dict__["_message_id"] = message_id
            message.metadata.__dict__["_src_node_id"] = 1
            ids.append(message_id)
            node = message.metadata.dst_node_id
            if node in self.answers_left:
                self.answers_left[node] -= 1
                if self.answers_left[node] < 0:
                    self.silent.add(node)
            if node in self.silent:
                continue
            delivered = _roundtrip(message)
            self.delivered.append((node, _roundtrip(message)))  # a copy, kept for the tests
            try:
                reply = self.app(delivered, self.contexts[node])
            except Exception as exc:  # as Flower: the ClientApp raised -> an error reply
                from flwr.app import Error

                reply = Message(Error(code=2, reason=f"{type(exc).__name__}: {exc}"),
                                reply_to=delivered)
            if self.tamper is not None:
                reply = self.tamper(node, reply)
            self.replies[message_id] = _roundtrip(reply)
            self.received.append((node, message_to_proto(reply).SerializeToString()))
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self.replies.pop(m) for m in list(message_ids) if m in self.replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))
