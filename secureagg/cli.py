"""The ``secureagg`` command: ``demo``, ``simulate``, ``bench`` and ``audit``.

Every ``simulate`` run writes a run directory that ``audit`` reads back and cross-checks, so an
auditor can see what the server received without trusting the printout:

* ``config.json``: the command line, protocol, sizes, the dropouts drawn, the aggregator's
  parameters, the secureagg version;
* ``result.json``: status, survivors, error against the plaintext sum and the stated bound,
  the simulator's metrics (per-stage time and bytes, clipping, rejected messages, aborts);
* ``transcript.jsonl``: one JSON object per message, ``direction`` ``"up"`` (received by the
  server), ``"down"`` (sent by it) or ``"peer"`` (between other parties), with stage, kind,
  sender, recipient, round id, size and sha256 of the encoded bytes.

Test data is drawn from the CSPRNG keystream (reproducible with ``--seed``, which is flagged
loudly as not secret).

Exit codes: 0 success; 1 a check failed (self-test, error above the stated bound, inconsistent run
directory); 2 bad arguments or configuration, protocol error, unreadable files; 3 too few
survivors (the round was aborted and no aggregate released).

>>> build_parser().prog
'secureagg'

Typical use: ``secureagg simulate --protocol plain --clients 5 --dim 10`` then
``secureagg audit runs/<the printed run directory>``.
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import json
import math
import os
import sys
import textwrap
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import secureagg
from secureagg.aggregators import available, make_aggregator
from secureagg.crypto import labels, prg
from secureagg.errors import ConfigurationError, InsufficientSurvivors, SecureAggError
from secureagg.protocols.base import RoundFactory
from secureagg.selftest import run_selftest
from secureagg.transport import (
    SeededRunWarning,
    SimulationResult,
    TranscriptEntry,
    derive_sim_seed,
    simulate,
)

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_CHECK_FAILED, EXIT_ERROR, EXIT_INSUFFICIENT = 0, 1, 2, 3
_TRANSCRIPT_KEYS = ("stage", "kind", "sender", "recipient", "round_id", "size", "sha256")


class _CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ConfigurationError) and len(exc.problems) > 1:
        return "; ".join(exc.problems)
    return " ".join(str(exc).split())


def _err(message: str) -> None:
    print(f"secureagg: error: {message}", file=sys.stderr)


# ------------------------------------------------------------------------------------- demo


def _demo_plain_simulation() -> tuple[bool, str]:
    n, dim = 5, 8
    data = [np.arange(dim, dtype=np.float64) * (i + 1) / 10 for i in range(n)]
    agg = make_aggregator("plain", num_clients=n)
    res = simulate(agg, [[x] for x in data], dropouts={4: "upload"})
    expected = sum(data[:4])
    ok = res.survivors == (0, 1, 2, 3) and bool(np.array_equal(res.aggregate[0], expected))
    return ok, (
        f"plain round, {n} clients, client 4 dropped: survivors {list(res.survivors)}, "
        f"sum {'exact' if ok else 'WRONG'}; {res.metrics['totals']['bytes_up']} bytes up"
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    print(f"secureagg {secureagg.__version__} - self-test of the cryptographic building blocks")
    results = run_selftest(out=print)
    failed = [r.name for r in results if not r.ok]
    print("end-to-end:")
    try:
        ok, detail = _demo_plain_simulation()
    except Exception as exc:  # the demo reports any failure as FAIL
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    print(f"  {'ok  ' if ok else 'FAIL'}  simulate  {detail}")
    if not ok:
        failed.append("simulate")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return EXIT_CHECK_FAILED
    print("all checks passed")
    return EXIT_OK


# --------------------------------------------------------------------------------- simulate


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


def _error_bound(agg: RoundFactory, survivors: int) -> float:
    bound_fn = getattr(agg, "error_bound", None)
    if not callable(bound_fn):
        return 0.0
    try:
        return float(bound_fn(survivors=survivors))
    except TypeError:
        return float(bound_fn())


def _clip_of(agg: RoundFactory, requested: float | None) -> float | None:
    clip = getattr(agg, "clip", None)
    if clip is None:
        clip = agg.parameters().get("clip", requested)
    return None if clip is None else float(clip)


def _choose_run_dir(args: argparse.Namespace) -> Path:
    """The run directory to write (not created yet); refuses to overwrite without --force."""
    if args.out is not None:
        path = Path(args.out)
        if path.exists() and not path.is_dir():
            raise _CliError(f"{path} exists and is not a directory; choose another --out")
        if (path / "result.json").exists() and not args.force:
            raise _CliError(f"{path} already holds a run; choose another --out or pass --force")
        return path
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = Path.cwd() / "runs" / f"{stamp}-{args.protocol.replace(os.sep, '_')}"
    path, k = base, 0
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n",
                    encoding="utf-8")


def _write_transcript(
    path: Path, up: Sequence[TranscriptEntry], down: Sequence[TranscriptEntry],
    peer: Sequence[TranscriptEntry] = (),
) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for direction, entries in (("up", up), ("down", down), ("peer", peer)):
            for entry in entries:
                fh.write(json.dumps({"direction": direction, **entry.to_dict()}) + "\n")


def _stage_table(metrics: dict[str, Any]) -> list[str]:
    lines = [
        f"  {'stage':<12} {'client s (sum/max)':>20} {'server s':>10} {'bytes up':>12} "
        f"{'bytes down':>12} {'msgs up/down':>13}"
    ]
    rows = [*metrics["stages"].items(), ("total", metrics["totals"])]
    for stage, row in rows:
        lines.append(
            f"  {stage:<12} {row['client_seconds_total']:>9.4f}/{row['client_seconds_max']:<10.4f}"
            f" {row['server_seconds']:>10.4f} {int(row['bytes_up']):>12,} "
            f"{int(row['bytes_down']):>12,} "
            f"{int(row['messages_up']):>6}/{int(row['messages_down']):<6}"
        )
    return lines


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
    if problems:
        raise ConfigurationError(problems)

    kwargs: dict[str, Any] = {"num_clients": args.clients}
    if args.clip is not None:
        kwargs["clip"] = args.clip
    if args.threat is not None:
        kwargs["threat"] = args.threat
    agg = make_aggregator(args.protocol, **kwargs)
    parameters = agg.parameters()

    master = (
        derive_sim_seed(args.seed, context=b"cli") if args.seed is not None else prg.random_seed()
    )
    data_stream = prg.Keystream(master, label=labels.SIM_DRIVER, context=b"cli/data")
    data = data_stream.uniform(args.clients * args.dim).reshape(args.clients, args.dim) * 2 - 1
    drop_stream = prg.Keystream(master, label=labels.SIM_DRIVER, context=b"cli/dropouts")
    dropouts = _choose_dropouts(
        drop_stream, num_clients=args.clients, fraction=args.dropout,
        stages=tuple(agg.dropout_stages),
    )
    run_dir = _choose_run_dir(args)
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
        "dropouts": {str(k): v for k, v in dropouts.items()},
        "parameters": parameters,
        "secureagg_version": secureagg.__version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SeededRunWarning)  # reported below instead
            res = simulate(agg, [[row] for row in data], dropouts=dropouts, seed=args.seed)
    except InsufficientSurvivors as exc:  # an aborted round is still recorded for the audit
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / "config.json", config)
        _write_json(run_dir / "result.json", {
            "status": "insufficient_survivors",
            "error": _one_line(exc),
            "survivors": [],
            "seeded": args.seed is not None,
            "metrics": getattr(exc, "metrics", {}),
        })
        _write_transcript(
            run_dir / "transcript.jsonl", getattr(exc, "transcript", []),
            getattr(exc, "downlink", []),
        )
        raise

    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / "config.json", config)
    summary = _summarise(args, agg, res, data, dropouts, run_dir)
    _write_json(run_dir / "result.json", summary["result"])
    _write_transcript(run_dir / "transcript.jsonl", res.transcript, res.downlink,
                      res.peer_traffic)
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
        contributions = np.clip(contributions, -clip, clip)
    reference = contributions.sum(axis=0) if survivors else np.zeros(args.dim)
    error = float(np.max(np.abs(res.aggregate[0] - reference))) if args.dim else 0.0
    bound = _error_bound(agg, len(survivors))
    # float64 summation in another order may differ by a few ulps per addend
    tolerance = 8 * float(np.finfo(np.float64).eps) * max(1, len(survivors)) * max(
        1.0, float(np.max(np.abs(reference), initial=0.0))
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
        **result,
    }
    secure = res.parameters.get("secure", True)
    shown = ", ".join(f"{k}={v}" for k, v in res.parameters.items() if k != "protocol")
    lines = [
        f"protocol: {args.protocol}" + ("  (INSECURE baseline: the server sees every update)"
                                        if secure is False else ""),
        f"parameters: {shown}",
    ]
    if res.seeded:
        lines.append("WARNING: seeded run - keys, masks and data are reproducible, NOT secret")
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


# ------------------------------------------------------------------------------------ audit


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _CliError(f"{path} is missing: is this a run directory written by "
                        "'secureagg simulate'?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _CliError(f"{path} cannot be read as JSON: {_one_line(exc)}") from None


def _load_transcript(path: Path) -> list[dict[str, Any]]:
    entries = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise _CliError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _CliError(f"{path} cannot be read: {_one_line(exc)}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _CliError(f"{path}:{number}: not JSON ({exc.msg})") from None
        missing = [k for k in (*_TRANSCRIPT_KEYS, "direction") if k not in entry] if isinstance(
            entry, dict) else ["(not an object)"]
        if missing:
            raise _CliError(f"{path}:{number}: missing {', '.join(missing)}")
        if entry["direction"] not in ("up", "down", "peer"):
            raise _CliError(f"{path}:{number}: unknown direction {entry['direction']!r}")
        sha = entry["sha256"]
        if not (isinstance(sha, str) and len(sha) == 64
                and all(c in "0123456789abcdef" for c in sha)):
            raise _CliError(f"{path}:{number}: sha256 is not 64 lowercase hex digits")
        if not isinstance(entry["size"], int) or entry["size"] < 0:
            raise _CliError(f"{path}:{number}: size is not a non-negative integer")
        entries.append(entry)
    return entries


def _cmd_audit(args: argparse.Namespace) -> int:
    run = Path(args.run_dir)
    if not run.is_dir():
        raise _CliError(f"{run} is not a directory")
    config = _load_json(run / "config.json")
    result = _load_json(run / "result.json")
    entries = _load_transcript(run / "transcript.jsonl")
    if not isinstance(config, dict) or not isinstance(result, dict):
        raise _CliError("config.json and result.json must hold JSON objects")
    metrics = result.get("metrics") or {}
    totals = metrics.get("totals", {})
    up = [e for e in entries if e["direction"] == "up"]
    down = [e for e in entries if e["direction"] == "down"]

    checks: list[tuple[str, bool]] = [
        (f"config.json, result.json and {len(entries)} transcript lines parse", True)
    ]
    if totals:
        checks.append((
            f"bytes received by the server: transcript {sum(e['size'] for e in up):,} = "
            f"metrics {int(totals.get('bytes_up', -1)):,}",
            sum(e["size"] for e in up) == totals.get("bytes_up"),
        ))
        checks.append((
            f"bytes sent by the server: transcript {sum(e['size'] for e in down):,} = "
            f"metrics {int(totals.get('bytes_down', -1)):,}",
            sum(e["size"] for e in down) == totals.get("bytes_down"),
        ))
        checks.append((
            f"messages received: transcript {len(up)} = metrics {totals.get('messages_up')}",
            len(up) == totals.get("messages_up"),
        ))
    survivors = result.get("survivors", [])
    if result.get("status") == "ok":
        clients = config.get("clients")
        senders = {e["sender"] for e in up}
        checks.append((
            "survivors are distinct client ids",
            len(set(survivors)) == len(survivors)
            and all(isinstance(s, int) and 0 <= s < (clients or 0) for s in survivors),
        ))
        checks.append((
            "every survivor sent the server at least one message",
            all(s in senders for s in survivors),
        ))

    by_kind: dict[str, list[int]] = defaultdict(list)
    by_sender: Counter[int] = Counter()
    for e in up:
        by_kind[e["kind"]].append(e["size"])
        by_sender[e["sender"]] += 1
    report = {
        "run_dir": str(run),
        "protocol": config.get("protocol"),
        "parameters": config.get("parameters"),
        "seeded": result.get("seeded"),
        "status": result.get("status"),
        "survivors": survivors,
        "dropouts": config.get("dropouts"),
        "stages": {
            stage: {k: row.get(k) for k in ("bytes_up", "bytes_down", "messages_up",
                                           "messages_down")}
            for stage, row in (metrics.get("stages") or {}).items()
        },
        "received_by_kind": {
            kind: {"count": len(s), "bytes": sum(s), "min": min(s), "max": max(s)}
            for kind, s in sorted(by_kind.items())
        },
        "received_by_sender": {str(k): v for k, v in sorted(by_sender.items())},
        "rejected": metrics.get("rejected", []),
        "checks": [{"check": name, "ok": ok} for name, ok in checks],
    }
    ok = all(passed for _, passed in checks)
    if args.json:
        print(json.dumps(report))
        return EXIT_OK if ok else EXIT_CHECK_FAILED
    params = report["parameters"] or {}
    lines = [
        f"run: {run}",
        f"protocol: {report['protocol']}"
        + ("  (INSECURE baseline)" if params.get("secure") is False else ""),
        "parameters: " + ", ".join(f"{k}={v}" for k, v in params.items() if k != "protocol"),
    ]
    if report["seeded"]:
        lines.append("WARNING: seeded run - reproducible, NOT secret")
    lines += [
        f"status: {report['status']}"
        + (f" ({result.get('error')})" if result.get("error") else ""),
        f"survivors ({len(survivors)}/{config.get('clients', '?')}): {survivors}",
        "dropouts: " + (", ".join(f"{k}@{v}" for k, v in sorted(
            (config.get("dropouts") or {}).items(), key=lambda kv: int(kv[0]))) or "none"),
        "per-stage traffic (bytes up / down, messages up / down):",
    ]
    for stage, row in report["stages"].items():
        lines.append(f"  {stage:<12} {row['bytes_up']:>12,} / {row['bytes_down']:<12,} "
                     f"{row['messages_up']:>5} / {row['messages_down']}")
    lines.append(f"transcript: the server received {len(up)} messages and sent {len(down)}")
    lines.append(f"  {'kind':<28} {'count':>6} {'bytes':>12} {'min':>9} {'max':>9}")
    for kind, row in report["received_by_kind"].items():
        lines.append(f"  {kind:<28} {row['count']:>6} {row['bytes']:>12,} {row['min']:>9,} "
                     f"{row['max']:>9,}")
    lines.append("  by sender: " + ", ".join(f"{k}: {v}" for k, v in
                                             report["received_by_sender"].items()))
    if report["rejected"]:
        lines.append(f"rejected by the server: {len(report['rejected'])}")
        lines += [f"  {r.get('sender')} @ {r.get('stage')}: {r.get('error')}"
                  for r in report["rejected"]]
    lines.append("checks:")
    lines += [f"  {'ok  ' if passed else 'FAIL'}  {name}" for name, passed in checks]
    print("\n".join(lines))
    return EXIT_OK if ok else EXIT_CHECK_FAILED


# ------------------------------------------------------------------------------------ bench


def _benchmark_dirs(explicit: str | None) -> list[Path]:
    if explicit is not None:
        return [Path(explicit)]
    candidates = [Path.cwd() / "benchmarks", Path(__file__).resolve().parent.parent / "benchmarks"]
    seen: list[Path] = []
    for c in candidates:
        if c.is_dir() and c.resolve() not in [s.resolve() for s in seen]:
            seen.append(c)
    return seen


def _cmd_bench(args: argparse.Namespace) -> int:
    dirs = _benchmark_dirs(args.dir)
    scripts = sorted({p.resolve() for d in dirs if d.is_dir() for p in d.glob("*.py")
                      if not p.name.startswith("_")})
    if not scripts:
        where = ", ".join(str(d) for d in dirs) or "benchmarks/ (not found)"
        print(f"no benchmark scripts found in {where}.\n"
              "Benchmarks live in the source repository under benchmarks/; run them from a "
              "checkout. Nothing was measured.")
        return EXIT_OK
    print("benchmark scripts (this command lists them; it does not run or fake results):")
    for script in scripts:
        try:
            doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
        except (OSError, SyntaxError, UnicodeDecodeError):
            doc = ""
        first = doc.strip().splitlines()[0] if doc.strip() else "(no description)"
        try:
            shown = script.relative_to(Path.cwd())
        except ValueError:
            shown = script
        print(f"  {script.name:<32} {first}")
        print(f"      run: python {shown}")
    print("Each script prints (and writes) JSON; see its --help for sizes.")
    return EXIT_OK


# ----------------------------------------------------------------------------------- parser


def _clip_arg(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=88)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation tools)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="secureagg",
        description="Secure aggregation, HE aggregation and DP for federated learning.",
        formatter_class=fmt,
        epilog=(
            "examples:\n"
            "  secureagg demo\n"
            "  secureagg simulate --protocol secagg+ --clients 50 --dim 10000 --dropout 0.1\n"
            "  secureagg audit runs/20250101T000000Z-secagg+\n"
            "  secureagg bench\n\n"
            "Run 'secureagg COMMAND --help' for a command's options."
        ),
    )
    parser.add_argument("--version", action="version", version=f"secureagg {secureagg.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="self-test the cryptographic primitives, then run a small simulation",
        description=_wrap(
            "Check X25519 (RFC 7748), HKDF (RFC 5869), AES-GCM, Ed25519, the mask PRG, "
        "Shamir sharing, fixed-point encoding and the codec; then run a small round end to end. "
        "Prints ok/FAIL per check; exits 1 if anything fails."
        ),
        formatter_class=fmt,
        epilog="example:\n  secureagg demo",
    )
    demo.set_defaults(handler=_cmd_demo)

    protocols = list(available())
    simulate_p = sub.add_parser(
        "simulate",
        help="run one aggregation round in memory and write a run directory",
        description=_wrap("Draw random updates in [-1, 1), drop a fraction of clients at random "
        "stages, run one round over the in-memory transport (every message through the codec), "
        "and report survivors, the error against the plaintext sum over the survivors, the "
        "error bound the aggregator states, and per-stage time and bytes."),
        formatter_class=fmt,
        epilog=(
            "examples:\n"
            "  secureagg simulate --protocol plain --clients 10 --dim 1000\n"
            "  secureagg simulate --protocol secagg+ --clients 100 --dim 100000 --dropout 0.1\n"
            "  secureagg simulate --protocol secagg --clients 20 --dim 50 --threat malicious "
            "--json\n"
            "  secureagg simulate --protocol plain --clients 5 --dim 10 --seed 1 --out run1\n\n"
            "exit codes: 0 ok, 1 error above the stated bound, 2 bad arguments or protocol "
            "error, 3 too few survivors"
        ),
    )
    simulate_p.add_argument("--protocol", required=True, choices=protocols,
                            help="aggregator to run")
    simulate_p.add_argument("--clients", type=int, default=10, metavar="N",
                            help="number of clients (default 10)")
    simulate_p.add_argument("--dim", type=int, default=1000, metavar="D",
                            help="values per client update (default 1000)")
    simulate_p.add_argument("--dropout", type=float, default=0.0, metavar="P",
                            help="fraction of clients that drop out, each at a random stage "
                            "(default 0)")
    simulate_p.add_argument("--threat", choices=("curious", "malicious"), default=None,
                            help="server threat model, for protocols that have one")
    simulate_p.add_argument("--clip", type=_clip_arg, default=1.0, metavar="C",
                            help="clip bound on |value| (default 1.0; 'none' to disable where "
                            "the protocol allows)")
    simulate_p.add_argument("--seed", type=int, default=None, metavar="S",
                            help="reproducible run for tests/benchmarks (NOT secret; flagged)")
    simulate_p.add_argument("--json", action="store_true", help="print one JSON object")
    simulate_p.add_argument("--out", default=None, metavar="RUN_DIR",
                            help="run directory (default runs/<UTC time>-<protocol>)")
    simulate_p.add_argument("--force", action="store_true",
                            help="overwrite a run already in --out")
    simulate_p.add_argument("--quiet", action="store_true", help="print nothing on success")
    simulate_p.set_defaults(handler=_cmd_simulate)

    bench = sub.add_parser(
        "bench",
        help="list the benchmark scripts and how to run them",
        description=_wrap("List the scripts under benchmarks/ with their one-line descriptions and "
        "the command that runs each. Nothing is measured by this command."),
        formatter_class=fmt,
        epilog="examples:\n  secureagg bench\n  secureagg bench --dir path/to/benchmarks",
    )
    bench.add_argument("--dir", default=None, help="benchmark directory to list")
    bench.set_defaults(handler=_cmd_bench)

    audit = sub.add_parser(
        "audit",
        help="summarise and cross-check a run directory",
        description=_wrap("Read config.json, result.json and transcript.jsonl of a run directory, "
        "print the configuration, survivors, per-stage bytes and what the server received (by "
        "kind and sender), and check that the transcript agrees with the recorded metrics. "
        "Exits 1 if a check fails, 2 if the files are missing or do not parse."),
        formatter_class=fmt,
        epilog="examples:\n  secureagg audit runs/20250101T000000Z-plain\n"
        "  secureagg audit run1 --json",
    )
    audit.add_argument("run_dir", metavar="RUN_DIR", help="directory written by 'simulate'")
    audit.add_argument("--json", action="store_true", help="print one JSON object")
    audit.set_defaults(handler=_cmd_audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``secureagg`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    args.argv = argv
    try:
        code: int = args.handler(args)
    except InsufficientSurvivors as exc:
        _err(f"insufficient survivors, round aborted, no aggregate released: {_one_line(exc)}")
        return EXIT_INSUFFICIENT
    except (SecureAggError, _CliError) as exc:
        _err(_one_line(exc))
        return EXIT_ERROR
    except ImportError as exc:
        _err(f"a module could not be loaded: {_one_line(exc)}")
        return EXIT_ERROR
    except OSError as exc:
        _err(f"cannot read or write files: {_one_line(exc)}")
        return EXIT_ERROR
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
