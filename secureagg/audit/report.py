"""The auditor's report: ``report.json`` (format :data:`REPORT_FORMAT`) and its plain-words
privacy statement, built from a run directory and the checks in :mod:`secureagg.audit.checks`.

``report.json`` holds (documented in ``docs/audit.md``):

* ``format``, ``run_dir``, ``kind`` (one-round, federated, flower, split), ``library`` (the
  version that wrote the run) and ``audited_with`` (the version that audits it);
* ``verdict`` - ``"pass"`` when no check failed, else ``"fail"``; ``summary`` counts the checks;
* ``checks`` - every check: ``group``, ``check``, ``ok`` (``null``: not applicable), ``detail``,
  ``file``;
* ``integrity`` - the seal: whether the run was sealed, the operator key, its source, whether it
  was pinned, the transcript's lines and head;
* ``protocol`` - the protocol and its parameters in an auditor's units;
* ``privacy`` - per level the stated ε and δ, the adjacency, what is public, the accountant and
  its theorem, the budget and whether it was reached; ``independent`` - the re-accounting by
  Google's dp-accounting (:mod:`secureagg.audit.reaccount`), or why there is none;
* ``rounds`` - per round: status, sampled, survivors, dropouts (client -> stage), accuracy and
  the ε spent so far; ``stages`` - seconds and bytes per protocol stage;
* ``statement`` - the privacy statement, a list of paragraphs in plain words, for the auditor to
  sign or refuse;
* ``canary`` - when an empirical audit ran: the lower bound beside the claimed ε.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from secureagg.audit.checks import Check, Run, summarise
from secureagg.validation import is_int, is_real

__all__ = ["REPORT_FORMAT", "build_report", "privacy_statement"]

REPORT_FORMAT = "secureagg/audit-report/v1"

_SEES = {
    "secagg": ("each client's update with pairwise and self masks added (uniformly random in "
               "the ring on its own: it reveals nothing alone), and the sum over the survivors "
               "once the masks cancel"),
    "plain": "every client's update in the clear (plain is the INSECURE baseline)",
    "ckks": ("each client's update encrypted under the key holder's CKKS key, and the sum after "
             "the key holder decrypted it (with noise flooding)"),
    "paillier": ("each client's update encrypted under the key holder's Paillier key, and the "
                 "decrypted sum"),
}


def _family(protocol: str | None) -> str:
    return "secagg" if protocol in ("secagg", "secagg+") else str(protocol)


def _fmt(x: Any, digits: int = 3) -> str:
    if not is_real(x):
        return str(x)
    v = float(x)
    if not math.isfinite(v):
        return "infinite"
    return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:,.0f}"


def _levels(ledger: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not ledger:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for level in ("sample", "user"):
        data = ledger.get(f"{level}_level")
        if not isinstance(data, dict):
            continue
        streams = [s for s in data.get("streams") or [] if isinstance(s, dict)]
        eps = {str(s.get("party")): s.get("epsilon") for s in streams}
        finite = [float(e) for e in eps.values() if is_real(e)]
        scope = ledger.get(f"{level}_level_scope") or {}
        stops = [b for s in streams for b in s.get("budget_stops") or []]
        out[level] = {
            "epsilon_max": max(finite) if finite else None,
            "epsilon_per_party": eps,
            "delta": data.get("delta"),
            "budget": data.get("max_epsilon"),
            "budget_reached": bool(stops),
            "budget_stops": stops,
            "method": streams[0].get("method") if streams else None,
            "mechanism": scope.get("mechanism"),
            "adjacency": scope.get("adjacency"),
            "protects": scope.get("protects"),
            "public": scope.get("public"),
        }
    return out


def _split_configurations(run: Run) -> list[dict[str, Any]]:
    """A split run's ε per configuration, with what each ε covers and does not cover."""
    split = run.documents.get("split")
    scopes = split.get("privacy_scopes") if isinstance(split, dict) else None
    out = []
    for name, entry in (scopes or {}).items():
        scope = entry.get("scope") if isinstance(entry, dict) else None
        if not isinstance(scope, dict):
            continue
        out.append({
            "configuration": name,
            "differential_privacy": bool(scope.get("differential_privacy")),
            "epsilon": entry.get("epsilon"), "delta": entry.get("delta"),
            "unit": scope.get("unit"), "adjacency": scope.get("adjacency"),
            "mechanism": scope.get("mechanism"), "accountant": scope.get("accountant"),
            "re_accountable": bool(entry.get("ledgers")),
            "covers": [c.get("channel") for c in scope.get("epsilon_covers") or []
                       if isinstance(c, dict)],
            "does_not_cover": [f"{c.get('channel')} ({c.get('direction')})"
                               for c in scope.get("epsilon_does_not_cover") or []
                               if isinstance(c, dict)],
        })
    return out


