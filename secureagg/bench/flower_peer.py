"""Flower's own SecAgg+ as a peer column: one round of Flower's real code, in this process.

:func:`measure_flower_secaggplus` runs ONE round of Flower's ``SecAggPlusWorkflow`` (as the fit
workflow of its legacy ``DefaultWorkflow``, with ``FedAvg`` and one round) against Flower's
``secaggplus_mod`` in front of a legacy ``ClientApp`` whose ``NumPyClient.fit`` returns the node's
fixed update (no training, weight 1). Flower's code runs unchanged; what this module adds is an
in-process :class:`flwr.serverapp.Grid` (:class:`_MeasuringGrid`) that hands every pushed
message, through Flower's protobuf serialisation, to the addressed node's ``ClientApp`` with
that node's persistent ``Context``, and keeps the reply for ``pull_messages``. It is a driver for
measurement only, not a network layer: there is no SuperLink, no process per message and no
polling, so ``send_and_receive`` returns as soon as every delivered message has been answered.

Parameters, ours -> Flower (:func:`flower_share_params`):

* Flower's ``num_shares`` counts the node itself: its neighbours are the ``num_shares`` nodes
  at offsets ``-num_shares//2 .. num_shares//2`` on a shuffled ring (offset 0 = itself), and a
  node keeps one of its ``num_shares`` Shamir shares. Our graph degree ``k`` counts neighbours
  only, so ``num_shares = k + 1`` (``k = n - 1`` -> ``num_shares = n``, the complete graph). Flower
  wants ``num_shares`` odd unless it equals ``n`` (it silently adds 1 otherwise): our sparse
  degrees are even, so ``k + 1`` is odd.
* ``reconstruction_threshold = t``: the number of shares that recover a secret, as ours.
  (Flower reads an int ``1`` as the float ``1.0`` = "all shares", so ``t >= 2`` is required.)
* ``clipping_range = clip``; ``quantization_range = 2**22`` and ``modulus_range = 2**32``,
  Flower's defaults; ``max_weight = 1.0`` = the weight every node reports, so Flower's weight
  factor ``q_ratio = round(w / max_weight * 2**22)`` is exact and the values are not scaled down
  before quantization (Flower's default ``max_weight = 1000`` would cost ~10 bits of precision).

Dropout: the ``dropped`` nodes answer the ``setup`` and ``share_keys`` stages and then go silent
(no reply) from ``collect_masked_vectors`` on - they have shared their keys, so Flower's server
must reconstruct their first secret key and remove their pairwise masks. This is our
``"masked"`` dropout stage, where :func:`secureagg.bench.measure.choose_dropouts` drops.

Figures (seconds from ``time.perf_counter``, one round):

* ``server_seconds``: time inside Flower's four stage methods minus the time spent inside the
  grid's ``push_messages``/``pull_messages`` (the client calls and the serialisation);
* ``client_seconds_total`` / ``client_seconds_max``: per node, the time inside its ``ClientApp``
  calls (``secaggplus_mod``, Flower's legacy message <-> ``FitIns``/``FitRes`` conversions,
  building the client) minus the time inside ``NumPyClient.fit``; summed / the slowest node;
* ``serde_seconds``: Flower's protobuf serialisation of every message both ways (how the bytes
  are counted), reported apart, like our ``codec_seconds``; not in ``total_compute_seconds``;
* ``bytes_up_per_client`` / ``bytes_down_per_client``: the most any node sent / received, as
  ``flwr.common.serde.message_to_proto(message).ByteSize()`` (the whole Flower message, metadata
  and content; as ``benchmarks/flower_apps/bench_shared.py``'s ``GridMeter``);
  ``model_bytes_down_per_client`` is the part of that which is the global model Flower's
  workflow sends in the ``FitIns`` of the ``collect_masked_vectors`` stage;
* the error: Flower releases the weighted MEAN of the survivors' updates (all weights 1 here);
  ``max_abs_error`` is ``max |aggregate - mean of the survivors' updates|``, against
  ``error_bound = 2 * clip / 2**22`` (one quantization step: Flower rounds each value
  stochastically to that grid, so the mean of the survivors is off by less than one step).

Not seeded: Flower draws its keys, mask seeds and stochastic rounding itself (``os.urandom``,
``random``, ``np.random``); ``seed`` only makes the default test updates reproducible.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.crypto import labels, prg
from secureagg.transport import derive_sim_seed

__all__ = ["flower_available", "flower_share_params", "measure_flower_secaggplus"]

#: Flower's defaults for the SecAgg+ workflow's quantization and mask ranges
QUANTIZATION_RANGE = 2**22
MODULUS_RANGE = 2**32
_STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")
_NODE_BASE = 1_000  # Flower node id of node i is _NODE_BASE + i (1 is the SuperLink's id)
_INSTALL = "pip install 'secureagg[flower]'"


def flower_available() -> str | None:
    """``None`` if Flower's SecAgg+ can be measured here, else the reason it cannot."""
    try:
        import flwr
    except ImportError:
        return f"flwr not installed; {_INSTALL}"
    try:
        from flwr.client.mod import secaggplus_mod  # noqa: F401
        from flwr.clientapp import ClientApp  # noqa: F401
        from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow  # noqa: F401
        from flwr.serverapp import Grid  # noqa: F401
        from flwr.supercore.task_identity import TaskIdentity  # noqa: F401
    except ImportError as exc:
        version = getattr(flwr, "__version__", "?")
        return f"flwr {version} lacks an API this driver uses ({exc}); needs flwr 1.42"
    return None


