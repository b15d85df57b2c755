"""``secureagg bench``: measure every protocol in this process (or ``--list`` the scripts).

Runs the grid of :mod:`secureagg.bench` from an installed package: no checkout is needed. For
each configuration (protocol variant x DP mode x n x d x dropout) it estimates the time and
memory first (:func:`secureagg.cli.estimate.estimate_round`), skips with the reason what would
not fit ``--max-seconds`` / ``--max-memory``, measures the rest with ``--repeats`` rounds of
``secureagg.simulate`` (median and min) plus one round under tracemalloc for memory, and writes
``bench.json`` (format ``secureagg/bench/v1``), ``bench.csv`` and PNG plots into ``--out``.
See ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime as _dt
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from secureagg.bench import (
    DEFAULT_GRID,
    DP_MODES,
    FORMAT,
    PROTOCOLS,
    QUICK_GRID,
    BenchConfig,
    Estimate,
    build_grid,
    format_table,
    machine_info,
    make_config_aggregator,
    run_grid,
    write_csv,
    write_json,
)
from secureagg.bench.fit import scaling_fits
from secureagg.bench.floor import UnitCostCache
from secureagg.bench.grid import scaling_grid
from secureagg.bench.network import parse_network
from secureagg.bench.output import utc_now
from secureagg.bench.peers import PEERS, peer_factory, peer_unavailable
from secureagg.bench.targets import evaluate_targets
from secureagg.cli.common import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    _check_out,
    _CliError,
    _warn,
    seeded_warning,
)
from secureagg.cli.estimate import (
    Limits,
    estimate_round,
    format_bytes,
    format_seconds,
    limits_from_args,
)
from secureagg.errors import ConfigurationError, MissingDependencyError

__all__ = ["BENCH_DESCRIPTION", "BENCH_EPILOG", "add_bench_arguments"]

BENCH_DESCRIPTION = (
    "Measure what each protocol costs, in this process, from the installed package (no "
    "checkout needed). The grid: protocol variants (plain, secagg, secagg:malicious, secagg+, "
    "secagg+:malicious, ckks, ckks:pooled, paillier, paillier:pooled) x DP mode (none; "
    "distributed DP inside secagg/secagg+; "
    "central DP around any protocol) x n clients x d values per client x dropout fraction. "
    "Each configuration runs --repeats timed rounds of secureagg.simulate (every message "
    "through the codec) and one more, untimed, under tracemalloc for memory. Measured, per "
    "configuration (median and min over the repeats): the round's wall time; the slowest "
    "client's seconds and the server's seconds, in total and per stage; the HE key holder's "
    "seconds; setup seconds (key material, the round spec, building the parties); codec "
    "seconds; bytes up and down of the busiest client (and of the key holder); the peak of "
    "Python and numpy allocations during one round (tracemalloc: memory that C++ libraries "
    "such as TenSEAL allocate is not traced); and the error max|aggregate - plaintext sum of "
    "the survivors' updates| against the bound the aggregator states (with DP: the noise's "
    "tail bound at probability 2^-40, see docs/benchmarks.md). Units: seconds and bytes. "
    "Beside them, measured in the same run: the floor model of SecAgg/SecAgg+ (quantize, "
    "masks, key agreements, Shamir; unit costs timed in this process) and each figure's "
    "ratio to it; the server's own peak memory (a lone-server replay); and the peers, "
    "interleaved on the same data and dropouts: Flower's own SecAgg+ beside secagg+, bare "
    "TenSEAL on NVIDIA FLARE's default context beside ckks, phe beside paillier. "
    "Skipped, with the reason in the output and the JSON: configurations the library refuses "
    "(distributed DP wraps only secagg/secagg+; SecAgg parameters that cannot be met) and "
    "those whose estimate (secureagg.cli.estimate, an upper estimate: repeats + 1 rounds) "
    "exceeds --max-seconds or --max-memory. Default grid: n in {10, 100}, d in {1000, "
    "100000}, dropout in {0, 0.1}, 3 repeats, --dp none. --quick: n in {5, 10}, d 256, "
    "dropout 0.1, 1 repeat, every protocol and DP mode, about a minute on 2 cores. Dropped "
    "clients go silent at the 'masked' stage (SecAgg: the server removes their masks) or at "
    "the upload. Writes bench.json (format secureagg/bench/v1), bench.csv (one row per "
    "configuration) and, with matplotlib (pip install 'secureagg[plot]'), seconds_vs_n.png, "
    "seconds_vs_d.png, bytes_per_client.png, vs_floor.png and vs_peers.png; fits the scaling "
    "exponents, evaluates the project's performance targets (docs/benchmarks.md, Targets) on "
    "what it measured; prints a table at the end. Exits 1 if an "
    "error exceeds its bound, 2 on bad arguments. --deployed measures something else: our "
    "secagg+ round against Flower's own SecAgg+ on real Flower processes (see its options)."
)
DEPLOYED_HELP = (
    "--deployed: our secagg+ round (SecureFedAvg + secureagg_mod) against Flower 1.42's own "
    "SecAgg+ (SecAggPlusWorkflow + secaggplus_mod) on ONE real local deployment. It STARTS REAL "
    "PROCESSES: a Flower SuperLink and --nodes SuperNodes, listening on 127.0.0.1 only, and "
    "stops exactly those at the end (also on failure or Ctrl-C). Needs the flower extra: pip "
    "install 'secureagg[flower]'. The two apps (shipped in the package) run interleaved - per "
    "d: ours, Flower's, ... --repeats times - with the same n, d, updates and dropout, after "
    "one untimed warm-up run of each. Measured per round: wall seconds of the aggregation round "
    "only (in the ServerApp, first push to aggregate), bytes per client up/down (Flower's "
    "protobuf size of every message), per-stage wall seconds, our protocol compute per stage, "
    "the aggregate's error; reported as medians and the ratio ours/Flower. Defaults: --nodes "
    "5, --d 1000,100000, --repeats 3 (about 8-12 minutes on 2 cores); with --quick: n=4, "
    "d=1000, 1 repeat, no warm-up (about 2-3 minutes). Writes deployed.json into --out and "
    "prints a table; exits 1 if a round did not complete or its aggregate is wrong."
)
BENCH_EPILOG = (
    "examples:\n"
    "  secureagg bench --quick\n"
    "  secureagg bench --protocols secagg+,ckks --n 10,100,1000 --d 1e5 --dropout 0.1\n"
    "  secureagg bench --dp all --max-seconds 120 --out bench-results/today\n"
    "  secureagg bench --full --plan   # the scaling grid's estimates, nothing measured\n"
    "  secureagg bench --network up=20Mbit/s,down=100Mbit/s,latency=40ms\n"
    "  secureagg bench --render RESULTS_DIR --docs docs/benchmarks.md\n"
    "  secureagg bench --list          # the scripts under benchmarks/ (a checkout)\n"
    "  secureagg bench --deployed --quick --out deployed-results   # real Flower processes\n\n"
    "Figures in the table are medians; seconds ending in 'm' are milliseconds; 'error/bound'\n"
    "is max_abs_error / bound (below 1: within the bound)."
)


def add_bench_arguments(bench: argparse.ArgumentParser) -> None:
    """The options of ``secureagg bench``."""
    bench.add_argument("--list", action="store_true",
                       help="only list the benchmark scripts under benchmarks/ (a checkout) "
                            "and how to run them; nothing is measured")
    bench.add_argument("--dir", default=None,
                       help="list the scripts in this benchmark directory (implies --list)")
    bench.add_argument("--quick", action="store_true",
                       help="a tiny grid (n 5,10; d 256; dropout 0.1; 1 repeat; --dp all): "
                            "about a minute on 2 cores")
    bench.add_argument("--protocols", default="all", metavar="P,P",
                       help=f"comma-separated protocol variants, or 'all' (default): "
                            f"{', '.join(PROTOCOLS)}")
    bench.add_argument("--n", default=None, metavar="N,N",
                       help="numbers of clients, comma-separated, each >= 2 (default 10,100)")
    bench.add_argument("--d", default=None, metavar="D,D",
                       help="values per client, comma-separated, >= 1; 1e5 is accepted "
                            "(default 1000,100000)")
    bench.add_argument("--dropout", default=None, metavar="F,F",
                       help="fractions of clients that drop out, each in [0, 1) (default 0,0.1)")
    bench.add_argument("--repeats", type=int, default=None, metavar="R",
                       help="timed rounds per configuration, reported as median and min "
                            "(default 3; 1 with --quick)")
    bench.add_argument("--dp", choices=(*DP_MODES, "all"), default=None,
                       help="DP modes: none (default), distributed (inside secagg/secagg+ only), "
                            "central (server-side Gaussian, any protocol) or all (default with "
                            "--quick)")
    bench.add_argument("--max-seconds", default=None, metavar="S",
                       help="skip a configuration whose estimated time for all its rounds "
                            "exceeds S seconds ('none': no limit; default 3600)")
    bench.add_argument("--max-memory", default=None, metavar="SIZE",
                       help="skip a configuration whose estimated peak memory exceeds SIZE "
                            "(8G, 512M, bytes or 'none'; default 90%% of the available memory)")
    bench.add_argument("--out", default=None, metavar="DIR",
                       help="where to write bench.json, bench.csv and the plots (default "
                            "./bench-results/<UTC time>)")
    bench.add_argument("--no-plots", action="store_true", help="write JSON and CSV only")
    bench.add_argument("--no-memory", action="store_true",
                       help="skip the extra traced round per configuration (no peak memory)")
    bench.add_argument("--quiet", action="store_true",
                       help="no progress bar or per-configuration lines; only the table")
    bench.add_argument("--no-floor", action="store_true",
                       help="do not measure the floor model's unit costs (SecAgg/SecAgg+) nor "
                            "the ratios to it")
    bench.add_argument("--peers", default="auto", metavar="auto|none|P,P",
                       help="other implementations run on the same configuration, interleaved "
                            "with ours: flower (Flower's own SecAgg+, beside secagg+ without DP; "
                            "needs the flower extra), tenseal (bare TenSEAL on NVIDIA FLARE's "
                            "default context, symmetric as FLARE's clients hold the secret key, "
                            "beside ckks), tenseal-pk (the same with public-key encryption, "
                            "like ours), tenseal-same (bare TenSEAL on our own default "
                            "context, public-key: ours over it is what the protocol adds), "
                            "phe (python-paillier, beside "
                            "paillier). 'auto' (default): those whose library is installed; "
                            "'none': no peers")
    bench.add_argument("--peer-max-n", type=int, default=200, metavar="N",
                       help="run the peers only at configurations with at most N clients "
                            "(default 200; Flower's SecAgg+ costs about 30 s of compute per "
                            "round at n = 100 and grows faster than ours)")
    bench.add_argument("--full", action="store_true",
                       help="the scaling grid instead of a product: every protocol over n in "
                            "{10, 100, 1000} (d 1e5) and d in {1e3, 1e5, 1e6, 1e7} (n 10), "
                            "secagg+ also at n 5000, over d at n 100, at n 20 d 1e6, and with "
                            "DP; 3 repeats; what exceeds the limits is skipped, with its "
                            "estimate (see docs/benchmarks.md)")
    bench.add_argument("--plan", action="store_true",
                       help="measure nothing: print each configuration's estimated time and "
                            "memory and whether the limits skip it")
    bench.add_argument("--network", default=None, metavar="MODEL",
                       help="add an estimated deployed round time from a network MODEL (not a "
                            "measurement): up=RATE,down=RATE,latency=TIME[,server=RATE], e.g. "
                            "up=20Mbit/s,down=100Mbit/s,latency=40ms,server=1Gbit/s; see "
                            "docs/benchmarks.md")
    bench.add_argument("--render", default=None, metavar="RESULTS",
                       help="measure nothing: render RESULTS (a bench.json or its directory) as "
                            "Markdown tables on stdout, or into --docs")
    bench.add_argument("--docs", default=None, metavar="PAGE",
                       help="with --render: replace the generated part of this Markdown page "
                            "(e.g. docs/benchmarks.md), keeping the rest")
    bench.add_argument("--seed", type=int, default=None, metavar="S",
                       help="reproducible data, keys and masks (tests only: NOT secret, NOT "
                            "private; flagged in bench.json)")
    dep = bench.add_argument_group("deployed comparison on real Flower processes", DEPLOYED_HELP)
    dep.add_argument("--deployed", action="store_true",
                     help="run it (uses --quick, --d, --repeats, --out, --quiet and the options "
                          "below; no other grid option)")
    dep.add_argument("--nodes", type=int, default=None, metavar="N",
                     help="SuperNodes = clients, >= 3 (default 5; 4 with --quick)")
    dep.add_argument("--rounds", type=int, default=None, metavar="R",
                     help="secure rounds per flwr run (default 1)")
    dep.add_argument("--dropout-node", action="store_true", default=None,
                     help="the last node drops at its masked input (an error reply); both "
                          "servers must recover its masks")
    dep.add_argument("--stage-timeout", type=float, default=None, metavar="S",
                     help="seconds per protocol stage at most (default 300)")
    dep.add_argument("--poll", type=float, default=None, metavar="S",
                     help="seconds between our server's pulls of outstanding replies (0.2)")
    dep.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=None,
                     help="one untimed run of each app first (default: on; off with --quick)")
    dep.add_argument("--import-repeats", type=int, default=None, metavar="K",
                     help="fresh-process imports of each ClientApp module to time (default 5)")
    dep.add_argument("--tls", action="store_true", default=None,
                     help="TLS on every loopback link (throwaway certificates)")
    dep.add_argument("--log-dir", default=None, metavar="DIR",
                     help="keep the Flower processes' logs in DIR")


def _numbers(text: str, option: str, *, integer: bool, problems: list[str]) -> list[float]:
    values: list[float] = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = float(part)
        except ValueError:
            problems.append(f"{option}: expected comma-separated numbers, got {part!r}")
            continue
        if not math.isfinite(value):
            problems.append(f"{option}: {part!r} is not a finite number")
        elif integer and value != int(value):
            problems.append(f"{option}: expected whole numbers, got {part!r}")
        else:
            values.append(int(value) if integer else value)
    return values


def _grid(args: argparse.Namespace, problems: list[str]) -> tuple[list[BenchConfig], int]:
    if args.full:
        if args.quick or args.n or args.d or args.dropout or args.dp:
            problems.append("--full is its own grid: it does not combine with --quick, --n, "
                            "--d, --dropout or --dp")
        text = str(args.protocols).strip()
        chosen = list(PROTOCOLS) if text == "all" else [
            p.strip() for p in text.split(",") if p.strip()
        ]
        unknown = [p for p in chosen if p not in PROTOCOLS]
        if unknown:
            problems.append(f"unknown protocol {unknown[0]!r}; known: {', '.join(PROTOCOLS)}")
        repeats = DEFAULT_GRID.repeats if args.repeats is None else args.repeats
        if repeats < 1:
            problems.append(f"--repeats must be >= 1, got {repeats}")
        return scaling_grid(chosen), repeats
    base = QUICK_GRID if args.quick else DEFAULT_GRID
    ns = _numbers(args.n, "--n", integer=True, problems=problems) if args.n else list(base.ns)
    ds = _numbers(args.d, "--d", integer=True, problems=problems) if args.d else list(base.ds)
    drops = (_numbers(args.dropout, "--dropout", integer=False, problems=problems)
             if args.dropout else list(base.dropouts))
    repeats = base.repeats if args.repeats is None else args.repeats
    if repeats < 1:
        problems.append(f"--repeats must be >= 1, got {repeats}")
    text = str(args.protocols).strip()
    protocols = list(PROTOCOLS) if text == "all" else [
        p.strip() for p in text.split(",") if p.strip()
    ]
    dp = args.dp if args.dp is not None else ("all" if args.quick else "none")
    modes = list(DP_MODES) if dp == "all" else [dp]
    if args.seed is not None and args.seed < 0:
        problems.append(f"--seed must be a non-negative integer, got {args.seed}")
    try:
        configs = build_grid(
            protocols, ns=[int(n) for n in ns], ds=[int(d) for d in ds], dropouts=drops,
            dp_modes=modes,
        )
    except ConfigurationError as exc:
        problems.extend(exc.problems)
        configs = []
    return configs, repeats


def _estimator(limits: Limits) -> Any:
    def estimate(config: BenchConfig, parameters: Mapping[str, Any], rounds: int) -> Estimate:
        est = estimate_round(parameters, num_clients=config.n, dim=config.d,
                             dropout=config.dropout)
        seconds = est.seconds * rounds
        problems = []
        if limits.max_seconds is not None and seconds > limits.max_seconds:
            problems.append(
                f"estimated {format_seconds(seconds)} for {rounds} rounds, over --max-seconds "
                f"{format_seconds(limits.max_seconds)}"
            )
        if limits.max_bytes is not None and est.peak_bytes > limits.max_bytes:
            problems.append(
                f"estimated peak memory {format_bytes(est.peak_bytes)}, over the limit of "
                f"{format_bytes(limits.max_bytes)} ({limits.memory_source})"
            )
        return Estimate(
            seconds=seconds,
            peak_bytes=est.peak_bytes,
            problems=tuple(problems),
            model=f"secureagg.cli.estimate.estimate_round x {rounds} rounds (an upper estimate "
                  "on a 2-core x86-64 machine)",
        )

    return estimate


def _out_dir(out: str | None, name: str = "bench.json") -> Path:
    if out is None:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return Path.cwd() / "bench-results" / stamp
    path = _check_out(out)
    if (path / name).exists():
        raise _CliError(f"{path} already holds a benchmark ({name}); choose another --out")
    return path


def _cmd_bench(args: argparse.Namespace) -> int:
    """``secureagg bench``: measure the grid (or ``--list`` the scripts)."""
    if args.deployed:
        return _deployed(args)
    if given := [o for o, v in _DEPLOYED_ONLY.items() if getattr(args, v) is not None]:
        raise _CliError(f"{', '.join(given)} go(es) with --deployed")
    if args.list or args.dir is not None:  # --dir names the scripts' directory: a listing
        return _list_scripts(args)
    if args.render is not None:
        return _render(args)
    if args.docs is not None:
        raise _CliError("--docs goes with --render RESULTS (it writes a results page)")
    problems: list[str] = []
    configs, repeats = _grid(args, problems)
    limits = limits_from_args(args, problems)
    network = None
    if args.network is not None:
        try:
            network = parse_network(args.network)
        except ConfigurationError as exc:
            problems.extend(exc.problems)
    peer_names = _peer_names(args.peers, problems)
    if args.peer_max_n < 2:
        problems.append(f"--peer-max-n must be >= 2, got {args.peer_max_n}")
    if problems:
        raise ConfigurationError(problems)
    if args.plan:
        return _plan(configs, repeats, _estimator(limits), memory=not args.no_memory)
    out = _out_dir(args.out)
    if args.seed is not None:
        _warn(seeded_warning(args.seed))
    started = utc_now()
    entries = run_grid(
        configs,
        repeats=repeats,
        estimate=_estimator(limits),
        seed=args.seed,
        memory=not args.no_memory,
        stream=sys.stderr,
        quiet=args.quiet,
        floor_cache=None if args.no_floor else UnitCostCache(),
        peers=peer_factory(peer_names, max_n=args.peer_max_n) if peer_names else None,
        network=network,
    )
    out.mkdir(parents=True, exist_ok=True)
    plots: list[str] = []
    plot_note = None
    if args.no_plots:
        plot_note = "--no-plots"
    else:
        from secureagg.bench.plots import write_plots

        try:
            plots = [p.name for p in write_plots(entries, out)]
        except MissingDependencyError as exc:
            plot_note = " ".join(str(exc).split())
    document = {
        "format": FORMAT,
        "created_utc": started,
        "finished_utc": utc_now(),
        "argv": list(getattr(args, "argv", [])),
        "seeded": args.seed is not None,
        "seed": args.seed,
        "machine": machine_info(),
        "grid": {
            "protocols": sorted({c.protocol for c in configs}, key=PROTOCOLS.index),
            "dp": sorted({c.dp for c in configs}, key=DP_MODES.index),
            "n": sorted({c.n for c in configs}),
            "d": sorted({c.d for c in configs}),
            "dropout": sorted({c.dropout for c in configs}),
            "repeats": repeats,
            "quick": bool(args.quick),
            "memory_round": not args.no_memory,
        },
        "limits": limits.to_dict(),
        "units": {"time": "seconds", "size": "bytes",
                  "peak_memory": "tracemalloc peak of one round (Python and numpy allocations)"},
        "plots": plots,
        "plots_note": plot_note,
        "network": network.to_dict() if network is not None else None,
        "peers": sorted(peer_names),
        "configurations": entries,
        "scaling": scaling_fits(entries),
        "targets": evaluate_targets(entries),
        "skipped": [
            {"id": e["id"], "label": e["label"], "reason": e["reason"]}
            for e in entries if e["status"] != "measured"
        ],
    }
    write_json(out / "bench.json", document)
    write_csv(out / "bench.csv", entries)
    print("\n".join(format_table(entries)))
    measured = sum(1 for e in entries if e["status"] == "measured")
    print(f"\n{measured} of {len(entries)} configurations measured; written to {out} "
          f"(bench.json, bench.csv{''.join(', ' + p for p in plots)})")
    if plot_note is not None and not args.no_plots:
        _warn(f"no plots: {plot_note}")
    if args.seed is not None:
        print("WARNING: seeded run - data, keys and masks are reproducible, NOT secret")
    if any(e["status"] == "measured" and not e["error"]["within_bound"] for e in entries):
        print("secureagg: error: an aggregate's error exceeds the bound its aggregator states "
              "(marked '!' in the table)", file=sys.stderr)
        return EXIT_CHECK_FAILED
    return EXIT_OK


_DEPLOYED_ONLY = {"--nodes": "nodes", "--rounds": "rounds", "--dropout-node": "dropout_node",
                  "--stage-timeout": "stage_timeout", "--poll": "poll", "--warmup": "warmup",
                  "--import-repeats": "import_repeats", "--tls": "tls", "--log-dir": "log_dir"}


def _deployed(args: argparse.Namespace) -> int:
    """``secureagg bench --deployed``: ours vs Flower's SecAgg+ on real local Flower processes."""
    from secureagg.bench import deployed
    from secureagg.bench.deployed_summary import format_report

    grid_only = {"--list": args.list, "--dir": args.dir, "--n": args.n, "--dropout": args.dropout,
                 "--dp": args.dp, "--max-seconds": args.max_seconds,
                 "--max-memory": args.max_memory, "--no-plots": args.no_plots,
                 "--no-memory": args.no_memory, "--no-floor": args.no_floor, "--full": args.full,
                 "--plan": args.plan, "--network": args.network, "--render": args.render,
                 "--docs": args.docs, "--seed": args.seed,
                 "--protocols": args.protocols != "all", "--peers": args.peers != "auto",
                 "--peer-max-n": args.peer_max_n != 200}
    problems = [f"{o} is an option of the grid, not of --deployed"
                for o, v in grid_only.items() if v not in (None, False)]
    base = deployed.QUICK_SETTINGS if args.quick else deployed.DEFAULT_SETTINGS
    dims = (tuple(int(d) for d in _numbers(args.d, "--d", integer=True, problems=problems))
            if args.d else base.dims)
    values = {v: getattr(args, v) for v in _DEPLOYED_ONLY.values() if getattr(args, v) is not None}
    if "log_dir" in values:
        values["log_dir"] = _check_out(values["log_dir"], option="--log-dir")
    settings = dataclasses.replace(base, dims=dims, **values, **(
        {} if args.repeats is None else {"repeats": args.repeats}))
    problems += settings.problems()
    if problems:
        raise ConfigurationError(problems)
    deployed.require_flower()
    out = _out_dir(args.out, deployed.RESULT_FILE)
    report = deployed.run_deployed(settings, argv=list(getattr(args, "argv", [])),
                                   log=None if args.quiet else _progress)
    write_json(out / deployed.RESULT_FILE, report)
    print("\n".join(format_report(report)))
    print(f"\nresults: {out / deployed.RESULT_FILE} ({report['total_seconds']:.0f} s)")
    if report["failures"]:
        print("secureagg: error: " + "; ".join(report["failures"]), file=sys.stderr)
        return EXIT_CHECK_FAILED
    return EXIT_OK


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _plan(configs: list[BenchConfig], repeats: int, estimate: Any, *, memory: bool) -> int:
    rounds = repeats + (1 if memory else 0)
    total = 0.0
    print(f"{'configuration':<52} {'est. time':>10} {'est. peak':>10}  plan")
    for config in configs:
        agg, why = make_config_aggregator(config)
        if agg is None:
            print(f"{config.label:<52} {'-':>10} {'-':>10}  skip: {why}")
            continue
        est = estimate(config, agg.parameters(), rounds)
        plan = "skip: " + "; ".join(est.problems) if est.problems else "measure"
        if not est.problems:
            total += est.seconds
        print(f"{config.label:<52} {format_seconds(est.seconds):>10} "
              f"{format_bytes(est.peak_bytes):>10}  {plan}")
    print(f"\nestimated total for the measured configurations: {format_seconds(total)} "
          f"({rounds} rounds each; peers not included)")
    return EXIT_OK


