"""What ``secureagg bench`` writes: ``bench.json`` (format ``secureagg/bench/v1``), ``bench.csv``
and the table it prints.

The stable part of ``bench.json`` (documented in ``docs/benchmarks.md``; a new major format
gets a new ``format`` string): ``format``, ``created_utc``, ``seeded``, ``machine``, ``grid``,
``limits``, ``configurations`` (each with ``id``, ``config``, ``status`` ``"measured"`` or
``"skipped"``, ``reason`` when skipped, ``estimate``, and when measured ``figures`` - every
figure as ``{"median", "min"}`` -, ``stages``, ``peak_memory_bytes`` and ``error``).
``bench.csv`` has one row per configuration with the columns of :data:`CSV_COLUMNS`.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import math
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from secureagg.audit.rundir import RunDirectory
from secureagg.version import VERSION

__all__ = [
    "CSV_COLUMNS",
    "FORMAT",
    "format_table",
    "machine_info",
    "utc_now",
    "write_csv",
    "write_json",
]

FORMAT = "secureagg/bench/v1"

CSV_COLUMNS: tuple[str, ...] = (
    "id", "protocol", "threat", "dp", "n", "d", "dropout", "dropped", "status", "reason",
    "repeats", "estimated_seconds", "estimated_peak_bytes",
    "round_seconds_median", "round_seconds_min",
    "client_seconds_max_median", "client_seconds_max_min",
    "server_seconds_median", "server_seconds_min",
    "helper_seconds_median", "helper_seconds_min",
    "setup_seconds_median", "setup_seconds_min",
    "codec_seconds_median",
    "client_offline_seconds_max_median",
    "bytes_up_per_client", "bytes_down_per_client",
    "key_holder_bytes_up", "key_holder_bytes_down",
    "peak_memory_bytes", "server_peak_memory_bytes", "max_abs_error", "error_bound",
    "within_bound", "client_seconds_mean_median", "compute_seconds_total_median",
    "floor_client_seconds", "floor_server_seconds", "client_mean_over_floor",
    "client_max_over_floor", "server_over_floor", "flower_total_compute_seconds",
    "tenseal_client_seconds", "phe_server_seconds_per_value", "network_model_seconds",
)  # fmt: skip


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(module)
        except PackageNotFoundError:
            return None
    except ImportError:  # pragma: no cover - the standard library has it since 3.8
        return None


def machine_info() -> dict[str, Any]:
    """CPU count, platform, Python and the versions of the libraries that do the work."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "secureagg": VERSION,
        "libraries": {
            name: _version(name)
            for name in ("cryptography", "tenseal", "phe", "gmpy2", "matplotlib", "tqdm")
        },
    }
    with contextlib.suppress(AttributeError, OSError):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    with contextlib.suppress(AttributeError, OSError):
        info["loadavg_at_start"] = list(os.getloadavg())
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo", encoding="utf-8") as fh:
            info["mem_total_bytes"] = int(fh.readline().split()[1]) * 1024
    return info


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    """``document`` as indented JSON (no NaN or Infinity: they become null), written atomically
    through the run directory's writer."""
    RunDirectory(path.parent).write_json(path.name, _finite(document))


