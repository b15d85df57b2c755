"""PNG plots of a benchmark run (matplotlib, the ``plot`` extra, imported only here, lazily).

* ``seconds_vs_n.png``: client (slowest client) and server seconds against the number of
  clients, log-log, one line per protocol variant, at the largest measured ``d`` and the
  smallest dropout;
* ``seconds_vs_d.png``: the same against the values per client, at the largest measured ``n``;
* ``bytes_per_client.png``: bytes up and down per client for each protocol variant, at the
  largest measured ``n`` and ``d`` (log scale);
* ``vs_floor.png``: SecAgg/SecAgg+ measured over the floor model (mean client, slowest client,
  server), one group of bars per configuration, with the 1.5x target line;
* ``vs_peers.png``: the peers' total compute over ours (Flower's SecAgg+; bare TenSEAL on
  FLARE's default context; ``phe``), one bar per configuration that has a peer; above 1 we are
  faster.

More than ten series reuse the ten colours with another marker and line style, so no two lines
look alike.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from secureagg.errors import MissingDependencyError

__all__ = ["PLOT_FILES", "require_matplotlib", "write_plots"]

PLOT_FILES = ("seconds_vs_n.png", "seconds_vs_d.png", "bytes_per_client.png", "vs_floor.png",
              "vs_peers.png")
DPI = 100
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_STYLES = ("-", "--", ":", "-.")


def _style(index: int) -> dict[str, Any]:
    """Colour from the ten-colour cycle; marker and line style change every ten series."""
    turn = index // 10
    return {
        "color": f"C{index % 10}",
        "marker": _MARKERS[turn % len(_MARKERS)],
        "linestyle": _STYLES[turn % len(_STYLES)],
    }


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
        for index, (name, points) in enumerate(sorted(lines.items())):
            points.sort()
            ax.plot([p[0] for p in points], [max(p[1], 1e-7) for p in points], label=name,
                    **_style(index))
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


def _short(entry: Mapping[str, Any]) -> str:
    c = entry["config"]
    return f"{_series(entry)}\nn={c['n']} d={c['d']:g} drop={c['dropout']:g}"


def _vs_floor(measured: Sequence[Mapping[str, Any]], path: Path) -> bool:
    from matplotlib.figure import Figure

    rows = [e for e in measured if e.get("ratio")]
    if not rows:
        return False
    fig = Figure(figsize=(max(6.0, 0.9 * len(rows) + 2), 4.6))
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(rows)))
    keys = [("client_mean_over_floor", "mean client"), ("client_max_over_floor", "slowest client"),
            ("server_over_floor", "server")]
    for i, (key, name) in enumerate(keys):
        ax.bar([x + (i - 1) * 0.27 for x in xs],
               [float(e["ratio"].get(key) or 0.0) for e in rows], 0.27, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(1.5, color="C3", linewidth=0.8, linestyle="--", label="1.5x target")
    ax.set_xticks(xs)
    ax.set_xticklabels([_short(e) for e in rows], rotation=35, ha="right", fontsize=6)
    ax.set_ylabel("measured / floor model (same run)")
    ax.set_title("SecAgg / SecAgg+ against the floor model (medians)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)
    return True


def _vs_peers(measured: Sequence[Mapping[str, Any]], path: Path) -> bool:
    from matplotlib.figure import Figure

    from secureagg.bench.peers import peer_ratio

    bars: list[tuple[str, float]] = []
    for e in measured:
        for name in e.get("peers") or {}:
            ratio = peer_ratio(e, name)
            if ratio is not None:
                bars.append((f"{name} / ours\n{_short(e)}", ratio))
    if not bars:
        return False
    fig = Figure(figsize=(max(6.0, 0.8 * len(bars) + 2), 4.6))
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(bars)))
    ax.bar(xs, [b[1] for b in bars], 0.6, color=["C2" if b[1] >= 1 else "C3" for b in bars])
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([b[0] for b in bars], rotation=35, ha="right", fontsize=6)
    ax.set_ylabel("peer's total compute / ours, per value\n(above 1: we are faster)")
    ax.set_title("peers on the same configuration, same run, interleaved (medians)", fontsize=9)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    _save(fig, path)
    return True


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
    written = paths[:3]
    if _vs_floor(measured, paths[3]):
        written.append(paths[3])
    if _vs_peers(measured, paths[4]):
        written.append(paths[4])
    return written
