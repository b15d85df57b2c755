"""SecAgg / SecAgg+ benchmark: ``secureagg bench`` with the four SecAgg variants preselected.

Runs, in this process, ``secureagg bench --protocols secagg,secagg:malicious,secagg+,
secagg+:malicious`` followed by this script's arguments, unchanged; its exit code is the
command's (0 ok, 1 an error above its stated bound, 2 bad arguments). Measured per configuration
(variant x DP mode x n x d x dropout; clients dropped at the "masked" stage): per-stage client
and server seconds, bytes up/down per client, peak memory and the error against the stated bound;
the floor model (secureagg.bench.floor, unit costs timed in the same run) and each figure's ratio
to it; the server's own peak memory (a lone-server replay; curious variants without DP); Flower's
SecAgg+ as a peer beside secagg+ when flwr is installed (--peers). See docs/benchmarks.md.

--protocols: yours replaces the preset if it names only SecAgg variants (``--protocols secagg+``
measures secagg+ alone); naming any other protocol ('all' included) is refused with exit code 2:
run ``secureagg bench`` for those.

Results: --out DIR (bench.json, bench.csv, plots); by default, as the package's, a fresh
./bench-results/<UTC time> under the current directory, so a run never overwrites committed
results. The committed SecAgg figures are in benchmarks/results/bench/bench.json (``secureagg
bench --full``, every protocol). Example: python benchmarks/bench_secagg.py --quick --out /tmp/x
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

try:
    from secureagg.cli import main as secureagg_main
except ImportError as exc:  # the installed package: no sys.path tricks
    msg = f"bench_secagg.py needs secureagg installed (pip install -e .): {exc}"
    raise SystemExit(msg) from exc

SECAGG_PROTOCOLS = ("secagg", "secagg:malicious", "secagg+", "secagg+:malicious")


def _is_option(arg: str, option: str, shortest: int) -> bool:
    """``arg`` is ``option`` or a prefix argparse accepts for it (``--proto`` for --protocols)."""
    name = arg.partition("=")[0]
    return len(name) >= shortest and option.startswith(name)


def user_protocols(args: Sequence[str]) -> list[str] | None:
    """The protocols of the last --protocols in ``args`` (as argparse: the last wins), or None."""
    found = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if _is_option(arg, "--protocols", 4):  # "--pr": the shortest unambiguous prefix
            value = arg.partition("=")[2] if "=" in arg else (args[i + 1:i + 2] or [""])[0]
            found = [p.strip() for p in value.split(",") if p.strip()]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a == "-h" or _is_option(a, "--help", 3) for a in args):
        print(__doc__)
        print("The options (all of secureagg bench's, passed through unchanged):\n")
        return secureagg_main(["bench", "--help"])
    chosen = user_protocols(args)
    if chosen is None:
        return secureagg_main(["bench", "--protocols", ",".join(SECAGG_PROTOCOLS), *args])
    other = [p for p in chosen if p not in SECAGG_PROTOCOLS]
    if other or not chosen:
        print(f"bench_secagg.py: error: --protocols may name only SecAgg variants "
              f"({', '.join(SECAGG_PROTOCOLS)}; omit it for all four), got "
              f"{', '.join(other) or 'none'}; run 'secureagg bench --protocols ...' for other "
              "protocols", file=sys.stderr)
        return 2
    return secureagg_main(["bench", *args])


if __name__ == "__main__":
    raise SystemExit(main())
