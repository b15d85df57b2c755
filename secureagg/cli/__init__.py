"""The ``secureagg`` command: ``demo``, ``simulate``, ``bench`` and ``audit``.

Every ``simulate`` run writes a run directory that ``audit`` reads back and cross-checks, so an
auditor can count, size and hash what the server received without trusting the printout:

* ``config.json``: the command line, protocol, sizes, the dropouts drawn, the aggregator's
  parameters, the secureagg version;
* ``result.json``: status, survivors, error against the plaintext sum and the stated bound,
  the simulator's metrics (per-stage time and bytes, clipping, rejected messages, aborts);
* ``transcript.jsonl``: one JSON object per message, ``direction`` ``"up"`` (received by the
  server), ``"down"`` (sent by it) or ``"peer"`` (between other parties), with stage, kind,
  sender, recipient, round id, size and sha256 of the encoded bytes (a record per message, not
  the bytes).

Test data is drawn from the CSPRNG keystream (reproducible with ``--seed``, which is flagged
loudly as not secret). Before a round, the memory and time it needs are estimated
(:mod:`secureagg.cli.estimate`) and a run over ``--max-memory`` / ``--max-seconds`` is refused.
SecAgg/SecAgg+ in curious mode state what that mode gives up in every output and run record.

Exit codes: 0 success; 1 a check failed (self-test, error above the stated bound, inconsistent run
directory); 2 bad arguments or configuration, protocol error, unreadable files, a run that cannot
fit its limits; 3 too few survivors (the round was aborted and no aggregate released); 4 an
internal error (a bug; ``SECUREAGG_DEBUG=1`` shows its traceback). No command ends in a traceback.

>>> build_parser().prog
'secureagg'

Typical use: ``secureagg simulate --protocol plain --clients 5 --dim 10`` then
``secureagg audit runs/<the printed run directory>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import warnings
from collections.abc import Sequence
from typing import TextIO

import secureagg
from secureagg.aggregators import available
from secureagg.cli.audit import _cmd_audit
from secureagg.cli.bench import _cmd_bench
from secureagg.cli.common import (
    EXIT_ERROR,
    EXIT_INSUFFICIENT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    _CliError,
    _err,
    _one_line,
)
from secureagg.cli.demo import cmd_demo
from secureagg.cli.estimate import add_limit_arguments
from secureagg.cli.simulate import _cmd_simulate
from secureagg.errors import InsufficientSurvivors, SecureAggError

__all__ = ["build_parser", "main"]


def _clip_arg(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=88)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation tools)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="secureagg",
        description="Secure aggregation, HE aggregation and DP for federated learning.",
        formatter_class=fmt,
        epilog=(
            "examples:\n"
            "  secureagg demo\n"
            "  secureagg simulate --protocol secagg+ --clients 50 --dim 10000 --dropout 0.1\n"
            "  secureagg audit runs/20250101T000000Z-secagg+\n"
            "  secureagg bench\n\n"
            "Run 'secureagg COMMAND --help' for a command's options."
        ),
    )
    parser.add_argument("--version", action="version", version=f"secureagg {secureagg.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="federated learning on sklearn's digits with SecAgg+ and DP (--selftest: crypto)",
        description=_wrap(
            "Train a small MLP on sklearn's digits data set (shipped with scikit-learn: nothing "
            "is downloaded) split across clients by Dirichlet(0.5) label skew, with FedAvg over "
            "SecAgg+ (the server sees only masked updates), DP-SGD on the clients and distributed "
            "DP in the sum. Prints per round the test accuracy, epsilon spent, bytes and the time "
            "of secure aggregation; then compares with plaintext FedAvg on the same split and "
            "says where the run directory is. The cryptographic primitives are self-tested "
            "first (--selftest prints every check and explains one SecAgg+ round instead). "
            "The data split and the initial model are fixed; keys, masks, noise and dropouts "
            "are fresh in every run unless --seed makes the whole run reproducible (and NOT "
            "private). Exits 1 if a self-test check fails."
        ),
        formatter_class=fmt,
        epilog="examples:\n  secureagg demo\n  secureagg demo --no-dp --rounds 10\n"
        "  secureagg demo --seed 7 --no-baseline   # reproducible (and NOT private)\n"
        "  secureagg demo --protocol ckks --dropout 0.1 --epsilon 4\n"
        "  secureagg demo --selftest --clients 50 --dim 100000 --threat malicious\n"
        "  secureagg demo split            # split learning: accuracy, attacks, cost\n"
        "  secureagg demo split --quick --clients 4 --rounds 4\n"
        "  secureagg demo ensemble         # PATE/GNMax under SecAgg+: student, ε, speed-up\n"
        "  secureagg demo ensemble --engine flower   # each party on its own SuperNode\n"
        "  secureagg demo --engine flower  # real Flower SuperLink + SuperNodes on 127.0.0.1\n"
        "  secureagg demo --engine flower --tls --protocol ckks --rounds 4",
    )
    demo.add_argument(
        "mode",
        nargs="?",
        choices=["fl", "split", "ensemble"],
        default="fl",
        help="'fl' (default): federated learning as above; 'split': split learning on digits "
        "(vanilla, U-shaped and SplitFed through --protocol; DP on activations at --epsilon; "
        "the encrypted cut layer) with the label-leakage and inversion attacks measured, "
        "protections off and on. With 'split', --clients defaults to 3 and --rounds counts "
        "epochs (default 6). 'ensemble': a private ensemble (PATE/GNMax): --clients parties "
        "(default 100) train teachers in parallel, their votes on --queries public points "
        "(default 100) are summed under SecAgg+ with distributed discrete Gaussian noise "
        "within --epsilon (default 8), a student learns from the noisy labels, and secure "
        "ensemble inference averages the parties' predictions",
    )
    demo.add_argument(
        "--queries",
        type=int,
        default=None,
        help="'ensemble' only: how many public points the querier has labelled (1..347; "
        "default 100, chosen as the points nearest to k-means centres of the public inputs; "
        "in batches of 50: one SecAgg+ round per batch)",
    )
    demo.add_argument(
        "--engine",
        choices=("local", "flower"),
        default="local",
        help="where the parties run: 'local' (default) simulates them in this process; "
        "'flower' starts a Flower SuperLink and one SuperNode per client (plus a key-holder "
        "node for ckks/paillier) as real processes on 127.0.0.1, each node with its own "
        "partition, runs the same federated run across them and stops them all at the end "
        "(needs the flower extra: pip install 'secureagg[flower]'). With 'flower', --clients "
        "defaults to 5 and --rounds to 8 (each protocol stage costs a few seconds of Flower's "
        "polling and process start), and the same settings are also run in this process for "
        "comparison unless --no-baseline. With 'ensemble', 'flower' puts every party on its "
        "own SuperNode, which trains its teacher there and votes through SecAgg+; --clients "
        "defaults to 8 and --queries to 30, in 2 batches (about 3 minutes on 2 cores)",
    )
    demo.add_argument(
        "--tls",
        action="store_true",
        help="with --engine flower: make a throwaway CA and run every Flower link over TLS",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="split mode: fewer epochs (about 20 s instead of 35 s)",
    )
    demo.add_argument(
        "--protocol",
        choices=list(available()),
        default="secagg+",
        help="aggregator (default secagg+; 'plain' is the insecure baseline)",
    )
    demo.add_argument(
        "--clients",
        type=int,
        default=None,
        metavar="N",
        help="number of clients (default 10; 20 with --selftest)",
    )
    demo.add_argument(
        "--rounds",
        type=int,
        default=None,
        metavar="R",
        help="federated rounds (default 20); epochs in split mode (default 6)",
    )
    demo.add_argument(
        "--dropout",
        type=float,
        default=0.0,
        metavar="P",
        help="probability that a client drops out of a round, at a random stage (default 0)",
    )
    demo.add_argument(
        "--epsilon",
        type=float,
        default=8.0,
        metavar="EPS",
        help="privacy budget per client at delta=1e-5 (default 8)",
    )
    demo.add_argument(
        "--user-noise",
        type=float,
        default=0.01,
        metavar="Z",
        help="noise multiplier of the distributed DP inside SecAgg/SecAgg+ (user level; "
        "default 0.01, 0 turns it off; with 10 clients no value is both private and accurate, "
        "see docs/federated.md)",
    )
    demo.add_argument("--no-dp", action="store_true", help="train without differential privacy")
    demo.add_argument(
        "--workers",
        default="1",
        metavar="W",
        help="processes training the clients of a round: 1 (default, in this process), N, or "
        "'auto' (one per core); the same model for the same seeds either way",
    )
    demo.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the comparison run with plaintext FedAvg",
    )
    demo.add_argument(
        "--quiet", action="store_true", help="no progress bar or per-round lines, only the result"
    )
    demo.add_argument(
        "--selftest",
        action="store_true",
        help="self-test the primitives and explain one SecAgg+ round (the crypto demo)",
    )
    demo.add_argument(
        "--dim",
        type=int,
        default=None,
        metavar="D",
        help="with --selftest: values per client (default 10000)",
    )
    demo.add_argument(
        "--threat",
        choices=("curious", "malicious"),
        default=None,
        help="server threat model of secagg/secagg+ (default curious: privacy only against a "
        "server that follows the protocol; malicious: signed keys and a consistency round)",
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="S",
        help="reproduce a run: keys, masks, noise, dropouts and training order all derive from "
        "S (recorded in the run directory; NOT secret, NOT private: tests and comparisons only)",
    )
    add_limit_arguments(demo, note="with --selftest: ")
    demo.add_argument(
        "--out",
        default=None,
        metavar="RUN_DIR",
        help="run directory (default runs/<UTC time>-demo)",
    )
    demo.add_argument("--json", action="store_true", help="end with a one-line JSON summary")
    demo.set_defaults(handler=cmd_demo)

    protocols = list(available())
    simulate_p = sub.add_parser(
        "simulate",
        help="run one aggregation round in memory and write a run directory",
        description=_wrap(
            "Draw random updates in [-1, 1), drop a fraction of clients at random "
            "stages, run one round over the in-memory transport (every message through the codec), "
            "and report survivors, the error against the plaintext sum over the survivors, the "
            "error bound the aggregator states, and per-stage time and bytes."
        ),
        formatter_class=fmt,
        epilog=(
            "examples:\n"
            "  secureagg simulate --protocol plain --clients 10 --dim 1000\n"
            "  secureagg simulate --protocol secagg+ --clients 100 --dim 100000 --dropout 0.1\n"
            "  secureagg simulate --protocol secagg --clients 20 --dim 50 --threat malicious "
            "--json\n"
            "  secureagg simulate --protocol plain --clients 5 --dim 10 --seed 1 --out run1\n\n"
            "Before the round, its memory and time are estimated, and a run over --max-memory\n"
            "or --max-seconds is refused with the estimate. secagg/secagg+ in curious mode (the\n"
            "default) say what that gives up: a server that deviates from the protocol can\n"
            "recover one client's input exactly (docs/secagg.md, 'What curious mode gives up').\n"
            "The transcript holds the kind, sender, size and sha256 of each message, not its\n"
            "bytes.\n\n"
            "exit codes: 0 ok, 1 error above the stated bound, 2 bad arguments, protocol error "
            "or a run over its limits, 3 too few survivors, 4 internal error"
        ),
    )
    simulate_p.add_argument(
        "--protocol", required=True, choices=protocols, help="aggregator to run"
    )
    simulate_p.add_argument(
        "--clients", type=int, default=10, metavar="N", help="number of clients (default 10)"
    )
    simulate_p.add_argument(
        "--dim", type=int, default=1000, metavar="D", help="values per client update (default 1000)"
    )
    simulate_p.add_argument(
        "--dropout",
        type=float,
        default=0.0,
        metavar="P",
        help="fraction of clients that drop out, each at a random stage (default 0)",
    )
    simulate_p.add_argument(
        "--threat",
        choices=("curious", "malicious"),
        default=None,
        help="server threat model of secagg/secagg+ (default curious: private only while the "
        "server follows the protocol; malicious: signed keys and a consistency round)",
    )
    simulate_p.add_argument(
        "--clip",
        type=_clip_arg,
        default=1.0,
        metavar="C",
        help="clip bound on |value| (default 1.0; 'none' to disable where the protocol allows)",
    )
    simulate_p.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="S",
        help="reproducible run for tests/benchmarks (NOT secret; flagged)",
    )
    add_limit_arguments(simulate_p)
    simulate_p.add_argument("--json", action="store_true", help="print one JSON object")
    simulate_p.add_argument(
        "--out",
        default=None,
        metavar="RUN_DIR",
        help="run directory (default runs/<UTC time>-<protocol>)",
    )
    simulate_p.add_argument(
        "--keep-messages",
        action="store_true",
        help="also write messages.bin: the bytes of every message the server received, so that "
        "'secureagg audit' re-checks every transcript hash (costs the uplink's bytes on disk)",
    )
    simulate_p.add_argument("--force", action="store_true", help="overwrite a run already in --out")
    simulate_p.add_argument("--quiet", action="store_true", help="print nothing on success")
    simulate_p.set_defaults(handler=_cmd_simulate)

    from secureagg.cli.bench import BENCH_DESCRIPTION, BENCH_EPILOG, add_bench_arguments

    bench = sub.add_parser(
        "bench",
        help="measure every protocol's time, bytes, memory and error (--list: the scripts)",
        description=_wrap(BENCH_DESCRIPTION),
        formatter_class=fmt,
        epilog=BENCH_EPILOG,
    )
    add_bench_arguments(bench)
    bench.set_defaults(handler=_cmd_bench)

    flower = sub.add_parser(
        "flower",
        help="tools for a Flower deployment (identity keys for malicious mode)",
        description=_wrap(
            "'keygen PATH' writes a fresh Ed25519 identity key for one SuperNode to PATH "
            "(PKCS#8 PEM, mode 0600, never overwriting) and prints its public key (hex) for the "
            "server's file of admitted nodes. Name the key in the node's config: "
            "secureagg-identity-key = PATH in its node config. See docs/flower.md."
        ),
        formatter_class=fmt,
        epilog="example:\n  secureagg flower keygen /etc/secureagg/node.pem >> admitted.txt",
    )
    flower.add_argument("action", choices=["keygen"], help="what to do")
    flower.add_argument("path", metavar="PATH", help="where to write the private key")
    flower.set_defaults(handler=_cmd_flower)

    audit = sub.add_parser(
        "audit",
        help="summarise and cross-check a run directory",
        description=_wrap(
            "Check a run directory independently and say what privacy it delivered. Verifies "
            "the seal (Ed25519 signature, every file's SHA-256, the transcript's hash chain); "
            "recomputes survivors from the transcript, the error bound from the encoding, the "
            "protocol parameters from first principles and the ledger's ε by replay and by "
            "Google's dp-accounting (the audit extra); prints a privacy statement in plain words "
            "and writes report.json and report.html into RUN_DIR. "
            "Exits 1 if a check fails, 2 if the files are missing or do not parse."
        ),
        formatter_class=fmt,
        epilog="examples:\n  secureagg audit runs/20250101T000000Z-plain\n"
        "  secureagg audit run1 --json",
    )
    audit.add_argument("run_dir", metavar="RUN_DIR",
                       help="a run directory (simulate, demo, federated, Flower or split)")
    audit.add_argument("--json", action="store_true", help="print report.json's object")
    audit.add_argument("--operator-key", metavar="PUB", default=None,
                       help="the operator's Ed25519 public key (PEM, or 64 hex digits): the "
                            "seal must be by this key. Without it the seal proves only that "
                            "nothing changed since sealing, by whoever holds operator_key.pub")
    audit.add_argument("--no-html", action="store_true",
                       help="write report.json only (report.html needs matplotlib)")
    audit.add_argument("--canaries", type=int, default=None, metavar="M",
                       help="also measure an empirical lower bound on ε (Steinke-Nasr-Jagielski "
                            "2023, one training run): retrain this federated run's "
                            "configuration on the digits data with M canaries, each included "
                            "with probability 1/2, and put the bound beside the claimed ε "
                            "(about 20-90 s per 1,000 canaries and 20 rounds on 2 cores)")
    audit.add_argument("--canary-rounds", type=int, default=None, metavar="R",
                       help="rounds of the canary run (default: the run's, at most 20)")
    audit.add_argument("--canary-seed", type=int, default=None, metavar="S",
                       help="make the canary runs reproducible (tests only: NOT private)")
    audit.add_argument("--canary-control", action=argparse.BooleanOptionalAction, default=True,
                       help="also run the same configuration with DP off, to show that the "
                            "audit detects leakage (default: on)")
    audit.set_defaults(handler=_cmd_audit)
    return parser


def _cmd_flower(args: argparse.Namespace) -> int:
    from secureagg.flower.identity import write_identity_key

    print(write_identity_key(args.path).hex())
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``secureagg`` command; returns the exit code.

    As the installed command (``argv`` None), warnings print as one ``secureagg: warning:`` line;
    called with ``argv`` (tests, notebooks), warnings go through the caller's filters."""
    console = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    args.argv = argv
    if not console:
        return _run(args)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _run(args)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Warnings as one line on stderr, like errors (no source file and line of library code)."""
    print(f"secureagg: warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    try:
        code: int = args.handler(args)
    except InsufficientSurvivors as exc:
        _err(f"insufficient survivors, round aborted, no aggregate released: {_one_line(exc)}")
        return EXIT_INSUFFICIENT
    except (SecureAggError, _CliError) as exc:
        _err(_one_line(exc))
        return EXIT_ERROR
    except ImportError as exc:
        _err(f"a module could not be loaded: {_one_line(exc)}")
        return EXIT_ERROR
    except OSError as exc:
        _err(f"cannot read or write files: {_one_line(exc)}")
        return EXIT_ERROR
    except MemoryError:
        _err(
            "ran out of memory; lower the sizes (--dim, --clients) or --max-memory so that the "
            "estimate refuses such runs before they start"
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # the last line of defence: a command never ends in a traceback
        if os.environ.get("SECUREAGG_DEBUG"):
            raise
        _err(
            f"internal error, please report it with the command line: {type(exc).__name__}: "
            f"{_one_line(exc)} (SECUREAGG_DEBUG=1 shows the traceback)"
        )
        return EXIT_INTERNAL
    return code
