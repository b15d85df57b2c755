"""``secureagg simulate``: one aggregation round in memory, written to a run directory (through
:class:`secureagg.audit.rundir.RunDirectory`)."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import secureagg
from secureagg.aggregators import make_aggregator
from secureagg.audit.rundir import CONFIG, MESSAGES, RESULT, RunDirectory, transcript_records
from secureagg.cli.common import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    _choose_run_dir,
    _clip_of,
    _err,
    _error_bound,
    _one_line,
    _stage_table,
    _warn,
    seeded_warning,
    threat_model_note,
)
from secureagg.cli.estimate import estimate_round, limits_from_args
from secureagg.crypto import labels, prg
from secureagg.errors import ConfigurationError, InsufficientSurvivors
from secureagg.protocols.base import RoundFactory
from secureagg.transport import (
    SeededRunWarning,
    SimulationResult,
    derive_sim_seed,
    simulate,
)


def _choose_dropouts(
    stream: prg.Keystream, *, num_clients: int, fraction: float, stages: Sequence[str]
) -> dict[int, str]:
    count = round(fraction * num_clients)
    if count == 0:
        return {}
    if not stages:
        raise ConfigurationError("this aggregator declares no dropout stages; use --dropout 0")
    ids = list(range(num_clients))
    for i in range(count):  # partial Fisher-Yates shuffle with the CSPRNG keystream
        j = i + stream.below(num_clients - i)
        ids[i], ids[j] = ids[j], ids[i]
    return {cid: stages[stream.below(len(stages))] for cid in sorted(ids[:count])}


def _make_aggregator(args: argparse.Namespace) -> RoundFactory:
    kwargs: dict[str, Any] = {"num_clients": args.clients}
    if args.clip is not None:
        kwargs["clip"] = args.clip
    if args.threat is not None:
        kwargs["threat"] = args.threat
    return make_aggregator(args.protocol, **kwargs)


def _cmd_simulate(args: argparse.Namespace) -> int:
    problems = []
    if args.clients < 1:
        problems.append(f"--clients must be >= 1, got {args.clients}")
    if args.dim < 1:
        problems.append(f"--dim must be >= 1, got {args.dim}")
    if not 0.0 <= args.dropout <= 1.0:
        problems.append(f"--dropout is a fraction in [0, 1], got {args.dropout}")
    if args.clip is not None and not (math.isfinite(args.clip) and args.clip > 0):
        problems.append(f"--clip must be a positive number or 'none', got {args.clip}")
    if args.seed is not None and args.seed < 0:
        problems.append(f"--seed must be a non-negative integer, got {args.seed}")
    limits = limits_from_args(args, problems)
    if problems:
        raise ConfigurationError(problems)

    agg = _make_aggregator(args)
    parameters = agg.parameters()
    # Refuse, before anything is allocated, what cannot fit (issue 11: --dim 10^10 allocated
    # until numpy raised).
    estimate = estimate_round(
        parameters, num_clients=args.clients, dim=args.dim, dropout=args.dropout
    )
    too_big = limits.problems(estimate, lower="--dim or --clients")
    if too_big:
        raise ConfigurationError(too_big)
    run_dir = _choose_run_dir(args)
    if args.seed is not None:
        _warn(seeded_warning(args.seed))  # on stderr, whatever the output mode

    master = (
        derive_sim_seed(args.seed, context=b"cli") if args.seed is not None else prg.random_seed()
    )
    data_stream = prg.Keystream(master, label=labels.SIM_DRIVER, context=b"cli/data")
    data = data_stream.uniform(args.clients * args.dim).reshape(args.clients, args.dim)
    data *= 2
    data -= 1
    drop_stream = prg.Keystream(master, label=labels.SIM_DRIVER, context=b"cli/dropouts")
    dropouts = _choose_dropouts(
        drop_stream,
        num_clients=args.clients,
        fraction=args.dropout,
        stages=tuple(agg.dropout_stages),
    )
    config = {
        "command": "simulate",
        "argv": list(args.argv),
        "protocol": args.protocol,
        "clients": args.clients,
        "dim": args.dim,
        "dropout": args.dropout,
        "threat": args.threat,
        "clip": args.clip,
        "seed": args.seed,
        "seeded": args.seed is not None,
        "dropouts": {str(k): v for k, v in dropouts.items()},
        "parameters": parameters,
        "threat_model_note": threat_model_note(parameters),
        "estimate": estimate.to_dict(),
        "limits": limits.to_dict(),
        "secureagg_version": secureagg.__version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SeededRunWarning)  # reported below instead
            res = simulate(agg, [[row] for row in data], dropouts=dropouts, seed=args.seed,
                           keep_raw=args.keep_messages)
    except InsufficientSurvivors as exc:  # an aborted round is still recorded for the audit
        run = RunDirectory(run_dir)
        run.write_json(CONFIG, config)
        run.write_json(
            RESULT,
            {
                "status": "insufficient_survivors",
                "error": _one_line(exc),
                "survivors": [],
                "seeded": args.seed is not None,
                "metrics": getattr(exc, "metrics", {}),
            },
        )
        run.write_transcript(
            transcript_records(getattr(exc, "transcript", []), getattr(exc, "downlink", []))
        )
        run.seal(kind="simulate")
        raise

    run = RunDirectory(run_dir)
    run.write_json(CONFIG, config)
    summary = _summarise(args, agg, res, data, dropouts, run_dir)
    run.write_json(RESULT, summary["result"])
    run.write_transcript(transcript_records(res.transcript, res.downlink, res.peer_traffic))
    if args.keep_messages and res.raw_uplink is not None:
        run.write_bytes(MESSAGES, b"".join(res.raw_uplink))
    run.seal(kind="simulate")
    if args.json:
        print(json.dumps(summary["report"], allow_nan=False))
    elif not args.quiet:
        print("\n".join(summary["lines"]))
    if not summary["result"]["within_bound"]:
        if not args.json:
            _err("the aggregate error exceeds the bound the aggregator states")
        return EXIT_CHECK_FAILED
    return EXIT_OK


def _summarise(
    args: argparse.Namespace,
    agg: RoundFactory,
    res: SimulationResult,
    data: npt.NDArray[np.float64],
    dropouts: dict[int, str],
    run_dir: Path,
) -> dict[str, Any]:
    survivors = list(res.survivors)
    clip = _clip_of(agg, args.clip)
    contributions = data[survivors] if survivors else np.zeros((0, args.dim))
    if clip is not None:
        np.clip(contributions, -clip, clip, out=contributions)  # a copy already: no second one
    reference = contributions.sum(axis=0) if survivors else np.zeros(args.dim)
    error = float(np.max(np.abs(res.aggregate[0] - reference))) if args.dim else 0.0
    bound = _error_bound(agg, len(survivors))
    # float64 summation in another order may differ by a few ulps per addend
    tolerance = (
        8
        * float(np.finfo(np.float64).eps)
        * max(1, len(survivors))
        * max(1.0, float(np.max(np.abs(reference), initial=0.0)))
    )
    within = bool(error <= bound + tolerance)
    metrics = res.metrics
    result = {
        "status": "ok",
        "survivors": survivors,
        "total_weight": res.total_weight,
        "max_abs_error": error,
        "error_bound": bound,
        "float_tolerance": tolerance,
        "within_bound": within,
        "seeded": res.seeded,
        "session_id": res.session_id.hex(),
        "round_id": res.round_id,
        "metrics": metrics,
    }
    report = {
        "protocol": args.protocol,
        "parameters": res.parameters,
        "clients": args.clients,
        "dim": args.dim,
        "dropouts": {str(k): v for k, v in dropouts.items()},
        "run_dir": str(run_dir),
        "threat_model_note": threat_model_note(res.parameters),
        **result,
    }
    secure = res.parameters.get("secure", True)
    shown = ", ".join(
        f"{k}={v}"
        for k, v in res.parameters.items()
        if k not in ("protocol", "threat_model_note")
    )
    lines = [
        f"protocol: {args.protocol}"
        + ("  (INSECURE baseline: the server sees every update)" if secure is False else ""),
        f"parameters: {shown}",
    ]
    note = threat_model_note(res.parameters)
    if note is not None:
        lines.append(f"WARNING: {note}")
    if res.seeded:
        lines.append(
            "WARNING: seeded run - keys, masks and data are reproducible, NOT secret, NOT private"
        )
    lines += [
        f"clients: {args.clients}, dim: {args.dim}, dropped: "
        + (", ".join(f"{k}@{v}" for k, v in dropouts.items()) or "none"),
        f"survivors ({len(survivors)}/{args.clients}): {survivors}",
        f"max |aggregate - plaintext sum over survivors| = {error:.3e}"
        f" (stated bound {bound:.3e}): {'OK' if within else 'EXCEEDS BOUND'}",
        "per stage:",
        *_stage_table(metrics),
        f"clipped values: {metrics['clipped']['total']}; rejected messages: "
        f"{len(metrics['rejected'])}; client aborts: {len(metrics['client_aborts'])}",
        f"run directory: {run_dir}",
    ]
    return {"result": result, "report": report, "lines": lines}
