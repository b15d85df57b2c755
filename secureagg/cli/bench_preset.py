"""``secureagg bench`` with some protocol variants preselected: what the thin scripts
``benchmarks/bench_secagg.py`` and ``benchmarks/bench_he.py`` run.

:func:`run_preset` runs ``secureagg bench --protocols <preset>`` followed by the script's own
arguments, unchanged, in this process, and returns the command's exit code. The script's own
``--protocols`` (any prefix argparse accepts, ``--protocols=X`` included; as in argparse, the last
one wins) may only narrow the preset: it then replaces the preset. Any other variant, ``all``, no
value, or ``--deployed`` (a different benchmark) is refused with exit code 2 before anything
runs. ``--help`` prints the script's own text, then ``secureagg bench --help``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["run_preset", "user_protocols"]

_PROTOCOLS, _SHORTEST = "--protocols", 4  # "--pr": the shortest unambiguous prefix


def _is_option(arg: str, option: str, shortest: int) -> bool:
    """``arg`` is ``option``, ``option=...`` or a prefix of it argparse accepts."""
    name = arg.partition("=")[0]
    return len(name) >= shortest and option.startswith(name)


def user_protocols(args: Sequence[str]) -> list[str] | None:
    """The variants of the last ``--protocols`` in ``args`` (argparse: the last wins), or None
    when there is none; a ``--protocols`` without a value gives ``[]``."""
    found = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if _is_option(arg, _PROTOCOLS, _SHORTEST):
            value = arg.partition("=")[2] if "=" in arg else (args[i + 1:i + 2] or [""])[0]
            found = [p.strip() for p in value.split(",") if p.strip()]
    return found


def run_preset(script: str, preset: Sequence[str], kind: str, text: str,
               argv: Sequence[str] | None = None) -> int:
    """Run ``secureagg bench`` with the variants ``preset`` preselected (see the module
    docstring). ``script`` names the caller in error messages, ``kind`` says what the preset is
    (``"SecAgg"``, ``"HE"``), ``text`` is the caller's own help."""
    from secureagg.cli import main

    args = list(sys.argv[1:] if argv is None else argv)
    if any(a == "-h" or _is_option(a, "--help", 3) for a in args):
        print(text)
        print("The options (all of secureagg bench's, passed through unchanged):\n")
        return main(["bench", "--help"])

    def refuse(message: str) -> int:
        print(f"{script}: error: {message}", file=sys.stderr)
        return 2

    if any(_is_option(a, "--deployed", 4) for a in args):
        return refuse("--deployed compares secagg+ with Flower on real processes: run "
                      "'secureagg bench --deployed'")
    chosen = user_protocols(args)
    if chosen is None:
        return main(["bench", _PROTOCOLS, ",".join(preset), *args])
    other = [p for p in chosen if p not in preset]
    if other or not chosen:
        return refuse(f"--protocols may only narrow {','.join(preset)} (only {kind} variants; "
                      f"omit it for all of them), got {', '.join(other) or 'no value'}; for "
                      "other protocols run 'secureagg bench --protocols ...'")
    return main(["bench", *args])