def flower_share_params(degree: int, threshold: int) -> tuple[int, int]:
    """Flower's ``(num_shares, reconstruction_threshold)`` for our graph degree and threshold:
    ``(degree + 1, threshold)`` (Flower counts the node itself among its share holders)."""
    return degree + 1, threshold


def measure_flower_secaggplus(
    n: int,
    d: int,
    *,
    num_shares: int,
    threshold: int,
    dropped: Iterable[int] | Mapping[int, Any] = (),
    clip: float = 1.0,
    seed: int | None = None,
    updates: Sequence[Any] | npt.NDArray[np.floating[Any]] | None = None,
    keep_aggregate: bool = False,
) -> dict[str, Any]:
    """One round of Flower's SecAgg+ on ``n`` nodes with ``d`` values each (module docstring).

    ``num_shares`` and ``threshold`` are Flower's (see :func:`flower_share_params`); ``dropped``
    holds node indices in ``[0, n)`` (a mapping's keys are used, e.g. ``choose_dropouts``'s);
    ``updates`` is ``n`` arrays of ``d`` values (default: uniform in ``[-clip, clip)`` from the
    CSPRNG keystream, reproducible with ``seed``); ``keep_aggregate`` adds Flower's released
    aggregate as ``"aggregate"`` (a list of ``d`` floats). Returns a JSON-ready dict, or
    ``{"available": False, "reason": ...}`` when Flower cannot be used here.
    """
    reason = flower_available()
    if reason is not None:
        return {"available": False, "reason": reason}
    drop = sorted({int(i) for i in (dropped.keys() if isinstance(dropped, Mapping) else dropped)})
    _validate(n, d, num_shares, threshold, drop, clip)
    data = _updates(n, d, clip, seed, updates)
    flwr_logger = logging.getLogger("flwr")
    level, propagate = flwr_logger.level, flwr_logger.propagate
    flwr_logger.setLevel(logging.CRITICAL + 1)
    flwr_logger.propagate = False
    try:
        result = _run(n, d, num_shares, threshold, drop, clip, data, seeded=seed is not None)
    finally:
        flwr_logger.setLevel(level)
        flwr_logger.propagate = propagate
    aggregate = result.pop("_aggregate")
    if keep_aggregate:
        result["aggregate"] = [float(v) for v in aggregate]
    return result


# ------------------------------------------------------------------------------------ inputs


def _validate(
    n: int, d: int, num_shares: int, threshold: int, drop: list[int], clip: float
) -> None:
    problems = []
    if not isinstance(n, int) or n < 3:
        problems.append(f"n must be an integer >= 3, got {n!r}")
    if not isinstance(d, int) or d < 1:
        problems.append(f"d must be a positive integer, got {d!r}")
    if isinstance(n, int) and not (
        isinstance(num_shares, int) and 3 <= num_shares <= n and (num_shares % 2 or num_shares == n)
    ):
        problems.append(
            f"num_shares must be an odd integer in [3, n] or n (Flower adds 1 to an even one), "
            f"got {num_shares!r}"
        )
    if not (isinstance(threshold, int) and 2 <= threshold < num_shares):
        problems.append(
            f"threshold must be an integer in [2, num_shares) (Flower reads 1 as 'all shares'), "
            f"got {threshold!r}"
        )
    if isinstance(n, int) and any(i < 0 or i >= n for i in drop):
        problems.append(f"dropped node indices must be in [0, {n}), got {drop}")
    if not (isinstance(clip, int | float) and math.isfinite(clip) and clip > 0):
        problems.append(f"clip must be a positive finite number, got {clip!r}")
    if isinstance(n, int) and n * QUANTIZATION_RANGE >= MODULUS_RANGE:
        problems.append(f"n={n} nodes overflow Flower's 2^32 modulus at 2^22 quantization")
    if problems:
        raise ValueError("; ".join(problems))


