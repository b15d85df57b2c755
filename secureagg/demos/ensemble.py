"""``secureagg demo ensemble``: a private ensemble (PATE / GNMax) on sklearn's digits.

1. The digits are split (fixed split): a test set, a "public" unlabelled pool the querier owns,
   and the parties' private data, split evenly across ``parties`` parties.
2. Every party trains its own teacher (a logistic-regression model in torch) on its own data,
   sequentially and then in parallel across the cores (both timed; the parallel teachers vote).
3. The querier asks for labels of ``queries`` points of its public pool, in batches: each batch is
   one SecAgg+ round that carries every query's vote histogram, with every party adding its share
   of distributed discrete Gaussian noise (:class:`~secureagg.ensemble.aggregate.
   SecureVoteAggregator`). The server and the querier see only the noisy histograms; the label is
   the noisy argmax. The noise is calibrated so that all batches fit the ε budget in the worst
   case of dropouts, and the budget is enforced.
4. The querier chose its queries as the public points nearest to k-means centres of its public
   inputs, and trains a student: the released noisy histograms are propagated over its public
   pool (label propagation on a k-nearest-neighbour graph of the public, unlabelled inputs, each
   queried point weighted by how clear its noisy vote is: post-processing, no further privacy
   cost), then a logistic-regression student is trained on the propagated labels.
5. Secure ensemble inference (no DP): the parties' probability vectors for the test inputs are
   averaged under SecAgg+; the querier learns only the mean.

A table, and a run directory (``config.json``, ``ensemble.json``, the privacy ledger, the
transcript of every batch's round, sealed) that ``secureagg audit`` reads.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

import secureagg
from secureagg.audit.rundir import RunDirectory
from secureagg.demos.data import permutation, split_stream
from secureagg.errors import ConfigurationError, MissingDependencyError

__all__ = [
    "DEFAULTS",
    "answer_batches",
    "build_aggregator",
    "calibrate_sigma",
    "check_settings",
    "querier_results",
    "reference_results",
    "run_ensemble_demo",
    "table",
    "write_run",
]

DEFAULTS: dict[str, Any] = {
    "parties": 100,
    "queries": 100,
    "batch": 50,
    "epsilon": 8.0,
    "delta": 1e-5,
    "test": 300,
    "public": 347,
    "inference_queries": 300,
}
NUM_CLASSES = 10
FEATURES = 64


def _digits() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise MissingDependencyError(
            "scikit-learn", "all", purpose="the digits data set of the demo"
        ) from None
    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).astype(np.float32)
    return x, np.asarray(bunch.target, dtype=np.int64)


def _split(parties: int, test: int, public: int) -> dict[str, Any]:
    """The fixed split: test, public pool, and the parties' private parts (even sizes)."""
    x, y = _digits()
    order = permutation(len(y), split_stream(0, context=b"ensemble-demo"))
    x, y = x[order], y[order]
    if parties < 2 or test + public + 2 * parties > len(y):
        raise ConfigurationError(
            f"{parties} parties need at least 2 examples each besides the {test} test and "
            f"{public} public examples (digits has {len(y)})"
        )
    private = np.arange(test + public, len(y))
    return {
        "x_test": x[:test], "y_test": y[:test],
        "x_public": x[test:test + public], "y_public": y[test:test + public],
        "parts": [(x[idx], y[idx]) for idx in np.array_split(private, parties)],
    }


def make_teacher() -> Any:
    """The model every party trains (module-level: picklable for spawned workers)."""
    import torch

    return torch.nn.Linear(FEATURES, NUM_CLASSES)


