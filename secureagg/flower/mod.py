"""The node side: a Flower mod that runs our party around the user's unchanged train function.

``ClientApp(mods=[secureagg_mod])`` (or ``@app.train(mods=[secureagg_mod])``) puts it in front
of the user's ``@app.train()`` function or ``NumPyClient``. For every message of ours (see
:mod:`secureagg.flower.records`) it runs one step of our party with
:func:`secureagg.engine.client_step` / :func:`~secureagg.engine.helper_step` and keeps the party's
state in ``Context.state``, which Flower keeps on the SuperNode between the fresh ClientApp
processes it starts for each message:

- ``hello``: the node says what it is (a client, or the round's HE key holder when its node config
  says ``secureagg-role="key-holder"``), its public identity key in malicious mode
  (``secureagg-identity-key``), and, for a key holder, a fresh key's public part for the round.
- the first ``step`` of a round to a client: our client party is built from the spec and
  answers the server's first message.
- the ``step`` that says ``train`` (one per round: the one of the stage where the protocol first
  uses the update - SecAgg/SecAgg+: ``masked``, as Flower's own SecAgg+ trains at its
  masked-vector stage; HE and plain: the first step): the user's train function runs on the
  message's ``arrays`` and ``config``; the update (returned weights minus received weights, in
  float64, and the ``num-examples`` metric as its weight) goes into our client party. So the
  state the node keeps between the steps before it (which Flower moves into and out of a fresh
  ClientApp process for every message) holds the party's keys, not the update. Nothing the train
  function returned leaves the node: not the weights, not the metrics. A node asked to train a
  second time in a round refuses; one whose training fails takes no further part in the round (a
  dropout of that stage: the protocol's dropout recovery handles it).
- other steps: the party is rebuilt from its state and answers.

Invariants: the user's update never leaves the node except masked, encrypted or noised, as the
round's protocol sends it; a plain ``train`` message without our record is refused, so a server
that does not run secure aggregation gets nothing. A node takes part in a session's rounds in
increasing order only: a spec for a round it already trained in is refused (a replayed round would
otherwise show the server two maskings of one update). Any refusal is an error reply: the server
sees a dropout.

An error reply's ``reason`` is :func:`secureagg.errors.failure_report`: ``"<Type> at stage
<stage>"`` (the stage: ``hello``, ``train`` - the user's train function failed, and ``<Type>`` is
its exception's type -, the protocol stage of a protocol error, or ``step``), followed by
``": <text>"`` only for our own fixed refusals of what the server asked (a replayed round, a
second training, a seed, no round in progress, ...) and for the key holder's protocol refusals
of what it received (fixed sentences with public numbers, ``protocols/ckks/spec.md``). Never an
exception's message: the user's code wrote it and it may quote the node's data; the node logs it
(WARNING) instead.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from secureagg.engine import client_step, helper_step
from secureagg.errors import (
    ConfigurationError,
    MalformedMessage,
    ProtocolError,
    SecureAggError,
    failure_report,
    fixed_message,
)
from secureagg.flower import records
from secureagg.flower.identity import load_identity_key
from secureagg.protocols.base import KEY_HOLDER
from secureagg.transport.round_spec import spec_from_bytes

__all__ = ["secureagg_mod"]

#: Where the node's party state lives in ``Context.state`` (never sent anywhere).
STATE = "secureagg.state"
#: The error code of our refusals in Flower's error replies.
REFUSED = 4601
#: Records a train function may return instead of new weights: the update itself, and a report.
UPDATE = "secureagg.update"
REPORT = "secureagg.report"
#: The node-config key that lets a node take a seeded (reproducible, NOT private) run's seed.
ALLOW_SEEDED = "secureagg-allow-seeded"

_log = logging.getLogger(__name__)


def _role(context: Any) -> str:
    role = str(context.node_config.get(records.ROLE_KEY, "client"))
    if role not in ("client", records.KEY_HOLDER_ROLE):
        raise ConfigurationError(f"node config {records.ROLE_KEY}={role!r}: expected "
                                 f"'client' or {records.KEY_HOLDER_ROLE!r}")
    return role


def _identity(context: Any) -> Any:
    path = context.node_config.get(records.IDENTITY_KEY)
    return None if path in (None, "") else load_identity_key(str(path))


def _state(context: Any) -> dict[str, Any]:
    record = context.state.config_records.get(STATE)
    return {} if record is None else dict(record)


def _save(context: Any, values: dict[str, Any]) -> None:
    from flwr.app import ConfigRecord

    context.state.config_records[STATE] = ConfigRecord(values)


def _hello(record: Any, context: Any) -> dict[str, Any]:
    role = _role(context)
    identity = _identity(context)
    partition = context.node_config.get("partition-id", -1)
    out: dict[str, Any] = {
        "role": role,
        "identity": b"" if identity is None else identity.public_bytes,
        "public": b"",
        "partition": partition if isinstance(partition, int) else -1,
    }
    if role == records.KEY_HOLDER_ROLE and records.field(record, "keygen", bool):
        from secureagg.aggregators import make_aggregator

        session = records.field(record, "session", bytes)
        round_id = records.int_field(record, "round")
        options = json.loads(records.field(record, "options", str))
        if not isinstance(options, dict):
            raise MalformedMessage("options must be a JSON object")
        agg = make_aggregator(records.field(record, "protocol", str),
                              num_clients=records.int_field(record, "num_clients"), **options)
        provision = agg.provision(session_id=session, round_id=round_id, seed=None)
        key = provision.secrets.get(KEY_HOLDER)
        if key is None:
            raise ConfigurationError(f"protocol {agg.protocol!r} has no key holder")
        state = _state(context)
        state.update({"key": key.to_bytes(), "key_session": session, "key_round": round_id,
                      "key_protocol": agg.protocol})
        _save(context, state)
        out["public"] = provision.public[KEY_HOLDER]
    return out


def _weights(content: Any) -> list[npt.NDArray[Any]]:
    record = content.array_records.get("arrays")
    if record is None:
        raise ConfigurationError("the training message carries no 'arrays' record")
    return [np.asarray(a.numpy(), dtype=np.float64) for a in record.values()]


class _TrainFunctionError(ConfigurationError):
    """The user's train function failed with ``cause``: the refusal reports the cause's type at
    stage ``train`` (and its text only if it is one of our fixed ones)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__("the train function failed")
        self.cause = cause


