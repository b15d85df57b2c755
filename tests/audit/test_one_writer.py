"""Only secureagg.audit writes files (issue 12, item 5: the run directory in one place).

An AST scan of every module of the package outside ``secureagg/audit/``: no ``open`` in a write
or append mode, no ``Path.write_text`` / ``Path.write_bytes`` (one argument, unlike
``RunDirectory.write_bytes(name, data)``), no ``os.replace`` / ``os.rename`` / ``shutil`` copy or
move, and no ``torch.save`` / ``np.save`` / ``json.dump`` except into the stream that
``RunDirectory.write_stream`` / ``write_checkpoint`` hands to a callback. The two exceptions are
named below with their reason: they write where the user asks, not into a run directory.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "secureagg"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent.name != "audit")

#: module -> why it may write a file itself
ALLOWED = {
    "dp/ledger.py": "PrivacyAccountant.write_ledger(path) writes a ledger where the user asks",
    "dp/events.py": "JsonLinesSink(path) is an event sink at a path the user chooses",
    "flower/processes.py": "a local Flower deployment's own files in its work directory "
    "(FLWR_HOME/config.toml, throwaway TLS certificates, process logs), not a run directory",
}

_SAVE = {("torch", "save"), ("np", "save"), ("numpy", "save"), ("json", "dump")}
_MOVE = {("os", "replace"), ("os", "rename"), ("shutil", "copyfile"), ("shutil", "copy"),
         ("shutil", "copy2"), ("shutil", "move"), ("shutil", "copyfileobj")}
_STREAM_WRITERS = {"write_stream", "write_checkpoint"}


def _qualified(func: ast.expr) -> tuple[str, str] | None:
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.value.id, func.attr
    return None


def _mode(call: ast.Call, position: int) -> str | None:
    for kw in call.keywords:
        if kw.arg == "mode" and isinstance(kw.value, ast.Constant):
            return str(kw.value.value)
    if len(call.args) > position and isinstance(call.args[position], ast.Constant):
        return str(call.args[position].value)  # type: ignore[attr-defined]
    return None


def _stream_parameters(tree: ast.AST) -> set[str]:
    """Names of the parameters of callbacks handed to RunDirectory.write_stream/checkpoint."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _STREAM_WRITERS
        ):
            for arg in node.args:
                if isinstance(arg, ast.Lambda):
                    names.update(a.arg for a in arg.args.args)
    return names


def _memory_buffers(tree: ast.AST) -> set[str]:
    """Names bound to ``io.BytesIO()`` / ``io.StringIO()``: a save into one writes no file."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in {"BytesIO", "StringIO"}:
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def file_writes(source: str) -> list[str]:
    """Every place in ``source`` that writes a file by itself (see the module docstring)."""
    tree = ast.parse(source)
    streams = _stream_parameters(tree) | _memory_buffers(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, where = node.func, f"line {node.lineno}"
        if isinstance(func, ast.Name) and func.id == "open":
            mode = _mode(node, 1)
            if mode is not None and set(mode) & set("wax+"):
                found.append(f"open(..., {mode!r}) ({where})")
            continue
        if not isinstance(func, ast.Attribute):
            continue
        if func.attr == "open":
            mode = _mode(node, 0)
            if mode is not None and set(mode) & set("wax+"):
                found.append(f".open({mode!r}) ({where})")
        elif func.attr == "write_text" or (func.attr == "write_bytes" and len(node.args) == 1):
            found.append(f".{func.attr}(...) ({where})")
        elif _qualified(func) in _MOVE:
            found.append(f"{'.'.join(_qualified(func) or ())} ({where})")
        elif _qualified(func) in _SAVE:
            target = node.args[0] if _qualified(func) in {("np", "save"), ("numpy", "save")} else (
                node.args[1] if len(node.args) > 1 else None
            )
            if not (isinstance(target, ast.Name) and target.id in streams):
                found.append(f"{'.'.join(_qualified(func) or ())} ({where})")
    return found


def test_the_scanner_finds_what_it_looks_for() -> None:
    assert file_writes("open(p, 'w')") == ["open(..., 'w') (line 1)"]
    assert file_writes("open(p, mode='ab')") == ["open(..., 'ab') (line 1)"]
    assert file_writes("open(p)\nopen(p, 'rb')\np.open(encoding='utf-8')") == []
    assert file_writes("p.open('a', encoding='utf-8')") == [".open('a') (line 1)"]
    assert file_writes("path.write_text('x')") == [".write_text(...) (line 1)"]
    assert file_writes("path.write_bytes(b'x')") == [".write_bytes(...) (line 1)"]
    assert file_writes("run.write_bytes('name', b'x')") == []
    assert file_writes("import os\nos.replace(a, b)") == ["os.replace (line 2)"]
    assert file_writes("shutil.copyfile(a, b)") == ["shutil.copyfile (line 1)"]
    assert file_writes("torch.save(state, path)") == ["torch.save (line 1)"]
    assert file_writes("json.dump(doc, fh)") == ["json.dump (line 1)"]
    assert file_writes("rd.write_checkpoint(1, lambda fh: torch.save(state, fh))") == []
    assert file_writes("rd.write_stream('x', lambda fh: json.dump(doc, fh))") == []
    assert file_writes("buf = io.BytesIO()\ntorch.save(state, buf)") == []
    assert file_writes("buf = open(p, 'rb')\ntorch.save(state, buf)") == ["torch.save (line 2)"]


def test_there_are_modules_to_scan() -> None:
    names = {str(p.relative_to(PACKAGE)) for p in MODULES}
    assert {"fl/rundir.py", "fl/privacy.py", "cli/simulate.py", "cli/demo.py"} <= names
    assert set(ALLOWED) <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_outside_audit_writes_files(path: Path) -> None:
    name = str(path.relative_to(PACKAGE))
    writes = file_writes(path.read_text(encoding="utf-8"))
    if name in ALLOWED:
        assert writes, f"{name} no longer writes a file: drop it from ALLOWED"
        return
    assert writes == [], f"{name} writes files itself; write through secureagg.audit.rundir"
