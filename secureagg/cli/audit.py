"""``secureagg audit RUN_DIR``: summarise and cross-check a run directory."""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from secureagg.cli.audit_run import independent_audit, write_reports
from secureagg.cli.common import (
    _TRANSCRIPT_KEYS,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    _CliError,
    _one_line,
    threat_model_note,
)
from secureagg.validation import is_int, is_real


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _CliError(
            f"{path} is missing: is this a run directory written by 'secureagg simulate'?"
        ) from None
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
        missing = (
            [k for k in (*_TRANSCRIPT_KEYS, "direction") if k not in entry]
            if isinstance(entry, dict)
            else ["(not an object)"]
        )
        if missing:
            raise _CliError(f"{path}:{number}: missing {', '.join(missing)}")
        if entry["direction"] not in ("up", "down", "peer"):
            raise _CliError(f"{path}:{number}: unknown direction {entry['direction']!r}")
        sha = entry["sha256"]
        if not (
            isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)
        ):
            raise _CliError(f"{path}:{number}: sha256 is not 64 lowercase hex digits")
        if not is_int(entry["size"]) or entry["size"] < 0:
            raise _CliError(f"{path}:{number}: size is not a non-negative integer")
        for key in ("sender", "recipient", "round_id"):
            if not is_int(entry[key]):
                raise _CliError(f"{path}:{number}: {key} is not an integer")
        for key in ("stage", "kind", "direction"):
            if not isinstance(entry[key], str):
                raise _CliError(f"{path}:{number}: {key} is not a string")
        entries.append(entry)
    return entries


def _ensemble_batches(doc: dict[str, Any]) -> str:
    """One line: a private ensemble's batches (``ensemble.json``) and the parties in each sum."""
    batches = [b for b in (doc.get("batches") or []) if isinstance(b, dict)]
    counts = [len(b.get("survivors") or []) if b.get("answered") else "-" for b in batches]
    dropped = [len(b.get("dropped") or {}) for b in batches]
    return (f"batches: {sum(bool(b.get('answered')) for b in batches)} of {len(batches)} "
            f"answered; parties in each sum: {counts}; dropped mid-round: {dropped}")


_STAGE_KEYS = ("bytes_up", "bytes_down", "messages_up", "messages_down")


