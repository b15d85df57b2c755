"""HE aggregation benchmark: ``secureagg bench`` for CKKS and packed Paillier only.

A thin script over the package's benchmark (``secureagg.bench``, docs/benchmarks.md). It runs
``secureagg bench --protocols ckks,ckks:pooled,paillier,paillier:pooled`` in this process and
passes every other argument through unchanged; ``secureagg bench --help`` lists them. The exit
code is the command's: 0, 1 if an aggregate's error exceeds its bound, 2 on bad arguments.

``--protocols`` may only narrow the selection: a list of some of those four variants replaces
it (``--protocols ckks`` measures CKKS only). Any other variant, or ``all``, is refused with exit
code 2: for other protocols, run ``secureagg bench`` itself. So is ``--deployed`` (a SecAgg+
comparison with Flower, not HE).

Usage::

    python benchmarks/bench_he.py --quick --out bench-results/he      # ~1 min, mostly phe
    python benchmarks/bench_he.py --quick --peers none --out bench-results/he2   # ~15 s
    python benchmarks/bench_he.py --protocols ckks,ckks:pooled --d 1e5 --n 10,100
    python benchmarks/bench_he.py --full --max-seconds 240 --plan       # estimates only

The committed run of every protocol is ``benchmarks/results/bench/bench.json``, rendered into
docs/benchmarks.md (``secureagg bench --full``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

try:  # the installed package (pip install -e .): no sys.path tricks
    from secureagg.cli import main as secureagg
except ImportError as exc:
    msg = f"{Path(__file__).name} needs secureagg installed (pip install -e .): {exc}"
    raise SystemExit(msg) from exc

HE_PROTOCOLS = ("ckks", "ckks:pooled", "paillier", "paillier:pooled")
OPTION = "--protocols"


def _is_option(arg: str, option: str, shortest: int) -> bool:
    """``arg`` is ``option``, ``option=...`` or a prefix argparse accepts (``--proto``)."""
    name = arg.partition("=")[0]
    return len(name) >= shortest and option.startswith(name)


def _protocol_values(args: Sequence[str]) -> list[str] | None:
    """The values of every ``--protocols`` given (``--pr`` is its shortest unambiguous prefix),
    or None if there is none."""
    values: list[str] | None = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if _is_option(arg, OPTION, 4):
            values = [] if values is None else values
            if "=" in arg:
                values.append(arg.partition("=")[2])
            elif i + 1 < len(args):
                values.append(args[i + 1])
    return values


def _error(message: str) -> int:
    print(f"bench_he.py: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a == "-h" or _is_option(a, "--help", 3) for a in args):
        print(__doc__)
        print("The options (all of secureagg bench's, passed through unchanged):\n")
        return secureagg(["bench", "--help"])
    if any(_is_option(a, "--deployed", 4) for a in args):
        return _error("--deployed compares secagg+ with Flower, not HE: run 'secureagg bench "
                      "--deployed'")
    values = _protocol_values(args)
    if values is None:
        return secureagg(["bench", OPTION, ",".join(HE_PROTOCOLS), *args])
    chosen = [p.strip() for v in values for p in v.split(",") if p.strip()]
    if not chosen or any(p not in HE_PROTOCOLS for p in chosen):
        shown = repr(",".join(values)) if values else "no value"
        return _error(f"--protocols may only narrow {','.join(HE_PROTOCOLS)}, got {shown}; for "
                      "other protocols run 'secureagg bench --protocols ...'")
    return secureagg(["bench", *args])


if __name__ == "__main__":
    sys.exit(main())
