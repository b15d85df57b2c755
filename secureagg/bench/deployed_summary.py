"""The deployed comparison's arithmetic and table: medians, ratios, targets (no processes here).

:func:`summarize` reduces the runs of one d (what the two ServerApps wrote, see
:mod:`secureagg.bench.deployed_ours` and :mod:`secureagg.bench.deployed_flower`) to medians and
minima per implementation and the ratios ours / Flower's; :func:`judge` states issue 13's two
targets from those medians (never hard-coded); :func:`format_report` is the printed table.
Seconds are wall seconds (``time.perf_counter`` in the ServerApp process), sizes bytes.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["IMPLS", "format_report", "judge", "summarize"]

#: the two implementations, in the order they run within each interleaved pair
IMPLS = ("ours", "flower")


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _min(values: Sequence[float]) -> float | None:
    return float(min(values)) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def summarize(runs: Sequence[Mapping[str, Any]], n: int) -> dict[str, Any]:
    """Per implementation: medians and minima over every measured round that completed (status
    ``ok``) of every repeat; then ours / Flower's ratios of the medians, of the minima and per
    interleaved pair (the same repeat and round)."""
    out: dict[str, Any] = {}
    for impl in IMPLS:
        rounds = [r for run in runs if run["impl"] == impl for r in run["rounds"]]
        ok = [r for r in rounds if r["status"] == "ok"]
        walls = [r["meter"]["wall_seconds"] for r in ok
                 if r["meter"]["wall_seconds"] is not None]
        bpc = [r["meter"]["bytes_per_client"] for r in ok]
        stage_walls: dict[str, list[float]] = {}
        for r in ok:
            engine = list(r.get("engine_stages", {}))
            for i, s in enumerate(r["meter"]["stages"]):
                name = (",".join(s["labels"]) if impl == "flower"
                        else engine[i] if i < len(engine) else f"stage {i + 1}")
                if s["wall_seconds"] is not None:
                    stage_walls.setdefault(name, []).append(s["wall_seconds"])
        errors = [r["max_abs_error"] for r in ok if r["max_abs_error"] is not None]
        entry: dict[str, Any] = {
            "rounds_measured": len(rounds), "rounds_ok": len(ok),
            "wall_seconds_median": _median(walls), "wall_seconds_min": _min(walls),
            "wall_seconds_all": walls,
            "up_bytes_per_client_median": _median([b["up_mean"] for b in bpc]),
            "down_bytes_per_client_median": _median([b["down_mean"] for b in bpc]),
            "stage_wall_seconds_median": {k: _median(v) for k, v in stage_walls.items()},
            "max_abs_error_max": max(errors, default=None),
            "pull_requests_median": _median([r["meter"]["pull_requests"] for r in ok]),
            "meter_overhead_seconds_max": max((r["meter"]["meter_overhead_seconds"]
                                               for r in ok), default=None),
        }
        if impl == "ours":
            entry["stages"] = _our_split(ok)
            for way in ("up", "down"):
                payload = [sum(s[f"bytes_{way}"] for s in r["engine_stages"].values()) / n
                           for r in ok]
                entry[f"protocol_payload_{way}_bytes_per_client_median"] = _median(payload)
            entry["engine_stage_seconds_sum_median"] = _median(
                [sum(s["seconds"] for s in r["engine_stages"].values()) for r in ok])
        out[impl] = entry
    out["ratio_ours_over_flower_wall_median"] = _ratio(
        out["ours"]["wall_seconds_median"], out["flower"]["wall_seconds_median"])
    out["ratio_ours_over_flower_wall_min"] = _ratio(
        out["ours"]["wall_seconds_min"], out["flower"]["wall_seconds_min"])
    paired = []  # ours / Flower within one interleaved pair (same repeat, same round)
    for rep in sorted({run["repeat"] for run in runs}):
        walls_of = {run["impl"]: {r["round"]: r["meter"]["wall_seconds"] for r in run["rounds"]
                                  if r["status"] == "ok"}
                    for run in runs if run["repeat"] == rep}
        for r, wall in walls_of.get("ours", {}).items():
            ratio = _ratio(wall, walls_of.get("flower", {}).get(r))
            if ratio is not None:
                paired.append(ratio)
    out["ratio_ours_over_flower_wall_paired"] = paired
    out["ratio_ours_over_flower_wall_paired_median"] = _median(paired)
    return out


def _our_split(ok: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Ours, per engine stage: wall, compute (server + slowest node), the rest, the share."""
    names = list(ok[0]["engine_stages"]) if ok else []
    split = {}
    for name in names:
        figs = [r["engine_stages"][name] for r in ok if name in r["engine_stages"]]
        wall = [s["seconds"] for s in figs]
        compute = [s["server_seconds"] + s["client_seconds_max"] for s in figs]
        share = [c / w for c, w in zip(compute, wall, strict=True) if w > 0]
        split[name] = {
            "wall_seconds_median": _median(wall),
            "server_seconds_median": _median([s["server_seconds"] for s in figs]),
            "client_seconds_max_median": _median([s["client_seconds_max"] for s in figs]),
            "compute_seconds_median": _median(compute),
            "rest_seconds_median": _median([w - c for c, w in zip(compute, wall, strict=True)]),
            "compute_share_median": _median(share),
            "compute_share_max": max(share, default=None),
        }
    return split


