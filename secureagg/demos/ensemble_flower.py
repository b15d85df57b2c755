"""``secureagg demo ensemble --engine flower``: the private-ensemble demo on real Flower processes.

The same demo as :mod:`secureagg.demos.ensemble` (the same digits split, teachers, querier,
noise calibration, student, table and run directory), with every party on its own SuperNode:

- each SuperNode holds one party's data (its ``partition-id``) and, at its first vote message,
  trains that party's teacher with the demo's unchanged ``train_teacher`` - all nodes at once,
  each in its own process - and keeps it on the node (:func:`~secureagg.flower.ensemble.
  vote_node` behind :func:`~secureagg.flower.secureagg_mod`);
- the ServerApp is the querier (:func:`run_querier`): per batch of its public points it runs
  one SecAgg+ round over the Grid (:meth:`~secureagg.ensemble.aggregate.SecureVoteAggregator.
  answer_deployed` with :class:`~secureagg.flower.ensemble.FlowerVotes`) and sees only the
  noisy histograms; it trains the student and writes the run directory;
- this process (:func:`run_ensemble_flower_demo`) starts a SuperLink and one SuperNode per party
  on 127.0.0.1 (:class:`~secureagg.flower.processes.Deployment`), submits the app with ``flwr
  run``, stops every process it started, and then adds the *reference* figures that no party of
  a real deployment could compute: the same teachers trained here one after the other (the
  sequential training time, the teachers' and the non-private ensemble's accuracy, secure
  ensemble inference over them in this process). The nodes' teachers are those teachers, bit for
  bit: a teacher seed (``--seed``, else a fresh random one) fixes every teacher's initialisation
  and data order here and on its node; it is given to the nodes only, in their node config. It
  seeds no privacy mechanism (the demo's teachers train without DP-SGD); the protocol's keys,
  masks and noise stay fresh unless ``--seed`` (NOT private).

Run config (``flwr run ... --run-config``): ``settings`` (JSON: parties, queries, batch,
epsilon, delta, protocol, seed), ``run-dir``, ``train-deadline`` (seconds of the stage where the
nodes vote - and at the first batch train) and ``stage-deadline`` (every other stage).
"""

from __future__ import annotations

import json
import math
import secrets
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from secureagg.errors import ConfigurationError
from secureagg.flower.mod import secureagg_mod

try:
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
except ImportError as exc:  # pragma: no cover - the flower extra is missing
    raise ImportError("the Flower demo needs Flower: pip install 'secureagg[flower]'") from exc

__all__ = ["APP_DIR", "FLOWER_DEFAULTS", "client_app", "run_ensemble_flower_demo",
           "run_querier", "server_app", "settings_from_json", "settings_to_json"]

#: The directory ``flwr run`` submits (its pyproject.toml names the apps below).
APP_DIR = Path(__file__).with_name("ensemble_flower_app")
#: Small enough for a 2-core machine: 8 SuperNodes, 30 queries in 2 batches (2 SecAgg+ rounds).
FLOWER_DEFAULTS: dict[str, Any] = {"parties": 8, "queries": 30, "batch": 15}
#: The node-config key carrying the teacher seed (module docstring).
TEACHER_SEED = "ensemble-teacher-seed"
_SETTINGS = ("parties", "queries", "batch", "epsilon", "delta", "protocol", "seed")

# torch, sklearn and the demo's data are imported only where a node votes or the querier runs:
# every other message a SuperNode receives starts a ClientApp process that needs only the
# protocol step.


def settings_to_json(settings: dict[str, Any]) -> str:
    return json.dumps({k: settings[k] for k in _SETTINGS}, sort_keys=True)


def settings_from_json(text: str) -> dict[str, Any]:
    try:
        values = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"run config 'settings' is not JSON: {exc}") from None
    if not isinstance(values, dict) or set(values) != set(_SETTINGS):
        raise ConfigurationError(f"run config 'settings' must have exactly {list(_SETTINGS)}")
    return values


def _node(context: Any) -> Any:
    """This node's party: its own part of the digits split and the demo's teacher code."""
    from secureagg.demos.ensemble import (
        DEFAULTS,
        NUM_CLASSES,
        _loaders,
        _split,
        make_teacher,
        train_teacher,
    )
    from secureagg.ensemble.votes import VoteSpec
    from secureagg.flower.ensemble import VoteNode

    settings = settings_from_json(str(context.run_config["settings"]))
    party = int(context.node_config["partition-id"])
    data = _split(int(settings["parties"]), DEFAULTS["test"], DEFAULTS["public"])
    seed = context.node_config.get(TEACHER_SEED)
    return VoteNode(make_teacher, train_teacher, _loaders([data["parts"][party]])[0],
                    VoteSpec("one-hot", NUM_CLASSES), seed=None if seed is None else int(seed))