def _updates(
    n: int,
    d: int,
    clip: float,
    seed: int | None,
    updates: Sequence[Any] | npt.NDArray[np.floating[Any]] | None,
) -> npt.NDArray[np.float64]:
    if updates is None:
        master = (
            os.urandom(32)
            if seed is None
            else derive_sim_seed(seed, context=b"bench/flower-peer/master")
        )
        stream = prg.Keystream(master, label=labels.SIM_DRIVER, context=b"bench/flower-peer/data")
        data = stream.uniform(n * d).reshape(n, d)
        data *= 2 * clip
        data -= clip
        return data
    rows = [np.asarray(u, dtype=np.float64).reshape(-1) for u in updates]
    if len(rows) != n or any(r.size != d for r in rows):
        raise ValueError(f"updates must be {n} arrays of {d} values each")
    data = np.stack(rows)
    if not np.all(np.isfinite(data)):
        raise ValueError("updates contain NaN or Inf")
    return data


# ------------------------------------------------------------------------------------ the run


class _Clock:
    """Accumulated seconds and bytes, per node and per Flower stage."""

    def __init__(self, n: int) -> None:
        self.stage = "init"
        self.client: dict[str, dict[int, float]] = defaultdict(lambda: dict.fromkeys(range(n), 0.0))
        self.train_path: dict[int, float] = dict.fromkeys(range(n), 0.0)
        self.fit = 0.0  # seconds inside NumPyClient.fit, reset by the grid around each call
        self.grid: dict[str, float] = defaultdict(float)  # seconds inside push/pull, per stage
        self.server: dict[str, float] = {}
        self.serde = 0.0
        self.down: dict[str, dict[int, int]] = defaultdict(lambda: dict.fromkeys(range(n), 0))
        self.up: dict[str, dict[int, int]] = defaultdict(lambda: dict.fromkeys(range(n), 0))
        self.model_down: dict[int, int] = dict.fromkeys(range(n), 0)
        self.replies: dict[str, set[int]] = defaultdict(set)
        self.errors: list[str] = []


def _run(
    n: int,
    d: int,
    num_shares: int,
    threshold: int,
    drop: list[int],
    clip: float,
    data: npt.NDArray[np.float64],
    *,
    seeded: bool,
) -> dict[str, Any]:
    import flwr
    from flwr.app import Context, RecordDict
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
    from flwr.supercore.task_identity import TaskIdentity

    clock = _Clock(n)
    app = _client_app(data, clock)
    workflow = _timed_workflow(clock)(
        num_shares=num_shares,
        reconstruction_threshold=threshold,
        clipping_range=float(clip),
        max_weight=1.0,
        quantization_range=QUANTIZATION_RANGE,
        modulus_range=MODULUS_RANGE,
        timeout=None,  # the grid never waits: a silent node's reply is simply not there
    )
    grid = _grid_class()(app, n, set(drop), clock)
    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=n,
        min_available_clients=n,
        initial_parameters=ndarrays_to_parameters([np.zeros(d, dtype=np.float32)]),
    )
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    # What Flower's runtime sets in a ServerApp process (Message() reads it); restored after.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    try:
        server_context = Context(
            run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={}
        )
        legacy = LegacyContext(
            context=server_context, config=ServerConfig(num_rounds=1), strategy=strategy
        )
        DefaultWorkflow(fit_workflow=workflow)(grid, legacy)
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
    record = legacy.state.array_records[MAIN_PARAMS_RECORD]
    aggregate = np.concatenate(
        [np.asarray(a, dtype=np.float64).reshape(-1) for a in record.to_numpy_ndarrays()]
    )
    return _result(
        flwr_version=str(flwr.__version__),
        n=n,
        d=d,
        num_shares=num_shares,
        threshold=threshold,
        drop=drop,
        clip=clip,
        data=data,
        clock=clock,
        completed=bool(workflow.completed),
        aggregate=aggregate,
        seeded=seeded,
    ) | {"_aggregate": aggregate}


