"""Our secagg+ round on Flower's deployment engine against Flower's own SecAgg+ (issue 13).

Both run on ONE local deployment (:class:`secureagg.flower.processes.Deployment`: a real
SuperLink and ``--nodes`` SuperNodes on 127.0.0.1, so the same processes and machine conditions),
interleaved - for each d: ours, Flower's, ours, Flower's, ... ``--repeats`` times - with the same
n, the same d, the same per-node updates and the same dropout:

(a) ``benchmarks/flower_apps/ours``: ``SecureFedAvg("secagg+", options={"clip": 1.0})`` on the
    server, ``ClientApp(mods=[secureagg_mod])`` around a ``@app.train()`` that returns the
    received weights plus a fixed random update of dimension d (no training: the benchmark
    measures the aggregation);
(b) ``benchmarks/flower_apps/flower``: Flower 1.42's ``SecAggPlusWorkflow`` inside
    ``DefaultWorkflow`` (legacy ``LegacyContext`` ServerApp, Flower's ``FedAvg`` with initial
    parameters and no evaluation round) and ``secaggplus_mod`` on a NumPyClient whose ``fit``
    returns the same kind of update.

Parameters matched: our k (graph degree: neighbours, the node itself not counted) and t (shares
needed) are ``make_aggregator("secagg+", num_clients=n, clip=1.0).parameters()``'s. Flower's
``num_shares`` is the size of a node's neighbourhood *including itself* (offsets -s/2..s/2 on a
shuffled ring; each node keeps one share of its own secrets, as ours does) and
``reconstruction_threshold`` the shares needed, so Flower gets ``num_shares=k+1``,
``reconstruction_threshold=t`` (at n=5: k=4, t=2 -> 5, 2: both complete graphs). Flower's
quantization: ``clipping_range=1.0`` (= our clip), 2^22 levels in a 2^32 ring (Flower's defaults;
ours: 32-bit ring); every update coordinate is in [-0.1, 0.1], weight 1 (``max_weight=1``).

Before the measured runs, one untimed run of each app (``--warmup``, on by default): the first
run of an app on fresh SuperNodes installs its bundle there, which neither side should pay.

Dropout (``--dropout 1``): the last node answers its masked-input message (ours: its third
protocol step, stage ``masked``; Flower: stage ``collect_masked_vectors``) with an error reply, so
both servers must recover that node's pairwise masks from the others' shares.

Measured per round (see ``benchmarks/flower_apps/bench_shared.py``, used by both apps):

* **wall seconds** of the secure aggregation round only: from the first push of the round's
  messages (group id = round) to the aggregate - for Flower when ``SecAggPlusWorkflow`` returns
  (its unmask stage has applied the aggregate), for ours when ``SecureFedAvg`` records the round
  (``on_round``). ``time.perf_counter()`` in the ServerApp process. Ours' hello exchange before
  its first round (roles and identity keys, once per run) is not in it.
* **bytes per client, up and down**: ``flwr.common.serde.message_to_proto(msg).ByteSize()`` of
  every message the ServerApp pushed to a node and every reply it pulled from one (the whole
  Flower message, metadata and content), summed per node, mean over the round's nodes - the same
  wrapper around the Grid's ``push_messages``/``pull_messages`` for both apps. Ours' protocol
  payload (the engine's encoded messages, ``stages[*].bytes_up / n``) is reported beside it.
* **per stage**: wall seconds from one push batch (= stage) to the next; for ours also the
  engine's own stage figures: wall (``seconds``), ``server_seconds`` and ``client_seconds_max``
  (the nodes' protocol compute as they report it, their training excluded). "compute" =
  server_seconds + client_seconds_max, "rest" = wall - compute (Flower's polling: a SuperNode
  sleeps 3 s between polls when idle, a fresh flwr-clientapp process per message, the SuperLink).
* the error of the new global model against the known mean update (both must be correct).

Targets (issue 13), judged from the measured medians, never hard-coded:
  1. our secagg+ round on Flower takes at most 1.0x the wall time of Flower's own SecAgg+ round
     at n=5, and less at larger d (read: ratio <= 1.0 at every d, and < 1.0 at the largest d);
  2. protocol compute per stage is at most 10% of the stage's wall time (each stage's median
     share, at every d).

Usage::

    python benchmarks/bench_flower.py --quick     # n=4, d=1000, 1 repeat, 1 round (~2 min)
    python benchmarks/bench_flower.py             # n=5, d in {1000, 100000}, 3 repeats (~12 min)
    python benchmarks/bench_flower.py --dims 100000 --repeats 5 --dropout 1

Results go to ``--out`` (default ``benchmarks/results/flower.json``); progress to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import secureagg as sa  # noqa: E402
from secureagg.bench.output import machine_info as _machine_info  # noqa: E402

APPS = Path(__file__).resolve().parent / "flower_apps"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "flower.json"
CLIP = 1.0
_T0 = time.perf_counter()


def _log(text: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {text}", file=sys.stderr, flush=True)


def machine_info() -> dict[str, Any]:
    """The package's machine facts (secureagg.bench.output), plus Flower's version."""
    import flwr

    return {**_machine_info(), "flwr": flwr.__version__}


# ------------------------------------------------------------------------------ one run


def matched_parameters(n: int) -> dict[str, Any]:
    """Our secagg+ (k, t) at n and Flower's SecAggPlusWorkflow arguments matched to them."""
    ours = sa.make_aggregator("secagg+", num_clients=n, clip=CLIP).parameters()
    k, t = int(ours["degree"]), int(ours["threshold"])
    num_shares = k + 1
    # What SecAggPlusWorkflow.setup_stage does with it: an even num_shares below n is raised by
    # one (with a warning); the neighbourhood is offsets -s//2..s//2 on a shuffled ring.
    effective = num_shares + 1 if num_shares != n and num_shares % 2 == 0 else num_shares
    neighbourhood = min(n, 2 * (effective >> 1) + 1)
    return {
        "ours": {"degree_k": k, "threshold_t": t, "bits": ours["bits"], "clip": CLIP,
                 "scale": ours["scale"], "max_weight": ours["max_weight"]},
        "flower": {"num_shares": num_shares, "reconstruction_threshold": t,
                   "effective_num_shares": effective,
                   "neighbourhood_including_self": neighbourhood,
                   "clipping_range": CLIP, "quantization_range": 2**22,
                   "modulus_range": 2**32, "max_weight": 1.0},
        "how": (f"Flower's num_shares counts the node itself (neighbours at ring offsets "
                f"-s/2..s/2, one share kept by the node, as ours keeps one of its own), so "
                f"num_shares = k + 1 = {num_shares} and reconstruction_threshold = t = {t}; "
                f"ours: k = {k} neighbours, t = {t} shares. Each node shares its secrets among "
                f"{k + 1} parties (neighbours and itself) in both."),
    }


