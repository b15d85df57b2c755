"""PNG plots of a benchmark run (matplotlib, the ``plot`` extra, imported only here, lazily).

* ``seconds_vs_n.png``: client (slowest client) and server seconds against the number of
  clients, log-log, one line per protocol variant, at the largest measured ``d`` and the
  smallest dropout;
* ``seconds_vs_d.png``: the same against the values per client, at the largest measured ``n``;
* ``bytes_per_client.png``: bytes up and down per client for each protocol variant, at the
  largest measured ``n`` and ``d`` (log scale).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from secureagg.errors import MissingDependencyError

__all__ = ["PLOT_FILES", "require_matplotlib", "write_plots"]

PLOT_FILES = ("seconds_vs_n.png", "seconds_vs_d.png", "bytes_per_client.png")
DPI = 100


def require_matplotlib() -> str:
    """matplotlib's version; :class:`MissingDependencyError` naming the extra without it."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "matplotlib", "plot", purpose="the benchmark's PNG plots"
        ) from exc
    return str(matplotlib.__version__)


def _series(entry: Mapping[str, Any]) -> str:
    config = entry["config"]
    dp = config["dp"]
    return str(config["protocol"]) + ("" if dp == "none" else f" +{dp} DP")


def _save(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from secureagg.audit.rundir import RunDirectory

    FigureCanvasAgg(fig)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI, metadata={"Software": None})
    RunDirectory(path.parent).write_bytes(path.name, png.getvalue())


def _against(
    measured: Sequence[Mapping[str, Any]], axis: str, path: Path, *, fixed: Mapping[str, Any]
) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    panels = [("client_seconds_max", "slowest client, s"), ("server_seconds", "server, s")]
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        lines: dict[str, list[tuple[float, float]]] = {}
        for e in measured:
            if all(e["config"][k] == v for k, v in fixed.items()):
                value = float(e["figures"][key]["median"])
                lines.setdefault(_series(e), []).append((float(e["config"][axis]), value))
        for name, points in sorted(lines.items()):
            points.sort()
            ax.plot([p[0] for p in points], [max(p[1], 1e-7) for p in points], marker="o",
                    label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("clients (n)" if axis == "n" else "values per client (d)")
        ax.set_ylabel(title)
        ax.grid(True, which="both", alpha=0.3)
        shown = ", ".join(f"{k}={v:g}" for k, v in fixed.items())
        ax.set_title(f"{title} against {axis} ({shown}; medians)", fontsize=9)
        if i == 1 and lines:
            ax.legend(fontsize=7, loc="best")
    _save(fig, path)


def _bytes(measured: Sequence[Mapping[str, Any]], path: Path, *, n: int, d: int) -> None:
    from matplotlib.figure import Figure

    rows = [e for e in measured if e["config"]["n"] == n and e["config"]["d"] == d]
    seen: dict[str, tuple[float, float]] = {}
    for e in rows:
        name = _series(e)
        if name not in seen:
            f = e["figures"]
            seen[name] = (
                float(f["bytes_up_per_client"]["median"]),
                float(f["bytes_down_per_client"]["median"]),
            )
    names = list(seen)
    fig = Figure(figsize=(max(6.0, 0.7 * len(names) + 2), 4.2))
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(names)))
    ax.bar([x - 0.2 for x in xs], [max(seen[k][0], 1.0) for k in names], 0.4, label="up")
    ax.bar([x + 0.2 for x in xs], [max(seen[k][1], 1.0) for k in names], 0.4, label="down")
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=35, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("bytes per client (most of any client)")
    ax.set_title(f"bytes per client, n={n}, d={d}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    _save(fig, path)


def write_plots(entries: Sequence[Mapping[str, Any]], out: Path) -> list[Path]:
    """Write :data:`PLOT_FILES` into ``out`` from the measured entries; returns their paths.

    Raises :class:`MissingDependencyError` (extra ``plot``) without matplotlib."""
    require_matplotlib()
    measured = [e for e in entries if e["status"] == "measured"]
    paths = [out / name for name in PLOT_FILES]
    if not measured:
        return []
    n_max = max(e["config"]["n"] for e in measured)
    d_max = max(e["config"]["d"] for e in measured)
    drop_min = min(e["config"]["dropout"] for e in measured)
    _against(measured, "n", paths[0], fixed={"d": d_max, "dropout": drop_min})
    _against(measured, "d", paths[1], fixed={"n": n_max, "dropout": drop_min})
    _bytes(measured, paths[2], n=n_max, d=d_max)
    return paths
