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

try:  # the installed package (pip install -e .): no sys.path tricks
    from secureagg.cli.bench_preset import run_preset
except ImportError as exc:
    raise SystemExit(f"bench_he.py needs secureagg installed (pip install -e .): {exc}") from exc

HE_PROTOCOLS = ("ckks", "ckks:pooled", "paillier", "paillier:pooled")


def main(argv: Sequence[str] | None = None) -> int:
    return run_preset("bench_he.py", HE_PROTOCOLS, "HE", __doc__ or "", argv)


if __name__ == "__main__":
    sys.exit(main())