def _rounds(run: Run) -> list[dict[str, Any]]:
    history = run.documents.get("history")
    accuracy: dict[int, Any] = {}
    eps: dict[int, Any] = {}
    per_client: dict[int, Any] = {}
    if isinstance(history, dict):
        for e in history.get("rounds") or []:
            if isinstance(e, dict) and is_int(e.get("round")):
                metrics = e.get("metrics") if isinstance(e.get("metrics"), dict) else {}
                accuracy[e["round"]] = metrics.get("accuracy")
                priv = e.get("privacy") if isinstance(e.get("privacy"), dict) else {}
                eps[e["round"]] = priv.get("epsilon")
                sample = priv.get("sample_level") if isinstance(priv.get("sample_level"),
                                                                 dict) else {}
                per_client[e["round"]] = sample.get("per_client")
    return [{
        "round": rd.round, "status": rd.status, "sampled": rd.sampled,
        "survivors": rd.survivors, "dropouts": {str(k): v for k, v in rd.dropouts.items()},
        "accuracy": accuracy.get(rd.round), "epsilon": eps.get(rd.round),
        "epsilon_per_client": per_client.get(rd.round),
    } for rd in run.rounds]


def _stages(run: Run) -> dict[str, dict[str, float]]:
    """Seconds and bytes per protocol stage, summed over the run's rounds."""
    out: dict[str, dict[str, float]] = {}

    def add(stage: str, key: str, value: Any) -> None:
        if is_real(value):
            row = out.setdefault(stage, {"seconds": 0.0, "bytes_up": 0.0, "bytes_down": 0.0})
            row[key] = row.get(key, 0.0) + float(value)

    history = run.documents.get("history")
    if isinstance(history, dict):
        for e in history.get("rounds") or []:
            stages = ((e.get("seconds") or {}).get("stages") or {}) if isinstance(e, dict) else {}
            for stage, row in stages.items():
                if isinstance(row, dict):
                    add(stage, "seconds", (row.get("client_max") or 0) + (row.get("server") or 0))
    for line in run.transcript:
        stage = line.get("stage")
        if isinstance(stage, str) and is_int(line.get("size")):
            if line.get("direction") == "up":
                add(stage, "bytes_up", line["size"])
            elif line.get("direction") == "down":
                add(stage, "bytes_down", line["size"])
    metrics = run.result.get("metrics") if isinstance(run.result.get("metrics"), dict) else {}
    for stage, row in (metrics.get("stages") or {}).items():
        if isinstance(row, dict):
            add(stage, "seconds", (row.get("client_seconds_max") or 0)
                + (row.get("server_seconds") or 0))
    return out


def _protocol_units(run: Run) -> dict[str, Any]:
    """The protocol's parameters in units an auditor can read."""
    p = run.parameters
    family = _family(run.protocol)
    out: dict[str, Any] = {"protocol": run.protocol, "clients": p.get("num_clients")}
    if family == "secagg":
        out.update({
            "graph": ("complete graph (every pair of clients shares masks)"
                      if p.get("degree") == (p.get("num_clients") or 0) - 1 else
                      f"sparse graph: each client shares masks with {p.get('degree')} others"),
            "shares_needed_to_unmask": p.get("threshold"),
            "threat_model": p.get("threat"),
            "assumed_corrupt_fraction_of_clients": p.get("corrupt_rate"),
            "assumed_dropout_rate": p.get("dropout_rate"),
            "probability_a_round_fails": p.get("failure_probability"),
            "integer_ring_bits": p.get("bits"),
        })
        dd = p.get("distributed_dp")
        if isinstance(dd, dict):
            out["update_l2_norm_bound"] = dd.get("l2_clip")
            out["noise_std_per_coordinate_in_update_units"] = dd.get("noise_std_update_units")
            out["noise"] = f"distributed {dd.get('mechanism')}, noise multiplier " \
                           f"{dd.get('noise_multiplier')}"
        elif is_real(p.get("clip")) and is_real(p.get("scale")) and p["scale"]:
            out["update_value_bound"] = p.get("clip")
            out["quantization_step"] = 1.0 / float(p["scale"])
    elif family == "ckks":
        ctx = p.get("context") if isinstance(p.get("context"), dict) else {}
        out.update({"ring_dimension": ctx.get("poly_modulus_degree"),
                    "coefficient_modulus_bits": ctx.get("total_modulus_bits"),
                    "security_bits": ctx.get("security_bits"),
                    "update_value_bound": p.get("clip"),
                    "decryption_noise_bound": p.get("decryption_noise_bound")})
    elif family == "paillier":
        out.update({"key_bits": p.get("key_bits"), "update_value_bound": p.get("clip"),
                    "quantization_step": (1.0 / float(p["scale"])) if is_real(p.get("scale"))
                    and p["scale"] else None})
    return out