def _result(
    *,
    flwr_version: str,
    n: int,
    d: int,
    num_shares: int,
    threshold: int,
    drop: list[int],
    clip: float,
    data: npt.NDArray[np.float64],
    clock: _Clock,
    completed: bool,
    aggregate: npt.NDArray[np.float64],
    seeded: bool,
) -> dict[str, Any]:
    survivors = sorted(clock.replies["collect_masked_vectors"]) if completed else []
    per_client = {i: sum(clock.client[s][i] for s in _STAGES) for i in range(n)}
    down = {i: sum(clock.down[s][i] for s in _STAGES) for i in range(n)}
    up = {i: sum(clock.up[s][i] for s in _STAGES) for i in range(n)}
    server = sum(clock.server.values())
    client_total = sum(per_client.values())
    stages = {
        s: {
            "server_seconds": clock.server.get(s, 0.0),
            "client_seconds_total": sum(clock.client[s].values()),
            "client_seconds_max": max(clock.client[s].values()),
            "bytes_down_max": max(clock.down[s].values()),
            "bytes_up_max": max(clock.up[s].values()),
            "replies": len(clock.replies[s]),
        }
        for s in _STAGES
    }
    result: dict[str, Any] = {
        "available": True,
        "flwr": flwr_version,
        "n": n,
        "d": d,
        "num_shares": num_shares,
        "threshold": threshold,
        "dropped": drop,
        "clip": clip,
        "quantization_range": QUANTIZATION_RANGE,
        "modulus_range": MODULUS_RANGE,
        "max_weight": 1.0,
        "completed": completed,
        "server_seconds": server,
        "client_seconds_total": client_total,
        "client_seconds_max": max(per_client.values()),
        "total_compute_seconds": server + client_total,
        "serde_seconds": clock.serde,
        "client_train_path_seconds_total": sum(clock.train_path.values()),
        "bytes_up_per_client": max(up.values()),
        "bytes_down_per_client": max(down.values()),
        "bytes_up_mean": sum(up.values()) / n,
        "bytes_down_mean": sum(down.values()) / n,
        "model_bytes_down_per_client": max(clock.model_down.values()),
        "survivors": survivors,
        "stages": stages,
        "seeded": seeded,
        "errors": clock.errors,
        "notes": (
            "Flower's SecAggPlusWorkflow (fit workflow of DefaultWorkflow, FedAvg, 1 round) and "
            "secaggplus_mod in this process over an in-process Grid (no SuperLink, no polling, no "
            "timeout waits). Dropped nodes go silent from collect_masked_vectors. Compute excludes "
            "NumPyClient.fit (returns the fixed update) and protobuf serde (serde_seconds). "
            "Flower releases the mean of the survivors' updates; bytes_down includes the global "
            "model Flower sends in the FitIns (model_bytes_down_per_client)."
        ),
    }
    if completed and survivors:
        expected = data[survivors].mean(axis=0)
        error = float(np.max(np.abs(aggregate - expected)))
        result.update(
            max_abs_error=error,
            max_abs_error_of_sum=error * len(survivors),
            error_bound=2.0 * clip / QUANTIZATION_RANGE,
            aggregate_kind="mean",
        )
    else:
        result.update(max_abs_error=None, reason="Flower's SecAgg+ round did not complete")
    return result


# ------------------------------------------------------------------------------------ Flower side


def _client_app(data: npt.NDArray[np.float64], clock: _Clock) -> Any:
    """A legacy ClientApp: ``secaggplus_mod`` -> timing mod -> NumPyClient returning the update."""
    from flwr.app import Context, Message
    from flwr.client import Client, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp

    class FixedUpdateClient(NumPyClient):
        def __init__(self, index: int) -> None:
            self.index = index

        def fit(
            self, parameters: list[Any], config: Any
        ) -> tuple[list[npt.NDArray[np.float64]], int, dict[str, Any]]:
            t0 = time.perf_counter()
            out = [data[self.index]]
            clock.fit += time.perf_counter() - t0
            return out, 1, {}

    def client_fn(context: Context) -> Client:
        return FixedUpdateClient(int(context.node_config["partition-id"])).to_client()

    def train_path_mod(message: Message, context: Context, call_next: Any) -> Message:
        t0 = time.perf_counter()
        try:
            return call_next(message, context)  # type: ignore[no-any-return]
        finally:
            index = int(context.node_config["partition-id"])
            clock.train_path[index] += time.perf_counter() - t0

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod, train_path_mod])


