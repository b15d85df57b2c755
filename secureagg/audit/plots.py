"""The figures of the auditor's ``report.html``, as inline PNG data URIs (matplotlib, Agg).

Each function takes a piece of a ``report.json`` document (:mod:`secureagg.audit.report`) and
returns ``data:image/png;base64,...``, or ``None`` when the report holds no data for that figure
(a one-round run has no accuracy and no ε over rounds). The figures are drawn on a
:class:`matplotlib.figure.Figure` with the Agg canvas: no pyplot, no global backend switch, no
display, and the PNG carries no timestamp, so the same report gives the same bytes.

matplotlib is the ``audit`` extra; without it :func:`require_matplotlib` raises
:class:`~secureagg.errors.MissingDependencyError`.

>>> uri = accuracy_png([{"round": 1, "accuracy": 0.5}, {"round": 2, "accuracy": 0.7}])
>>> uri.startswith("data:image/png;base64,")
True
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from secureagg.errors import MissingDependencyError
from secureagg.validation import is_int, is_real

__all__ = ["DPI", "accuracy_png", "epsilon_png", "participation_png", "require_matplotlib",
           "stage_bytes_png", "stage_seconds_png"]

#: Resolution of every figure: small inline PNGs (a figure is ~500 x 290 pixels).
DPI = 90
_SIZE = (5.6, 3.2)
_GREEN, _RED, _BLUE, _GREY = "#1a7f37", "#c62828", "#1f5fa8", "#9e9e9e"


def require_matplotlib() -> str:
    """matplotlib's version; :class:`MissingDependencyError` naming the extra without it."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "audit",
                                     purpose="the plots of the audit report (report.html)") from exc
    return str(matplotlib.__version__)


def _figure() -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=_SIZE, dpi=DPI)
    axes = [fig.add_subplot(1, 1, 1)]
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    return fig, axes


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _label(text: Any) -> str:
    """Text from the report as matplotlib draws it literally (no mathtext from a ``$``)."""
    return str(text).replace("$", r"\$")


def _finite(x: Any) -> float | None:
    return float(x) if is_real(x) and math.isfinite(float(x)) else None


def _round_numbers(rounds: Sequence[Any]) -> list[tuple[int, Mapping[str, Any]]]:
    return [(int(r["round"]), r) for r in rounds
            if isinstance(r, Mapping) and is_int(r.get("round"))]


def epsilon_png(rounds: Sequence[Any], budget: Any = None) -> str | None:
    """Record-level ε per client after each round (one line per client), and the budget."""
    series: dict[str, list[tuple[int, float]]] = {}
    for number, r in _round_numbers(rounds):
        per_client = r.get("epsilon_per_client")
        if isinstance(per_client, Mapping):
            for client, eps in per_client.items():
                if _finite(eps) is not None:
                    series.setdefault(str(client), []).append((number, float(eps)))
        elif _finite(r.get("epsilon")) is not None:
            series.setdefault("largest", []).append((number, float(r["epsilon"])))
    if not series:
        return None
    fig, (ax,) = _figure()
    few = len(series) <= 8
    for client in sorted(series, key=lambda c: (not c.lstrip("-").isdigit(),
                                                int(c) if c.lstrip("-").isdigit() else 0, c)):
        xs, ys = zip(*sorted(series[client]), strict=True)
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, alpha=0.85 if few else 0.4,
                label=f"client {_label(client)}" if few else None)
    cap = _finite(budget)
    if cap is not None:
        ax.axhline(cap, color=_RED, linestyle="--", linewidth=1.5, label=f"budget ε = {cap:g}")
    ax.set_xlabel("round")
    ax.set_ylabel("record-level ε spent")
    ax.set_title("ε per client over rounds" + ("" if few else f" ({len(series)} clients)"))
    top = max([y for pts in series.values() for _, y in pts] + [cap or 0.0])
    ax.set_ylim(0, top * 1.12 if top > 0 else 1.0)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if few or cap is not None:
        ax.legend(fontsize=7, loc="lower right", ncol=2)
    return _png(fig)