def run_once(dep: Any, impl: str, *, n: int, d: int, rounds: int, dropped: list[int],
             params: dict[str, Any], workdir: Path, timeout: float, tag: str,
             poll: float = 0.2) -> dict[str, Any]:
    result = workdir / f"{tag}-{impl}.json"
    config: dict[str, Any] = {
        "result-path": str(result), "shared-dir": str(APPS), "num-nodes": n, "dim": d,
        "rounds": rounds,
        "expected-partitions": ",".join(str(p) for p in range(n) if p not in dropped),
    }
    if impl == "ours":
        config.update({"options": json.dumps({"clip": CLIP}), "train-deadline": timeout,
                       "stage-deadline": timeout, "poll": poll})
    else:
        f = params["flower"]
        config.update({"num-shares": f["num_shares"],
                       "reconstruction-threshold": f["reconstruction_threshold"],
                       "clipping-range": f["clipping_range"], "max-weight": f["max_weight"],
                       "stage-timeout": timeout})
    outcome = dep.run(APPS / impl, run_config=config, timeout=timeout * 4 * rounds + 120)
    outcome.check()
    data: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    data["flwr_run_seconds"] = outcome.seconds
    return data


# ------------------------------------------------------------------------------ summaries


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _min(values: Sequence[float]) -> float | None:
    return float(min(values)) if values else None