client_app = ClientApp(mods=[secureagg_mod])


@client_app.train()
def train(message: Any, context: Any) -> Any:
    """This node's votes on a batch (and, at its first, its teacher's training)."""
    from secureagg.flower.ensemble import vote_node

    return vote_node(_node)(message, context)


server_app = ServerApp()


@server_app.main()
def main(grid: Any, context: Any) -> None:
    """The querier: every batch over ``grid``; the run directory is its record."""
    cfg = context.run_config
    run_querier(grid, settings_from_json(str(cfg["settings"])), out=Path(str(cfg["run-dir"])),
                train_deadline=float(cfg.get("train-deadline", 300.0)),
                stage_deadline=float(cfg.get("stage-deadline", 30.0)))


def run_querier(grid: Any, settings: dict[str, Any], *, out: Path, train_deadline: float,
                stage_deadline: float) -> dict[str, Any]:
    """The querier's side on a Flower ``grid``: its batches answered on the nodes, its student,
    and the run directory (without the reference figures, which need the teachers)."""
    from secureagg.demos.ensemble import (
        DEFAULTS,
        _split,
        answer_batches,
        build_aggregator,
        choose_queries,
        querier_results,
        write_run,
    )
    from secureagg.ensemble.deployed import teacher_summary
    from secureagg.flower.ensemble import FlowerVotes

    parties, seed = int(settings["parties"]), settings["seed"]
    data = _split(parties, DEFAULTS["test"], DEFAULTS["public"])
    agg = build_aggregator(parties, queries=settings["queries"], batch=settings["batch"],
                           epsilon=settings["epsilon"], delta=settings["delta"], dropout=0.0,
                           protocol=settings["protocol"], seed=seed)
    print(f"querier: GNMax sigma {agg.sigma:.2f} vote counts for {parties} parties", flush=True)
    asked = choose_queries(data["x_public"], settings["queries"])
    flower = FlowerVotes(grid, train_deadline=train_deadline, stage_deadline=stage_deadline,
                         min_nodes=2)
    stage_wall: list[float | None] = []

    def answer(b: int, lo: int, hi: int) -> Any:
        res = agg.answer_deployed(data["x_public"][asked[lo:hi]], flower)
        masked = (res.metrics.get("stages") or {}).get("masked") or {}
        stage_wall.append(masked.get("wall_seconds"))
        return res

    voters = list(range(parties))
    answered = answer_batches(agg, asked=asked, batch=settings["batch"], voters=voters,
                              answer=answer, say=lambda text: print(text, flush=True))
    results = querier_results(agg, answered, data, settings={**settings, "dropout": 0.0},
                              seed=seed)
    nodes = teacher_summary(agg.node_teachers)
    results["engine"] = "flower"
    results["teachers"] = {
        "parties": nodes["trained"], "failures": nodes["failures"], "nodes": parties,
        "workers": parties, "accuracy_mean": None, "sequential_seconds": None,
        # the slowest node's training: the wall time of training in parallel, without Flower's
        # process starts and polling (the first batch's vote stage, below, includes them)
        "parallel_seconds": nodes["max_train_seconds"],
        "node_startup_seconds_max": nodes["max_startup_seconds"],
        "node_train_seconds": nodes["train_seconds"],
        "sum_node_train_seconds": nodes["sum_train_seconds"],
        "train_stage_seconds": stage_wall[0] if stage_wall else None,
    }
    results["ensemble_accuracy"] = None
    results["secure_inference"] = {"accuracy": None}
    # what the querier received: public index -> its noisy histogram (vote counts) and label
    results["released"] = {str(i): {"label": answered["labels"][i],
                                    "noisy_histogram": answered["histograms"][i].tolist()}
                           for i in sorted(answered["labels"])}
    write_run(out, results, agg, answered["transcript"], voters=voters, seed=seed,
              engine="flower")
    return results


