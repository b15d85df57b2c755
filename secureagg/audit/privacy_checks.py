"""The auditor's privacy checks: the ledger replayed, and every release covered by it.

Part of :mod:`secureagg.audit.checks` (see its docstring): the ledger is replayed by the
library's accountant to the ε it states; for a federated run every released aggregate is covered
by a user-level ledger event (and nothing else is), every client whose update was released has
at least ``rounds taken part x local epochs x steps per epoch`` DP-SGD steps accounted, and the
events log counts the same steps as the ledger.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from secureagg.audit.checks import Check, Run
from secureagg.validation import is_int, is_real

__all__ = ["check_privacy"]


def _ledger_levels(ledger: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    if ledger.get("format") == "secureagg/fl-privacy-ledger/v1":
        return {lv: dict(ledger[f"{lv}_level"]) for lv in ("sample", "user")
                if isinstance(ledger.get(f"{lv}_level"), dict)}
    if ledger.get("format") == "secureagg-privacy-ledger/1":
        scopes = {s.get("scope") for s in ledger.get("streams") or [] if isinstance(s, dict)}
        return {str(next(iter(scopes))) if len(scopes) == 1 else "user": dict(ledger)}
    return {}


#: Replays one LEDGER_FORMAT ledger and returns its report (``PrivacyAccountant.from_ledger(data)
#: .report()``). Given by the caller: the accountant uses Opacus, and this layer imports no torch.
Replay = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def check_privacy(run: Run, replay: Replay | None = None) -> list[Check]:
    out: list[Check] = []
    if run.ledger is None:
        dp = run.config.get("privacy")
        if dp:
            out.append(Check("privacy", "a DP run has its privacy ledger", False,
                             "config.json configures DP, but privacy_ledger.json is missing",
                             "privacy_ledger.json"))
        return out
    levels = _ledger_levels(run.ledger)
    replayed_of: dict[str, dict[Any, Any]] = {}
    for level, data in levels.items():
        if replay is None:
            out.append(Check("privacy", f"{level}-level ledger replayed to the ε it states",
                             None, "no accountant given to replay it", "privacy_ledger.json"))
            continue
        try:
            report = replay(data)
        except Exception as exc:  # any replay failure is a failed check
            out.append(Check("privacy", f"{level}-level ledger replays", False,
                             f"{type(exc).__name__}: {exc}", "privacy_ledger.json"))
            continue
        replayed = {(s.get("party")): s.get("epsilon") for s in report.get("streams", [])}
        replayed_of[level] = replayed
        stated = {(s.get("party")): s.get("epsilon") for s in data.get("streams") or []
                  if isinstance(s, dict)}
        bad = []
        for party in sorted(set(replayed) | set(stated), key=str):
            a, b = stated.get(party), replayed.get(party)
            if not (is_real(a) and is_real(b) and math.isclose(float(a), float(b),
                                                               rel_tol=1e-9)):
                bad.append(f"party {party}: stated {a}, replayed {b}")
        out.append(Check("privacy", f"{level}-level ledger replayed to the ε it states",
                         not bad, "; ".join(bad) or f"{len(stated)} stream(s) agree",
                         "privacy_ledger.json"))
    if run.kind in ("federated", "ensemble") and levels:
        out += _federated_coverage(run, levels)
    if run.kind == "ensemble":
        out += _ensemble_claims(run, replayed_of.get("user"))
    return out


def _ensemble_claims(run: Run, replayed: Mapping[Any, Any] | None) -> list[Check]:
    """A private ensemble's stated ε (per party = per record) against the replayed ledger, and
    against its budget."""
    doc = run.documents.get("ensemble") or {}
    eps = doc.get("epsilon") if isinstance(doc.get("epsilon"), dict) else {}
    party, record, budget = eps.get("party_level"), eps.get("record_level"), eps.get("budget")
    answered = [rd for rd in run.rounds if rd.status == "ok"]
    out = [Check("privacy", "ε per record is stated no lower than ε per party (a record is in "
                            "one party's data: replacing it changes at most that party's votes)",
                 is_real(party) and is_real(record) and float(record) >= float(party),
                 f"per party {party}, per record {record}", "ensemble.json")]
    if replayed is not None:
        tight = replayed.get(None, 0.0 if not answered else None)
        ok = is_real(party) and is_real(tight) and float(party) >= float(tight) * (1 - 1e-9)
        out.append(Check("privacy", "the ensemble's stated ε is not below the replayed ledger's",
                         ok, f"stated {party}, replayed {tight} over {len(answered)} answered "
                             "batches", "ensemble.json"))
    if is_real(budget):
        out.append(Check("privacy", "the ensemble's ε is within its budget",
                         is_real(party) and float(party) <= float(budget),
                         f"ε {party} <= budget {budget}", "ensemble.json"))
    return out


def _federated_coverage(run: Run, levels: Mapping[str, Mapping[str, Any]]) -> list[Check]:
    out: list[Check] = []
    released = [rd for rd in run.rounds if rd.status in ("ok", "completed") and rd.survivors]
    user = levels.get("user")
    if user is not None:
        noise = {int(e["round_id"]): e for e in user.get("events") or []
                 if isinstance(e, dict) and e.get("kind") == "distributed_noise_round"
                 and is_int(e.get("round_id"))}
        central = [e for e in user.get("events") or []
                   if isinstance(e, dict) and e.get("kind") == "gaussian_steps"]
        problems = []
        if noise or not central:
            missing = [rd.round for rd in released if rd.round not in noise]
            extra = sorted(set(noise) - {rd.round for rd in released})
            if missing:
                problems.append(f"released rounds {missing} have no noise event in the ledger")
            if extra:
                problems.append(f"the ledger accounts rounds {extra} that released nothing")
            for rd in released:
                e = noise.get(rd.round)
                one_source = e is not None and e.get("clients") == 1  # one noise source (a
                # key holder's): its noise does not depend on how many survived
                if e is not None and not one_source and e.get("survivors") != len(
                        rd.survivors):
                    problems.append(f"round {rd.round}: the ledger counts {e.get('survivors')} "
                                    f"survivors, the round {len(rd.survivors)}")
        else:
            steps = sum(int(e.get("steps", 1)) for e in central)
            if steps < len(released):
                problems.append(f"{len(released)} released rounds, {steps} central DP releases "
                                "accounted")
        out.append(Check("privacy", "every released aggregate is covered by the user-level "
                                    "ledger, and nothing else", not problems,
                         "; ".join(problems) or f"{len(released)} released rounds covered",
                         "privacy_ledger.json"))
    sample = levels.get("sample")
    if sample is not None:
        settings = run.config.get("privacy") or {}
        epochs = (settings.get("sample_level") or {}).get("local_epochs")
        per_epoch: dict[int, int] = {}
        accounted: Counter[int] = Counter()
        for e in sample.get("events") or []:
            if not isinstance(e, dict) or not is_int(e.get("party")):
                continue
            if e.get("kind") == "mechanism_configured":
                spe = (e.get("parameters") or {}).get("steps_per_epoch")
                if is_int(spe):
                    per_epoch[int(e["party"])] = int(spe)
            elif e.get("kind") == "gaussian_steps" and is_int(e.get("steps")):
                accounted[int(e["party"])] += int(e["steps"])
        took_part: Counter[int] = Counter(c for rd in released for c in rd.survivors)
        problems = []
        for client, count in sorted(took_part.items()):
            need = count * int(epochs) * per_epoch[client] if (
                is_int(epochs) and client in per_epoch) else count
            if accounted[client] < need:
                problems.append(f"client {client} took part in {count} released rounds but "
                                f"the ledger accounts {accounted[client]} DP-SGD steps "
                                f"(< {need})")
        out.append(Check("privacy", "every released client update is covered by the "
                                    "sample-level ledger", not problems,
                         "; ".join(problems) or f"{len(took_part)} clients covered",
                         "privacy_ledger.json"))
        logged: Counter[int] = Counter()
        for e in run.events:
            if e.get("kind") == "gaussian_steps" and e.get("scope") == "sample" and is_int(
                    e.get("party")) and is_int(e.get("steps")):
                logged[int(e["party"])] += int(e["steps"])
        if run.events:
            out.append(Check("privacy", "the events log and the ledger count the same DP-SGD "
                                        "steps per client", logged == accounted,
                             "" if logged == accounted else
                             f"log {dict(logged)} vs ledger {dict(accounted)}",
                             "privacy_events.jsonl"))
    return out