def summarize(runs: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """Per implementation: medians and minima over every measured round of every repeat."""
    out: dict[str, Any] = {}
    for impl in ("ours", "flower"):
        rounds = [r for run in runs if run["impl"] == impl for r in run["rounds"]]
        ok = [r for r in rounds if r["status"] == "ok"]
        walls = [r["meter"]["wall_seconds"] for r in ok]
        bpc = [r["meter"]["bytes_per_client"] for r in ok]
        stage_walls: dict[str, list[float]] = {}
        for r in ok:
            for i, s in enumerate(r["meter"]["stages"]):
                engine = list(r.get("engine_stages", {}))
                name = (",".join(s["labels"]) if impl == "flower"
                        else engine[i] if i < len(engine) else f"stage {i + 1}")
                if s["wall_seconds"] is not None:
                    stage_walls.setdefault(name, []).append(s["wall_seconds"])
        entry: dict[str, Any] = {
            "rounds_measured": len(rounds), "rounds_ok": len(ok),
            "wall_seconds_median": _median(walls), "wall_seconds_min": _min(walls),
            "wall_seconds_all": walls,
            "up_bytes_per_client_median": _median([b["up_mean"] for b in bpc]),
            "down_bytes_per_client_median": _median([b["down_mean"] for b in bpc]),
            "stage_wall_seconds_median": {k: _median(v) for k, v in stage_walls.items()},
            "max_abs_error_max": max((r["max_abs_error"] for r in ok
                                      if r["max_abs_error"] is not None), default=None),
            "pull_requests_median": _median([r["meter"]["pull_requests"] for r in ok]),
            "meter_overhead_seconds_max": max((r["meter"]["meter_overhead_seconds"]
                                               for r in ok), default=None),
        }
        if impl == "ours":
            entry["stages"] = _our_split(ok)
            payload = [sum(s["bytes_up"] for s in r["engine_stages"].values()) / n for r in ok]
            entry["protocol_payload_up_bytes_per_client_median"] = _median(payload)
            payload = [sum(s["bytes_down"] for s in r["engine_stages"].values()) / n for r in ok]
            entry["protocol_payload_down_bytes_per_client_median"] = _median(payload)
            entry["engine_stage_seconds_sum_median"] = _median(
                [sum(s["seconds"] for s in r["engine_stages"].values()) for r in ok])
        out[impl] = entry
    o, f = out["ours"]["wall_seconds_median"], out["flower"]["wall_seconds_median"]
    out["ratio_ours_over_flower_wall_median"] = o / f if o and f else None
    o, f = out["ours"]["wall_seconds_min"], out["flower"]["wall_seconds_min"]
    out["ratio_ours_over_flower_wall_min"] = o / f if o and f else None
    paired = []  # ours / Flower within one interleaved pair (same repeat, same round)
    for rep in sorted({run["repeat"] for run in runs}):
        walls_of = {run["impl"]: {r["round"]: r["meter"]["wall_seconds"] for r in run["rounds"]
                                  if r["status"] == "ok"}
                    for run in runs if run["repeat"] == rep}
        for r, wall in walls_of.get("ours", {}).items():
            other = walls_of.get("flower", {}).get(r)
            if wall and other:
                paired.append(wall / other)
    out["ratio_ours_over_flower_wall_paired"] = paired
    out["ratio_ours_over_flower_wall_paired_median"] = _median(paired)
    return out


def import_seconds(repeats: int) -> dict[str, Any]:
    """Wall seconds of a fresh Python process that imports each app's module (interleaved,
    ``repeats`` times each): the app's share of what a node pays for every message, since a
    SuperNode starts a new flwr-clientapp process per message."""
    code = ("import sys, time; t = time.perf_counter(); sys.path.insert(0, sys.argv[1]); "
            "__import__(sys.argv[2]); print(time.perf_counter() - t)")
    found: dict[str, dict[str, list[float]]] = {}
    for _ in range(repeats):
        for impl, module in (("ours", "bench_ours"), ("flower", "bench_flower_app")):
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", code, str(APPS / impl), module],
                                  capture_output=True, text=True, check=True, cwd=APPS / impl)
            entry = found.setdefault(impl, {"process": [], "import": []})
            entry["process"].append(time.perf_counter() - t0)
            entry["import"].append(float(done.stdout.strip().splitlines()[-1]))
    return {impl: {"process_seconds_median": _median(v["process"]),
                   "import_seconds_median": _median(v["import"]), "repeats": repeats}
            for impl, v in found.items()}