def _parties_and_threat(family: str, p: Mapping[str, Any], clients: Any) -> list[str]:
    holder = " and a key holder (a separate party that holds the decryption key)" if family in (
        "ckks", "paillier") else ""
    out = [f"Parties: {clients} clients, one server{holder}. Each client held its own data and "
           "update. The server saw " + _SEES.get(family, "what the protocol sends it")
           + ". It never held a client's secret keys"
           + (", and the key holder saw only the aggregate it decrypted." if holder else ".")]
    corrupt = p.get("corrupt_rate")
    if family == "secagg" and p.get("threat") != "malicious":
        out.append("Threat model: honest-but-curious server. The server is trusted to follow the "
                   "protocol; a server that deviates from it can learn one client's input "
                   "exactly (by declaring that client's peers dropped). Up to a fraction "
                   f"{corrupt} of clients may collude with the server.")
    elif family == "secagg":
        out.append("Threat model: malicious server. Clients sign their keys and run a "
                   "consistency round, so a deviating server is caught rather than served; up "
                   f"to a fraction {corrupt} of clients may collude with it.")
    elif family == "plain":
        out.append("Threat model: none. 'plain' sends updates in the clear; it is the insecure "
                   "baseline and protects nothing from the server.")
    else:
        out.append("Threat model: the server and the key holder do not collude; the key holder "
                   "decrypts only the aggregate the server presents.")
    return out


def _ensemble_paragraph(run: Run) -> str:
    doc = run.documents.get("ensemble") or {}
    settings = doc.get("settings") if isinstance(doc.get("settings"), dict) else {}
    eps = doc.get("epsilon") if isinstance(doc.get("epsilon"), dict) else {}
    answered = sum(rd.status == "ok" for rd in run.rounds)
    return (
        "Private ensemble (PATE with GNMax): each party trained its own model on its own data; "
        "for every batch of the querier's inputs, the parties' one-hot votes plus their shares "
        f"of {settings.get('mechanism', 'distributed')} noise were summed in one "
        f"{run.protocol} round, so the server and the querier saw only the noisy vote "
        f"histograms and their argmax labels. {doc.get('queries_answered', '?')} queries were "
        f"answered in {answered} of {len(run.rounds)} batches. ε per party = ε per record = "
        f"{_fmt(eps.get('party_level'))} at δ = {eps.get('delta')} (budget "
        f"{eps.get('budget')}), for the adjacency '{eps.get('adjacency')}': a record is in one "
        "party's data, so it changes at most that party's votes. The client-level figure below "
        "is the same bound. Secure ensemble inference, where run, releases the mean of the "
        "parties' clipped probabilities WITHOUT differential privacy.")


