"""The auditor's checks: each recomputes a claim of the run from what the run recorded.

A run directory states many things: who survived each round, what error the decoded sum has,
which protocol parameters it ran with, what ε it spent. None of these is taken on trust here:

* **survivors** - per round, from the transcript: a survivor must have sent the server its input
  (``secagg/masked-input``, ``plain|ckks|paillier/upload``) and must not be recorded as dropped
  at or before that stage; a sampled client that is not a survivor must have its absence recorded
  (a dropout, a failure, a refusal); an input the server received from a client that is not a
  survivor must have been refused on record;
* **error** - the bound on the decoded error is recomputed from the encoder's parameters (for
  the fixed-point encodings: survivors x max weight / scale (x (1 + 2^-18) for float64), the
  stochastic-rounding bound), and
  the recorded error must lie within the recomputed bound;
* **parameters** - from first principles, independently of the code that chose them: SecAgg(+)'s
  correctness failure probability (a union bound over the clients of fewer than ``t`` live
  neighbours among ``k``) and the threshold the threat model needs against the corrupted
  neighbours; CKKS's coefficient modulus against the HomomorphicEncryption.org standard's limit for
  its ring dimension at 128-bit security; Paillier's key size; and the bit width against the
  no-overflow condition ``n * w * ceil(clip * scale) + noise headroom <= 2^(bits-1) - 1``;
* **privacy** - the ledger is replayed by the library's accountant to the ε it states; every
  released aggregate of a DP run is covered by a ledger event, every client whose update was
  released has enough DP-SGD steps accounted for the rounds it took part in, and the events log
  agrees with the ledger.

Each check is a :class:`Check` (``ok`` is ``True``, ``False`` or ``None`` for "not applicable",
with the reason). :func:`run_checks` runs all that apply to a loaded :class:`Run`.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secureagg.audit import seal as _seal
from secureagg.validation import is_int, is_real

__all__ = ["Check", "Round", "Run", "load_run", "run_checks"]

#: The message kinds that carry a client's input, per protocol family.
INPUT_KINDS = frozenset({"secagg/masked-input", "plain/upload", "ckks/upload", "paillier/upload"})
#: Stage order per protocol family ("train" is the client's local step before any message).
STAGE_ORDER = {
    "secagg": ("train", "advertise", "share", "masked", "consistency", "unmask"),
    "plain": ("train", "upload"),
    "ckks": ("train", "keys", "upload", "aggregate", "release"),
    "paillier": ("train", "keys", "upload", "aggregate", "release"),
}
#: HomomorphicEncryption.org security standard (2018), Table 1, classical 128-bit security:
#: the largest total coefficient modulus (bits) per ring dimension.
HE_STANDARD_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
#: NIST SP 800-57 Part 1, Table 2: the security strength (bits) of an RSA/Paillier modulus.
FACTORING_STRENGTH = ((15360, 256), (7680, 192), (3072, 128), (2048, 112))
RELATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Check:
    """One check: its ``name`` (what is checked), ``ok`` (``None``: not applicable), ``detail``
    (the figures, or why it failed), the ``file`` (and round) it concerns, and its ``group``."""

    group: str
    name: str
    ok: bool | None
    detail: str = ""
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "check": self.name, "ok": self.ok, "detail": self.detail,
                "file": self.file}


@dataclass
class Round:
    """One aggregation round as the run recorded it."""

    round: int
    status: str | None
    sampled: list[int] | None
    survivors: list[int]
    dropouts: dict[int, str]
    absent: set[int] = field(default_factory=set)  # failures, stragglers, refusals on record
    refused: set[int] = field(default_factory=set)


@dataclass
class Run:
    """A run directory, loaded: its kind, documents, transcript and rounds."""

    path: Path
    kind: str
    config: dict[str, Any]
    result: dict[str, Any]
    transcript: list[dict[str, Any]]
    rounds: list[Round]
    ledger: dict[str, Any] | None
    events: list[dict[str, Any]]
    documents: dict[str, Any]
    problems: list[str]

    @property
    def protocol(self) -> str | None:
        p = self.config.get("protocol")
        return p if isinstance(p, str) else None

    @property
    def parameters(self) -> dict[str, Any]:
        p = self.config.get("parameters")
        return p if isinstance(p, dict) else {}


def _get(doc: Any, key: str, default: Any = None) -> Any:
    """``doc[key]`` when ``doc`` is a dict holding it, else ``default`` (typed ``Any``)."""
    return doc.get(key, default) if isinstance(doc, dict) else default


def _read_json(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path.name}: cannot be read as JSON ({exc})")
        return None


def _ids(value: Any) -> list[int] | None:
    if isinstance(value, list) and all(is_int(v) for v in value):
        return [int(v) for v in value]
    return None


def _stage_map(value: Any) -> dict[int, str]:
    if not isinstance(value, dict):
        return {}
    out = {}
    for k, v in value.items():
        if isinstance(k, str) and k.lstrip("-").isdigit() and isinstance(v, str):
            out[int(k)] = v
    return out


def _senders(value: Any) -> set[int]:
    out: set[int] = set()
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and is_int(item.get("sender", item.get("client"))):
                out.add(int(item.get("sender", item.get("client"))))
            elif is_int(item):
                out.add(int(item))
    return out


def load_run(directory: str | Path) -> Run:
    """Load the run in ``directory`` (any kind: simulate, self-test, federated, Flower, split,
    private ensemble)."""
    root = Path(directory)
    problems: list[str] = []
    config = _read_json(root / "config.json", problems)
    result = _read_json(root / "result.json", problems)
    if not isinstance(config, dict):
        problems.append("config.json: missing or not a JSON object")
        config = {}
    if result is not None and not isinstance(result, dict):
        problems.append("result.json: not a JSON object")
    result = result if isinstance(result, dict) else {}
    try:
        transcript = _seal.read_transcript_lines(root / _seal.TRANSCRIPT)
    except _seal.ChainError as exc:
        problems.append(str(exc))
        transcript = []
    history = _read_json(root / "history.json", problems)
    flower_rounds = _read_json(root / "rounds.json", problems)
    split = _read_json(root / "split.json", problems)
    ensemble = _read_json(root / "ensemble.json", problems)
    ledger = _read_json(root / "privacy_ledger.json", problems)
    events: list[dict[str, Any]] = []
    events_path = root / "privacy_events.jsonl"
    if events_path.is_file():
        for number, line in enumerate(events_path.read_text("utf-8").splitlines(), start=1):
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                problems.append(f"privacy_events.jsonl line {number}: not JSON")
                continue
            if isinstance(item, dict):
                events.append(item)
    rounds: list[Round] = []
    if isinstance(history, dict):
        kind = "federated"
        for e in history.get("rounds") or []:
            if not isinstance(e, dict) or not is_int(e.get("round")):
                problems.append("history.json: a round entry without a round number")
                continue
            absent = {int(c) for c in _ids(e.get("stragglers")) or []}
            absent |= _senders(e.get("client_failures")) | _senders(e.get("client_aborts"))
            refused = _senders(e.get("rejected")) if isinstance(e.get("rejected"), list) else set()
            rounds.append(Round(int(e["round"]), e.get("status"), _ids(e.get("sampled")),
                                _ids(e.get("participants")) or [], _stage_map(e.get("dropouts")),
                                absent | refused, refused))
    elif isinstance(flower_rounds, list):
        kind = "flower"
        for e in flower_rounds:
            if not isinstance(e, dict) or not is_int(e.get("round")):
                continue
            nodes = e.get("nodes") if isinstance(e.get("nodes"), dict) else {}
            sampled = sorted(int(p) for p in nodes if p.lstrip("-").isdigit() and int(p) >= 0)
            refused = _senders(e.get("rejected"))
            absent = _senders(e.get("failed")) | _senders(e.get("timed_out")) | refused
            absent |= _senders(e.get("late"))
            dropped = _ids(e.get("dropped")) or []
            rounds.append(Round(int(e["round"]), e.get("status"), sampled,
                                _ids(e.get("survivors")) or [], dict.fromkeys(dropped, "?"),
                                absent, refused))
    elif isinstance(split, dict):
        kind = "split"
    elif isinstance(ensemble, dict):
        kind = "ensemble"
        result = result or ensemble  # ensemble.json is the run's result
        rounds = _ensemble_batches(ensemble, _ids(config.get("parties")), problems)
    else:
        kind = "one-round"
        metrics = result.get("metrics") if isinstance(result.get("metrics"), dict) else {}
        clients = config.get("clients")
        refused = _senders(metrics.get("rejected")) | _senders(metrics.get("client_aborts"))
        rounds.append(Round(
            int(result.get("round_id", 0)) if is_int(result.get("round_id", 0)) else 0,
            result.get("status"), list(range(clients)) if is_int(clients) else None,
            _ids(result.get("survivors")) or [], _stage_map(config.get("dropouts")),
            refused, refused,
        ))
    docs = {"history": history, "rounds": flower_rounds, "split": split, "ensemble": ensemble}
    return Run(root, kind, config, result, transcript, rounds,
               ledger if isinstance(ledger, dict) else None, events, docs, problems)


def _ensemble_batches(doc: dict[str, Any], parties: list[int] | None,
                      problems: list[str]) -> list[Round]:
    """A private ensemble's batches as rounds: one SecAgg round per batch of queries; every
    voting party is asked; a refused vote or a party without one is an absence on record."""
    rounds = []
    for e in doc.get("batches") or []:
        if not isinstance(e, dict) or not is_int(e.get("batch")):
            problems.append("ensemble.json: a batch entry without a batch number")
            continue
        status = "ok" if e.get("answered") is True else (
            "stopped_by_budget" if e.get("stopped_by_budget") else "aborted")
        refused = {int(k) for k in _stage_map(e.get("refused"))}
        absent = {int(c) for c in _ids(e.get("absent")) or []} | refused
        rounds.append(Round(int(e["batch"]), status, parties, _ids(e.get("survivors")) or [],
                            _stage_map(e.get("dropped")), absent, refused))
    return rounds


# ------------------------------------------------------------------------------ survivors


def _family(protocol: str | None) -> str | None:
    if protocol in ("secagg", "secagg+"):
        return "secagg"
    return protocol if protocol in ("plain", "ckks", "paillier") else None


def _round_of(line: Mapping[str, Any], run: Run) -> int:
    r = line.get("round", line.get("round_id"))
    if run.kind == "one-round":
        return run.rounds[0].round if run.rounds else 0
    return int(r) if is_int(r) else -1


def check_survivors(run: Run) -> list[Check]:
    out: list[Check] = []
    family = _family(run.protocol)
    order = STAGE_ORDER.get(family or "", ())
    inputs: dict[int, Counter[int]] = defaultdict(Counter)
    input_stage: dict[int, str] = {}
    for line in run.transcript:
        if line.get("direction") == "up" and line.get("kind") in INPUT_KINDS:
            r = _round_of(line, run)
            if is_int(line.get("sender")):
                inputs[r][int(line["sender"])] += 1
            if isinstance(line.get("stage"), str):
                input_stage[r] = line["stage"]
    for rd in run.rounds:
        where = f"round {rd.round}"
        if rd.status not in ("ok", "completed"):
            continue
        survivors = rd.survivors
        senders = set(inputs.get(rd.round, {}))
        problems = []
        if len(set(survivors)) != len(survivors):
            problems.append("a survivor is listed twice")
        if rd.sampled is not None:
            outside = sorted(set(survivors) - set(rd.sampled))
            if outside:
                problems.append(f"survivors {outside} were not sampled for the round")
        no_input = sorted(set(survivors) - senders)
        if no_input:
            problems.append(f"survivors {no_input} sent the server no input "
                            f"({'/'.join(sorted(INPUT_KINDS))}) in the transcript")
        stage = input_stage.get(rd.round)
        if order and stage in order:
            early = sorted(c for c in survivors if c in rd.dropouts and rd.dropouts[c] in order
                           and order.index(rd.dropouts[c]) <= order.index(stage))
            if early:
                problems.append(f"survivors {early} are recorded as dropped at or before the "
                                f"'{stage}' stage, when inputs are sent")
        uncounted = sorted(senders - set(survivors) - rd.refused)
        if uncounted:
            problems.append(f"the server received inputs from {uncounted}, who are neither "
                            "survivors nor refused on record")
        if rd.sampled is not None:
            unexplained = sorted(set(rd.sampled) - set(survivors) - set(rd.dropouts) - rd.absent)
            if unexplained:
                problems.append(f"clients {unexplained} were sampled, did not survive, and "
                                "their absence is not recorded (no dropout, failure or refusal)")
        detail = "; ".join(problems) or (
            f"{len(survivors)} survivors, each sent its input; "
            f"{len(rd.dropouts)} dropouts recorded")
        out.append(Check("survivors", f"{where}: survivors against the dropouts and the "
                                      "senders of inputs", not problems, detail,
                         _round_file(run)))
    if run.kind != "split" and not isinstance(run.result.get("status"), str):
        out.append(Check("survivors", "the run records its outcome", False,
                         "result.json has no status: it is empty, or not this run's result",
                         "result.json"))
    if not run.rounds and run.kind != "split":
        out.append(Check("survivors", "the run records its rounds", False,
                         "no round is recorded", _round_file(run)))
    return out


def _round_file(run: Run) -> str:
    return {"federated": "history.json", "flower": "rounds.json",
            "ensemble": "ensemble.json"}.get(run.kind, "result.json")


# ---------------------------------------------------------------------------------- error


def check_error(run: Run) -> list[Check]:
    """One-round runs: the recorded error within the bound recomputed from the encoding."""
    if run.kind != "one-round" or run.result.get("status") != "ok":
        return []
    p, res = run.parameters, run.result
    survivors = len(run.rounds[0].survivors) if run.rounds else 0
    error, stated = res.get("max_abs_error"), res.get("error_bound")
    tol = res.get("float_tolerance", 0.0)
    if not is_real(error) or not is_real(stated):
        return [Check("error", "the decoded error and its bound are recorded", False,
                      "max_abs_error or error_bound is missing or not a number", "result.json")]
    family = _family(run.protocol)
    recomputed: float | None = None
    how = ""
    if family in ("secagg", "paillier") and is_real(p.get("scale")) and p["scale"] > 0:
        weight = p.get("max_weight", 1)
        recomputed = survivors * float(weight) / float(p["scale"]) * (1 + 2.0**-18)
        how = (f"{survivors} survivors x max weight {weight} / scale {p['scale']:.6g}: each "
               "stochastic rounding is off by less than one step, plus a relative 2^-18 for "
               "float64 rounding")
    elif family == "plain":
        recomputed, how = 0.0, "plain sums floats: only rounding in float64"
    elif family == "ckks" and is_real(p.get("error_bound")) and is_real(p.get("num_clients")):
        recomputed = float(p["error_bound"])
        how = (f"the CKKS bound for all {int(p['num_clients'])} clients: its flooding and "
               "decryption noise do not shrink with fewer survivors")
    out = []
    if recomputed is None:
        return [Check("error", "the error bound is recomputed", None,
                      f"no closed form here for protocol {run.protocol!r}", "result.json")]
    slack = float(tol if is_real(tol) else 0.0) + RELATIVE_TOLERANCE * max(recomputed, 1e-300)
    out.append(Check(
        "error", "the stated error bound is no larger than the bound recomputed from the encoding",
        float(stated) <= recomputed + slack,
        f"stated {float(stated):.6g}, recomputed {recomputed:.6g} ({how})", "result.json"))
    out.append(Check(
        "error", "the decoded error lies within the recomputed bound",
        float(error) <= recomputed + slack,
        f"max |error| {float(error):.6g} against {recomputed:.6g}", "result.json"))
    return out


# ----------------------------------------------------------------------------- parameters


def _pmf(k: int, p: float, i: int) -> float:
    """P[Bin(k, p) = i], in log space (no overflow of the binomial coefficient)."""
    if p <= 0.0 or p >= 1.0:
        return float(i == (k if p >= 1.0 else 0))
    log = (math.lgamma(k + 1) - math.lgamma(i + 1) - math.lgamma(k - i + 1)
           + i * math.log(p) + (k - i) * math.log1p(-p))
    return math.exp(log)


def _binomial_cdf(k: int, p: float, x: int) -> float:
    """P[Bin(k, p) <= x], summed term by term (independent of the library's)."""
    if x < 0:
        return 0.0
    return min(1.0, math.fsum(_pmf(k, p, i) for i in range(0, min(x, k) + 1)))


def _corrupted_neighbours(n: int, k: int, corrupt_rate: float) -> tuple[int, float]:
    """The most corrupted neighbours a client can have, and the probability that some client
    has more: complete graph - ``ceil(rate * n)`` of all clients, exactly; sparse graph - the
    smallest ``c`` with ``n * P[Bin(k, rate) > c] <= 2^-40`` (a union bound over clients)."""
    if corrupt_rate <= 0:
        return 0, 0.0
    if k == n - 1:
        return min(math.ceil(corrupt_rate * n - 1e-9), n), 0.0
    for c in range(k + 1):
        tail = math.fsum(_pmf(k, corrupt_rate, i) for i in range(c + 1, k + 1))  # no cancellation
        if n * tail <= 2.0**-40:
            return c, n * tail
    return k, 0.0


def check_parameters(run: Run) -> list[Check]:
    p = run.parameters
    family = _family(run.protocol)
    out: list[Check] = []
    if family == "secagg" and all(is_int(p.get(k)) for k in ("num_clients", "degree",
                                                              "threshold")):
        n, k, t = int(p["num_clients"]), int(p["degree"]), int(p["threshold"])
        threat = p.get("threat")
        graph_ok = 1 <= k <= n - 1 and 2 <= t <= k + 1
        out.append(Check("parameters", "SecAgg graph: 1 <= k <= n-1 and 2 <= t",
                         graph_ok, f"n={n}, k={k}, t={t}", "config.json"))
        corrupt = p.get("corrupt_rate")
        c: Any = None
        if is_real(corrupt) and graph_ok:
            c, security = _corrupted_neighbours(n, k, float(corrupt))
            stated_c, stated_sec = p.get("corrupted_neighbours"), p.get("security_failure")
            same = stated_c == c and is_real(stated_sec) and (
                float(stated_sec) >= security * (1 - 1e-6) - 1e-18)
            out.append(Check(
                "parameters", "SecAgg corrupted neighbours recomputed from the corrupt rate (at "
                "most c of a client's k neighbours corrupted, except with probability 2^-40), "
                "and the stated security failure not below that probability",
                same, f"recomputed c={c} (probability of more {security:.3g}), stated "
                f"c={stated_c} (security failure {stated_sec})", "config.json"))
        if is_int(c):
            need = c + 1 if threat == "curious" else (k + 1 + c) // 2 + 1
            need = max(2, need)
            out.append(Check(
                "parameters", f"SecAgg threshold against the threat model ({threat})",
                t >= need,
                f"t={t}, needs >= {need}: " + (
                    "more than the corrupted neighbours c" if threat == "curious"
                    else "more than half of a neighbourhood plus the corrupted ones"
                ) + f" (c={c}, from corrupt rate {p.get('corrupt_rate')})", "config.json"))
        rate = p.get("dropout_rate")
        stated = p.get("failure_probability")
        if is_real(rate) and is_real(stated):
            fail = min(1.0, n * _binomial_cdf(k, 1.0 - float(rate), t - 1))
            out.append(Check(
                "parameters", "SecAgg+ failure probability recomputed (union bound: a client with "
                "fewer than t of its k neighbours alive)",
                math.isclose(fail, float(stated), rel_tol=1e-6, abs_tol=1e-15),
                f"recomputed {fail:.3e}, stated {float(stated):.3e} at dropout rate {rate}",
                "config.json"))
    if family in ("secagg", "paillier") and is_int(p.get("bits") or 0) and p.get("bits"):
        bits, count = int(p["bits"]), p.get("num_clients")
        w, clip, scale = p.get("max_weight", 1), p.get("clip"), p.get("scale")
        dd = p.get("distributed_dp") if isinstance(p.get("distributed_dp"), dict) else {}
        headroom = dd.get("noise_headroom", 0) if is_real(dd.get("noise_headroom", 0)) else 0
        if all(is_real(v) for v in (count, w, clip, scale)):
            top = int(count) * float(w) * math.ceil(float(clip) * float(scale)) + float(headroom)
            out.append(Check(
                "parameters", "no overflow: n * w * ceil(clip * scale) + noise headroom fits in "
                "the signed ring", top <= 2 ** (bits - 1) - 1,
                f"{top:.6g} <= 2^{bits - 1} - 1 = {2 ** (bits - 1) - 1:.6g}", "config.json"))
    if family == "ckks":
        ctx = p.get("context") if isinstance(p.get("context"), dict) else {}
        degree, sizes = ctx.get("poly_modulus_degree"), ctx.get("coeff_mod_bit_sizes")
        if is_int(degree) and isinstance(sizes, list) and all(is_int(s) for s in sizes):
            total, limit = sum(sizes), HE_STANDARD_128.get(int(degree))
            out.append(Check(
                "parameters", "CKKS modulus within the HE security standard's 128-bit limit",
                limit is not None and total <= limit,
                f"ring dimension {degree}, coefficient modulus {total} bits "
                f"(sum of {sizes}), limit {limit}", "config.json"))
    if family == "paillier" and is_int(p.get("key_bits")):
        bits = int(p["key_bits"])
        strength = next((s for size, s in FACTORING_STRENGTH if bits >= size), 0)
        out.append(Check("parameters", "Paillier modulus at least 2048 bits (112-bit security, "
                                       "NIST SP 800-57)", bits >= 2048,
                         f"{bits} bits: about {strength}-bit security", "config.json"))
        pack = p.get("packing") if isinstance(p.get("packing"), dict) else {}
        slot, summands, top = pack.get("slot_bits"), pack.get("summands"), pack.get(
            "max_slot_value")
        if all(is_int(v) for v in (slot, summands, top)):
            out.append(Check("parameters", "Paillier packing: a slot holds the sum of every "
                                           "summand without carrying into the next",
                             int(summands) * int(top) < 2 ** int(slot),
                             f"{summands} x {top} < 2^{slot}", "config.json"))
    return out


def check_messages(run: Run) -> list[Check]:
    """With ``messages.bin``: every server-received message's bytes against its line's hash."""
    path = run.path / "messages.bin"
    if not path.is_file():
        return []
    import hashlib

    total = path.stat().st_size  # read message by message: the file is the whole uplink
    offset, bad = 0, []
    ups = [(n, e) for n, e in enumerate(run.transcript, start=1) if e.get("direction") == "up"]
    with path.open("rb") as fh:
        for number, line in ups:
            size: Any = line.get("size")
            if not is_int(size) or offset + size > total:
                bad.append(f"transcript.jsonl line {number}: its {size} bytes are not in the "
                           "file")
                break
            if hashlib.sha256(fh.read(size)).hexdigest() != line.get("sha256"):
                bad.append(f"transcript.jsonl line {number}: the stored bytes do not hash to "
                           "its sha256")
            offset += size
    if not bad and offset != total:
        bad.append(f"{total - offset} bytes beyond the transcript's last received message")
    return [Check("integrity", "every received message's bytes hash to its transcript line",
                  not bad, "; ".join(bad[:5]) or f"{len(ups)} messages, {total:,} bytes",
                  "messages.bin")]


def run_checks(run: Run, *, replay: Any = None) -> list[Check]:
    """Every check that applies to ``run`` (the seal is checked separately). ``replay`` replays a
    ledger (:data:`secureagg.audit.privacy_checks.Replay`; the CLI gives the library's
    accountant): without it the replay checks are "not applicable"."""
    out = [Check("structure", "the run's files parse", not run.problems,
                 "; ".join(run.problems) or f"kind: {run.kind}")]
    from secureagg.audit.privacy_checks import check_privacy

    for fn in (check_survivors, check_error, check_parameters, check_messages):
        out += fn(run)
    out += check_privacy(run, replay)
    return out


def seal_checks(directory: Path, *, expected_key: bytes | None = None) -> tuple[list[Check],
                                                                                dict[str, Any]]:
    """The seal's verdict as checks (one per problem, each naming its file) and its document."""
    found = _seal.verify_seal(directory, expected_key=expected_key)
    if found.ok:
        src = (found.seal or {}).get("operator", {}).get("key_source", "?")
        checks = [Check("integrity", "the seal's signature, every file's hash and the transcript "
                                     "chain verify", True,
                        f"{len((found.seal or {}).get('files', {}))} files, operator key: {src}"
                        + ("" if expected_key is not None else
                           " (not pinned: pass --operator-key to check who sealed it)"))]
    else:
        checks = [Check("integrity", "tamper evidence", False, problem,
                        problem.split(":", 1)[0]) for problem in found.problems]
    return checks, found.seal or {}


def summarise(checks: Sequence[Check]) -> dict[str, int]:
    c = Counter("ok" if ch.ok else ("failed" if ch.ok is False else "not applicable")
                for ch in checks)
    return dict(c)