def train_teacher(model: Any, loader: Any) -> None:
    """The parties' unchanged training code: Adam, 40 epochs, cross-entropy."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(40):
        for xb, yb in loader:
            opt.zero_grad()
            loss: Any = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()


def _loaders(parts: Sequence[tuple[Any, Any]]) -> list[Any]:
    import torch

    return [
        torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
            batch_size=16, shuffle=True,
        )
        for x, y in parts
    ]


def calibrate_sigma(
    make: Callable[[float], Any], *, batches: int, batch: int, epsilon: float
) -> float:
    """The smallest noise ``sigma`` (to 1 %) whose aggregator admits ``batches`` batches of
    ``batch`` queries within ``epsilon`` in the worst case of dropouts (bisection on
    :meth:`~secureagg.ensemble.aggregate.SecureVoteAggregator.batches_remaining`)."""

    def fits(sigma: float) -> bool:
        try:
            left = make(sigma).batches_remaining(batch)
        except ConfigurationError:  # e.g. a party's share below the theorem's sigma >= 1/2
            return False
        return left is not None and left >= batches

    lo, hi = 0.5, 2.0
    while not fits(hi):
        lo, hi = hi, hi * 2
        if hi > 1e6:
            raise ConfigurationError(f"no noise level fits {batches} batches in ε = {epsilon}")
    while hi / lo > 1.01:
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


def _plurality(predictions: Sequence[npt.NDArray[np.int64]], count: int) -> npt.NDArray[np.int64]:
    votes = np.zeros((count, NUM_CLASSES), dtype=np.int64)
    for p in predictions:
        np.add.at(votes, (np.arange(count), p), 1)
    return np.asarray(votes.argmax(axis=1), dtype=np.int64)


def choose_queries(x_public: Any, count: int) -> npt.NDArray[np.int64]:
    """Which public points to ask about: the point nearest to each of ``count`` k-means centres
    of the public inputs (spread over the pool, so that few labels reach far in the propagation).
    It reads only the querier's own unlabelled inputs: no privacy cost. Sorted indices."""
    from sklearn.cluster import KMeans

    x = np.asarray(x_public, dtype=np.float64)
    centres = KMeans(count, n_init=3, random_state=0).fit(x).cluster_centers_
    chosen: set[int] = set()
    for c in centres:  # the nearest point not yet chosen
        order = np.argsort(((x - c) ** 2).sum(axis=1))
        chosen.add(int(next(i for i in order if int(i) not in chosen)))
    return np.asarray(sorted(chosen), dtype=np.int64)


def propagate_labels(x_public: Any, histograms: dict[int, npt.NDArray[np.float64]],
                     noise_std: float, *, neighbours: int = 7, alpha: float = 0.5
                     ) -> npt.NDArray[np.int64]:
    """A label for every public point from the released noisy histograms of the queried ones:
    label propagation (Zhou et al. 2004, "Learning with local and global consistency") on the
    k-nearest-neighbour graph of the public inputs, each queried point starting from
    ``softmax(noisy histogram / noise_std)`` - a noisy histogram whose top two counts are far
    apart weighs more than a near tie. Post-processing of released outputs: no privacy cost."""
    from sklearn.neighbors import kneighbors_graph

    x = np.asarray(x_public, dtype=np.float64)
    graph = kneighbors_graph(x, neighbours, include_self=False).toarray()
    graph = np.maximum(graph, graph.T)
    degree = graph.sum(axis=1)
    s = graph / np.sqrt(np.outer(degree, degree))
    prior = np.zeros((len(x), NUM_CLASSES))
    for i, h in histograms.items():
        z = np.asarray(h, dtype=np.float64) / noise_std
        z = np.exp(z - z.max())
        prior[i] = z / z.sum()
    spread = np.linalg.solve(np.eye(len(x)) - alpha * s, prior)
    return np.asarray(spread.argmax(axis=1), dtype=np.int64)


def _student(x_public: Any, histograms: dict[int, npt.NDArray[np.float64]], noise_std: float,
             x_test: Any, y_test: Any, y_public: Any, seed: int | None) -> dict[str, Any]:
    """Labels propagated over the public pool from the noisy histograms (post-processing), then
    a logistic-regression student trained on them; and, for comparison, one trained on the
    private labels alone."""
    import torch

    def fit(x: Any, y: Any) -> float:
        if seed is not None:
            torch.manual_seed(seed)
        model = make_teacher()
        loader = _loaders([(np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64))])[0]
        train_teacher(model, loader)
        with torch.no_grad():
            pred = model(torch.from_numpy(x_test)).argmax(dim=1).numpy()
        return float((pred == y_test).mean())

    idx = sorted(histograms)
    if not idx:
        return {"student_accuracy": None, "student_private_labels_only_accuracy": None,
                "propagated_label_accuracy": None}
    spread = propagate_labels(x_public, histograms, noise_std)
    return {
        "student_accuracy": fit(x_public, spread),
        "student_private_labels_only_accuracy": fit(
            x_public[idx], [int(np.argmax(histograms[i])) for i in idx]),
        "propagated_label_accuracy": float((spread == y_public).mean()),
        "spread_label_accuracy_note": "label propagation uses only the public inputs and the "
        "released noisy histograms: post-processing of released outputs, no privacy cost",
    }


