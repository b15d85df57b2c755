"""Wiring: optional dependencies, the registry, the CLI, and payload chunking."""

from __future__ import annotations

import doctest
import importlib
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import secureagg as sa
from secureagg.cli import main
from secureagg.errors import ConfigurationError, MissingDependencyError
from secureagg.he.paillier import PaillierSecretKey
from secureagg.protocols.he_round import payload_chunks
from tests.he.keys import paillier_key


def test_import_secureagg_loads_no_he_library() -> None:
    code = (
        "import sys, secureagg, secureagg.he, secureagg.protocols.ckks, "
        "secureagg.protocols.paillier, secureagg.aggregators.ckks, secureagg.aggregators.paillier\n"
        "print(sorted(m for m in ('tenseal', 'phe', 'gmpy2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("name", "blocked", "package"),
    [("ckks", "tenseal", "tenseal"), ("paillier", "phe", "phe"), ("paillier", "gmpy2", "gmpy2")],
)
def test_missing_dependency_is_a_clear_error(monkeypatch, name, blocked, package) -> None:
    monkeypatch.setitem(sys.modules, blocked, None)  # makes `import blocked` fail
    with pytest.raises(MissingDependencyError, match=r"secureagg\[he\]") as info:
        sa.make_aggregator(name, num_clients=3, clip=1.0)
    assert info.value.package == package and info.value.extra == "he"


def test_registry_knows_both_and_checks_keywords() -> None:
    assert {"ckks", "paillier"} <= set(sa.available())
    with pytest.raises(ConfigurationError, match="flooding_bits"):
        sa.make_aggregator("ckks", num_clients=3, flooding=3)


@pytest.mark.parametrize(("protocol", "dim"), [("ckks", 300), ("paillier", 40)])
def test_cli_simulate_reports_errors_within_bounds(
    tmp_path, capsys, monkeypatch, protocol, dim
) -> None:
    # fresh 3072-bit keys every round are the default; reuse one here (prime search is slow)
    key = paillier_key(3072)
    monkeypatch.setattr(PaillierSecretKey, "generate",
                        classmethod(lambda cls, bits=3072, rng=None: key))
    code = main(["simulate", "--protocol", protocol, "--clients", "3", "--dim", str(dim),
                 "--dropout", "0.34", "--json", "--out", str(tmp_path / "run")])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["within_bound"] is True
    assert report["max_abs_error"] <= report["error_bound"]
    assert len(report["survivors"]) == 2
    assert main(["audit", str(tmp_path / "run")]) == 0


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(st.integers(0, 30), min_size=1, max_size=5),
    tail=st.integers(0, 3),
    chunk=st.integers(1, 17),
)
def test_payload_chunks_cover_the_virtual_concatenation(shapes, tail, chunk) -> None:
    arrays = [np.arange(n, dtype=np.float64) + 100 * i for i, n in enumerate(shapes)]
    tail_values = np.arange(tail, dtype=np.float64) - 50
    chunks = list(payload_chunks(arrays, transform=lambda x: 2 * x, tail=tail_values,
                                 chunk_size=chunk, dtype=np.dtype(np.float64)))
    expected = np.concatenate([2 * a for a in arrays] + [tail_values])
    got = np.concatenate(chunks) if chunks else np.empty(0)
    assert np.array_equal(got, expected)
    assert all(c.size == chunk for c in chunks[:-1])


@pytest.mark.parametrize(
    "module",
    [
        "secureagg.he", "secureagg.he.backend", "secureagg.he.ckks", "secureagg.he.ckks.keys",
        "secureagg.he.ckks.ciphertexts", "secureagg.he.ckks.encryption",
        "secureagg.he.ckks.summation", "secureagg.he.ckks.cut_layer", "secureagg.he.ckks_params",
        "secureagg.he.paillier_packing", "secureagg.he.paillier", "secureagg.he.secret_key_bytes",
        "secureagg.protocols.he_round", "secureagg.protocols.he_round.state",
        "secureagg.protocols.he_round.messages", "secureagg.protocols.he_round.scheme",
        "secureagg.protocols.he_round.stages", "secureagg.protocols.he_round.client",
        "secureagg.protocols.he_round.server", "secureagg.protocols.he_round.key_holder",
        "secureagg.protocols.ckks",
        "secureagg.protocols.ckks.flooding", "secureagg.protocols.ckks.scheme",
        "secureagg.protocols.ckks.messages", "secureagg.protocols.paillier",
        "secureagg.protocols.paillier.scheme", "secureagg.protocols.paillier.messages",
        "secureagg.aggregators.ckks", "secureagg.aggregators.paillier",
    ],
)
def test_docstring_examples_hold(module) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