def _finite(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _row(entry: Mapping[str, Any]) -> dict[str, Any]:
    config = entry["config"]
    estimate = entry.get("estimate") or {}
    row: dict[str, Any] = {
        "id": entry["id"],
        **{k: config.get(k) for k in ("protocol", "threat", "dp", "n", "d", "dropout", "dropped")},
        "status": entry["status"],
        "reason": entry.get("reason", ""),
        "estimated_seconds": estimate.get("seconds"),
        "estimated_peak_bytes": estimate.get("peak_bytes"),
    }
    if entry["status"] == "measured":
        figures = entry["figures"]
        row["repeats"] = entry["repeats"]
        for key in ("round_seconds", "client_seconds_max", "server_seconds", "helper_seconds",
                    "setup_seconds"):
            row[f"{key}_median"] = figures[key]["median"]
            row[f"{key}_min"] = figures[key]["min"]
        row["codec_seconds_median"] = figures["codec_seconds"]["median"]
        row["client_offline_seconds_max_median"] = figures["client_offline_seconds_max"]["median"]
        for key in ("bytes_up_per_client", "bytes_down_per_client", "key_holder_bytes_up",
                    "key_holder_bytes_down"):
            row[key] = int(figures[key]["median"])
        row["peak_memory_bytes"] = entry["peak_memory_bytes"]
        row["server_peak_memory_bytes"] = entry.get("server_peak_memory_bytes")
        row["client_seconds_mean_median"] = figures["client_seconds_mean"]["median"]
        row["compute_seconds_total_median"] = figures["compute_seconds_total"]["median"]
        floor, ratio = entry.get("floor") or {}, entry.get("ratio") or {}
        row["floor_client_seconds"] = floor.get("client_seconds")
        row["floor_server_seconds"] = floor.get("server_seconds")
        for key in ("client_mean_over_floor", "client_max_over_floor", "server_over_floor"):
            row[key] = ratio.get(key)
        peers = entry.get("peers") or {}
        for column, name, key in (
            ("flower_total_compute_seconds", "flower", "total_compute_seconds"),
            ("tenseal_client_seconds", "tenseal", "client_seconds"),
            ("phe_server_seconds_per_value", "phe", "server_seconds_per_value"),
        ):
            value = (peers.get(name) or {}).get(key)
            row[column] = value["median"] if isinstance(value, Mapping) else None
        row["network_model_seconds"] = (entry.get("network_model") or {}).get("seconds")
        row["max_abs_error"] = entry["error"]["max_abs_error"]
        row["error_bound"] = entry["error"]["bound"]
        row["within_bound"] = entry["error"]["within_bound"]
    return row


def write_csv(path: Path, entries: Sequence[Mapping[str, Any]]) -> None:
    """One row per configuration (measured or skipped), columns :data:`CSV_COLUMNS`."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(CSV_COLUMNS), restval="")
    writer.writeheader()
    for entry in entries:
        writer.writerow(_row(entry))
    RunDirectory(path.parent).write_bytes(path.name, text.getvalue().encode("utf-8"))


def _seconds(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value * 1e3:.1f}m"


def _bytes(value: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:,.0f}{unit}" if unit == "B" else f"{value:,.1f}{unit}"
        value /= 1024
    return f"{value:.1f}G"  # pragma: no cover


def _floor_cell(entry: Mapping[str, Any]) -> str:
    ratio = entry.get("ratio") or {}
    client, server = ratio.get("client_mean_over_floor"), ratio.get("server_over_floor")
    if client is None or server is None:
        return "-"
    return f"{client:.1f}/{server:.1f}x"


def _peer_cell(entry: Mapping[str, Any]) -> str:
    from secureagg.bench.peers import peer_ratio

    cells = []
    for name in entry.get("peers") or {}:
        ratio = peer_ratio(entry, name)
        cells.append(f"{name} {ratio:.1f}x" if ratio is not None else f"{name} -")
    return ", ".join(cells) or "-"


def format_table(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """The table printed at the end: medians; seconds with ``m`` are milliseconds."""
    head = (
        f"{'configuration':<52} {'round s':>8} {'client s':>8} {'server s':>8} {'helper s':>8} "
        f"{'setup s':>8} {'up/client':>10} {'down/client':>11} {'peak mem':>9} "
        f"{'error/bound':>11} {'floor c/s':>10} {'peer/ours':>16}"
    )
    lines = [head, "-" * len(head)]
    for entry in entries:
        label = entry["label"]
        if entry["status"] != "measured":
            lines.append(f"{label:<52} skipped: {entry.get('reason', '')}")
            continue
        f = entry["figures"]
        err = entry["error"]
        if err["bound"] and err["bound"] > 0:
            shown = f"{err['max_abs_error'] / err['bound']:.2g}"
        else:  # an exact protocol (bound 0): equal up to float rounding
            shown = "exact" if err["within_bound"] else "inexact"
        peak = entry["peak_memory_bytes"]
        lines.append(
            f"{label:<52} {_seconds(f['round_seconds']['median']):>8} "
            f"{_seconds(f['client_seconds_max']['median']):>8} "
            f"{_seconds(f['server_seconds']['median']):>8} "
            f"{_seconds(f['helper_seconds']['median']):>8} "
            f"{_seconds(f['setup_seconds']['median']):>8} "
            f"{_bytes(f['bytes_up_per_client']['median']):>10} "
            f"{_bytes(f['bytes_down_per_client']['median']):>11} "
            f"{(_bytes(peak) if peak is not None else '-'):>9} "
            f"{shown:>10}{'' if err['within_bound'] else '!'} {_floor_cell(entry):>10} "
            f"{_peer_cell(entry):>16}"
        )
    return lines