def check_settings(*, queries: int, batch: int, epsilon: float, dropout: float) -> None:
    """The demo's settings, every problem listed at once (:class:`ConfigurationError`)."""
    problems = []
    if not (isinstance(queries, int) and 1 <= queries <= DEFAULTS["public"]):
        problems.append(f"queries must be in 1..{DEFAULTS['public']} (the public pool)")
    if not (isinstance(batch, int) and batch >= 1):
        problems.append("batch must be an integer >= 1")
    if not (math.isfinite(epsilon) and epsilon > 0):
        problems.append(f"epsilon must be a positive number, got {epsilon}")
    if not (0.0 <= dropout < 0.5):
        problems.append(f"dropout must be in [0, 0.5), got {dropout}")
    if problems:
        raise ConfigurationError(problems)


def build_aggregator(parties: int, *, queries: int, batch: int, epsilon: float, delta: float,
                     dropout: float, protocol: str, seed: int | None) -> Any:
    """The querier's :class:`SecureVoteAggregator` for ``parties`` voters, its noise calibrated
    so that every batch fits ``epsilon`` in the worst case of dropouts."""
    from secureagg.ensemble.aggregate import SecureVoteAggregator

    noise_seed = None if seed is None else seed.to_bytes(8, "big")

    def make(sigma: float, budget: float | None = epsilon) -> SecureVoteAggregator:
        return SecureVoteAggregator(
            parties, NUM_CLASSES, sigma=sigma, expected_dropout=dropout, delta=delta,
            budget_epsilon=budget, protocol=protocol,  # type: ignore[arg-type]
            seed=noise_seed,
        )

    sigma = calibrate_sigma(make, batches=math.ceil(queries / batch), batch=batch,
                            epsilon=epsilon)
    return make(sigma)


def answer_batches(agg: Any, *, asked: npt.NDArray[np.int64], batch: int, voters: Sequence[int],
                   answer: Callable[[int, int, int], Any], say: Callable[[str], None]
                   ) -> dict[str, Any]:
    """Every batch of the ``asked`` public points: ``answer(b, lo, hi)`` answers batch ``b``
    (queries ``asked[lo:hi]``) and returns its :class:`~secureagg.ensemble.aggregate.
    BatchResult`; the released labels and histograms by public index, a record per batch, the
    transcript with the parties' ids, and the seconds of secure aggregation."""
    queries = len(asked)
    batches = math.ceil(queries / batch)
    labels: dict[int, int] = {}
    histograms: dict[int, npt.NDArray[np.float64]] = {}
    records: list[dict[str, Any]] = []
    transcript: list[dict[str, Any]] = []
    seconds = 0.0
    for b in range(batches):
        lo, hi = b * batch, min(queries, (b + 1) * batch)
        res = answer(b, lo, hi)
        seconds += res.seconds
        records.append({
            "batch": b, "queries": [int(i) for i in asked[lo:hi]], "answered": res.answered,
            "survivors": [voters[i] for i in res.survivors], "dropped":
            {str(voters[i]): s for i, s in res.dropped.items()},
            "refused": {str(voters[i]): r for i, r in res.refused.items()},
            "absent": [voters[i] for i in res.absent],
            "noise_std": res.noise_std, "epsilon_after": res.epsilon_after,
            "stopped_by_budget": res.stopped_by_budget, "aborted": res.aborted,
            "seconds": res.seconds,
        })
        transcript.extend(_party_ids(line, voters) for line in res.transcript)
        if res.answered and res.labels is not None:
            for j, label in enumerate(res.labels):
                labels[int(asked[lo + j])] = int(label)
            if res.noisy_histogram is not None:
                for j, row in enumerate(res.noisy_histogram):
                    histograms[int(asked[lo + j])] = row
        say(f"  batch {b + 1}/{batches}: {'answered' if res.answered else 'NOT answered'}, "
            f"{len(res.survivors)} parties in the sum, ε so far {res.epsilon_after:.3f}, "
            f"{res.seconds:.2f} s")
    return {"labels": labels, "histograms": histograms, "records": records,
            "transcript": transcript, "seconds": seconds}


def querier_results(agg: Any, answered: dict[str, Any], data: dict[str, Any], *, settings:
                    dict[str, Any], seed: int | None) -> dict[str, Any]:
    """What the querier learned (its labels' accuracy, its student) and spent (ε)."""
    labels = answered["labels"]
    truth = data["y_public"]
    eps_final = agg.epsilon()
    report = agg.report()
    return {
        "status": "completed",
        "settings": {**settings, "mechanism": "ddgauss", "sigma": agg.sigma,
                     "seeded": seed is not None},
        "private_label_accuracy":
            float(np.mean([labels[i] == truth[i] for i in labels])) if labels else 0.0,
        "queries_answered": len(labels),
        **_student(data["x_public"], answered["histograms"], agg.sigma, data["x_test"],
                   data["y_test"], truth, seed),
        "epsilon": {"party_level": eps_final, "record_level": eps_final,
                    "delta": settings["delta"], "budget": settings["epsilon"],
                    "adjacency": report.get("adjacency")},
        "aggregation_seconds": answered["seconds"],
        "batches": answered["records"],
        "privacy": report,
    }


