"""The benchmark behind ``secureagg bench``: every protocol measured in this process, from an
installed package (no checkout needed).

* :mod:`~secureagg.bench.grid`: the grid (protocol variant x DP mode x n x d x dropout) and the
  aggregator of each point, or why the library refuses it;
* :mod:`~secureagg.bench.measure`: repeated rounds of :func:`secureagg.simulate` per point -
  client, server, key-holder and setup seconds per stage, bytes per client, peak memory
  (tracemalloc) and the error against the stated bound;
* :mod:`~secureagg.bench.runner`: estimates, skips what does not fit the limits, progress;
* :mod:`~secureagg.bench.output`: ``bench.json`` (``secureagg/bench/v1``), ``bench.csv``, the
  printed table; :mod:`~secureagg.bench.plots`: PNG plots (the ``plot`` extra).
* :mod:`~secureagg.bench.deployed`: ``secureagg bench --deployed`` - our secagg+ round against
  Flower's own SecAgg+ on real local Flower processes (the ``flower`` extra; not imported here):
  the two apps (:mod:`~secureagg.bench.deployed_ours`, :mod:`~secureagg.bench.deployed_flower`,
  their directories under ``deployed_apps/``), their meter
  (:mod:`~secureagg.bench.deployed_meter`) and the arithmetic
  (:mod:`~secureagg.bench.deployed_summary`).

See ``docs/benchmarks.md``.
"""

from __future__ import annotations

from secureagg.bench.grid import (
    DEFAULT_GRID,
    DP_MODES,
    PROTOCOLS,
    QUICK_GRID,
    BenchConfig,
    GridSpec,
    build_grid,
    make_config_aggregator,
)
from secureagg.bench.measure import measure_config
from secureagg.bench.output import FORMAT, format_table, machine_info, write_csv, write_json
from secureagg.bench.runner import Estimate, run_grid

__all__ = [
    "DEFAULT_GRID",
    "DP_MODES",
    "FORMAT",
    "PROTOCOLS",
    "QUICK_GRID",
    "BenchConfig",
    "Estimate",
    "GridSpec",
    "build_grid",
    "format_table",
    "machine_info",
    "make_config_aggregator",
    "measure_config",
    "run_grid",
    "write_csv",
    "write_json",
]
