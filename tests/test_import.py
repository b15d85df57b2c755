"""Import hygiene and cheap guards of project rules.

* ``import secureagg`` and every ``secureagg.crypto`` module import without any optional heavy
  dependency (checked in a fresh interpreter, so other tests' imports do not leak in).
* No module under ``secureagg/`` uses pickle (or ``allow_pickle=True`` / ``weights_only=False``).
* No ``assert`` statement in ``secureagg/`` (validation raises named errors from ``errors.py``).
* No ``random`` / ``numpy.random`` in ``secureagg/`` (randomness only from a CSPRNG).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "secureagg"
SOURCES = sorted(PACKAGE.rglob("*.py"))

OPTIONAL = ["torch", "tenseal", "phe", "gmpy2", "opacus", "flwr", "matplotlib", "tqdm", "sklearn"]
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "shelve", "joblib"}
RANDOM_MODULES = {"random", "numpy.random"}

_PROBE = """
import importlib, json, pkgutil, sys
import secureagg
import secureagg.crypto
names = sorted(
    m.name for m in pkgutil.walk_packages(secureagg.crypto.__path__, "secureagg.crypto.")
)
for name in names:
    importlib.import_module(name)
import secureagg.errors
optional = json.loads(sys.argv[1])
leaked = sorted(
    m for m in sys.modules if m.split(".")[0] in optional
)
print(json.dumps({"modules": names, "leaked": leaked, "file": secureagg.__path__[0]}))
"""


def _probe() -> dict[str, object]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(OPTIONAL)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def probe() -> dict[str, object]:
    return _probe()


def test_probe_imported_this_checkout(probe: dict[str, object]) -> None:
    assert Path(str(probe["file"])).resolve() == PACKAGE


def test_probe_found_the_crypto_modules(probe: dict[str, object]) -> None:
    modules = probe["modules"]
    assert isinstance(modules, list)
    for name in ("kdf", "keyagree", "aead", "signing", "labels", "prg"):
        assert f"secureagg.crypto.{name}" in modules


def test_import_pulls_in_no_optional_dependency(probe: dict[str, object]) -> None:
    assert probe["leaked"] == []


# ------------------------------------------------------------------------------ AST guards


def _imported_modules(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
            in {"__import__", "import_module"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def _pickle_uses(source: str) -> list[str]:
    tree = ast.parse(source)
    uses = [
        f"import {name}"
        for name in sorted(_imported_modules(tree))
        if name.split(".")[0] in PICKLE_MODULES
    ]
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and isinstance(node.value, ast.Constant):
            if node.arg == "allow_pickle" and node.value.value is True:
                uses.append(f"allow_pickle=True (line {node.value.lineno})")
            if node.arg == "weights_only" and node.value.value is False:
                uses.append(f"weights_only=False (line {node.value.lineno})")
    return uses


def _asserts(source: str) -> list[int]:
    return [node.lineno for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Assert)]


def _random_uses(source: str) -> list[str]:
    tree = ast.parse(source)
    uses = [f"import {name}" for name in sorted(_imported_modules(tree)) if name in RANDOM_MODULES]
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "random"
            and isinstance(node.value, ast.Name)
            and node.value.id in {"np", "numpy"}
        ):
            uses.append(f"{node.value.id}.random (line {node.lineno})")
    return uses


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_there_are_sources_to_scan() -> None:
    assert PACKAGE / "errors.py" in SOURCES
    assert PACKAGE / "crypto" / "aead.py" in SOURCES


def test_scanners_detect_what_they_look_for() -> None:
    assert _pickle_uses("import pickle") == ["import pickle"]
    assert _pickle_uses("from pickle import loads") == ["import pickle", "import pickle.loads"]
    assert _pickle_uses("import importlib\nimportlib.import_module('pickle')") == ["import pickle"]
    assert _pickle_uses("np.load(f, allow_pickle=True)") == ["allow_pickle=True (line 1)"]
    assert _pickle_uses("torch.load(f, weights_only=False)") == ["weights_only=False (line 1)"]
    assert _pickle_uses("import json\nnp.load(f, allow_pickle=False)") == []
    assert _asserts("x = 1\nassert x, 'no'\n") == [2]
    assert _asserts("def f(assertion):\n    return assertion\n") == []
    assert _random_uses("import random") == ["import random"]
    assert _random_uses("from numpy import random") == ["import numpy.random"]
    assert _random_uses("import numpy as np\nnp.random.default_rng(0)") == ["np.random (line 2)"]
    assert _random_uses("import secrets\nimport os\nos.urandom(32)") == []


@pytest.mark.parametrize("path", SOURCES, ids=_relative)
def test_no_pickle(path: Path) -> None:
    assert _pickle_uses(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", SOURCES, ids=_relative)
def test_no_assert_statements(path: Path) -> None:
    assert _asserts(path.read_text(encoding="utf-8")) == [], "raise a named error from errors.py"


@pytest.mark.parametrize("path", SOURCES, ids=_relative)
def test_no_non_cryptographic_randomness(path: Path) -> None:
    assert _random_uses(path.read_text(encoding="utf-8")) == [], "use os.urandom/secrets/prg"