def _trained(reply: Any) -> tuple[list[npt.NDArray[Any]], float | None]:
    """The weights and ``num-examples`` the user's train function returned (new API record
    ``arrays`` and metric ``num-examples``, or a NumPyClient's FitRes)."""
    content = reply.content
    if "arrays" in content.array_records:
        weights = _weights(content)
        metrics = content.metric_records.get("metrics")
        examples = None if metrics is None else metrics.get("num-examples")
        return weights, None if examples is None else float(examples)
    import flwr.compat.common.recorddict_compat as compat
    from flwr.common import parameters_to_ndarrays

    fitres = compat.recorddict_to_fitres(content, keep_input=True)
    arrays = parameters_to_ndarrays(fitres.parameters)
    return [np.asarray(a, dtype=np.float64) for a in arrays], float(fitres.num_examples)


def _own_update(reply: Any) -> tuple[list[npt.NDArray[Any]] | None, float | None, str]:
    """A train function that computes the update itself (a federated run's node trainer,
    :mod:`secureagg.flower.federated`) returns it as the ArrayRecord :data:`UPDATE` and its
    report (JSON: weight, failure, DP-SGD events) as ``report`` in the ConfigRecord
    :data:`REPORT`; no update means the training failed (the report says why)."""
    content = reply.content
    report = content.config_records.get(REPORT)
    text = "" if report is None else str(report.get("report", ""))
    record = content.array_records.get(UPDATE)
    if record is None:
        return None, None, text
    weight = None if report is None else report.get("weight")
    return ([np.asarray(a.numpy(), dtype=np.float64) for a in record.values()],
            None if weight is None else float(weight), text)


def _received_weights(content: Any) -> list[npt.NDArray[Any]]:
    if "arrays" in content.array_records:
        return _weights(content)
    import flwr.compat.common.recorddict_compat as compat
    from flwr.common import parameters_to_ndarrays

    fitins = compat.recorddict_to_fitins(content, keep_input=True)
    return [np.asarray(a, dtype=np.float64) for a in parameters_to_ndarrays(fitins.parameters)]


