"""Run a benchmark grid: estimate, skip what does not fit, measure the rest, with progress.

:func:`run_grid` walks a list of :class:`~secureagg.bench.grid.BenchConfig` in order. For each
it builds the aggregator (or records why the library refuses it), asks ``estimate`` (the
caller's model: ``secureagg bench`` passes :func:`secureagg.cli.estimate.estimate_round` for
``repeats + 1`` rounds) for the seconds and peak bytes, skips with the reason what exceeds the
limits, and measures the rest with :func:`~secureagg.bench.measure.measure_config`. Every
configuration ends up in the result list, measured or skipped; nothing is made up.

Progress: a tqdm bar with an ETA weighted by the estimates when tqdm (the ``progress`` extra) is
installed and ``stream`` is a terminal, else one line per configuration on ``stream``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from secureagg.bench.floor import UnitCostCache
from secureagg.bench.grid import BenchConfig, make_config_aggregator
from secureagg.bench.measure import PeerFn, measure_config
from secureagg.bench.network import NetworkModel
from secureagg.crypto import prg
from secureagg.errors import SecureAggError
from secureagg.transport import derive_sim_seed

__all__ = ["Estimate", "EstimateFn", "PeerFactory", "run_grid"]


@dataclass(frozen=True)
class Estimate:
    """What one configuration is expected to need: seconds for all its rounds, peak bytes of
    one round, and the reasons it does not fit the limits (empty: it fits)."""

    seconds: float
    peak_bytes: int
    problems: tuple[str, ...] = ()
    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "peak_bytes": self.peak_bytes, "model": self.model}


#: ``estimate(config, aggregator_parameters, rounds) -> Estimate``
EstimateFn = Callable[[BenchConfig, Mapping[str, Any], int], Estimate]
#: ``peers(config, aggregator) -> {name: peer}``: the other implementations to run beside it
PeerFactory = Callable[[BenchConfig, Any], Mapping[str, PeerFn]]


class _Progress:
    """A tqdm bar (weighted by the estimates) or one line per configuration."""

    def __init__(self, weights: Sequence[float], stream: TextIO, *, quiet: bool) -> None:
        self.total = max(sum(weights), 1e-9)
        self.count = len(weights)
        self.done_weight = 0.0
        self.done = 0
        self.stream = stream
        self.quiet = quiet
        self.t0 = time.perf_counter()
        self.bar: Any = None
        isatty = getattr(stream, "isatty", None)
        if not quiet and callable(isatty) and isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(
                    total=round(self.total, 1),
                    file=stream,
                    unit="est-s",
                    bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
                    leave=True,
                )

    def start(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(f"[{self.done + 1}/{self.count}] {label}")

    def finish(self, label: str, weight: float, outcome: str) -> None:
        self.done += 1
        self.done_weight += weight
        if self.bar is not None:
            self.bar.update(round(weight, 1))
            return
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.t0
        left = self.total - self.done_weight
        eta = elapsed / self.done_weight * left if self.done_weight > 0 else float("nan")
        print(
            f"[{self.done}/{self.count}] {label}: {outcome} "
            f"(elapsed {elapsed:.1f} s, ETA {eta:.0f} s)",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_grid(
    configs: Sequence[BenchConfig],
    *,
    repeats: int,
    estimate: EstimateFn,
    seed: int | None = None,
    memory: bool = True,
    stream: TextIO,
    quiet: bool = False,
    floor_cache: UnitCostCache | None = None,
    peers: PeerFactory | None = None,
    network: NetworkModel | None = None,
) -> list[dict[str, Any]]:
    """Measure (or skip, with the reason) every configuration; JSON-ready entries in order.

    ``floor_cache``: measure the floor model's unit costs (SecAgg/SecAgg+) and the ratios to it;
    ``peers``: the other implementations run interleaved with each configuration's rounds;
    ``network``: add the modelled deployed round time to every measured entry."""
    rounds = repeats + (1 if memory else 0)
    planned: list[tuple[BenchConfig, Any, Estimate | None, str | None]] = []
    for config in configs:
        agg, why = make_config_aggregator(config)
        if agg is None:
            planned.append((config, None, None, why))
            continue
        estimated = estimate(config, agg.parameters(), rounds)
        reason = "; ".join(estimated.problems) if estimated.problems else None
        planned.append((config, agg, estimated, reason))
    weights = [est.seconds if est is not None and why is None else 0.0
               for _, _, est, why in planned]
    progress = _Progress(weights, stream, quiet=quiet)
    master = derive_sim_seed(seed, context=b"bench/master") if seed is not None else (
        prg.random_seed()
    )
    entries: list[dict[str, Any]] = []
    try:
        for index, ((config, agg, est, why), weight) in enumerate(zip(planned, weights,
                                                                       strict=True)):
            entry: dict[str, Any] = {
                "id": index,
                "label": config.label,
                "config": config.to_dict(),
                "estimate": est.to_dict() if est is not None else None,
            }
            progress.start(config.label)
            if why is not None:
                entry.update(status="skipped", reason=why)
                progress.finish(config.label, weight, f"skipped ({why})")
                entries.append(entry)
                continue
            try:
                result = measure_config(
                    config,
                    agg,
                    repeats=repeats,
                    master=master,
                    seed=seed,
                    memory=memory,
                    floor_cache=floor_cache,
                    peers=peers(config, agg) if peers is not None else None,
                )
            except SecureAggError as exc:
                detail = " ".join(str(exc).split())
                entry.update(status="failed", reason=f"{type(exc).__name__}: {detail}")
                progress.finish(config.label, weight, f"FAILED ({entry['reason']})")
                entries.append(entry)
                continue
            entry.update(status="measured", **result)
            if network is not None:
                entry["network_model"] = network.round_seconds(result["stages"],
                                                               result["figures"])
            err = result["error"]
            progress.finish(
                config.label,
                weight,
                f"round {result['figures']['round_seconds']['median']:.3f} s, error "
                f"{err['max_abs_error']:.2e} (bound {err['bound']:.2e})",
            )
            entries.append(entry)
    finally:
        progress.close()
    return entries
