"""The results page: ``docs/benchmarks.md``'s generated part, rendered from a ``bench.json``.

``secureagg bench --render RESULTS_DIR --docs docs/benchmarks.md`` reads
``RESULTS_DIR/bench.json`` (and links the PNG plots beside it) and replaces the text between
:data:`BEGIN` and :data:`END` in the docs page with :func:`render_markdown`'s tables; everything
outside the markers is left as written. Every table says which machine and which run its
figures come from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from secureagg.bench.peers import peer_ratio
from secureagg.errors import ConfigurationError

__all__ = ["BEGIN", "END", "render_markdown", "replace_generated"]

BEGIN = "<!-- secureagg bench --render: generated from bench.json; edits here are overwritten -->"
END = "<!-- end of the generated part -->"


def _s(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f} s"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} µs"


def _b(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return "-"  # pragma: no cover


def _x(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}x"


def _med(entry: Mapping[str, Any], key: str) -> float | None:
    row = entry.get("figures", {}).get(key)
    return float(row["median"]) if isinstance(row, Mapping) else None


def _label(entry: Mapping[str, Any]) -> str:
    c = entry["config"]
    dp = "" if c["dp"] == "none" else f" +{c['dp']} DP"
    return f"{c['protocol']}{dp}"


def _provenance(doc: Mapping[str, Any], source: str) -> list[str]:
    m = doc.get("machine", {})
    libs = m.get("libraries", {}) or {}
    return [
        f"Run: `{source}`, started {doc.get('created_utc')}, finished {doc.get('finished_utc')}; "
        f"command `{' '.join(doc.get('argv') or ['secureagg', 'bench'])}`"
        + (" (**seeded**: reproducible, not secret)" if doc.get("seeded") else "") + ".",
        f"Machine: {m.get('cpu_model', m.get('processor') or '?')}, "
        f"{m.get('cpus_usable', m.get('cpu_count'))} usable cores, "
        f"{_b(m.get('mem_total_bytes'))} memory, {m.get('platform')}; Python "
        f"{m.get('python')}, numpy {m.get('numpy')}, secureagg {m.get('secureagg')}, "
        + ", ".join(f"{k} {v}" for k, v in libs.items() if v)
        + (f"; load average at start {m['loadavg_at_start'][0]:.2f}"
           if m.get("loadavg_at_start") else "") + ".",
    ]


def _main_table(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| protocol | n | d | drop | round | slowest client | mean client | server | key holder "
        "| setup | up/client | down/client | peak mem | error / bound |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for e in entries:
        c = e["config"]
        head = f"| {_label(e)} | {c['n']} | {c['d']:,} | {c['dropout']:g} "
        if e["status"] != "measured":
            lines.append(head + f"| skipped: {e.get('reason', '')} |||||||||")
            continue
        err = e["error"]
        ratio = (f"{err['max_abs_error'] / err['bound']:.2g}" if err["bound"] else
                 ("exact" if err["within_bound"] else "inexact"))
        if not err["within_bound"]:
            ratio += " **over**"
        lines.append(
            head + f"| {_s(_med(e, 'round_seconds'))} | {_s(_med(e, 'client_seconds_max'))} "
            f"| {_s(_med(e, 'client_seconds_mean'))} | {_s(_med(e, 'server_seconds'))} "
            f"| {_s(_med(e, 'helper_seconds'))} | {_s(_med(e, 'setup_seconds'))} "
            f"| {_b(_med(e, 'bytes_up_per_client'))} | {_b(_med(e, 'bytes_down_per_client'))} "
            f"| {_b(e.get('peak_memory_bytes'))} | {ratio} |"
        )
    return lines


def _floor_table(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = [e for e in entries if e.get("ratio")]
    if not rows:
        return []
    lines = [
        "| protocol | n | d | drop | floor client | floor server | mean client / floor "
        "| slowest client / floor | server / floor | upload / payload |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for e in rows:
        c, f, r = e["config"], e["floor"], e["ratio"]
        lines.append(
            f"| {_label(e)} | {c['n']} | {c['d']:,} | {c['dropout']:g} "
            f"| {_s(f['client_seconds'])} | {_s(f['server_seconds'])} "
            f"| {_x(r['client_mean_over_floor'])} | {_x(r['client_max_over_floor'])} "
            f"| {_x(r['server_over_floor'])} | {_x(r.get('upload_over_payload'), 3)} |"
        )
    return lines


def _peer_table(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| configuration | peer | ours: total compute | peer: total compute | peer / ours "
        "(per value) "
        "| ours: up/client | peer: up/client | peer's error |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    count = 0
    for e in entries:
        if e["status"] != "measured":
            continue
        c = e["config"]
        ours = _med(e, "compute_seconds_total")
        for name, p in (e.get("peers") or {}).items():
            where = f"{_label(e)} n={c['n']} d={c['d']:,} drop={c['dropout']:g}"
            if not p.get("available", True):
                lines.append(f"| {where} | {name} | {_s(ours)} | not run: "
                             f"{p.get('reason', '')} ||||")
                count += 1
                continue
            theirs = p.get("total_compute_seconds")
            t = float(theirs["median"]) if isinstance(theirs, Mapping) else None
            ratio = peer_ratio(e, name)
            values = p.get("values")
            count = values["median"] if isinstance(values, Mapping) else values
            if count and count != c["d"]:
                name = f"{name} (at {int(count):,} values)"
            up = p.get("bytes_up_per_client")
            up_v = float(up["median"]) if isinstance(up, Mapping) else None
            err = p.get("max_abs_error")
            err_v = float(err["median"]) if isinstance(err, Mapping) else None
            lines.append(
                f"| {where} | {name} | {_s(ours)} | {_s(t)} "
                f"| {_x(ratio)} "
                f"| {_b(_med(e, 'bytes_up_per_client'))} | {_b(up_v)} "
                f"| {'-' if err_v is None else f'{err_v:.2g}'} |"
            )
            count += 1
    return lines if count else []


def _fit_table(fits: Sequence[Mapping[str, Any]]) -> list[str]:
    if not fits:
        return []
    lines = [
        "| protocol | grows with | held fixed | figure | points | exponent b (cost ~ x^b) "
        "| power fit: max residual | a + c ln x: max residual |",
        "|---|---|---|---|--:|--:|--:|--:|",
    ]
    for f in fits:
        other = "d" if f["axis"] == "n" else "n"
        dp = "" if f["dp"] == "none" else f" +{f['dp']} DP"
        lines.append(
            f"| {f['protocol']}{dp} | {f['axis']} | {other}={f[other]:,}, drop={f['dropout']:g} "
            f"| {f['figure']} | {len(f['points'])} | {f['exponent']:.2f} "
            f"| {f['power_fit_max_relative_residual']:.0%} "
            f"| {f['log_fit']['max_relative_residual']:.0%} |"
        )
    return lines


def _network_table(doc: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]) -> list[str]:
    net = doc.get("network")
    rows = [e for e in entries if e.get("network_model")]
    if not net or not rows:
        return []
    lines = [
        f"Network **model** (not measured): client up "
        f"{net['client_up_bits_per_second'] / 1e6:g} Mbit/s, down "
        f"{net['client_down_bits_per_second'] / 1e6:g} Mbit/s, one-way latency "
        f"{net['latency_seconds'] * 1e3:g} ms, server link "
        f"{net['server_bits_per_second'] / 1e6:g} Mbit/s. {net['model']}",
        "",
        "| protocol | n | d | drop | stages | modelled round | of which transfer | measured "
        "compute (round) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for e in rows:
        c, m = e["config"], e["network_model"]
        transfer = sum(s["transfer_seconds"] for s in m["stages"].values())
        lines.append(
            f"| {_label(e)} | {c['n']} | {c['d']:,} | {c['dropout']:g} | {len(m['stages'])} "
            f"| {_s(m['seconds'])} | {_s(transfer)} | {_s(_med(e, 'round_seconds'))} |"
        )
    return lines


def render_markdown(doc: Mapping[str, Any], *, source: str, plot_dir: str | None) -> str:
    """The generated part of the results page for ``doc`` (a parsed ``bench.json``).

    ``source``: how the page names the JSON; ``plot_dir``: the plots' directory relative to the
    page (None: no images)."""
    if doc.get("format") != "secureagg/bench/v1":
        raise ConfigurationError(
            f"{source}: not a secureagg bench result (format {doc.get('format')!r})"
        )
    entries = doc.get("configurations", [])
    out: list[str] = [BEGIN, "", *_provenance(doc, source), ""]
    measured = sum(1 for e in entries if e["status"] == "measured")
    out += [f"{measured} of {len(entries)} configurations measured; medians of "
            f"{doc['grid']['repeats']} rounds (min in the JSON). Peak memory: tracemalloc "
            "(Python and numpy allocations; TenSEAL's C++ heap is not traced).", ""]
    sections: list[tuple[str, list[str]]] = [
        ("Every configuration", _main_table(entries)),
        ("Against the floor model (measured in the same run)", _floor_table(entries)),
        ("Against the peers (same configuration, same run, interleaved)", _peer_table(entries)),
        ("Scaling: fitted exponents", _fit_table(doc.get("scaling", []))),
        ("Estimated deployed round time (a model)", _network_table(doc, entries)),
    ]
    for title, lines in sections:
        if lines:
            out += [f"### {title}", "", *lines, ""]
    targets = doc.get("targets") or []
    if targets:
        out += ["### Targets", "", "| target | measured | limit | met |", "|---|--:|--:|---|"]
        for t in targets:
            value = "-" if t.get("measured") is None else f"{t['measured']:.3g}"
            out.append(f"| {t['target']} | {value} | {t['limit']:g} "
                       f"| {'yes' if t.get('met') else '**no**'} |")
        out.append("")
    plots = doc.get("plots") or []
    if plots and plot_dir is not None:
        out += ["### Plots", ""]
        for name in plots:
            out += [f"![{name}]({plot_dir}/{name})", ""]
    out.append(END)
    return "\n".join(out) + "\n"


def replace_generated(page: str, generated: str) -> str:
    """``page`` with the text between the markers (inclusive) replaced by ``generated``; the
    generated part is appended when the page has no markers yet."""
    if BEGIN in page:
        head, _, rest = page.partition(BEGIN)
        if END not in rest:
            raise ConfigurationError(f"the page has the begin marker but not the end marker {END}")
        _, _, tail = rest.partition(END)
        return head + generated.rstrip("\n") + tail
    return page.rstrip("\n") + "\n\n" + generated


def render_into(results: Path, docs: Path | None) -> str:
    """Render ``results/bench.json``; write it into ``docs`` (between the markers) if given."""
    import json

    path = results / "bench.json" if results.is_dir() else results
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    plot_dir = None
    if docs is not None:
        plot_dir = Path(os.path.relpath(path.parent, docs.parent)).as_posix()
    text = render_markdown(doc, source=_display(path), plot_dir=plot_dir)
    if docs is not None:
        page = docs.read_text(encoding="utf-8") if docs.exists() else ""
        from secureagg.audit.rundir import RunDirectory

        RunDirectory(docs.parent).write_bytes(docs.name,
                                              replace_generated(page, text).encode("utf-8"))
    return text


def _display(path: Path) -> str:
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()
