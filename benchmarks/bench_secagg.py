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

try:  # the installed package (pip install -e .): no sys.path tricks
    from secureagg.cli.bench_preset import run_preset
except ImportError as exc:
    raise SystemExit(f"bench_secagg.py needs secureagg installed: {exc}") from exc

SECAGG_PROTOCOLS = ("secagg", "secagg:malicious", "secagg+", "secagg+:malicious")


def main(argv: Sequence[str] | None = None) -> int:
    return run_preset("bench_secagg.py", SECAGG_PROTOCOLS, "SecAgg", __doc__ or "", argv)


if __name__ == "__main__":
    sys.exit(main())