def run_ensemble_flower_demo(
    *,
    out: Path,
    parties: int = FLOWER_DEFAULTS["parties"],
    queries: int = FLOWER_DEFAULTS["queries"],
    batch: int = FLOWER_DEFAULTS["batch"],
    epsilon: float = 8.0,
    delta: float = 1e-5,
    protocol: str = "secagg+",
    seed: int | None = None,
    tls: bool = False,
    stream: TextIO | None = None,
    quiet: bool = False,
    train_deadline: float = 300.0,
    stage_deadline: float = 60.0,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run the demo on a local Flower deployment (module docstring); returns ``ensemble.json``."""
    import torch

    from secureagg.audit.rundir import RunDirectory
    from secureagg.demos.ensemble import (
        DEFAULTS,
        _loaders,
        _split,
        check_settings,
        make_teacher,
        reference_results,
        table,
        train_teacher,
    )
    from secureagg.ensemble.teachers import train_teachers, warm_up_training
    from secureagg.flower.processes import Deployment, DeploymentError

    def say(text: str) -> None:
        if not quiet:
            print(text, file=stream or sys.stdout, flush=True)

    check_settings(queries=queries, batch=batch, epsilon=epsilon, dropout=0.0)
    started = time.perf_counter()
    data = _split(parties, DEFAULTS["test"], DEFAULTS["public"])
    teacher_seed = seed if seed is not None else secrets.randbits(62)
    say(f"{parties} parties, one Flower SuperNode each (~{len(data['parts'][0][1])} private "
        f"examples each); public pool {DEFAULTS['public']}, test {DEFAULTS['test']}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each node trains: the same teachers, bit for bit
    try:
        warm_up_training()  # as each node: training time without the one-time imports
        reference = train_teachers(make_teacher, train_teacher, _loaders(data["parts"]),
                                   workers=1, seed=teacher_seed)
    finally:
        torch.set_num_threads(threads)
    say(f"reference: the same teachers trained here one after the other in "
        f"{reference.wall_seconds:.1f} s (for the sequential time and the non-private rows "
        "only; no party of a real deployment could do this)")
    run_dir = out.resolve()  # absolute: the ServerApp writes it from another directory
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = {"parties": parties, "queries": queries, "batch": batch, "epsilon": epsilon,
                "delta": delta, "protocol": protocol, "seed": seed}
    node_configs: list[dict[str, Any]] = [
        {TEACHER_SEED: teacher_seed, **({"secureagg-allow-seeded": True} if seed is not None
                                        else {})} for _ in range(parties)]
    run_config: dict[str, str | float] = {
        "settings": settings_to_json(settings), "run-dir": str(run_dir),
        "train-deadline": float(train_deadline), "stage-deadline": float(stage_deadline)}
    say(f"starting a Flower SuperLink and {parties} SuperNodes on 127.0.0.1"
        + (" over TLS (throwaway CA)" if tls else "") + " ...")
    batches = math.ceil(queries / batch)
    limit = timeout or 120.0 + batches * (train_deadline + 6 * stage_deadline)
    with Deployment(parties, node_configs=node_configs, tls=tls,
                    log_dir=run_dir / "flower-logs") as deployment:
        say(f"ready in {time.perf_counter() - started:.1f} s (SuperLink {deployment.address}); "
            f"the querier's {batches} batches run as one flwr run ...")
        outcome = deployment.run(APP_DIR, run_config=run_config, timeout=limit)
    if not outcome.ok:
        raise DeploymentError(f"the Flower run did not complete ({outcome.status}: "
                              f"{outcome.details})\n{outcome.log[-3000:]}")
    say(f"all Flower processes stopped; the run took {outcome.seconds:.0f} s")
    record = RunDirectory(run_dir)
    results: dict[str, Any] = record.read_json("ensemble.json")
    for b in results["batches"]:
        say(f"  batch {b['batch'] + 1}/{batches}: "
            f"{'answered' if b['answered'] else 'NOT answered'}, {len(b['survivors'])} parties "
            f"in the sum, ε so far {b['epsilon_after']:.3f}, {b['seconds']:.2f} s")
    voters = [p for p in reference.parties if p in results["teachers"]["parties"]]
    if voters:
        ref = reference_results(reference, data, voters, seed=seed)
        results["teachers"].update(accuracy_mean=ref["teacher_accuracy_mean"])
        results["ensemble_accuracy"] = ref["ensemble_accuracy"]
        results["secure_inference"] = {**ref["secure_inference"], "engine": "local"}
    results["teachers"]["sequential_seconds"] = reference.wall_seconds
    results["reference_note"] = (
        "teachers' accuracy, the non-private ensemble's accuracy, secure ensemble inference and "
        "the sequential training time come from the same teachers (same teacher seed, same code, "
        "one torch thread) trained one after the other in the process that ran the demo, not on "
        "the nodes; the nodes' training time is parallel_seconds (slowest node) and "
        "train_stage_seconds (the first batch's vote stage, Flower's process starts included)")
    results["seconds"] = time.perf_counter() - started
    table(results, say)
    record.write_json("ensemble.json", results)
    record.seal(kind="ensemble")  # again: the reference figures and the logs are in the record
    say(f"\nfinished in {results['seconds']:.0f} s; the run directory is {out} "
        f"(secureagg audit {out})")
    return results