def privacy_statement(run: Run, levels: Mapping[str, Mapping[str, Any]],
                      seal: Mapping[str, Any], checks: Sequence[Check]) -> list[str]:
    """The privacy statement, paragraph by paragraph (see the module docstring)."""
    p = run.parameters
    family = _family(run.protocol)
    clients = p.get("num_clients") or run.config.get("clients")
    out: list[str] = []
    failed = [c for c in checks if c.ok is False]
    if failed:
        out.append(f"THIS RUN FAILED {len(failed)} AUDIT CHECK(S); the statements below are "
                   "what the run claims and must not be relied on until they are resolved.")
    seeded = bool(run.result.get("seeded") or run.config.get("seeded"))
    if seeded:
        out.append("SEEDED RUN: its keys, masks, noise and sampling were derived from a "
                   f"seed ({run.config.get('seed')}) that is written in config.json. Anyone "
                   "with the seed can recompute every secret: this run is NOT private and "
                   "provides NO privacy guarantee, whatever the figures below say.")
    if run.kind == "split":
        settings = run.config.get("settings") if isinstance(run.config.get("settings"),
                                                            dict) else {}
        out.append(f"Parties: {settings.get('clients', '?')} clients, each holding its data, its "
                   "labels and the first layers of the model; one server holding the rest of "
                   "the model. The server receives what each configuration below lists (the "
                   "cut-layer activations, and in some configurations labels or gradients); "
                   "SplitFed averages the clients' layers through "
                   f"{run.config.get('protocol')}.")
    else:
        out += _parties_and_threat(family, p, clients)
    if run.kind == "ensemble":
        out.append(_ensemble_paragraph(run))
    sample, user = levels.get("sample"), levels.get("user")
    if sample:
        out.append(
            f"Record-level (sample-level) privacy: ε = {_fmt(sample['epsilon_max'])} at "
            f"δ = {sample['delta']} for every client's records (the largest over clients), "
            f"for the adjacency '{sample.get('adjacency')}'. Mechanism: "
            f"{sample.get('mechanism')}. Accountant: {sample.get('method')}. Public (not "
            f"protected): {', '.join(sample.get('public') or []) or 'nothing stated'}.")
    if user:
        out.append(
            f"Client-level (user-level) privacy of the released sums: ε = "
            f"{_fmt(user['epsilon_max'])} at δ = {user['delta']}, for the adjacency "
            f"'{user.get('adjacency')}'. Mechanism: {user.get('mechanism')}. Accountant: "
            f"{user.get('method')}." + (
                " An ε this large is no meaningful guarantee." if is_real(user["epsilon_max"])
                and float(user["epsilon_max"]) > 20 else ""))
    split = _split_configurations(run) if run.kind == "split" else []
    for cfg in split:
        if cfg["differential_privacy"]:
            out.append(
                f"Split learning, {cfg['configuration']}: ε = {_fmt(cfg['epsilon'])} at δ = "
                f"{cfg['delta']} per {cfg['unit']} ({cfg['adjacency']}); mechanism: "
                f"{cfg['mechanism']}; accountant: {cfg['accountant']}. This ε covers "
                f"{', '.join(cfg['covers']) or 'nothing'}; it does NOT cover "
                f"{', '.join(cfg['does_not_cover']) or 'anything else'}.")
        else:
            out.append(f"Split learning, {cfg['configuration']}: no differential privacy; "
                       f"the server receives {', '.join(cfg['does_not_cover']) or 'its inputs'} "
                       "without a formal bound.")
    if split and not any(cfg.get("re_accountable") for cfg in split):
        out.append("This split run records each configuration's ε and scope but not its "
                   "privacy events (it was written by an older secureagg): the ε figures above "
                   "are the library's own and are not re-accounted independently.")
    if not sample and not user and not split:
        out.append("Differential privacy: none. The run carries no formal privacy guarantee "
                   "for the data behind the released aggregates or the model.")
    for name, lv in (("record-level", sample), ("client-level", user)):
        if lv and lv.get("budget") is not None:
            out.append(f"Budget ({name}): ε ≤ {lv['budget']}; " + (
                f"reached - the run stopped spending ({len(lv['budget_stops'])} stop(s))."
                if lv["budget_reached"] else "not reached."))
    drops = []
    for rd in run.rounds:
        if rd.dropouts or (rd.sampled is not None and len(rd.survivors) < len(rd.sampled)):
            what = ", ".join(
                f"{c} at {s}" + (" (its input was already in: counted)" if c in rd.survivors
                                 else "")
                for c, s in sorted(rd.dropouts.items())) or "-"
            total = len(rd.sampled) if rd.sampled is not None else "?"
            drops.append(f"round {rd.round}: {len(rd.survivors)} of {total} survived "
                         f"(dropped: {what})")
    if run.kind != "split":
        out.append("Dropouts: " + ("; ".join(drops) if drops else "none; every sampled client "
                                   "survived every round") + ".")
    key = (seal.get("operator") or {}) if seal else {}
    version = run.config.get("secureagg_version")
    writer = f"secureagg {version}" if version else seal.get("library", "an unknown version")
    sealed = (f"sealed by operator key {str(key.get('public_key'))[:16]}... "
              f"({key.get('key_source')})") if seal else "NOT SEALED"
    out.append(f"Record: {sealed}; written by {writer}.")
    return out