def _step(message: Any, record: Any, context: Any, call_next: Callable[..., Any]) -> dict[str, Any]:
    role = _role(context)
    party = records.int_field(record, "party")
    sender = records.int_field(record, "sender")
    data = records.field(record, "message", bytes)
    digest = records.field(record, "digest", bytes)
    state = _state(context)
    if (party == KEY_HOLDER) != (role == records.KEY_HOLDER_ROLE):
        raise fixed_message(ConfigurationError(
            f"this node is a {role}; it does not act as party {party}"))
    if "spec" in record:
        spec_bytes = records.field(record, "spec", bytes)
        spec = spec_from_bytes(spec_bytes)
        last = (state.get("session"), state.get("round"))
        if last[0] == spec.session_id and isinstance(last[1], int) and spec.round_id <= last[1]:
            raise fixed_message(ConfigurationError(
                f"round {spec.round_id} of this session comes after round {last[1]}: a replayed "
                "or reordered round is refused"
            ))
        party_state: bytes | None = None
    else:
        spec_bytes = state.get("spec", b"")
        if not spec_bytes or state.get("party") != party:
            raise fixed_message(ConfigurationError(
                "no round in progress on this node for this party"))
        spec = spec_from_bytes(spec_bytes)
        party_state = state.get("state")
    if spec.digest != digest:
        raise fixed_message(MalformedMessage(
            "the message is for another round spec than this node's"))
    if role == records.KEY_HOLDER_ROLE:
        if (state.get("key_session"), state.get("key_round")) != (spec.session_id, spec.round_id):
            raise fixed_message(ConfigurationError("the key holder has no key for this round"))
        from secureagg.aggregators import aggregator_for, protocol_aggregator

        key_type = getattr(protocol_aggregator(aggregator_for(spec)), "key_type", None)
        if key_type is None:
            raise ConfigurationError(f"protocol {spec.protocol!r} has no key holder")
        key = key_type.from_bytes(state["key"])
        step = helper_step(spec_bytes, party_state, sender, data,
                           secrets={KEY_HOLDER: key}, session_id=spec.session_id)
        state.update({"session": spec.session_id, "round": spec.round_id, "spec": spec_bytes,
                      "party": party, "state": step.state})
        _save(context, state)  # kept even after a refusal: a refused decryption uses the round
        if step.error:
            # a refusal of what the key holder received, not a failure of its own: the
            # protocol's refusal texts are fixed sentences with public numbers only
            # (protocols/ckks/spec.md, "Refusal texts"), meant for the server, as in simulation
            raise fixed_message(ConfigurationError(f"the key holder refused: {step.error}"))
        return {"recipients": [r for r, _ in step.replies],
                "messages": [m for _, m in step.replies]}
    try:
        return _client(message, record, context, call_next, state=state, spec=spec,
                       spec_bytes=spec_bytes, party=party, sender=sender, data=data,
                       party_state=party_state)
    except SecureAggError:
        if party_state is not None:
            # A refusal ends this node's part in the round: the stored state is dropped, so
            # no later message of the round is answered from the state before the refusal.
            for key in ("spec", "state", "party"):
                state.pop(key, None)
            _save(context, state)
        raise


def _train(message: Any, context: Any, call_next: Callable[..., Any]
           ) -> tuple[list[npt.NDArray[Any]] | None, float | None, str, float]:
    """The user's train function on the message's training content: the update (returned
    weights minus received weights, float64; or the update a node trainer returns itself), its
    ``num-examples``, the trainer's report (or ``""``) and the seconds it took."""
    received = _received_weights(message.content)
    del message.content.config_records[records.RECORD]
    t_train = time.perf_counter()
    try:
        reply = call_next(message, context)
    except Exception as exc:  # the user's code failed: this node's training failure
        raise _TrainFunctionError(exc) from exc  # logged and reduced to its type: _refusal
    train_seconds = time.perf_counter() - t_train
    if reply.has_error():  # e.g. another mod's error reply: its reason stays on the node
        _log.warning("the train function replied with error %s: %s", reply.error.code,
                     reply.error.reason)
        raise _TrainFunctionError(fixed_message(ConfigurationError(
            "the train function replied with an error")))
    update, examples, report = _own_update(reply)
    if not report:
        trained, examples = _trained(reply)
        if [a.shape for a in trained] != [a.shape for a in received]:
            raise fixed_message(ConfigurationError(
                "the train function returned arrays of other shapes"))
        update = [t - r for t, r in zip(trained, received, strict=True)]
    return update, examples, report, train_seconds