def _timed_workflow(clock: _Clock) -> Any:
    """Flower's SecAggPlusWorkflow with each stage timed (its code runs unchanged)."""
    from flwr.server.workflow import SecAggPlusWorkflow

    class TimedSecAggPlus(SecAggPlusWorkflow):
        completed = False

        def _timed(self, stage: str, method: Any, *args: Any) -> bool:
            clock.stage = stage
            t0 = time.perf_counter()
            ok = bool(method(*args))
            clock.server[stage] = time.perf_counter() - t0 - clock.grid[stage]
            return ok

        def setup_stage(self, *args: Any) -> bool:
            return self._timed("setup", super().setup_stage, *args)

        def share_keys_stage(self, *args: Any) -> bool:
            return self._timed("share_keys", super().share_keys_stage, *args)

        def collect_masked_vectors_stage(self, *args: Any) -> bool:
            return self._timed(
                "collect_masked_vectors", super().collect_masked_vectors_stage, *args
            )

        def unmask_stage(self, *args: Any) -> bool:
            self.completed = self._timed("unmask", super().unmask_stage, *args)
            return self.completed

    return TimedSecAggPlus


def _grid_class() -> Any:
    """The in-process Grid class (built lazily: it subclasses Flower's abstract Grid)."""
    from flwr.app import Context, Error, Message, RecordDict
    from flwr.common.serde import message_from_proto, message_to_proto
    from flwr.serverapp import Grid
    from flwr.supercore.run import Run

    class MeasuringGrid(Grid):
        """Delivers each pushed message to its node's ClientApp, timing and sizing everything."""

        def __init__(self, app: Any, n: int, drop: set[int], clock: _Clock) -> None:
            self.app, self.drop, self.clock = app, drop, clock
            self._run = Run.create_empty(1)
            self.index = {_NODE_BASE + i: i for i in range(n)}
            self.contexts = {
                _NODE_BASE + i: Context(
                    run_id=1,
                    node_id=_NODE_BASE + i,
                    node_config={"partition-id": i},
                    state=RecordDict(),
                    run_config={},
                )
                for i in range(n)
            }
            self.replies: dict[str, Message] = {}
            self.count = 0

        def set_run(self, run: Any) -> None:
            self._run = run

        @property
        def run(self) -> Any:
            return self._run

        def create_message(
            self,
            content: Any,
            message_type: str,
            dst_node_id: int,
            group_id: str,
            ttl: float | None = None,
        ) -> Any:
            return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

        def get_node_ids(self) -> list[int]:
            return list(self.contexts)

        def _serde(self, message: Any) -> tuple[Any, int]:
            t0 = time.perf_counter()
            proto = message_to_proto(message)
            size = int(proto.ByteSize())
            copy = message_from_proto(proto)
            self.clock.serde += time.perf_counter() - t0
            return copy, size

        def push_messages(self, messages: Iterable[Any]) -> list[str]:
            t_enter = time.perf_counter()
            clock, stage = self.clock, self.clock.stage
            ids = []
            for message in messages:
                self.count += 1
                message_id = f"m{self.count:08d}"
                message.metadata.__dict__["_message_id"] = message_id
                ids.append(message_id)
                node = int(message.metadata.dst_node_id)
                i = self.index[node]
                if i in self.drop and stage in ("collect_masked_vectors", "unmask"):
                    continue  # silent from its masked input on: no delivery, no reply
                delivered, size = self._serde(message)
                clock.down[stage][i] += size
                if stage == "collect_masked_vectors":
                    clock.model_down[i] += sum(
                        int(a.numpy().nbytes)
                        for record in delivered.content.array_records.values()
                        for a in record.values()
                    )
                clock.fit = 0.0
                t0 = time.perf_counter()
                try:
                    reply = self.app(delivered, self.contexts[node])
                except Exception as exc:  # as Flower's runtime: a raising ClientApp -> error
                    clock.errors.append(f"{stage} node {i}: {type(exc).__name__}: {exc}")
                    reply = Message(
                        Error(code=2, reason=f"{type(exc).__name__}: {exc}"), reply_to=delivered
                    )
                clock.client[stage][i] += time.perf_counter() - t0 - clock.fit
                received, size = self._serde(reply)
                clock.up[stage][i] += size
                if not received.has_error():
                    clock.replies[stage].add(i)
                self.replies[message_id] = received
            clock.grid[stage] += time.perf_counter() - t_enter
            return ids

        def pull_messages(self, message_ids: Iterable[str]) -> list[Any]:
            t_enter = time.perf_counter()
            out = [self.replies.pop(m) for m in list(message_ids) if m in self.replies]
            self.clock.grid[self.clock.stage] += time.perf_counter() - t_enter
            return out

        def send_and_receive(
            self, messages: Iterable[Any], *, timeout: float | None = None
        ) -> list[Any]:
            return self.pull_messages(self.push_messages(messages))

    return MeasuringGrid