def _structure_problems(config: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """Every field the audit reads, checked for its type before anything is computed."""
    problems = []
    if config.get("clients") is not None and not is_int(config["clients"]):
        problems.append("config.json: clients is not an integer")
    if config.get("parameters") is not None and not isinstance(config["parameters"], dict):
        problems.append("config.json: parameters is not an object")
    if config.get("protocol") is not None and not isinstance(config["protocol"], str):
        problems.append("config.json: protocol is not a string")
    dropouts = config.get("dropouts")
    if dropouts is not None:
        if not isinstance(dropouts, dict):
            problems.append("config.json: dropouts is not an object")
        elif not all(k.lstrip("-").isdigit() and isinstance(v, str) for k, v in dropouts.items()):
            problems.append("config.json: dropouts must map client ids to stage names")
    survivors = result.get("survivors", [])
    if not isinstance(survivors, list) or not all(is_int(s) for s in survivors):
        problems.append("result.json: survivors is not a list of client ids")
    if result.get("status") is not None and not isinstance(result["status"], str):
        problems.append("result.json: status is not a string")
    metrics = result.get("metrics")
    if metrics is None:
        return problems
    if not isinstance(metrics, dict):
        problems.append("result.json: metrics is not an object")
        return problems
    totals = metrics.get("totals")
    if totals is not None and (
        not isinstance(totals, dict)
        or not all(is_real(totals[k]) for k in ("bytes_up", "bytes_down", "messages_up")
                   if k in totals)
    ):
        problems.append("result.json: metrics.totals is not an object of numbers")
    stages = metrics.get("stages")
    if stages is not None:
        if not isinstance(stages, dict) or not all(isinstance(r, dict) for r in stages.values()):
            problems.append("result.json: metrics.stages is not an object of per-stage objects")
        else:
            for stage, row in stages.items():
                bad = [k for k in _STAGE_KEYS if not is_int(row.get(k))]
                if bad:
                    problems.append(
                        f"result.json: metrics.stages.{stage}: {', '.join(bad)} not integers"
                    )
    rejected = metrics.get("rejected")
    if rejected is not None and (
        not isinstance(rejected, list) or not all(isinstance(r, dict) for r in rejected)
    ):
        problems.append("result.json: metrics.rejected is not a list of objects")
    return problems


def _cmd_audit(args: argparse.Namespace) -> int:
    if not str(args.run_dir).strip():
        raise _CliError("RUN_DIR must not be empty; give the directory a run wrote")
    run = Path(args.run_dir)
    if not run.is_dir():
        raise _CliError(f"{run} is not a directory")
    config = _load_json(run / "config.json")
    split = (run / "split.json").is_file()  # the split demo: no result.json or transcript
    ensemble = (run / "ensemble.json").is_file()  # a private ensemble: ensemble.json is its result
    ensemble_doc = _load_json(run / "ensemble.json") if ensemble else None
    if (split or ensemble) and not (run / "result.json").exists():
        result = ensemble_doc if ensemble_doc is not None else {}
    else:
        result = _load_json(run / "result.json")
    entries = [] if split and not (run / "transcript.jsonl").exists() else _load_transcript(
        run / "transcript.jsonl")
    if not isinstance(config, dict) or not isinstance(result, dict):
        raise _CliError("config.json and result.json must hold JSON objects")
    problems = _structure_problems(config, result)
    if problems:
        raise _CliError(f"{run} is not a run directory secureagg can read: {'; '.join(problems)}")
    metrics = result.get("metrics") or {}
    totals = metrics.get("totals", {})
    up = [e for e in entries if e["direction"] == "up"]
    down = [e for e in entries if e["direction"] == "down"]

    checks: list[tuple[str, bool]] = [
        (f"config.json, result.json and {len(entries)} transcript lines parse", True)
    ]
    if totals:
        checks.append(
            (
                f"bytes received by the server: transcript {sum(e['size'] for e in up):,} = "
                f"metrics {int(totals.get('bytes_up', -1)):,}",
                sum(e["size"] for e in up) == totals.get("bytes_up"),
            )
        )
        checks.append(
            (
                f"bytes sent by the server: transcript {sum(e['size'] for e in down):,} = "
                f"metrics {int(totals.get('bytes_down', -1)):,}",
                sum(e["size"] for e in down) == totals.get("bytes_down"),
            )
        )
        checks.append(
            (
                f"messages received: transcript {len(up)} = metrics {totals.get('messages_up')}",
                len(up) == totals.get("messages_up"),
            )
        )
    # who survived is checked per round by secureagg.audit.checks.check_survivors (distinct,
    # sampled, each sent its input, no dropout before it), in the audit's own checks below
    survivors = result.get("survivors", [])

    by_kind: dict[str, list[int]] = defaultdict(list)
    by_sender: Counter[int] = Counter()
    for e in up:
        by_kind[e["kind"]].append(e["size"])
        by_sender[e["sender"]] += 1
    audit = independent_audit(run, args)
    checks += [(f"[{c.group}] {c.name}" + (f" - {c.detail}" if c.ok is False and c.detail
                                          else ""), c.ok is not False)
               for c in audit["checks"] if c.ok is not None]
    report = {
        **audit["report"],
        "run_dir": str(run),
        "protocol_name": config.get("protocol"),
        "parameters": config.get("parameters"),
        "seeded": result.get("seeded"),
        "seed": config.get("seed"),
        "threat_model_note": threat_model_note(config.get("parameters") or {}),
        "status": result.get("status"),
        "survivors": survivors,
        "dropouts": config.get("dropouts"),
        "traffic_by_stage": {
            stage: {
                k: row.get(k) for k in ("bytes_up", "bytes_down", "messages_up", "messages_down")
            }
            for stage, row in (metrics.get("stages") or {}).items()
        },
        "received_by_kind": {
            kind: {"count": len(s), "bytes": sum(s), "min": min(s), "max": max(s)}
            for kind, s in sorted(by_kind.items())
        },
        "received_by_sender": {str(k): v for k, v in sorted(by_sender.items())},
        "rejected": metrics.get("rejected", []),
        "transcript_checks": [{"check": name, "ok": ok} for name, ok in checks],
    }
    ok = all(passed for _, passed in checks)
    report["verdict"] = "pass" if ok else "fail"
    written = write_reports(run, report, html=not args.no_html)
    if args.json:
        print(json.dumps(report))
        return EXIT_OK if ok else EXIT_CHECK_FAILED
    params = report["parameters"] or {}
    lines = [
        f"run: {run}",
        f"protocol: {report['protocol_name']}"
        + ("  (INSECURE baseline)" if params.get("secure") is False else ""),
        "protocol, in an auditor's units: "
        + ", ".join(
            f"{k.replace('_', ' ')} {v:.3g}" if isinstance(v, float) else
            f"{k.replace('_', ' ')} {v}" for k, v in (report.get("protocol") or {}).items()
            if k != "protocol" and v is not None
        ),
    ]
    if report["threat_model_note"]:
        lines.append(f"WARNING: {report['threat_model_note']}")
    if report["seeded"]:
        seed = report["seed"]
        lines.append(
            "WARNING: seeded run"
            + (f" (seed {seed})" if seed is not None else "")
            + " - reproducible, NOT secret, NOT private"
        )
    lines += [
        f"status: {report['status']}"
        + (f" ({result.get('error')})" if result.get("error") else ""),
        _ensemble_batches(ensemble_doc) if isinstance(ensemble_doc, dict) else
        f"survivors ({len(survivors)}/{config.get('clients', '?')}): {survivors}",
        *([] if ensemble else ["dropouts: "
        + (
            ", ".join(
                f"{k}@{v}"
                for k, v in sorted(
                    (config.get("dropouts") or {}).items(), key=lambda kv: int(kv[0])
                )
            )
            or "none"
        )]),
        "per-stage traffic (bytes up / down, messages up / down):",
    ]
    for stage, row in report["traffic_by_stage"].items():
        lines.append(
            f"  {stage:<12} {row['bytes_up']:>12,} / {row['bytes_down']:<12,} "
            f"{row['messages_up']:>5} / {row['messages_down']}"
        )
    lines.append(f"transcript: the server received {len(up)} messages and sent {len(down)}")
    lines.append(f"  {'kind':<28} {'count':>6} {'bytes':>12} {'min':>9} {'max':>9}")
    for kind, row in report["received_by_kind"].items():
        lines.append(
            f"  {kind:<28} {row['count']:>6} {row['bytes']:>12,} {row['min']:>9,} {row['max']:>9,}"
        )
    lines.append(
        "  by sender: " + ", ".join(f"{k}: {v}" for k, v in report["received_by_sender"].items())
    )
    if report["rejected"]:
        lines.append(f"rejected by the server: {len(report['rejected'])}")
        lines += [
            f"  {r.get('sender')} @ {r.get('stage')}: {r.get('error')}" for r in report["rejected"]
        ]
    lines.append("privacy statement:")
    lines += [f"  {para}" for para in report["statement"]]
    lines.append("checks:")
    lines += [f"  {'ok  ' if passed else 'FAIL'}  {name}" for name, passed in checks]
    lines.append(f"verdict: {report['verdict'].upper()}; report: "
                 + ", ".join(str(p) for p in written))
    print("\n".join(lines))
    return EXIT_OK if ok else EXIT_CHECK_FAILED
