"""Scaling exponents: how each protocol's costs grow with n and with d, fitted on the grid.

For every series of measured configurations that differ only in ``n`` (or only in ``d``) and
have at least three distinct values of it, :func:`scaling_fits` fits ``log y = a + b log x`` by
least squares to the medians and reports ``b``: cost grows as ``x^b``. ``b`` near 1 is linear,
near 0 constant; a logarithmic growth shows as a small ``b`` that shrinks as ``x`` grows (and
``log_fit`` fits ``y = a + c ln x`` beside it, with both fits' largest relative residual, so the
reader can see which shape fits). Figures: the slowest client's and the mean client's seconds,
the server's seconds, bytes up per client, and the peak memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["FIT_FIGURES", "scaling_fits"]

#: (name in the output, how to read it from a measured entry)
FIT_FIGURES: tuple[str, ...] = (
    "client_seconds_max",
    "client_seconds_mean",
    "server_seconds",
    "bytes_up_per_client",
    "peak_memory_bytes",
)


def _value(entry: Mapping[str, Any], figure: str) -> float | None:
    if figure == "peak_memory_bytes":
        peak = entry.get("peak_memory_bytes")
        return float(peak) if peak else None
    row = entry["figures"].get(figure)
    if not isinstance(row, Mapping):
        return None
    value = float(row["median"])
    return value if value > 0 and math.isfinite(value) else None


def _least_squares(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """``(a, b)`` of ``y = a + b x``."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - b * mx, b


def _fit(points: Sequence[tuple[float, float]]) -> dict[str, Any]:
    lx = [math.log(x) for x, _ in points]
    ly = [math.log(y) for _, y in points]
    a, b = _least_squares(lx, ly)
    power_resid = max(abs(math.exp(a + b * u) / y - 1) for u, (_, y) in zip(lx, points,
                                                                          strict=True))
    c0, c1 = _least_squares(lx, [y for _, y in points])
    log_resid = max(abs((c0 + c1 * u) / y - 1) for u, (_, y) in zip(lx, points, strict=True))
    return {
        "exponent": b,
        "power_fit_max_relative_residual": power_resid,
        "log_fit": {"a": c0, "c_per_ln_x": c1, "max_relative_residual": log_resid},
    }


def scaling_fits(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Fitted exponents over ``n`` and over ``d`` for every series with >= 3 points."""
    measured = [e for e in entries if e.get("status") == "measured"]
    out: list[dict[str, Any]] = []
    for axis, other in (("n", "d"), ("d", "n")):
        series: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
        for e in measured:
            c = e["config"]
            key = (c["protocol"], c["dp"], c[other], c["dropout"])
            series.setdefault(key, []).append(e)
        for (protocol, dp, fixed, dropout), rows in series.items():
            if len({r["config"][axis] for r in rows}) < 3:
                continue
            for figure in FIT_FIGURES:
                points = sorted(
                    (float(r["config"][axis]), v)
                    for r in rows
                    if (v := _value(r, figure)) is not None
                )
                if len({x for x, _ in points}) < 3:
                    continue
                out.append({
                    "protocol": protocol,
                    "dp": dp,
                    "axis": axis,
                    other: fixed,
                    "dropout": dropout,
                    "figure": figure,
                    "points": [[x, y] for x, y in points],
                    **_fit(points),
                })
    return out
