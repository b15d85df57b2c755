"""The live child processes of a process, from Linux ``/proc``: what tests that start Flower
processes compare before and after, to show that they stopped exactly what they started."""

from __future__ import annotations

from pathlib import Path


def child_pids(pid: int) -> set[int]:
    """The pids whose parent is ``pid`` right now (``/proc/<pid>/stat``'s fourth field)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(entry.name))
    return out
