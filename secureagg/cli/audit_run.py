"""``secureagg audit``'s checks beyond the transcript summary: the seal, the recomputing checks,
the ledger replayed by the library's accountant and re-accounted by Google's dp-accounting, the
canary audit (``--canaries``), and the reports written into the run directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from secureagg.cli.common import _CliError, _one_line
from secureagg.errors import ConfigurationError, InvalidInputError, MissingDependencyError
from secureagg.validation import is_int, is_real

__all__ = ["independent_audit", "write_reports"]


def independent_audit(run: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The seal, the recomputing checks and the independent accounting, as checks and the
    report document of :mod:`secureagg.audit.report`."""
    from secureagg.audit import checks as audit_checks
    from secureagg.audit.report import build_report
    from secureagg.audit.seal import load_public_key

    expected = None
    if args.operator_key is not None:
        try:
            expected = load_public_key(Path(args.operator_key).read_bytes())
        except OSError as exc:
            raise _CliError(f"--operator-key {args.operator_key}: {_one_line(exc)}") from None
    sealed, seal_doc = audit_checks.seal_checks(run, expected_key=expected)
    loaded = audit_checks.load_run(run)
    found = sealed + audit_checks.run_checks(loaded, replay=_replay)
    independent = _reaccount(loaded, found)
    canary = _canary(loaded, args, found) if args.canaries else None
    report = build_report(loaded, found, seal_doc, pinned=expected is not None,
                          independent=independent, canary=canary)
    return {"checks": found, "report": report}


def _replay(ledger: Any) -> dict[str, Any]:
    """The library's accountant replaying one ledger (Opacus for the Gaussian streams)."""
    from secureagg.dp.accounting import PrivacyAccountant

    return PrivacyAccountant.from_ledger(ledger).report()


def _reaccount(loaded: Any, found: list[Any]) -> dict[str, Any] | None:
    """Google's dp-accounting on the run's ledger (the audit extra), as checks and figures."""
    from secureagg.audit.checks import Check

    if loaded.kind == "split":
        return _reaccount_split(loaded, found)
    if loaded.ledger is None or not loaded.ledger.get("differential_privacy", True):
        return None
    try:
        from secureagg.audit.reaccount import reaccount
    except ImportError:  # pragma: no cover - the module ships with the package
        return {"available": False, "reason": "secureagg.audit.reaccount is missing"}
    try:
        result = reaccount(loaded.ledger)
    except ConfigurationError as exc:  # dp-accounting missing: say which extra
        found.append(Check("independent", "ε re-accounted with Google's dp-accounting", None,
                           _one_line(exc), "privacy_ledger.json"))
        return {"available": False, "reason": _one_line(exc)}
    except InvalidInputError as exc:
        found.append(Check("independent", "ε re-accounted with Google's dp-accounting", False,
                           _one_line(exc), "privacy_ledger.json"))
        return {"available": False, "reason": _one_line(exc)}
    for level, streams in _streams_of(result):
        for stream in streams:
            verdict = stream.get("verdict")
            who = ("the released sums" if stream.get("party") is None
                   else f"client {stream.get('party')}")
            found.append(Check(
                "independent",
                f"{level}-level ε of {who} is not below the independent tight value",
                True if verdict == "ok" else (False if verdict == "fail" else None),
                str(stream.get("reason") or ""), "privacy_ledger.json"))
            agrees = stream.get("rdp_agrees_within_1pct")
            if agrees is not None:
                found.append(Check(
                    "independent", f"{level}-level ε of {who}: dp-accounting's RDP agrees with "
                    "the run's within 1%", bool(agrees),
                    f"stated {stream.get('stated_epsilon')}, dp-accounting RDP "
                    f"{stream.get('rdp_epsilon')}", "privacy_ledger.json"))
    return {"available": True, **result}


def _reaccount_split(loaded: Any, found: list[Any]) -> dict[str, Any] | None:
    """A split run: each DP configuration's ledgers (one per client), replayed by the library
    and re-accounted independently."""
    from secureagg.audit.checks import Check

    split = loaded.documents.get("split")
    scopes = split.get("privacy_scopes") if isinstance(split, dict) else None
    ledgers = {
        f"{name}/client {party}": ledger
        for name, entry in (scopes or {}).items() if isinstance(entry, dict)
        for party, ledger in (entry.get("ledgers") or {}).items() if isinstance(ledger, dict)
    }
    if not ledgers:
        return None
    try:
        from secureagg.audit.reaccount import reaccount
    except ImportError:  # pragma: no cover - the module ships with the package
        return {"available": False, "reason": "secureagg.audit.reaccount is missing"}
    levels: dict[str, Any] = {}
    for name, ledger in ledgers.items():
        try:
            stated = _replay(ledger)
            result = reaccount(ledger)
        except ConfigurationError as exc:
            found.append(Check("independent", f"{name}: ε re-accounted", None, _one_line(exc),
                               "split.json"))
            return {"available": False, "reason": _one_line(exc)}
        except InvalidInputError as exc:
            found.append(Check("independent", f"{name}: ε re-accounted", False, _one_line(exc),
                               "split.json"))
            continue
        replayed = [s.get("epsilon") for s in stated.get("streams", [])]
        written = [s.get("epsilon") for s in ledger.get("streams") or []]
        found.append(Check("privacy", f"{name}: the ledger replayed to the ε it states",
                           replayed == written, f"stated {written}, replayed {replayed}",
                           "split.json"))
        for data in (result.get("levels") or {}).values():
            levels[name] = data
            for stream in data.get("streams") or []:
                verdict = stream.get("verdict")
                found.append(Check(
                    "independent", f"{name}: ε is not below the independent tight value",
                    True if verdict == "ok" else (False if verdict == "fail" else None),
                    str(stream.get("reason") or ""), "split.json"))
    verdicts = [d.get("verdict") for d in levels.values() if isinstance(d, dict)]
    return {"available": True, "levels": levels,
            "verdict": "fail" if "fail" in verdicts else (
                "ok" if verdicts and all(v == "ok" for v in verdicts) else "not re-accounted")}