def _independent_paragraphs(independent: Mapping[str, Any] | None,
                            canary: Mapping[str, Any] | None) -> list[str]:
    out = []
    if independent and independent.get("available"):
        parts = []
        for level, data in (independent.get("levels") or {}).items():
            streams = [s for s in (data or {}).get("streams") or [] if isinstance(s, dict)]
            tight = [s for s in streams if is_real(s.get("tight_epsilon"))]
            if not tight:
                continue
            worst = max(tight, key=lambda s: float(s.get("stated_epsilon") or 0))
            name = {"sample": "record-level", "user": "client-level"}.get(level, level)
            parts.append(
                f"{name}: stated ε {_fmt(worst.get('stated_epsilon'))}, independent "
                f"{_fmt(worst.get('tight_epsilon'))} ({worst.get('tight_source')}), difference "
                f"{_fmt(worst.get('abs_diff'))}" + (", for the client with the largest stated ε"
                                                    if level == "sample" else ""))
        failed = [s for _, d in (independent.get("levels") or {}).items()
                  for s in (d or {}).get("streams") or [] if s.get("verdict") == "fail"]
        out.append("Independent re-accounting with Google's dp-accounting (RDP and PLD) and the "
                   "published closed forms: " + ("; ".join(parts) or "no stream to compare")
                   + (". Every stated ε is at or above the independent tight value."
                      if not failed else f". {len(failed)} STATED ε BELOW THE INDEPENDENT TIGHT "
                      "VALUE: the run under-reports its privacy loss."))
    elif independent:
        out.append(f"Independent re-accounting: not done ({independent.get('reason')}).")
    if canary:
        out.append(
            f"Empirical lower bound (canary audit, Steinke-Nasr-Jagielski 2023): with "
            f"{canary.get('canaries')} canaries the training leaked at least ε = "
            f"{_fmt(canary.get('epsilon_lower_bound'))} at {canary.get('confidence')} "
            f"confidence, against the claimed ε = {_fmt(canary.get('claimed_epsilon'))}. A lower "
            "bound below the claim is consistent with it; above it, the claim is refuted."
            + (f" With DP off, the same audit found ε ≥ "
               f"{_fmt(canary['control_no_dp'].get('epsilon_lower_bound'))} "
               f"({canary['control_no_dp'].get('correct')} of "
               f"{canary['control_no_dp'].get('guesses')} guesses right): it detects leakage "
               "when there is some." if isinstance(canary.get("control_no_dp"), dict) else ""))
    return out


def _with(statement: list[str], extra: list[str]) -> list[str]:
    """``extra`` paragraphs before the statement's last one (the record)."""
    return [*statement[:-1], *extra, *statement[-1:]] if statement else extra


def build_report(run: Run, checks: Sequence[Check], seal: Mapping[str, Any], *,
                 pinned: bool, independent: Mapping[str, Any] | None,
                 canary: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``report.json``'s document (see the module docstring)."""
    from secureagg.version import VERSION

    levels = _levels(run.ledger)
    summary = summarise(checks)
    return {
        "format": REPORT_FORMAT,
        "run_dir": str(run.path),
        "kind": run.kind,
        "library": run.config.get("secureagg_version") or seal.get("library"),
        "audited_with": f"secureagg {VERSION}",
        "verdict": "fail" if summary.get("failed") else "pass",
        "summary": summary,
        "checks": [c.to_dict() for c in checks],
        "integrity": {
            "sealed": bool(seal),
            "operator_key": (seal.get("operator") or {}).get("public_key") if seal else None,
            "key_source": (seal.get("operator") or {}).get("key_source") if seal else None,
            "pinned": pinned,
            "transcript": seal.get("transcript") if seal else None,
            "sealed_at": seal.get("sealed_at") if seal else None,
        },
        "seeded": bool(run.result.get("seeded") or run.config.get("seeded")),
        "protocol": _protocol_units(run),
        "privacy": {"levels": levels, "independent": independent,
                    "split_configurations": _split_configurations(run)},
        "rounds": _rounds(run),
        "stages": _stages(run),
        "statement": _with(privacy_statement(run, levels, seal, checks),
                           _independent_paragraphs(independent, canary)),
        "canary": dict(canary) if canary else None,
    }