def reference_results(teachers: Any, data: dict[str, Any], voters: Sequence[int], *,
                      seed: int | None) -> dict[str, Any]:
    """The non-private figures of the teachers: their accuracy, the plurality vote's, and the
    secure ensemble inference (the mean of their probabilities under SecAgg+, no DP)."""
    import torch

    from secureagg.ensemble.inference import combine_predictions

    x_test, y_test = torch.from_numpy(data["x_test"]), data["y_test"]
    test_pred = teachers.predict(x_test)
    teacher_acc = [float((test_pred[p] == y_test).mean()) for p in voters]
    ensemble_acc = float((_plurality([test_pred[p] for p in voters], len(y_test)) == y_test
                          ).mean())
    probs = teachers.predict_proba(x_test)
    combined = combine_predictions({p: probs[p] for p in voters}, protocol="secagg+", seed=seed)
    return {"teacher_accuracy_mean": float(np.mean(teacher_acc)),
            "ensemble_accuracy": ensemble_acc,
            "secure_inference": {"accuracy": float((combined.labels == y_test).mean()),
                                 **combined.summary()}}


def write_run(out: Path, results: dict[str, Any], agg: Any, transcript: Sequence[Any], *,
              voters: Sequence[int], seed: int | None, engine: str = "local") -> None:
    """The run directory ``secureagg audit`` reads: config, results, ledgers, transcript, seal."""
    settings = results["settings"]
    run = RunDirectory(out)
    report = agg.report()
    run.write_json("config.json", {
        "command": "demo ensemble", "engine": engine, "protocol": settings["protocol"],
        "parties": list(voters), "parameters": report["protocol"], "settings": settings,
        "privacy": {"kind": "private ensemble (GNMax)", "mechanism": "ddgauss",
                    "budget_epsilon": settings["epsilon"], "delta": settings["delta"],
                    "adjacency": report.get("adjacency")},
        "seeded": seed is not None, "seed": seed, "secureagg_version": secureagg.__version__})
    run.write_json("ensemble.json", json.loads(json.dumps(results, default=_jsonable)))
    run.write_json("ensemble_ledger.json", agg.ledger())
    run.write_json("privacy_ledger.json", agg.run_ledger())
    if transcript:
        run.write_transcript(transcript)
    run.seal(kind="ensemble")


