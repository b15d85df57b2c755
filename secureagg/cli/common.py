"""Shared pieces of the ``secureagg`` command: exit codes, errors, choosing a run directory.

What a run directory holds is written by :class:`secureagg.audit.rundir.RunDirectory`; here are
only the checks of ``--out`` and the default path."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from secureagg.aggregators.secagg import CURIOUS_MODE_NOTE
from secureagg.audit.rundir import new_run_path
from secureagg.errors import ConfigurationError
from secureagg.protocols.base import RoundFactory

EXIT_OK, EXIT_CHECK_FAILED, EXIT_ERROR, EXIT_INSUFFICIENT, EXIT_INTERNAL = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


_TRANSCRIPT_KEYS = ("stage", "kind", "sender", "recipient", "round_id", "size", "sha256")


class _CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ConfigurationError) and len(exc.problems) > 1:
        return "; ".join(exc.problems)
    return " ".join(str(exc).split())


def _err(message: str) -> None:
    print(f"secureagg: error: {message}", file=sys.stderr)


def _warn(message: str) -> None:
    print(f"secureagg: WARNING: {message}", file=sys.stderr, flush=True)


def threat_model_note(parameters: Mapping[str, Any]) -> str | None:
    """What curious mode gives up (the aggregator's :data:`CURIOUS_MODE_NOTE`, with the command
    line's option) for SecAgg/SecAgg+ under a curious server, else None. ``parameters`` are an
    aggregator's, or just ``protocol`` and ``threat``."""
    curious = parameters.get("protocol") in ("secagg", "secagg+") and (
        parameters.get("threat", "curious") == "curious"
    )
    if not curious:
        return None
    note = parameters.get("threat_model_note", CURIOUS_MODE_NOTE)
    return f"{note} (on the command line: --threat malicious)"


def seeded_warning(seed: int) -> str:
    """The line a seeded command prints to stderr, whatever its output mode."""
    return (
        f"seeded run (--seed {seed}): keys, masks, noise and every random choice are "
        "reproducible from the seed and therefore NOT secret and NOT private; use --seed only "
        "for tests, benchmarks and reproducing a run"
    )


def _check_out(out: str, *, option: str = "--out") -> Path:
    """A run directory path given by the user: not empty, not a file, not under a file."""
    if not out.strip():
        raise _CliError(f"{option} must not be empty; give a directory for the run")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise _CliError(f"{path} exists and is not a directory; choose another {option}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise _CliError(
                    f"{parent} is not a directory, so {path} cannot be created; "
                    f"choose another {option}"
                )
            break
    return path


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


def _run_dir(out: str | None, name: str) -> Path:
    """``--out`` if given (checked by :func:`_check_out`), else a fresh
    :func:`~secureagg.audit.rundir.new_run_path` (the demos)."""
    return _check_out(out) if out is not None else new_run_path(name)


def _choose_run_dir(args: argparse.Namespace) -> Path:
    """The run directory to write (not created yet); refuses to overwrite without --force."""
    if args.out is not None:
        path = _check_out(args.out)
        if (path / "result.json").exists() and not args.force:
            raise _CliError(f"{path} already holds a run; choose another --out or pass --force")
        return path
    return new_run_path(args.protocol)


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
