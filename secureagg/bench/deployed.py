"""``secureagg bench --deployed``: our secagg+ round against Flower 1.42's own SecAgg+ on ONE real
local deployment (issue 13; in the package since issue 15).

:func:`run_deployed` starts a :class:`secureagg.flower.processes.Deployment` - a real SuperLink
and ``nodes`` SuperNodes as Flower's own processes on 127.0.0.1 - and submits two Flower apps to
it with ``flwr run``, interleaved (for each d: ours, Flower's, ours, Flower's, ... ``repeats``
times), with the same n, d, per-node updates and dropout; it stops exactly the processes it
started, also on failure. The apps ship in the package (``deployed_apps/ours`` and
``deployed_apps/flower``, each a ``pyproject.toml`` naming a module of this package):

(a) :mod:`secureagg.bench.deployed_ours`: ``SecureFedAvg("secagg+", options={"clip": 1.0})`` on
    the server, ``ClientApp(mods=[secureagg_mod])`` around a train function that returns the
    received weights plus a fixed update of dimension d (no training: the aggregation is
    measured);
(b) :mod:`secureagg.bench.deployed_flower`: Flower's ``SecAggPlusWorkflow`` inside
    ``DefaultWorkflow`` (legacy API, Flower's ``FedAvg``, no evaluation round) and
    ``secaggplus_mod`` on a NumPyClient whose ``fit`` returns the same update.

Parameters matched (:func:`matched_parameters`): ours k (neighbours, the node itself not counted)
and t (shares needed) are ``make_aggregator("secagg+", num_clients=n, clip=1.0)``'s; Flower gets
``num_shares = k + 1`` (its neighbourhood counts the node itself) and
``reconstruction_threshold = t``; ``clipping_range = 1.0`` (= our clip), 2^22 quantization
levels in a 2^32 ring (Flower's defaults), ``max_weight = 1``; every coordinate in [-0.1, 0.1].

Before the measured runs, one untimed run of each app (``warmup``): the first run of an app on
fresh SuperNodes installs its bundle there, which neither side should pay. Dropout
(``dropout_node``): the last node answers its masked-input message (ours: 3rd step, stage
``masked``; Flower: ``collect_masked_vectors``) with an error reply, so both servers must recover
its pairwise masks from the others' shares.

Measured per round (:mod:`secureagg.bench.deployed_meter`, the same for both apps): the **wall
seconds** of the aggregation round only (``time.perf_counter`` in the ServerApp process, from the
round's first push to the aggregate; ours' once-per-run hello is not in it); **bytes per client**
up and down as ``message_to_proto(msg).ByteSize()`` of every Flower message pushed to / pulled
from a node (metadata and content), mean over the nodes; per-stage wall seconds; for ours also
the engine's per-stage compute (server, slowest node); the error of the new global model against
the known mean update. :mod:`secureagg.bench.deployed_summary` reduces them to medians and the
ratios ours / Flower's and judges the targets.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secureagg.bench.deployed_summary import IMPLS, judge, summarize
from secureagg.bench.output import machine_info, utc_now
from secureagg.errors import ConfigurationError, MissingDependencyError

__all__ = [
    "APP_MODULES", "CLIP", "DEFAULT_SETTINGS", "DEFINITIONS", "FORMAT", "QUICK_SETTINGS",
    "RESULT_FILE", "DeployedSettings", "app_dir", "assemble_report", "matched_parameters",
    "report_failures", "require_flower", "run_config", "run_deployed",
]

FORMAT = "secureagg/bench-deployed/v1"
#: the file ``secureagg bench --deployed`` writes into ``--out``
RESULT_FILE = "deployed.json"
CLIP = 1.0
#: implementation -> the package module its app directory names (ServerApp and ClientApp)
APP_MODULES = {"ours": "secureagg.bench.deployed_ours", "flower": "secureagg.bench.deployed_flower"}
#: a round whose aggregate is further than this from the known mean is reported as wrong
ERROR_TOLERANCE = 1e-5
MAX_NODES = 64  # every node is a SuperNode process (plus one process per message) on this host


@dataclass(frozen=True)
class DeployedSettings:
    """What one deployed comparison runs. ``nodes``: SuperNodes = clients; ``dims``: values per
    client, one measurement series each; ``repeats``: interleaved (ours, Flower's) pairs per d;
    ``rounds``: rounds per ``flwr run``; ``dropout_node``: the last node drops at its masked
    input; ``stage_timeout``: seconds per stage at most; ``poll``: seconds between our server's
    pulls; ``warmup``: one untimed run of each app first; ``import_repeats``: fresh-process
    imports of each ClientApp module to time (0: none); ``tls``: TLS on every loopback link;
    ``log_dir``: keep the Flower processes' logs there."""

    nodes: int = 5
    dims: tuple[int, ...] = (1000, 100000)
    repeats: int = 3
    rounds: int = 1
    dropout_node: bool = False
    stage_timeout: float = 300.0
    poll: float = 0.2
    warmup: bool = True
    import_repeats: int = 5
    tls: bool = False
    log_dir: Path | None = None
    quick: bool = False

    @property
    def dropped(self) -> list[int]:
        """The partitions that drop out: the last node with ``dropout_node``, else none."""
        return [self.nodes - 1] if self.dropout_node else []

    def problems(self) -> list[str]:
        """Every problem with these settings (empty: they can run)."""
        found = []
        if isinstance(self.nodes, bool) or not isinstance(self.nodes, int) or not (
                3 <= self.nodes <= MAX_NODES):
            found.append(f"--nodes must be an integer in [3, {MAX_NODES}] (each is a SuperNode "
                         f"process on this machine), got {self.nodes!r}")
        if not self.dims:
            found.append("--d must name at least one dimension")
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.dims):
            found.append(f"--d values must be integers >= 1, got {list(self.dims)}")
        if len(set(self.dims)) != len(self.dims):
            found.append(f"--d lists a dimension twice: {list(self.dims)}")
        for name, value in (("--repeats", self.repeats), ("--rounds", self.rounds)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                found.append(f"{name} must be an integer >= 1, got {value!r}")
        if not self.stage_timeout > 0:
            found.append(f"--stage-timeout must be > 0 seconds, got {self.stage_timeout!r}")
        if not 0 < self.poll <= max(self.stage_timeout, 0):
            found.append(f"--poll must be in (0, --stage-timeout] seconds, got {self.poll!r}")
        if isinstance(self.import_repeats, bool) or not isinstance(self.import_repeats, int) or (
                self.import_repeats < 0):
            found.append(f"--import-repeats must be an integer >= 0, got {self.import_repeats!r}")
        if not found:
            try:
                params = matched_parameters(self.nodes)
            except ConfigurationError as exc:
                found.extend(exc.problems)
            else:
                t = params["ours"]["threshold_t"]
                if t < 2:
                    found.append(f"secagg+ at n={self.nodes} needs t={t} share(s); Flower's "
                                 "SecAgg+ reads a threshold of 1 as 'all shares': use more nodes")
                if self.dropout_node and self.nodes - 1 < t:
                    found.append(f"--dropout-node leaves {self.nodes - 1} nodes, fewer than the "
                                 f"t={t} shares secagg+ needs at n={self.nodes}")
        return found

    def validate(self) -> DeployedSettings:
        """``self``, or :class:`ConfigurationError` listing every problem."""
        found = self.problems()
        if found:
            raise ConfigurationError(found)
        return self


DEFAULT_SETTINGS = DeployedSettings()
#: n=4, d=1000, 1 repeat, 1 round, no warm-up: about 2-3 minutes on 2 cores (2:07 measured)
QUICK_SETTINGS = DeployedSettings(nodes=4, dims=(1000,), repeats=1, warmup=False, quick=True)

DEFINITIONS = {
    "wall_seconds": "ServerApp perf_counter from the first push of the round's messages (group "
                    "id = round) to the aggregate: Flower - SecAggPlusWorkflow returned; ours - "
                    "SecureFedAvg recorded the round (on_round). Ours' once-per-run hello before "
                    "round 1 is not included",
    "bytes_per_client": "message_to_proto(msg).ByteSize() (whole Flower message, metadata + "
                        "content) of every message pushed to / reply pulled from a node in the "
                        "round, per node, mean over the round's nodes; counted by one wrapper "
                        "around the Grid's push_messages and pull_messages in both apps",
    "stage_wall_seconds": "from one push batch (a stage) to the next push batch, or to the "
                          "aggregate for the last",
    "ours_stages": "the engine's per-stage record: seconds (wall from the stage's first send "
                   "until its last answer/deadline), server_seconds (server party compute), "
                   "client_seconds_max (slowest node's protocol compute as it reports it, "
                   "training excluded); compute = server + client max",
    "protocol_payload": "ours: the engine's encoded protocol messages (stages' bytes_up / "
                        "bytes_down summed) / n, without Flower's message framing; the round "
                        "spec is in it, the training content (arrays) is not",
    "meter_overhead_seconds": "time the byte counting itself took inside the round (not "
                              "subtracted)",
    "ratio_ours_over_flower_wall_paired": "ours / Flower round wall within each interleaved "
                                          "pair (same repeat and round)",
    "clientapp_import": "wall seconds of a fresh python process importing the app's module "
                        "(both import the secureagg package, in which they ship; ours also "
                        "secureagg.flower.mod), outside the deployment",
}


def require_flower() -> None:
    """Raise :class:`MissingDependencyError` (the ``flower`` extra) unless Flower 1.42's
    deployment engine can run here."""
    if importlib.util.find_spec("flwr") is None:
        raise MissingDependencyError(
            "flwr", "flower", purpose="secureagg bench --deployed (a real SuperLink and "
            "SuperNodes on 127.0.0.1)")
    from secureagg.bench.flower_peer import flower_available

    why = flower_available()
    if why is not None:
        raise ConfigurationError(f"secureagg bench --deployed: {why}")


def app_dir(impl: str) -> Path:
    """The app directory of ``impl`` (``"ours"`` or ``"flower"``) inside the installed package:
    what ``flwr run`` submits; its ``pyproject.toml`` names the module in :data:`APP_MODULES`."""
    if impl not in APP_MODULES:
        raise ConfigurationError(f"unknown implementation {impl!r}; known: {', '.join(IMPLS)}")
    from importlib.resources import as_file, files

    with as_file(files("secureagg.bench") / "deployed_apps" / impl) as path:
        found = Path(path)
    if not (found / "pyproject.toml").is_file():
        raise ConfigurationError(f"the installed package lacks {found / 'pyproject.toml'}; "
                                 "reinstall secureagg")
    return found


def matched_parameters(n: int) -> dict[str, Any]:
    """Our secagg+ (k, t) at n and Flower's SecAggPlusWorkflow arguments matched to them."""
    import secureagg as sa

    ours = sa.make_aggregator("secagg+", num_clients=n, clip=CLIP).parameters()
    k, t = int(ours["degree"]), int(ours["threshold"])
    num_shares = k + 1
    # What SecAggPlusWorkflow.setup_stage does with it: an even num_shares below n is raised by
    # one (with a warning); the neighbourhood is offsets -s//2..s//2 on a shuffled ring.
    effective = num_shares + 1 if num_shares != n and num_shares % 2 == 0 else num_shares
    return {
        "ours": {"degree_k": k, "threshold_t": t, "bits": ours["bits"], "clip": CLIP,
                 "scale": ours["scale"], "max_weight": ours["max_weight"]},
        "flower": {"num_shares": num_shares, "reconstruction_threshold": t,
                   "effective_num_shares": effective,
                   "neighbourhood_including_self": min(n, 2 * (effective >> 1) + 1),
                   "clipping_range": CLIP, "quantization_range": 2**22,
                   "modulus_range": 2**32, "max_weight": 1.0},
        "how": (f"Flower's num_shares counts the node itself (neighbours at ring offsets "
                f"-s/2..s/2, one share kept by the node, as ours keeps one of its own), so "
                f"num_shares = k + 1 = {num_shares} and reconstruction_threshold = t = {t}; "
                f"ours: k = {k} neighbours, t = {t} shares. Each node shares its secrets among "
                f"{k + 1} parties (neighbours and itself) in both."),
    }


def run_config(impl: str, *, n: int, d: int, rounds: int, dropped: Sequence[int],
               params: Mapping[str, Any], result: Path, timeout: float, poll: float
               ) -> dict[str, Any]:
    """The ``--run-config`` of one ``flwr run`` of ``impl`` (keys: the app module's docstring)."""
    config: dict[str, Any] = {
        "result-path": str(result), "num-nodes": n, "dim": d, "rounds": rounds,
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
    return config


def _run_once(dep: Any, impl: str, config: dict[str, Any], *, rounds: int, timeout: float
              ) -> dict[str, Any]:
    outcome = dep.run(app_dir(impl), run_config=config, timeout=timeout * 4 * rounds + 120)
    outcome.check()
    data: dict[str, Any] = json.loads(Path(config["result-path"]).read_text(encoding="utf-8"))
    data["flwr_run_seconds"] = outcome.seconds
    return data


def import_seconds(repeats: int, workdir: Path) -> dict[str, Any]:
    """Wall seconds of a fresh Python process that imports each app's module (interleaved,
    ``repeats`` times each): the app's share of what a node pays for every message, since a
    SuperNode starts a new flwr-clientapp process per message."""
    code = ("import sys, time; t = time.perf_counter(); __import__(sys.argv[1]); "
            "print(time.perf_counter() - t)")
    found: dict[str, dict[str, list[float]]] = {}
    for _ in range(repeats):
        for impl, module in APP_MODULES.items():
            t0 = time.perf_counter()
            done = subprocess.run(  # noqa: S603 - this interpreter, our fixed code and module
                [sys.executable, "-c", code, module], capture_output=True,
                                  text=True, check=True, cwd=workdir, timeout=120)
            entry = found.setdefault(impl, {"process": [], "import": []})
            entry["process"].append(time.perf_counter() - t0)
            entry["import"].append(float(done.stdout.strip().splitlines()[-1]))
    return {impl: {"process_seconds_median": statistics.median(v["process"]),
                   "import_seconds_median": statistics.median(v["import"]), "repeats": repeats}
            for impl, v in found.items()}


def report_failures(report: Mapping[str, Any]) -> list[str]:
    """The measured rounds that did not complete or whose aggregate is wrong (over
    :data:`ERROR_TOLERANCE` from the known mean), one line each; empty when all are right."""
    bad = []
    for d, runs in report["runs"].items():
        for run in runs:
            for r in run["rounds"]:
                error = r.get("max_abs_error")
                if r["status"] != "ok" or error is None or error > ERROR_TOLERANCE:
                    bad.append(f"d={d} repeat {run.get('repeat')} {run['impl']} round "
                               f"{r['round']}: status {r['status']}, max error {error}")
    return bad


def run_deployed(settings: DeployedSettings, *, log: Callable[[str], None] | None = None,
                 argv: Sequence[str] = ()) -> dict[str, Any]:
    """Run the comparison (see the module docstring) and return its report (format
    :data:`FORMAT`); ``log`` gets progress lines. Starts and stops real Flower processes."""
    settings.validate()
    require_flower()
    from secureagg.flower.processes import Deployment

    t0 = time.perf_counter()

    def say(text: str) -> None:
        if log is not None:
            log(f"[{time.perf_counter() - t0:7.1f}s] {text}")

    import flwr

    n, dims, s = settings.nodes, list(settings.dims), settings
    params = matched_parameters(n)
    dropped = s.dropped
    machine = {**machine_info(), "flwr": flwr.__version__}
    created = utc_now()
    runs: dict[int, list[dict[str, Any]]] = {d: [] for d in dims}
    warmup: list[dict[str, Any]] = []
    say(f"n={n}, d={dims}, {s.repeats} repeat(s) x {s.rounds} round(s), dropout "
        f"{dropped or 'none'}; ours k={params['ours']['degree_k']} t="
        f"{params['ours']['threshold_t']}; Flower num_shares={params['flower']['num_shares']} "
        f"reconstruction_threshold={params['flower']['reconstruction_threshold']}")
    with tempfile.TemporaryDirectory(prefix="secureagg-deployed-") as tmp, Deployment(
            n, node_configs=[{"bench-drop": i in dropped} for i in range(n)], tls=s.tls,
            log_dir=s.log_dir) as dep:
        say(f"deployment up: SuperLink {dep.address}, {n} SuperNodes (127.0.0.1)")

        def once(impl: str, d: int, rounds: int, tag: str) -> dict[str, Any]:
            config = run_config(impl, n=n, d=d, rounds=rounds, dropped=dropped, params=params,
                                result=Path(tmp) / f"{tag}-{impl}.json",
                                timeout=s.stage_timeout, poll=s.poll)
            return _run_once(dep, impl, config, rounds=rounds, timeout=s.stage_timeout)

        if s.warmup:  # each app's first run on fresh SuperNodes installs its bundle there
            for impl in IMPLS:
                say(f"warm-up (not counted): {impl}, d={min(dims)} ...")
                data = once(impl, min(dims), 1, "warmup")
                warmup.append({"impl": impl, "flwr_run_seconds": data["flwr_run_seconds"],
                               "wall_seconds": data["rounds"][0]["meter"]["wall_seconds"]})
        for d in dims:
            for rep in range(s.repeats):
                for impl in IMPLS:
                    say(f"d={d} repeat {rep + 1}/{s.repeats}: {impl} ...")
                    data = once(impl, d, s.rounds, f"d{d}-r{rep}")
                    data["repeat"] = rep
                    runs[d].append(data)
                    for r in data["rounds"]:
                        m = r["meter"]
                        wall = m["wall_seconds"]
                        say(f"  {impl} round {r['round']}: {r['status']}, wall "
                            f"{'-' if wall is None else f'{wall:.1f}'} s, per client up "
                            f"{m['bytes_per_client']['up_mean']:.0f} B down "
                            f"{m['bytes_per_client']['down_mean']:.0f} B, survivors "
                            f"{r['survivors']}, max error {r['max_abs_error']}; flwr run "
                            f"{data['flwr_run_seconds']:.1f} s")
        say("stopping the deployment ...")
    imports: dict[str, Any] = {}
    if s.import_repeats:
        say("timing a fresh import of each ClientApp module ...")
        with tempfile.TemporaryDirectory(prefix="secureagg-import-") as tmp:
            imports = import_seconds(s.import_repeats, Path(tmp))
    with contextlib.suppress(OSError, AttributeError):
        machine["loadavg_at_end"] = list(os.getloadavg())
    return assemble_report(settings, runs, params=params, machine=machine, warmup=warmup,
                           imports=imports, created=created, argv=argv,
                           seconds=time.perf_counter() - t0)


def assemble_report(settings: DeployedSettings, runs: Mapping[int, list[dict[str, Any]]], *,
                    params: Mapping[str, Any], machine: Mapping[str, Any],
                    warmup: Sequence[Mapping[str, Any]], imports: Mapping[str, Any],
                    created: str, argv: Sequence[str], seconds: float) -> dict[str, Any]:
    """The report (format :data:`FORMAT`) from what the ServerApps wrote (``runs``: d -> the
    runs of that d, each with ``impl``, ``repeat`` and ``rounds``) - no process is started."""
    s, n = settings, settings.nodes
    dropped = s.dropped
    summary = {d: summarize(runs[d], n) for d in runs}
    report: dict[str, Any] = {
        "format": FORMAT, "benchmark": "deployed", "issue": 13, "created_utc": created,
        "finished_utc": utc_now(), "argv": list(argv), "quick": bool(s.quick),
        "machine": dict(machine), "total_seconds": seconds,
        "configuration": {
            "nodes": n, "dims": list(runs), "repeats": s.repeats, "rounds": s.rounds,
            "dropout_nodes": len(dropped), "dropped_partitions": dropped,
            "drop_at": "the masked-input message (ours: stage 'masked', 3rd step; Flower: "
                       "'collect_masked_vectors'), answered with an error reply",
            "tls": s.tls, "stage_timeout_seconds": s.stage_timeout, "ours_poll_seconds": s.poll,
            "order": "one deployment; per d, per repeat: ours then Flower's",
            "warmup": list(warmup) if s.warmup else "none",
            "updates": "node p: uniform in [-0.1, 0.1) from the library's AES-CTR keystream "
                       "under the fixed seed 2024, context bench/deployed/<p>, as float32 "
                       "(fixed benchmark data, not private), the same every round, weight 1; "
                       "initial global model zeros(d) float32",
            "ours_options": {"clip": CLIP}, "parameters": dict(params),
            "apps": {impl: f"{APP_MODULES[impl]} (deployed_apps/{impl})" for impl in IMPLS},
        },
        "definitions": DEFINITIONS,
        "summary": {str(d): v for d, v in summary.items()},
        "targets": judge(summary, n),
        "clientapp_import": dict(imports),
        "runs": {str(d): v for d, v in runs.items()},
    }
    report["failures"] = report_failures(report)
    return report