def run_ensemble_demo(
    *,
    out: Path,
    parties: int = DEFAULTS["parties"],
    queries: int = DEFAULTS["queries"],
    batch: int = DEFAULTS["batch"],
    epsilon: float = DEFAULTS["epsilon"],
    delta: float = DEFAULTS["delta"],
    dropout: float = 0.0,
    workers: Any = "auto",
    protocol: str = "secagg+",
    seed: int | None = None,
    stream: TextIO | None = None,
    quiet: bool = False,
    time_sequential: bool = True,
) -> dict[str, Any]:
    """Run the demo (module docstring); returns the results written to ``ensemble.json``.

    ``time_sequential=False`` skips the sequential training that is there only to time it."""
    import torch

    from secureagg.ensemble.teachers import train_teachers
    from secureagg.ensemble.votes import encode_votes

    stream = stream or sys.stdout

    def say(text: str) -> None:
        if not quiet:
            print(text, file=stream, flush=True)

    check_settings(queries=queries, batch=batch, epsilon=epsilon, dropout=dropout)
    t_start = time.perf_counter()
    data = _split(parties, DEFAULTS["test"], DEFAULTS["public"])
    loaders = _loaders(data["parts"])
    say(f"{parties} parties, {sum(len(p[1]) for p in data['parts'])} private examples "
        f"(~{len(data['parts'][0][1])} each); public pool {DEFAULTS['public']}, test "
        f"{DEFAULTS['test']}")
    sequential_seconds = None
    if time_sequential:
        sequential_seconds = train_teachers(
            make_teacher, train_teacher, loaders, workers=1, seed=seed
        ).wall_seconds
    teachers = train_teachers(make_teacher, train_teacher, loaders, workers=workers, seed=seed)
    say(f"teachers trained: sequential "
        f"{'-' if sequential_seconds is None else f'{sequential_seconds:.1f} s'}, parallel "
        f"({teachers.workers} workers) {teachers.wall_seconds:.1f} s; "
        f"{len(teachers.failures)} failed")
    voters = list(teachers.parties)
    n = len(voters)
    agg = build_aggregator(n, queries=queries, batch=batch, epsilon=epsilon, delta=delta,
                           dropout=dropout, protocol=protocol, seed=seed)
    say(f"GNMax noise sigma {agg.sigma:.2f} vote counts ({n} parties, "
        f"{math.ceil(queries / batch)} batches of {batch} queries, budget ε = {epsilon:g} at "
        f"δ = {delta:g}, worst case of dropouts)")
    asked = choose_queries(data["x_public"], queries)  # public inputs only: no privacy cost
    public_pred = teachers.predict(torch.from_numpy(data["x_public"][asked]))
    drop_stream = split_stream(os.urandom(32) if seed is None else seed, context=b"dropouts")

    def answer(b: int, lo: int, hi: int) -> Any:
        votes = {i: encode_votes("one-hot", public_pred[p][lo:hi], NUM_CLASSES)
                 for i, p in enumerate(voters)}
        k = math.floor(dropout * n)  # parties silent from the masked stage, drawn by the CSPRNG
        dropped = {int(i): "masked" for i in permutation(n, drop_stream)[:k]}
        return agg.aggregate(votes, dropouts=dropped)

    answered = answer_batches(agg, asked=asked, batch=batch, voters=voters, answer=answer,
                              say=say)
    settings = {"parties": parties, "queries": queries, "batch": batch, "epsilon": epsilon,
                "delta": delta, "dropout": dropout, "protocol": protocol}
    results = querier_results(agg, answered, data, settings=settings, seed=seed)
    reference = reference_results(teachers, data, voters, seed=seed)
    results["teachers"] = {"parties": voters, "failures": list(teachers.failures),
                           "accuracy_mean": reference["teacher_accuracy_mean"],
                           "sequential_seconds": sequential_seconds,
                           "parallel_seconds": teachers.wall_seconds,
                           "workers": teachers.workers}
    results["ensemble_accuracy"] = reference["ensemble_accuracy"]
    results["secure_inference"] = reference["secure_inference"]
    results["seconds"] = time.perf_counter() - t_start
    table(results, say)
    write_run(out, results, agg, answered["transcript"], voters=voters, seed=seed)
    say(f"\nfinished in {results['seconds']:.0f} s; the run directory is {out} "
        f"(secureagg audit {out})")
    return results


def _party_ids(line: Mapping[str, Any], voters: Sequence[int]) -> dict[str, Any]:
    """A transcript line with the aggregator's slots mapped to the parties' ids (the server and
    other non-party ends keep theirs)."""
    def party(slot: Any) -> Any:
        return voters[slot] if isinstance(slot, int) and 0 <= slot < len(voters) else slot

    return {**line, "sender": party(line.get("sender")), "recipient": party(line.get("recipient"))}


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _seconds(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f} s"


def table(r: dict[str, Any], say: Callable[[str], None]) -> None:
    """The demo's table (both engines)."""
    t = r["teachers"]
    eps = r["epsilon"]
    rows = [
        ("teachers (mean accuracy)", _pct(t["accuracy_mean"])),
        ("non-private ensemble accuracy", _pct(r["ensemble_accuracy"])),
        ("private labels' accuracy", f"{r['private_label_accuracy']:.1%}"),
        ("student accuracy (label propagation)", _pct(r["student_accuracy"])),
        ("student on private labels only", _pct(r["student_private_labels_only_accuracy"])),
        ("secure ensemble inference (no DP)", _pct(r["secure_inference"]["accuracy"])),
        ("queries answered", f"{r['queries_answered']} of {r['settings']['queries']}"),
        ("ε per party = ε per record", f"{eps['party_level']:.3f} (δ = {eps['delta']:g}, "
                                       f"budget {eps['budget']:g}; upper bound)"),
        ("training, sequential", _seconds(t["sequential_seconds"])),
    ]
    if "nodes" in t:  # on Flower: every party's node trained its own teacher
        rows += [
            (f"training on {t['nodes']} nodes, slowest node", _seconds(t["parallel_seconds"])),
            ("  + one-time imports, slowest node", _seconds(t.get("node_startup_seconds_max"))),
            ("  first batch's vote stage (wall)", _seconds(t.get("train_stage_seconds"))),
        ]
    else:
        rows.append((f"training, parallel ({t['workers']} workers)",
                     _seconds(t["parallel_seconds"])))
    rows.append(("secure aggregation (all batches)", _seconds(r["aggregation_seconds"], 2)))
    say("")
    for name, value in rows:
        say(f"  {name:<38} {value}")
