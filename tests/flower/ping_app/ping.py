"""A throwaway Flower app: ping every SuperNode and record what each one says about itself.

The ServerApp waits for ``num-nodes`` SuperNodes, then runs ``stages`` stages: one "query"
message to each node, replies pulled every ``poll-interval`` seconds until all are back or
``stage-timeout`` passes. It writes the node ids, each node's echoed ``node_config`` and the
duration of every stage (push to last reply) as JSON to ``result-path``. The ClientApp echoes
``context.node_config`` and its node id. With ``fail = true`` the ServerApp raises instead.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

server_app = ServerApp()
client_app = ClientApp()


@client_app.query()
def echo(message: Message, context: Context) -> Message:
    """Reply with this node's config and id, and the stage number we were sent."""
    record = ConfigRecord(dict(context.node_config))
    record["node-id"] = context.node_id
    record["stage"] = message.content["ping"]["stage"]
    return Message(RecordDict({"echo": record}), reply_to=message)


def _wait_for_nodes(grid: Grid, wanted: int, deadline: float) -> list[int]:
    while True:
        node_ids = sorted(grid.get_node_ids())
        if len(node_ids) >= max(wanted, 1) or time.monotonic() > deadline:
            return node_ids
        time.sleep(0.1)


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Ping every node ``stages`` times and write the echoes to ``result-path``."""
    cfg = context.run_config
    if cfg["fail"]:
        raise RuntimeError("ping app: asked to fail (fail = true)")
    timeout = float(cfg["stage-timeout"])
    poll = float(cfg["poll-interval"])
    node_ids = _wait_for_nodes(grid, int(cfg["num-nodes"]), time.monotonic() + timeout)
    echoes: dict[str, dict[str, object]] = {}
    stage_seconds: list[float] = []
    for stage in range(int(cfg["stages"])):
        start = time.monotonic()
        content = RecordDict({"ping": ConfigRecord({"stage": stage})})
        messages = [Message(content, dst_node_id=n, message_type="query") for n in node_ids]
        pending = set(grid.push_messages(messages))
        while pending and time.monotonic() - start < timeout:
            time.sleep(poll)
            for reply in grid.pull_messages(list(pending)):
                pending.discard(reply.metadata.reply_to_message_id)
                if reply.has_error():
                    raise RuntimeError(f"node {reply.metadata.src_node_id}: {reply.error}")
                echoes[str(reply.metadata.src_node_id)] = dict(reply.content["echo"])
        if pending:
            raise TimeoutError(f"stage {stage}: {len(pending)} node(s) did not answer")
        stage_seconds.append(time.monotonic() - start)
    result = {
        "run_id": context.run_id,
        "node_ids": node_ids,
        "echoes": echoes,
        "stage_seconds": stage_seconds,
    }
    Path(str(cfg["result-path"])).write_text(json.dumps(result, indent=2), encoding="utf-8")