def accuracy_png(rounds: Sequence[Any]) -> str | None:
    """The model's accuracy after each round (as a percentage)."""
    points = [(n, float(r["accuracy"])) for n, r in _round_numbers(rounds)
              if _finite(r.get("accuracy")) is not None]
    if not points:
        return None
    fig, (ax,) = _figure()
    xs, ys = zip(*sorted(points), strict=True)
    scale = 100.0 if max(ys) <= 1.0 else 1.0
    ax.plot(xs, [y * scale for y in ys], marker="o", color=_BLUE, linewidth=1.5)
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy (%)" if scale == 100.0 else "accuracy")
    ax.set_title("accuracy per round")
    ax.set_ylim(0, 100 if scale == 100.0 else None)
    ax.xaxis.get_major_locator().set_params(integer=True)
    return _png(fig)


def participation_png(rounds: Sequence[Any]) -> str | None:
    """Per round: clients whose input is in the sum, and sampled clients that are not."""
    rows: list[tuple[int, int, int]] = []
    for number, r in _round_numbers(rounds):
        survivors = r.get("survivors")
        if not isinstance(survivors, list):
            continue
        inside = {str(s) for s in survivors}
        sampled, dropouts = r.get("sampled"), r.get("dropouts")
        if isinstance(sampled, list):
            out = len({str(s) for s in sampled} - inside)
        else:
            out = len(set(map(str, dropouts)) - inside) if isinstance(dropouts, Mapping) else 0
        rows.append((number, len(inside), out))
    if not rows:
        return None
    fig, (ax,) = _figure()
    xs = [str(n) for n, _, _ in rows]
    ins, outs = [i for _, i, _ in rows], [o for _, _, o in rows]
    ax.bar(xs, ins, width=0.6, color=_GREEN, label="survivors (in the sum)")
    ax.bar(xs, outs, width=0.6, bottom=ins, color=_RED, alpha=0.8, label="dropped (not in the sum)")
    ax.set_xlabel("round")
    ax.set_ylabel("clients")
    ax.set_title("survivors and dropouts per round")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(0, max(i + o for _, i, o in rows) * 1.3 + 0.5)
    ax.set_xlim(-0.5 - 0.5 / len(rows) ** 0.5, len(rows) - 0.5 + 0.5 / len(rows) ** 0.5)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    return _png(fig)


def _stage_rows(stages: Mapping[str, Any], *keys: str) -> list[tuple[str, list[float]]]:
    rows = [(str(s), [_finite(row.get(k)) or 0.0 for k in keys])
            for s, row in stages.items() if isinstance(row, Mapping)]
    return rows if any(v > 0 for _, values in rows for v in values) else []


def stage_seconds_png(stages: Mapping[str, Any]) -> str | None:
    """Seconds per protocol stage (slowest client + server), summed over the rounds."""
    rows = _stage_rows(stages, "seconds")
    if not rows:
        return None
    fig, (ax,) = _figure()
    ax.bar(range(len(rows)), [v[0] for _, v in rows], color=_BLUE)
    ax.set_xticks(range(len(rows)), [_label(s) for s, _ in rows])
    ax.set_ylabel("seconds")
    ax.set_title("time per stage")
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    return _png(fig)


def stage_bytes_png(stages: Mapping[str, Any]) -> str | None:
    """Bytes to and from the server per protocol stage (kB), summed over the rounds."""
    rows = _stage_rows(stages, "bytes_up", "bytes_down")
    if not rows:
        return None
    fig, (ax,) = _figure()
    pos = list(range(len(rows)))
    ax.bar([p - 0.2 for p in pos], [v[0] / 1e3 for _, v in rows], width=0.4, color=_BLUE,
           label="up (to the server)")
    ax.bar([p + 0.2 for p in pos], [v[1] / 1e3 for _, v in rows], width=0.4, color=_GREY,
           label="down (from the server)")
    ax.set_xticks(pos, [_label(s) for s, _ in rows])
    ax.set_ylabel("kB")
    ax.set_title("bytes per stage")
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.legend(fontsize=7)
    return _png(fig)
