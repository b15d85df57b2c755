"""The cost estimate: runs that cannot fit are refused before they allocate, with the estimate."""

from __future__ import annotations

import json
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

import secureagg as sa
from secureagg.cli import main
from secureagg.cli.estimate import estimate_round, parse_limit, parse_size
from secureagg.errors import ConfigurationError


def test_simulate_refuses_a_dimension_that_cannot_fit_and_gives_the_estimate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "huge"
    code = main(["simulate", "--protocol", "plain", "--dim", "10000000000", "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "estimated 3.5 TiB of memory" in err  # 10 clients x 10^10 values, 8 B each and more
    assert "lower --dim or --clients" in err
    assert "--max-memory" in err
    assert not run.exists()  # refused before anything was written


def test_a_memory_limit_below_the_estimate_is_refused_with_both_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["simulate", "--protocol", "plain", "--clients", "3", "--dim", "4",
                 "--max-memory", "1M", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert "over the limit of 1.0 MiB (--max-memory)" in err
    assert "estimated 70." in err


def test_a_time_limit_below_the_estimate_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["simulate", "--protocol", "paillier", "--clients", "100", "--dim", "1000000",
                 "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert "would take an estimated" in err
    assert "h, over the limit of 60.0 min (--max-seconds)" in err


def test_raised_limits_let_the_run_go_and_the_estimate_is_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "r"
    code = main(["simulate", "--protocol", "plain", "--clients", "3", "--dim", "4", "--quiet",
                 "--max-memory", "none", "--max-seconds", "100000", "--out", str(run)])
    assert code == 0, capsys.readouterr().err
    config = json.loads((run / "config.json").read_text())
    assert config["limits"] == {"max_bytes": None, "max_seconds": 100000.0,
                                "memory_limit_from": "--max-memory"}
    assert config["estimate"]["peak_bytes"] > 64 * 2**20
    assert config["estimate"]["wire_bytes_per_client"] == 4 * 8


def test_the_estimate_counts_the_ciphertext_expansion_of_he() -> None:
    n, d = 8, 50_000
    plain = estimate_round(sa.make_aggregator("plain", num_clients=n).parameters(),
                           num_clients=n, dim=d)
    ckks_params = sa.make_aggregator("ckks", num_clients=n, clip=1.0).parameters()
    ckks = estimate_round(ckks_params, num_clients=n, dim=d)
    ciphertexts = -(-d // ckks_params["values_per_ciphertext"])
    assert ckks.wire_bytes_per_client == ciphertexts * ckks_params["ciphertext_bytes"]
    assert ckks.wire_bytes_per_client > 3 * plain.wire_bytes_per_client
    assert ckks.peak_bytes > plain.peak_bytes


def test_the_estimate_grows_with_clients_dimension_and_graph_degree() -> None:
    small = sa.make_aggregator("secagg+", num_clients=100, clip=1.0).parameters()
    complete = sa.make_aggregator("secagg", num_clients=100, clip=1.0).parameters()
    base = estimate_round(small, num_clients=100, dim=10_000)
    assert estimate_round(small, num_clients=100, dim=20_000).peak_bytes > base.peak_bytes
    assert estimate_round(complete, num_clients=100, dim=10_000).seconds > base.seconds
    dropped = estimate_round(small, num_clients=100, dim=10_000, dropout=0.3)
    assert dropped.seconds > base.seconds
    # exact integers: an absurd size gives an absurd estimate, never an overflow
    assert estimate_round(small, num_clients=100, dim=10**18).peak_bytes > 10**21


@pytest.mark.parametrize("protocol", ["plain", "secagg+"])
def test_the_memory_estimate_is_not_below_what_the_round_allocates(protocol: str) -> None:
    """tracemalloc sees numpy's buffers and Python's objects: the traced peak of the data and
    the round must stay below the estimate without its fixed 64 MiB allowance."""
    n, d = 6, 40_000
    agg = sa.make_aggregator(protocol, num_clients=n, clip=1.0)
    est = estimate_round(agg.parameters(), num_clients=n, dim=d)
    tracemalloc.start()
    try:
        data = np.random.default_rng(0).uniform(-1, 1, size=(n, d))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sa.simulate(agg, [[row] for row in data])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= est.peak_bytes - 64 * 2**20


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8G", 8 * 2**30), ("512M", 512 * 2**20), ("512MiB", 512 * 2**20), ("1.5G", 3 * 2**29),
     ("1000", 1000), ("1000B", 1000), ("2k", 2048)],
)
def test_sizes_parse_in_binary_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "0", "-1", "lots", "8X", "nan", "inf", "1e400"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_size(text)
    with pytest.raises(ConfigurationError, match="--max-memory"):
        parse_limit(text, option="--max-memory", size=True)


def test_none_disables_a_limit_and_seconds_must_be_positive() -> None:
    assert parse_limit("none", option="--max-seconds", size=False) is None
    assert parse_limit("90", option="--max-seconds", size=False) == 90.0
    for bad in ("0", "-3", "nan", "inf", "soon"):
        with pytest.raises(ConfigurationError, match="--max-seconds"):
            parse_limit(bad, option="--max-seconds", size=False)


def test_a_container_memory_limit_lowers_the_available_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from secureagg.cli import estimate

    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text(f"{2**30}\n")
    usage.write_text(f"{3 * 2**28}\n")
    monkeypatch.setattr(estimate, "_CGROUP_FILES", ((str(limit), str(usage)),))
    available = estimate.available_memory()
    assert available is not None and available <= 2**28  # 1 GiB limit - 768 MiB in use
