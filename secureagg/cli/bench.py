"""``secureagg bench``: list the benchmark scripts and how to run them."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

from secureagg.cli.common import (
    EXIT_OK,
    _CliError,
)


def _benchmark_dirs(explicit: str | None) -> list[Path]:
    if explicit is not None:
        if not explicit.strip():
            raise _CliError("--dir must not be empty; give the benchmark directory")
        path = Path(explicit)
        if not path.is_dir():
            raise _CliError(f"--dir {path} is not a directory")
        return [path]
    candidates = [Path.cwd() / "benchmarks", Path(__file__).resolve().parent.parent / "benchmarks"]
    seen: list[Path] = []
    for c in candidates:
        if c.is_dir() and c.resolve() not in [s.resolve() for s in seen]:
            seen.append(c)
    return seen


def _cmd_bench(args: argparse.Namespace) -> int:
    dirs = _benchmark_dirs(args.dir)
    scripts = sorted(
        {
            p.resolve()
            for d in dirs
            if d.is_dir()
            for p in d.glob("*.py")
            if not p.name.startswith("_")
        }
    )
    if not scripts:
        where = ", ".join(str(d) for d in dirs) or "benchmarks/ (not found)"
        print(
            f"no benchmark scripts found in {where}.\n"
            "Benchmarks live in the source repository under benchmarks/; run them from a "
            "checkout. Nothing was measured."
        )
        return EXIT_OK
    print("benchmark scripts (this command lists them; it does not run or fake results):")
    for script in scripts:
        try:
            doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
        except (OSError, SyntaxError, UnicodeDecodeError):
            doc = ""
        first = doc.strip().splitlines()[0] if doc.strip() else "(no description)"
        try:
            shown = script.relative_to(Path.cwd())
        except ValueError:
            shown = script
        print(f"  {script.name:<32} {first}")
        print(f"      run: python {shown}")
    print("Each script prints (and writes) JSON; see its --help for sizes.")
    return EXIT_OK