def _client(message: Any, record: Any, context: Any, call_next: Callable[..., Any], *,
            state: dict[str, Any], spec: Any, spec_bytes: bytes, party: int, sender: int,
            data: bytes, party_state: bytes | None) -> dict[str, Any]:
    """One step of a client: trains first if the step says so (``train``), once per round."""
    if party_state is None:
        seed = record.get("seed")
        if seed is not None and not (isinstance(seed, bytes)
                                     and context.node_config.get(ALLOW_SEEDED) is True):
            raise fixed_message(ConfigurationError(
                "the server sent a seed for this node's randomness; a node takes one only in a "
                f"test deployment whose node config sets {ALLOW_SEEDED}=true"
            ))
        trained = False
    else:
        seed = state.get("seed")  # kept from the round's first step (seeded test runs only)
        trained = state.get("trained") is True
    out: dict[str, Any] = {}
    update: list[npt.NDArray[Any]] | None = None
    examples: float | None = None
    if "train" in record and records.field(record, "train", bool):
        if trained:
            raise fixed_message(ConfigurationError(
                "this node has trained in this round already; it trains once per round"))
        # recorded before the train function runs: it runs once per round even if it fails
        # (and a replay of this round's first step is refused as a replayed round)
        trained = True
        state.update({"session": spec.session_id, "round": spec.round_id, "trained": True})
        _save(context, state)
        update, examples, report, out["train_seconds"] = _train(message, context, call_next)
        if report:
            out["report"] = report
        if update is None:  # the node's training failed: say why, take no part
            if party_state is not None:
                for key in ("spec", "state", "party"):
                    state.pop(key, None)
                _save(context, state)
            return {**out, "recipients": [], "messages": []}
    step = client_step(
        spec_bytes, party_state, sender, data, client_id=party, update=update,
        weight=examples if spec.weighted and update is not None else None,
        secret=_identity(context), session_id=spec.session_id, seed=seed,
    )
    state.update({"session": spec.session_id, "round": spec.round_id, "spec": spec_bytes,
                  "party": party, "state": step.state, "trained": trained})
    if seed is None:
        state.pop("seed", None)
    else:
        state["seed"] = seed
    _save(context, state)
    return {**out, "recipients": [r for r, _ in step.replies],
            "messages": [m for _, m in step.replies]}


def _refusal(exc: BaseException, kind: str) -> str:
    """The reason of the error reply for ``exc`` (module docstring): type and stage, the
    message only for our fixed refusals; anything else is logged here with its traceback."""
    if isinstance(exc, _TrainFunctionError):
        return failure_report(exc.cause, stage="train")
    if isinstance(exc, ProtocolError):
        return failure_report(exc, stage=exc.stage)
    return failure_report(exc, stage=kind)


def secureagg_mod(message: Any, context: Any, call_next: Callable[..., Any]) -> Any:
    """The Flower mod; see the module docstring."""
    from flwr.app import ConfigRecord, Error, Message, RecordDict

    record = message.content.config_records.get(records.RECORD) if message.has_content() else None
    if record is None:
        if message.metadata.message_type.split(".")[0] == "train":
            return Message(Error(code=REFUSED, reason=(
                "this node sends its update only through secure aggregation (secureagg_mod); "
                "the server sent a plain train message")), reply_to=message)
        return call_next(message, context)
    t0 = time.perf_counter()
    kind = "message"
    try:
        kind = records.field(record, "kind", str)
        if kind == records.HELLO:
            out = _hello(record, context)
        elif kind == records.STEP:
            out = _step(message, record, context, call_next)
            # our own compute (the protocol step; not the user's training): what a benchmark
            # separates from the engine's polling and process start
            out["compute"] = time.perf_counter() - t0 - out.pop("train_seconds", 0.0)
        else:
            raise fixed_message(MalformedMessage("unknown kind"))
    except Exception as exc:  # every failure is a refusal; its text stays on this node
        return Message(Error(code=REFUSED, reason=_refusal(exc, kind)), reply_to=message)
    return Message(RecordDict({records.RECORD: ConfigRecord(out)}), reply_to=message)