def _our_split(ok: list[dict[str, Any]]) -> dict[str, Any]:
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


def judge(summary: dict[int, dict[str, Any]], n: int) -> list[dict[str, Any]]:
    dims = sorted(summary)
    ratios = {d: summary[d]["ratio_ours_over_flower_wall_median"] for d in dims}
    measured = all(r is not None for r in ratios.values())
    met: bool | None = None
    if n != 5:
        note = f"the target is stated at n=5; this run has n={n} (not judged)"
    elif not measured:
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


# ------------------------------------------------------------------------------ printing


def _kb(x: float | None) -> str:
    return "-" if x is None else f"{x / 1000:.1f}"


def _e(x: float | None) -> str:
    return "-" if x is None else f"{x:.1e}"


def _s(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_report(report: dict[str, Any]) -> None:
    cfg = report["configuration"]
    print(f"\nsecure aggregation round on Flower {report['machine']['flwr']} (one local "
          f"deployment, n={cfg['nodes']}, dropout={cfg['dropout_nodes']} node(s), "
          f"{cfg['repeats']} repeat(s) x {cfg['rounds']} round(s), interleaved)")
    print(f"  matching: {cfg['parameters']['how']}")
    print(f"\n  {'d':>7} {'impl':<7} {'wall med':>9} {'wall min':>9} {'up kB/cl':>9} "
          f"{'down kB/cl':>10} {'max err':>9}  per-stage wall medians (s)")
    for d, s in report["summary"].items():
        for impl in ("ours", "flower"):
            e = s[impl]
            stages = " / ".join(f"{v:.1f}" for v in e["stage_wall_seconds_median"].values()
                                if v is not None)
            print(f"  {d:>7} {impl:<7} {_s(e['wall_seconds_median'], 1):>9} "
                  f"{_s(e['wall_seconds_min'], 1):>9} "
                  f"{_kb(e['up_bytes_per_client_median']):>9} "
                  f"{_kb(e['down_bytes_per_client_median']):>10} "
                  f"{_e(e['max_abs_error_max']):>9}"
                  f"  {stages}")
        med, low = s["ratio_ours_over_flower_wall_median"], s["ratio_ours_over_flower_wall_min"]
        pairs = ", ".join(f"{x:.2f}" for x in s["ratio_ours_over_flower_wall_paired"])
        print(f"  {d:>7} ratio ours/Flower wall: of medians {_s(med)}x, of minima {_s(low)}x; "
              f"per interleaved pair {pairs} (median "
              f"{_s(s['ratio_ours_over_flower_wall_paired_median'])}x)")
    print("\n  ours, per stage (medians): wall = compute (server + slowest node) + rest (polling, "
          "process starts, SuperLink)")
    print(f"  {'d':>7} {'stage':<10} {'wall s':>7} {'server s':>9} {'node max s':>10} "
          f"{'compute s':>9} {'rest s':>7} {'compute %':>9} {'worst %':>8}")
    for d, s in report["summary"].items():
        for name, v in s["ours"]["stages"].items():
            share = v["compute_share_median"]
            worst = v["compute_share_max"]
            print(f"  {d:>7} {name:<10} {_s(v['wall_seconds_median']):>7} "
                  f"{_s(v['server_seconds_median'], 3):>9} "
                  f"{_s(v['client_seconds_max_median'], 3):>10} "
                  f"{_s(v['compute_seconds_median'], 3):>9} {_s(v['rest_seconds_median']):>7} "
                  f"{'-' if share is None else f'{100 * share:.1f}':>9} "
                  f"{'-' if worst is None else f'{100 * worst:.1f}':>8}")
    imp = report["clientapp_import"]
    if imp:
        print("\n  a fresh process importing the ClientApp module (a node starts one per "
              "message), medians: " + "; ".join(
                  f"{k} {_s(v['process_seconds_median'])} s (import "
                  f"{_s(v['import_seconds_median'])} s)" for k, v in imp.items()))
    print("\n  targets:")
    for t in report["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["met"]]
        print(f"  [{verdict}] {t['target']}")
        print(f"         measured ({t['what']}): {json.dumps(t['measured'])}")
        if t.get("note"):
            print(f"         {t['note']}")


# ------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="n=4, d=1000, 1 repeat, 1 round")
    p.add_argument("--nodes", type=int, default=None, help="SuperNodes = clients (default 5)")
    p.add_argument("--dims", default=None, help="comma list of d (default 1000,100000)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved pairs per d (3)")
    p.add_argument("--rounds", type=int, default=None, help="rounds per run (1)")
    p.add_argument("--dropout", type=int, choices=(0, 1), default=0,
                   help="nodes that drop at their masked input (0 or 1)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per stage at most")
    p.add_argument("--poll", type=float, default=0.2,
                   help="ours: seconds between the server's pulls of outstanding replies (0.2)")
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=None,
                   help="one untimed run of each app first (default: on, off with --quick)")
    p.add_argument("--import-repeats", type=int, default=5,
                   help="fresh-process imports of each ClientApp module to time (0: none)")
    p.add_argument("--tls", action="store_true", help="TLS on every loopback link")
    p.add_argument("--log-dir", type=Path, default=None, help="keep the Flower processes' logs")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    quick = {"nodes": 4, "dims": "1000", "repeats": 1, "rounds": 1, "warmup": False}
    full = {"nodes": 5, "dims": "1000,100000", "repeats": 3, "rounds": 1, "warmup": True}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.dims = [int(x) for x in str(args.dims).split(",") if x.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from secureagg.flower.processes import Deployment

    n = args.nodes
    params = matched_parameters(n)
    dropped = [n - 1] if args.dropout else []
    machine = machine_info()
    node_configs = [{"bench-drop": i in dropped} for i in range(n)]
    runs: dict[int, list[dict[str, Any]]] = {d: [] for d in args.dims}
    warmup: list[dict[str, Any]] = []
    _log(f"n={n}, d={args.dims}, {args.repeats} repeat(s) x {args.rounds} round(s), dropout "
         f"{dropped or 'none'}; ours k={params['ours']['degree_k']} t="
         f"{params['ours']['threshold_t']}; Flower num_shares={params['flower']['num_shares']} "
         f"reconstruction_threshold={params['flower']['reconstruction_threshold']}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-flower-") as tmp, Deployment(
            n, node_configs=node_configs, tls=args.tls, log_dir=args.log_dir) as dep:
        _log(f"deployment up: SuperLink {dep.address}, {n} SuperNodes")
        if args.warmup:  # each app's first run on fresh SuperNodes installs its bundle there
            for impl in ("ours", "flower"):
                _log(f"warm-up (not counted): {impl}, d={min(args.dims)} ...")
                data = run_once(dep, impl, n=n, d=min(args.dims), rounds=1, dropped=dropped,
                                params=params, workdir=Path(tmp), timeout=args.timeout,
                                poll=args.poll, tag="warmup")
                warmup.append({"impl": impl, "flwr_run_seconds": data["flwr_run_seconds"],
                               "wall_seconds": data["rounds"][0]["meter"]["wall_seconds"]})
                _log(f"  {impl}: round {_s(warmup[-1]['wall_seconds'], 1)} s, flwr run "
                     f"{data['flwr_run_seconds']:.1f} s")
        for d in args.dims:
            for rep in range(args.repeats):
                for impl in ("ours", "flower"):
                    tag = f"d{d}-r{rep}"
                    _log(f"d={d} repeat {rep + 1}/{args.repeats}: {impl} ...")
                    data = run_once(dep, impl, n=n, d=d, rounds=args.rounds, dropped=dropped,
                                    params=params, workdir=Path(tmp), timeout=args.timeout,
                                    poll=args.poll, tag=tag)
                    data["repeat"] = rep
                    runs[d].append(data)
                    for r in data["rounds"]:
                        if r["status"] != "ok" or (r["max_abs_error"] or 0.0) > 1e-5:
                            _log(f"  WARNING: {impl} round {r['round']} {r['status']}, error "
                                 f"{r['max_abs_error']}: the aggregate is not the expected one")
                        m = r["meter"]
                        stages = "/".join(f"{s['wall_seconds']:.1f}" for s in m["stages"]
                                          if s["wall_seconds"] is not None)
                        _log(f"  {impl} round {r['round']}: {r['status']}, "
                             f"{_s(m['wall_seconds'], 1)} s (stages {stages}), per client "
                             f"up {_kb(m['bytes_per_client']['up_mean'])} kB down "
                             f"{_kb(m['bytes_per_client']['down_mean'])} kB, survivors "
                             f"{r['survivors']}, max error {r['max_abs_error']}; flwr run "
                             f"{data['flwr_run_seconds']:.1f} s")
    summary = {d: summarize(runs[d], n) for d in args.dims}
    _log("timing a fresh import of each ClientApp module ...")
    imports = import_seconds(args.import_repeats) if args.import_repeats else {}
    with contextlib.suppress(OSError):
        machine["loadavg_at_end"] = list(os.getloadavg())
    report = {
        "benchmark": "bench_flower",
        "issue": 13,
        "quick": bool(args.quick),
        "machine": machine,
        "total_seconds": time.perf_counter() - started,
        "configuration": {
            "nodes": n, "dims": args.dims, "repeats": args.repeats, "rounds": args.rounds,
            "dropout_nodes": len(dropped), "dropped_partitions": dropped,
            "drop_at": "the masked-input message (ours: stage 'masked', 3rd step; Flower: "
                       "'collect_masked_vectors'), answered with an error reply",
            "tls": args.tls, "stage_timeout_seconds": args.timeout,
            "ours_poll_seconds": args.poll,
            "order": "one deployment; per d, per repeat: ours then Flower's",
            "warmup": warmup if args.warmup else "none",
            "updates": "node p: numpy default_rng([2024, p]).uniform(-0.1, 0.1, d) as float32, "
                       "the same every round, weight 1; initial global model zeros(d) float32",
            "ours_options": {"clip": CLIP},
            "parameters": params,
        },
        "definitions": {
            "wall_seconds": "ServerApp perf_counter from the first push of the round's messages "
                            "(group id = round) to the aggregate: Flower - SecAggPlusWorkflow "
                            "returned; ours - SecureFedAvg recorded the round (on_round). Ours' "
                            "once-per-run hello before round 1 is not included",
            "bytes_per_client": "message_to_proto(msg).ByteSize() (whole Flower message, "
                                "metadata + content) of every message pushed to / reply pulled "
                                "from a node in the round, per node, mean over the round's "
                                "nodes; counted by one wrapper around the Grid's push_messages "
                                "and pull_messages in both apps",
            "stage_wall_seconds": "from one push batch (a stage) to the next push batch, or to "
                                  "the aggregate for the last",
            "ours_stages": "the engine's per-stage record: seconds (wall from the stage's first "
                           "send until its last answer/deadline), server_seconds (server party "
                           "compute), client_seconds_max (slowest node's protocol compute as it "
                           "reports it, training excluded); compute = server + client max",
            "protocol_payload": "ours: the engine's encoded protocol messages (stages' bytes_up "
                                "/ bytes_down summed) / n, without Flower's message framing, the "
                                "round spec is in it, the training content (arrays) is not",
            "meter_overhead_seconds": "time the byte counting itself took inside the round "
                                      "(not subtracted)",
            "ratio_ours_over_flower_wall_paired": "ours / Flower round wall within each "
                                                  "interleaved pair (same repeat and round)",
            "clientapp_import": "wall seconds of a fresh python process importing the app's "
                                "module (bench_ours: flwr + secureagg; bench_flower_app: flwr "
                                "incl. its server workflow modules), outside the deployment",
        },
        "summary": {str(d): s for d, s in summary.items()},
        "targets": judge(summary, n),
        "clientapp_import": imports,
        "runs": {str(d): v for d, v in runs.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print_report(report)
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
