"""The auditor's ``report.html``: one self-contained page rendered from ``report.json``.

:func:`render_html` takes the document :mod:`secureagg.audit.report` builds (format
``secureagg/audit-report/v1``, as ``secureagg audit`` writes it) and returns one HTML page:

* the **headline**, visible without scrolling: the verdict (PASS in green, FAIL in red with the
  number of failed checks), the run's kind and protocol, the record-level and client-level ε
  with their δ, the seal and its key source, and a SEEDED banner for a run whose secrets came
  from a seed;
* the privacy statement, the checks (failed first), the independent re-accounting, the plots
  (:mod:`secureagg.audit.plots`), the protocol's parameters, the rounds, the integrity record,
  the empirical (canary) audit when one ran, the messages received, and the versions.

The page needs no network and no JavaScript: inline CSS, PNGs as ``data:`` URIs, and a
Content-Security-Policy that forbids loading anything else. Every string taken from the report
is escaped (a run directory is data from elsewhere). The output depends only on the report and
the matplotlib version: no clock is read.

>>> checks = [{"group": "g", "check": "<b>", "ok": True, "detail": "", "file": None}]
>>> page = render_html({"verdict": "pass", "kind": "one-round", "checks": checks})
>>> ">PASS<" in page and "&lt;b&gt;" in page and "<script" not in page
True
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from typing import Any

from secureagg.errors import InvalidInputError
from secureagg.validation import is_int, is_real

__all__ = ["render_html"]

_CSS = """
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:#1b1f24;background:#f4f5f7}
main{max-width:1200px;margin:0 auto;padding:12px 20px 40px}
h1{font-size:17px;margin:4px 0 10px;font-weight:600;color:#444}
h1 code{font-size:15px;color:#1b1f24}
h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid #d0d4da;padding-bottom:3px}
code{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12.5px;
overflow-wrap:anywhere}
.seeded{background:repeating-linear-gradient(45deg,#ffb300 0 18px,#ff8f00 18px 36px);color:#000;
font-weight:800;font-size:20px;padding:10px 18px;border:3px solid #000;margin-bottom:10px;
border-radius:6px}
.verdict{display:flex;align-items:center;gap:28px;color:#fff;padding:14px 26px;border-radius:8px;
min-height:110px}
.verdict.pass{background:#1a7f37}.verdict.fail{background:#c62828}
.verdict .big{font-size:60px;font-weight:800;letter-spacing:2px;line-height:1}
.verdict .sub{font-size:20px;font-weight:600}
.verdict .sub small{display:block;font-size:14px;font-weight:400;opacity:.92}
.facts{display:grid;grid-template-columns:repeat(3,1fr);gap:10px;margin-top:10px}
.fact{background:#fff;border:1px solid #d0d4da;border-radius:8px;padding:10px 14px}
.fact .k{font-size:13px;font-weight:600;color:#5a6270}.fact .v{font-size:22px;font-weight:700}
.fact .n{font-size:12.5px;color:#3d4450}.warn{color:#b71c1c;font-weight:600}
.note{background:#fff8e1;border-left:4px solid #ffb300;padding:6px 12px;margin:8px 0}
.statement p{background:#fff;border-left:4px solid #1f5fa8;margin:6px 0;padding:8px 12px}
.statement p.loud{border-left-color:#c62828;background:#ffebee;font-weight:600}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border:1px solid #d0d4da;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eceff3}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.fail td{background:#ffebee}tr.fail td.st{color:#b71c1c;font-weight:800}
td.st,td.file{white-space:nowrap;font-weight:700}td.file{font-weight:400}td.ok{color:#1a7f37}
td.na{color:#6b7280}table.kv th{width:32%}table.kv table th{width:auto}
.plots{display:grid;grid-template-columns:1fr 1fr;gap:12px}
figure{margin:0;background:#fff;border:1px solid #d0d4da;border-radius:8px;padding:8px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:12.5px;color:#3d4450;margin-top:4px}.nodata{color:#6b7280;font-style:italic}
nav{font-size:13px;margin:10px 0 0}nav a{margin-right:12px;color:#1f5fa8}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    """A scalar as an auditor reads it: numbers to 4 significant digits, thousands separated."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return "∞" if value.lower() in ("inf", "infinity") else _e(value)
    if is_int(value):
        return f"{int(value):,}"
    if not isinstance(value, Real):
        return _e(value)
    v = float(value)
    if not math.isfinite(v):
        return "∞" if v > 0 else ("−∞" if v < 0 else "NaN")
    return f"{v:,.0f}" if 1e4 <= abs(v) < 1e15 else f"{v:.4g}"


def _val(value: Any, depth: int = 0) -> str:
    """Any JSON value, escaped: scalars as text, objects as nested tables, lists as lists."""
    if value is None or isinstance(value, str | bool | Real):
        return _num(value)
    if depth >= 4:
        return f"<code>{_e(json.dumps(value, default=str)[:500])}</code>"
    if isinstance(value, Mapping):
        return _kv(value.items(), depth + 1) if value else "—"
    if isinstance(value, Sequence):
        if all(v is None or isinstance(v, str | Real) for v in value):
            return ", ".join(_val(v) for v in value) or "—"
        keys = list(dict.fromkeys(str(k) for v in value if isinstance(v, Mapping) for k in v))
        if all(isinstance(v, Mapping) for v in value) and len(keys) <= 12:  # records: a table
            return _table([k.replace("_", " ") for k in keys],
                          [[_td(_val(v.get(k), depth + 1)) for k in keys] for v in value])
        return "<ol>" + "".join(f"<li>{_val(v, depth + 1)}</li>" for v in value) + "</ol>"
    return _e(value)


def _kv(items: Any, depth: int = 0) -> str:
    rows = "".join(f"<tr><th>{_e(str(k).replace('_', ' '))}</th><td>{_val(v, depth)}</td></tr>"
                   for k, v in items)
    return f'<table class="kv">{rows}</table>'


def _table(head: Sequence[str], rows: Sequence[Sequence[str]],
           classes: Sequence[str] | None = None) -> str:
    """``rows`` are already-escaped cells (from :func:`_val` / :func:`_e`)."""
    out = ["<table><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr>"]
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        out.append(f"<tr{cls}>" + "".join(row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _td(html_text: str, cls: str = "") -> str:
    return f'<td class="{cls}">{html_text}</td>' if cls else f"<td>{html_text}</td>"


def _float(value: Any) -> float | None:
    return float(value) if is_real(value) else None


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


# ----------------------------------------------------------------------------------- sections


def _checks(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """report["checks"], plus the CLI's own transcript checks that are not already among them."""
    checks = [dict(c) for c in _list(report.get("checks")) if isinstance(c, Mapping)]
    known = [f"[{c.get('group')}] {c.get('check')}" for c in checks]
    for t in _list(report.get("transcript_checks")):
        name = str(_map(t).get("check", ""))
        if name and not any(name.startswith(k) for k in known):
            checks.append({"group": "transcript", "check": name, "ok": _map(t).get("ok"),
                           "detail": "", "file": "transcript.jsonl"})
    return checks


def _headline(report: Mapping[str, Any], checks: list[dict[str, Any]]) -> str:
    failed = sum(1 for c in checks if c.get("ok") is False)
    passed = sum(1 for c in checks if c.get("ok") is True)
    na = sum(1 for c in checks if c.get("ok") is None)
    ok = report.get("verdict") == "pass" and failed == 0 and passed > 0
    total = passed + failed
    if ok:
        sub = f"all {total} applicable checks passed"
    elif failed:
        sub = f"{failed} of {total} checks FAILED"
    elif not passed:
        sub = "the report holds no check that passed"
    else:
        sub = f"the report's verdict is {_e(report.get('verdict'))}"
    sub += (f"<small>{na} not applicable · audited with "
            f"{_e(report.get('audited_with') or '?')}</small>")
    out = []
    if report.get("seeded"):
        seed = report.get("seed")
        out.append('<div class="seeded">⚠ SEEDED RUN — NOT PRIVATE: its keys, masks, noise and '
                   "sampling came from a seed" + (f" ({_e(seed)})" if seed is not None else "")
                   + "; anyone with the seed can recompute every secret.</div>")
    out.append(f'<div class="verdict {"pass" if ok else "fail"}" id="verdict">'
               f'<div class="big">{"PASS" if ok else "FAIL"}</div><div class="sub">{sub}</div>'
               "</div>")
    proto = report.get("protocol")
    pname = _map(proto).get("protocol") if isinstance(proto, Mapping) else proto
    params = _map(proto) if isinstance(proto, Mapping) else _map(report.get("parameters"))
    clients = params.get("clients", params.get("num_clients"))
    levels = _map(_map(report.get("privacy")).get("levels"))
    integ = _map(report.get("integrity"))
    facts = [("run", f"{_e(report.get('kind') or '?')} · {_e(pname or '?')}",
              (f"{_num(clients)} clients · " if clients is not None else "")
              + f"{len(_list(report.get('rounds')))} round(s)")]
    for level, label in (("sample", "record-level ε"), ("user", "client-level ε")):
        lv = _map(levels.get(level))
        if not lv:
            facts.append((label, "none", "no differential privacy at this level"))
            continue
        eps = lv.get("epsilon_max")
        note = f"δ = {_num(lv.get('delta'))}"
        if lv.get("budget") is not None:
            note += f" · budget ε ≤ {_num(lv.get('budget'))}" + (
                ' <span class="warn">(reached)</span>' if lv.get("budget_reached") else "")
        if (_float(eps) or 0.0) > 20:
            note += ' · <span class="warn">no meaningful guarantee</span>'
        facts.append((label, f"ε = {_num(eps)}", note))
    if integ.get("sealed"):
        facts.append(("seal", "sealed", f"key: {_e(integ.get('key_source') or '?')}; "
                      + ("operator key pinned" if integ.get("pinned") else "key not pinned")))
    else:
        facts.append(("seal", '<span class="warn">NOT SEALED</span>',
                      "nothing shows the files are as the run left them"))
    independent = _map(_map(report.get("privacy")).get("independent"))
    verdict = independent.get("verdict") if independent.get("available", True) else None
    facts.append(("independent ε re-accounting",
                  f'<span class="warn">{_e(verdict)}</span>' if verdict == "fail" else
                  _e(verdict or ("not run" if not independent else "unavailable")),
                  _e(independent.get("reason") or ("Google's dp-accounting, from the ledger's "
                                                    "events" if independent else
                                                    "the run keeps no privacy ledger"))))
    threat = params.get("threat", params.get("threat_model"))
    corrupt = params.get("corrupt_rate", params.get("assumed_corrupt_fraction_of_clients"))
    if pname == "plain":
        facts.append(("threat model", '<span class="warn">none</span>',
                      "plain is the INSECURE baseline: the server sees every update"))
    elif threat in ("curious", "malicious"):
        facts.append(("threat model", f"{'honest-but-curious' if threat == 'curious' else threat}"
                      " server", f"up to a fraction {_num(corrupt)} of clients collude with it"
                      if corrupt is not None else "see the statement"))
    else:
        facts.append(("threat model", _e(threat or "see the statement"),
                      "server and key holder do not collude" if pname in ("ckks", "paillier")
                      else ""))
    cards = "".join(f'<div class="fact"><div class="k">{_e(k)}</div><div class="v">{v}</div>'
                    f'<div class="n">{n}</div></div>' for k, v, n in facts)
    return "".join(out) + f'<div class="facts">{cards}</div>'


def _statement(report: Mapping[str, Any]) -> str:
    paras = [str(p) for p in _list(report.get("statement"))]
    if not paras:
        return "<p>The report holds no privacy statement.</p>"
    loud = ("THIS RUN FAILED", "SEEDED RUN")
    return "".join(f'<p class="loud">{_e(p)}</p>' if p.startswith(loud) else f"<p>{_e(p)}</p>"
                   for p in paras)


def _checks_table(checks: list[dict[str, Any]]) -> str:
    rank = {"False": 0, "True": 1}
    order = sorted(range(len(checks)), key=lambda i: (rank.get(str(checks[i].get("ok")), 2), i))
    rows, classes = [], []
    for i in order:
        c = checks[i]
        state = {"True": ("ok", "ok"), "False": ("FAIL", "st")}.get(str(c.get("ok")),
                                                                      ("n.a.", "na"))
        rows.append([_td(_e(c.get("group") or "")), _td(_e(c.get("check") or "")),
                     f'<td class="st {state[1]}">{state[0]}</td>', _td(_e(c.get("detail") or "")),
                     _td(f'<code>{_e(c.get("file"))}</code>' if c.get("file") else "", "file")])
        classes.append("fail" if c.get("ok") is False else "")
    return _table(["group", "check", "result", "detail", "file"], rows, classes)


def _independent(value: Any) -> str:
    if value is None:
        return "<p>Not run: the run keeps no privacy ledger (no differential privacy).</p>"
    data = _map(value)
    if not data or not isinstance(data.get("levels"), Mapping):
        return _val(value)
    if data.get("available") is False:
        return f'<p class="warn">Unavailable: {_e(data.get("reason"))}</p>'
    tolerance = ", ".join(f"{_e(k)} {_num(v)}" for k, v in _map(data.get("tolerance")).items())
    head = (f"<p>Verdict: <b>{_e(data.get('verdict'))}</b> · ledger "
            f"<code>{_e(data.get('ledger_format'))}</code> · tolerance {tolerance or '—'}</p>")
    if data.get("warning"):
        head += f'<p class="note warn">{_e(data["warning"])}</p>'
    rows, classes = [], []
    for level, lv in _map(data.get("levels")).items():
        for s in (x for x in _list(_map(lv).get("streams")) if isinstance(x, Mapping)):
            rel = _float(s.get("rel_diff"))
            diff = _num(s.get("abs_diff")) + (f" ({rel * 100:+.2f}%)" if rel is not None else "")
            tight = s.get("pld_epsilon") if s.get("tight_source") == "pld" else s.get(
                "closed_form_epsilon", s.get("tight_epsilon"))
            rows.append([_td(_e(level)), _td(_e(s.get("party") if s.get("party") is not None
                                                else "all")),
                         *(_td(_num(v), "num") for v in (s.get("delta"), s.get("stated_epsilon"),
                                                         s.get("rdp_epsilon"), tight)),
                         _td(_e(s.get("tight_source") or "—")), _td(diff, "num"),
                         f'<td class="st {"ok" if s.get("verdict") == "ok" else "na"}">'
                         f'{_e(s.get("verdict"))}</td>', _td(_e(s.get("reason") or ""))])
            classes.append("fail" if s.get("verdict") == "fail" else "")
    methods = sorted({str(s.get("method")) for lv in _map(data.get("levels")).values()
                      for s in _list(_map(lv).get("streams")) if _map(s).get("method")})
    return head + _table(["level", "party", "δ", "stated ε", "independent RDP ε",
                          "PLD / closed-form ε", "tight from", "stated − tight", "verdict",
                          "reason"], rows, classes) + "".join(
        f'<p class="n">Method: {_e(m)}</p>' for m in methods)


def _plots(report: Mapping[str, Any]) -> str:
    from secureagg.audit import plots

    rounds, stages = _list(report.get("rounds")), _map(report.get("stages"))
    sample = _map(_map(_map(report.get("privacy")).get("levels")).get("sample"))
    figures: list[tuple[str, str, Callable[[], str | None]]] = [
        ("ε per client over rounds", "record-level ε of each client after each round; dashed: "
         "the budget", lambda: plots.epsilon_png(rounds, sample.get("budget"))),
        ("accuracy per round", "the model's test accuracy after each round",
         lambda: plots.accuracy_png(rounds)),
        ("survivors and dropouts", "per round: clients in the sum, and sampled clients that are "
         "not", lambda: plots.participation_png(rounds)),
        ("time per stage", "seconds per protocol stage (slowest client + server), summed over "
         "the rounds", lambda: plots.stage_seconds_png(stages)),
        ("bytes per stage", "bytes to and from the server per protocol stage, summed over the "
         "rounds", lambda: plots.stage_bytes_png(stages)),
    ]
    shown, missing = [], []
    for title, caption, draw in figures:
        uri = draw()
        if uri:
            shown.append(f'<figure><img src="{_e(uri)}" alt="{_e(title)}"><figcaption>'
                         f"{_e(caption)}</figcaption></figure>")
        else:
            missing.append(title)
    return (f'<div class="plots">{"".join(shown)}</div>' + (
        f'<p class="nodata">No data in this report for: {_e(", ".join(missing))}.</p>'
        if missing else ""))


def _protocol(report: Mapping[str, Any]) -> str:
    proto = report.get("protocol")
    params = dict(proto) if isinstance(proto, Mapping) else dict(_map(report.get("parameters")))
    note = params.pop("threat_model_note", None)
    note = report.get("threat_model_note") or note
    out = "" if isinstance(proto, Mapping) else f"<p>Protocol: <b>{_e(proto or '?')}</b></p>"
    if note:
        out += f'<p class="note">{_e(note)}</p>'
    out += _kv(params.items()) if params else "<p>No parameters recorded.</p>"
    recorded = {k: v for k, v in _map(report.get("parameters")).items()
                if k != "threat_model_note"}
    if isinstance(proto, Mapping) and recorded:
        out += "<h3>As the run recorded them</h3>" + _kv(recorded.items())
    return out


def _rounds(report: Mapping[str, Any]) -> str:
    rows = []
    for r in (x for x in _list(report.get("rounds")) if isinstance(x, Mapping)):
        sampled = r.get("sampled")
        drops = _map(r.get("dropouts"))
        what = ", ".join(f"{_e(c)} at {_e(s)}" for c, s in sorted(
            drops.items(), key=lambda kv: (not str(kv[0]).isdigit(), str(kv[0]).zfill(12))))
        acc = _float(r.get("accuracy"))
        rows.append([_td(_num(r.get("round")), "num"), _td(_e(r.get("status") or "")),
                     _td(f"{len(_list(r.get('survivors')))} / "
                         + (str(len(sampled)) if isinstance(sampled, list) else "?"), "num"),
                     _td(what or "none"),
                     _td(f"{acc * 100:.1f}%" if acc is not None and acc <= 1
                         else _num(r.get("accuracy")), "num"), _td(_num(r.get("epsilon")), "num")])
    if not rows:
        return "<p>No rounds recorded.</p>"
    return _table(["round", "status", "survivors / sampled", "dropouts (client at stage)",
                   "accuracy", "record-level ε so far"], rows)


def _canary(canary: Any) -> str:
    c = _map(canary)
    if not c:
        return _val(canary)
    refutes = c.get("refutes_claim")
    head = (f'<p class="{"warn" if refutes else ""}">Claimed ε = {_num(c.get("claimed_epsilon"))}'
            f" · empirical lower bound ε ≥ {_num(c.get('epsilon_lower_bound'))} at confidence "
            f"{_num(c.get('confidence'))}: "
            + ("the lower bound EXCEEDS the claim — the run is less private than it states."
               if refutes else "the claim is not refuted.") + "</p>")
    return head + _kv(c.items())


def _messages(report: Mapping[str, Any]) -> str:
    kinds = _map(report.get("received_by_kind"))
    rows = [[_td(f"<code>{_e(k)}</code>"), *(_td(_num(_map(v).get(f)), "num")
                                             for f in ("count", "bytes", "min", "max"))]
            for k, v in kinds.items()]
    out = _table(["message kind", "count", "bytes", "min bytes", "max bytes"], rows) if rows \
        else ""
    traffic = _map(report.get("traffic_by_stage"))
    if traffic:
        out += "<h3>Per stage</h3>" + _val([{"stage": k, **_map(v)} for k, v in traffic.items()])
    rejected = _list(report.get("rejected"))
    if rejected:
        out += f'<p class="warn">Refused by the server: {len(rejected)}</p>' + _val(rejected)
    return out


def render_html(report: Mapping[str, Any]) -> str:
    """``report.html`` for a ``report.json`` document (see the module docstring).

    Raises :class:`~secureagg.errors.MissingDependencyError` without matplotlib (the ``audit``
    extra) and :class:`~secureagg.errors.InvalidInputError` when ``report`` is not a mapping.
    """
    if not isinstance(report, Mapping):
        raise InvalidInputError(f"report must be a report.json object (a mapping), got "
                                f"{type(report).__name__}")
    from secureagg.audit.plots import require_matplotlib

    mpl_version = require_matplotlib()
    checks = _checks(report)
    privacy = _map(report.get("privacy"))
    sections = [
        ("statement", "Privacy statement", f'<div class="statement">{_statement(report)}</div>'),
        ("checks", "Checks", _checks_table(checks)),
        ("independent", "Independent privacy accounting", _independent(privacy.get("independent"))
         + "".join(f"<h3>{_e(str(k).replace('_', ' '))}</h3>{_val(v)}" for k, v in privacy.items()
                   if k not in ("levels", "independent") and v not in (None, [], {}))),
        ("plots", "Plots", _plots(report)),
        ("protocol", "Protocol parameters", _protocol(report)),
        ("rounds", "Rounds", _rounds(report)),
        ("integrity", "Integrity", _kv(_map(report.get("integrity")).items())
         if report.get("integrity") else '<p class="warn">No integrity record.</p>'),
    ]
    if report.get("canary") is not None:
        sections.append(("canary", "Empirical audit (canaries)", _canary(report["canary"])))
    if report.get("received_by_kind") or report.get("rejected") or report.get("traffic_by_stage"):
        sections.append(("messages", "Messages the server received", _messages(report)))
    sections.append(("versions", "Versions", _kv([
        ("report format", report.get("format")), ("run written by", report.get("library")),
        ("audited with", report.get("audited_with")),
        ("plots drawn with", f"matplotlib {mpl_version}")])))
    nav = "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{_e(title)}</h2>{content}</section>'
                   for sid, title, content in sections)
    run_dir = report.get("run_dir") or "?"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "img-src data:; style-src 'unsafe-inline'\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>secureagg audit: {_e(run_dir)}</title><style>{_CSS}</style></head><body>"
            f"<main><h1>secureagg audit report · <code>{_e(run_dir)}</code></h1>"
            f"{_headline(report, checks)}<nav>{nav}</nav>{body}</main></body></html>\n")