def _streams_of(result: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    out = []
    for level, data in (result.get("levels") or {}).items():
        streams = data.get("streams") if isinstance(data, dict) else None
        if isinstance(streams, list):
            out.append((level, [s for s in streams if isinstance(s, dict)]))
    return out


def write_reports(run: Path, report: dict[str, Any], *, html: bool) -> list[Path]:
    """report.json, and report.html when matplotlib is installed (the audit extra)."""
    from secureagg.audit.rundir import RunDirectory

    out = RunDirectory(run)
    out.write_json("report.json", report)
    written = [run / "report.json"]
    if html:
        try:
            from secureagg.audit.html import render_html
        except ImportError:
            return written
        try:
            out.write_bytes("report.html", render_html(report).encode("utf-8"))
        except MissingDependencyError:
            return written
        written.append(run / "report.html")
    return written


def _canary(loaded: Any, args: argparse.Namespace, found: list[Any]) -> dict[str, Any]:
    """The canary audit of the run's configuration on digits, and its DP-off control."""
    from secureagg.audit.checks import Check

    if loaded.kind != "federated":
        raise _CliError(f"--canaries audits a federated DP-SGD configuration; {loaded.path} is a "
                        f"{loaded.kind} run")
    if not is_int(args.canaries) or args.canaries < 20:
        raise _CliError(f"--canaries must be an integer >= 20, got {args.canaries}")
    try:
        from secureagg.canary.digits import digits_canary_audit
    except ImportError as exc:
        raise _CliError(f"--canaries needs torch, opacus and scikit-learn ({_one_line(exc)}): "
                        "pip install 'secureagg[all]'") from None
    config = loaded.config
    sample = ((config.get("privacy") or {}).get("sample_level") or {})
    target = sample.get("epsilon") or sample.get("max_epsilon")
    rounds = int(args.canary_rounds or min(int(config.get("rounds") or 10), 20))
    setting: dict[str, Any] = {
        "protocol": loaded.protocol or "secagg+",
        "clients": int(config.get("num_clients") or config.get("clients") or 5),
        "rounds": rounds,
        "local_epochs": int(sample.get("local_epochs") or 2),
        "target_epsilon": target if is_real(target) else None,
    }
    print(f"canary audit: {args.canaries} canaries, {setting} on digits ...", file=sys.stderr,
          flush=True)
    runs = [("dp", setting["target_epsilon"])] if setting["target_epsilon"] else []
    if args.canary_control or not runs:
        runs.append(("control_no_dp", None))
    out: dict[str, Any] = {"configuration": setting, "seeded": args.canary_seed is not None,
                           "method": (
        "Steinke, Nasr, Jagielski 2023 (arXiv 2305.08846), one training run: the run's "
        "configuration retrained on sklearn's digits with canaries (random patterns, random "
        "labels) each included in client 0's data with probability 1/2; scored by the final "
        "model's logit margin; the bound holds at the stated confidence")}
    for name, epsilon in runs:
        audit = digits_canary_audit(
            epsilon, canaries=int(args.canaries), rounds=rounds,
            local_epochs=setting["local_epochs"], clients=setting["clients"],
            protocol=setting["protocol"], seed=args.canary_seed,
            run_seed=args.canary_seed).to_dict()
        out[name] = audit
        print(f"  {name}: claimed ε {audit['claimed_epsilon']}, lower bound "
              f"{audit['epsilon_lower_bound']:.3f} ({audit['correct']}/{audit['guesses']} "
              f"guesses right, {audit['seconds']:.0f} s)", file=sys.stderr, flush=True)
    main = out.get("dp") or out["control_no_dp"]
    out.update({k: main[k] for k in ("canaries", "claimed_epsilon", "epsilon_lower_bound",
                                     "confidence", "guesses", "correct")})
    if "dp" in out:
        found.append(Check(
            "canary", "the empirical lower bound does not exceed the claimed ε",
            not out["dp"]["refutes_claim"],
            f"lower bound {out['dp']['epsilon_lower_bound']:.3f} vs claimed "
            f"{out['dp']['claimed_epsilon']}", None))
    if "control_no_dp" in out:
        found.append(Check(
            "canary", "the audit detects leakage: with DP off its lower bound is clearly positive",
            out["control_no_dp"]["epsilon_lower_bound"] > 1.0,
            f"lower bound {out['control_no_dp']['epsilon_lower_bound']:.3f} without DP", None))
    return out
