"""Our secagg+ round on Flower's deployment engine against Flower's own SecAgg+ (issue 13).

A thin wrapper: the measuring code and both Flower apps live in the package
(``secureagg.bench.deployed``, run by ``secureagg bench --deployed``; see its ``--help`` and
docs/benchmarks.md). This script keeps the old defaults - n=5, d in {1000, 100000}, 3 repeats,
after one warm-up run of each app - and writes the committed result
``benchmarks/results/flower.json``. Every other argument goes to ``secureagg bench --deployed``
unchanged (``--quick``, ``--nodes``, ``--d``, ``--repeats``, ``--rounds``, ``--dropout-node``,
``--stage-timeout``, ``--poll``, ``--warmup/--no-warmup``, ``--import-repeats``, ``--tls``,
``--log-dir``, ``--quiet``). It starts a real SuperLink and SuperNodes on 127.0.0.1.

Usage::

    python benchmarks/bench_flower.py --quick     # n=4, d=1000, 1 repeat (~2-3 min)
    python benchmarks/bench_flower.py             # n=5, d in {1000, 100000}, 3 repeats (~8-12 min)
    python benchmarks/bench_flower.py --d 100000 --repeats 5 --dropout-node
    python benchmarks/bench_flower.py --out /tmp/flower.json
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
try:  # the installed package (pip install -e .): no sys.path tricks
    from secureagg.bench.deployed import RESULT_FILE
    from secureagg.cli import main as secureagg_main
except ImportError as exc:
    msg = f"{Path(__file__).name} needs secureagg installed (pip install -e .): {exc}"
    raise SystemExit(msg) from exc

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "flower.json"
#: the old defaults, given unless the command line (or --quick) sets them
DEFAULTS = {"--nodes": "5", "--d": "1000,100000", "--repeats": "3"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, add_help=False,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="the JSON file to write (default benchmarks/results/flower.json)")
    parser.add_argument("-h", "--help", action="store_true")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.help:
        parser.print_help()
        print("\nthe options of secureagg bench --deployed:")
        return secureagg_main(["bench", "--help"])
    given = {a.split("=", 1)[0] for a in rest}
    defaults = [] if "--quick" in given else [
        x for option, value in DEFAULTS.items() if option not in given for x in (option, value)]
    with tempfile.TemporaryDirectory(prefix="bench-flower-") as tmp:
        code = secureagg_main(["bench", "--deployed", *defaults, *rest, "--out", tmp])
        written = Path(tmp) / RESULT_FILE
        if written.is_file():  # also when a round failed (exit 1): the record says which
            args.out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(written, args.out)
            print(f"copied to {args.out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