def judge(summary: Mapping[int, Mapping[str, Any]], n: int) -> list[dict[str, Any]]:
    """Issue 13's targets from the measured medians: (1) ours / Flower's round wall time <= 1.0
    at every d and < 1.0 at the largest (judged at n = 5 only); (2) protocol compute <= 10% of
    each stage's wall time (ours)."""
    dims = sorted(summary)
    ratios = {d: summary[d]["ratio_ours_over_flower_wall_median"] for d in dims}
    met: bool | None = None
    if n != 5:
        note = f"the target is stated at n=5; this run has n={n} (not judged)"
    elif not dims or any(r is None for r in ratios.values()):
        note = "a ratio is missing (a round did not complete)"
    else:
        met = all(r <= 1.0 for r in ratios.values()) and (
            len(dims) < 2 or ratios[dims[-1]] < 1.0)
        note = ("ratio <= 1.0 at every d" + (", < 1.0 at the largest d" if len(dims) > 1 else "")
                + "; the ratio " + ("decreases" if len(dims) > 1 and ratios[dims[-1]]
                                    < ratios[dims[0]] else "does not decrease")
                + " from the smallest to the largest d")
    shares = {d: {s: v["compute_share_median"]
                  for s, v in summary[d]["ours"]["stages"].items()} for d in dims}
    worst = {d: max((v["compute_share_max"] or 0.0
                     for v in summary[d]["ours"]["stages"].values()), default=None) for d in dims}
    flat = [v for per in shares.values() for v in per.values() if v is not None]
    return [
        {"target": "our secagg+ round on Flower takes at most 1.0x the wall time of Flower's "
                   "own SecAgg+ round at n=5, and less at larger d",
         "measured": {str(d): ratios[d] for d in dims}, "what": "median ours / median Flower "
         "round wall seconds, per d", "met": met, "note": note},
        {"target": "protocol compute per stage is at most 10% of the stage's wall time",
         "measured": {str(d): shares[d] for d in dims},
         "worst_single_stage": {str(d): worst[d] for d in dims},
         "what": "per stage, median over rounds of (server_seconds + client_seconds_max) / "
                 "stage wall seconds (ours)",
         "met": (max(flat) <= 0.10) if flat else None},
    ]


def _kb(x: float | None) -> str:
    return "-" if x is None else f"{x / 1000:.1f}"


def _e(x: float | None) -> str:
    return "-" if x is None else f"{x:.1e}"


def _s(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def format_report(report: Mapping[str, Any]) -> list[str]:
    """The table printed at the end of a deployed comparison (medians; kB = 1000 bytes)."""
    cfg = report["configuration"]
    lines = [
        f"secure aggregation round on Flower {report['machine'].get('flwr')} (one local "
        f"deployment, n={cfg['nodes']}, dropout={cfg['dropout_nodes']} node(s), "
        f"{cfg['repeats']} repeat(s) x {cfg['rounds']} round(s), interleaved)",
        f"  matching: {cfg['parameters']['how']}", "",
        f"  {'d':>7} {'impl':<7} {'wall med':>9} {'wall min':>9} {'up kB/cl':>9} "
        f"{'down kB/cl':>10} {'max err':>9}  per-stage wall medians (s)",
    ]
    for d, s in report["summary"].items():
        for impl in IMPLS:
            e = s[impl]
            stages = " / ".join(f"{v:.1f}" for v in e["stage_wall_seconds_median"].values()
                                if v is not None)
            lines.append(
                f"  {d:>7} {impl:<7} {_s(e['wall_seconds_median'], 1):>9} "
                f"{_s(e['wall_seconds_min'], 1):>9} {_kb(e['up_bytes_per_client_median']):>9} "
                f"{_kb(e['down_bytes_per_client_median']):>10} "
                f"{_e(e['max_abs_error_max']):>9}  {stages}")
        pairs = ", ".join(f"{x:.2f}" for x in s["ratio_ours_over_flower_wall_paired"])
        lines.append(
            f"  {d:>7} ratio ours/Flower wall: of medians "
            f"{_s(s['ratio_ours_over_flower_wall_median'])}x, of minima "
            f"{_s(s['ratio_ours_over_flower_wall_min'])}x; per interleaved pair {pairs or '-'} "
            f"(median {_s(s['ratio_ours_over_flower_wall_paired_median'])}x)")
    lines += ["", "  ours, per stage (medians): wall = compute (server + slowest node) + rest "
              "(polling, process starts, SuperLink)",
              f"  {'d':>7} {'stage':<10} {'wall s':>7} {'server s':>9} {'node max s':>10} "
              f"{'compute s':>9} {'rest s':>7} {'compute %':>9} {'worst %':>8}"]
    for d, s in report["summary"].items():
        for name, v in s["ours"]["stages"].items():
            lines.append(
                f"  {d:>7} {name:<10} {_s(v['wall_seconds_median']):>7} "
                f"{_s(v['server_seconds_median'], 3):>9} "
                f"{_s(v['client_seconds_max_median'], 3):>10} "
                f"{_s(v['compute_seconds_median'], 3):>9} {_s(v['rest_seconds_median']):>7} "
                f"{_pct(v['compute_share_median']):>9} {_pct(v['compute_share_max']):>8}")
    imports = report.get("clientapp_import") or {}
    if imports:
        lines += ["", "  a fresh process importing the ClientApp module (a node starts one per "
                  "message), medians: " + "; ".join(
                      f"{k} {_s(v['process_seconds_median'])} s (import "
                      f"{_s(v['import_seconds_median'])} s)" for k, v in imports.items())]
    lines += ["", "  targets:"]
    for t in report["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["met"]]
        lines.append(f"  [{verdict}] {t['target']}")
        lines.append(f"         measured ({t['what']}): {json.dumps(t['measured'])}")
        if t.get("note"):
            lines.append(f"         {t['note']}")
    return lines