def _peer_names(text: str, problems: list[str]) -> set[str]:
    value = str(text).strip().lower()
    if value == "none":
        return set()
    if value == "auto":
        return {name for name in PEERS if peer_unavailable(name) is None}
    names = {p.strip() for p in value.split(",") if p.strip()}
    for name in sorted(names):
        if name not in PEERS:
            problems.append(f"--peers: unknown peer {name!r}; known: {', '.join(PEERS)}")
        elif (why := peer_unavailable(name)) is not None:
            problems.append(f"--peers {name}: {why}")
    return names


def _render(args: argparse.Namespace) -> int:
    from secureagg.bench.report import render_into

    results = Path(args.render)
    if not results.exists():
        raise _CliError(f"--render {results}: no such file or directory")
    docs = Path(args.docs) if args.docs is not None else None
    text = render_into(results, docs)
    if docs is None:
        print(text, end="")
    else:
        print(f"wrote the generated part of {docs} from {results}")
    return EXIT_OK


# ---------------------------------------------------------------------------- --list


def _benchmark_dirs(explicit: str | None) -> list[Path]:
    if explicit is not None:
        if not explicit.strip():
            raise _CliError("--dir must not be empty; give the benchmark directory")
        path = Path(explicit)
        if not path.is_dir():
            raise _CliError(f"--dir {path} is not a directory")
        return [path]
    candidates = [Path.cwd() / "benchmarks", Path(__file__).resolve().parent.parent / "benchmarks"]
    seen: list[Path] = []
    for c in candidates:
        if c.is_dir() and c.resolve() not in [s.resolve() for s in seen]:
            seen.append(c)
    return seen


def _list_scripts(args: argparse.Namespace) -> int:
    dirs = _benchmark_dirs(args.dir)
    scripts = sorted(
        {
            p.resolve()
            for d in dirs
            if d.is_dir()
            for p in d.glob("*.py")
            if not p.name.startswith("_")
        }
    )
    if not scripts:
        where = ", ".join(str(d) for d in dirs) or "benchmarks/ (not found)"
        print(
            f"no benchmark scripts found in {where}.\n"
            "Benchmarks live in the source repository under benchmarks/; run them from a "
            "checkout. Nothing was measured."
        )
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
