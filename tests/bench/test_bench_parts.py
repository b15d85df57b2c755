"""The benchmark's parts that compute from measured figures: the network model, the fitted
exponents, the per-value peer ratio, the targets, and the results page (issue 15)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from secureagg.bench.fit import scaling_fits
from secureagg.bench.network import NetworkModel, parse_network
from secureagg.bench.peers import peer_ratio
from secureagg.bench.report import BEGIN, END, render_into, render_markdown, replace_generated
from secureagg.bench.targets import evaluate_targets
from secureagg.errors import ConfigurationError


def _m(value: float) -> dict[str, float]:
    return {"median": value, "min": value}


def _entry(protocol: str, n: int, d: int, *, dropout: float = 0.1, client: float = 1.0,
           server: float = 1.0, **extra: Any) -> dict[str, Any]:
    figures = {k: _m(v) for k, v in {
        "round_seconds": client + server, "client_seconds_max": client,
        "client_seconds_mean": client, "server_seconds": server, "helper_seconds": 0.0,
        "setup_seconds": 0.0, "compute_seconds_total": n * client + server,
        "bytes_up_per_client": 4.0 * d, "bytes_down_per_client": 10.0, "spec_bytes": 100.0,
    }.items()}
    return {
        "id": 0, "label": f"{protocol} n={n} d={d}", "status": "measured",
        "config": {"protocol": protocol, "dp": "none", "n": n, "d": d, "dropout": dropout,
                   "threat": None, "dropped": round(n * dropout)},
        "figures": figures, "peak_memory_bytes": 8 * n * d,
        "error": {"max_abs_error": 0.0, "bound": 1e-3, "within_bound": True},
        **extra,
    }


def test_network_parse_and_model_arithmetic() -> None:
    net = parse_network("up=8Mbit/s,down=80Mbit/s,latency=10ms,server=1MB/s")
    assert (net.client_up_bps, net.client_down_bps) == (8e6, 80e6)
    assert net.latency_s == pytest.approx(0.01) and net.server_bps == 8e6
    stages = {"a": {"client_bytes_up_max": _m(1e6), "client_bytes_down_max": _m(1e6),
                    "server_bytes_in": _m(2e6), "server_bytes_out": _m(1e5),
                    "client_seconds_max": _m(0.5), "server_seconds": _m(0.25),
                    "helper_seconds": _m(0.0)}}
    got = net.round_seconds(stages, {"spec_bytes": _m(1e4)})
    # spec: 10 ms + 8e4/8e7; stage: 20 ms + 1 s up + 0.1 s down + 2 s server link + 0.75 s
    expected = 0.01 + 0.001 + 0.02 + 1.0 + 0.1 + 2.0 + 0.75
    assert got["seconds"] == pytest.approx(expected)
    assert "MODEL" in got["model"]
    assert parse_network("bandwidth=1Gbit/s,latency=1ms").client_up_bps == 1e9


@pytest.mark.parametrize("text", ["up=fast,down=1Mbit/s,latency=1ms", "up=1Mbit/s",
                                  "up=1Mbit/s,down=1Mbit/s,latency=soon", "speed=1Mbit/s"])
def test_network_bad_specs_are_refused(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_network(text)


def test_fit_recovers_the_exponents_of_power_laws() -> None:
    entries = [_entry("secagg+", n, 1000, client=0.01 * math.log(n), server=1e-4 * n ** 1.5)
               for n in (10, 100, 1000, 5000)]
    fits = {(f["axis"], f["figure"]): f for f in scaling_fits(entries)}
    assert fits[("n", "server_seconds")]["exponent"] == pytest.approx(1.5)
    assert fits[("n", "peak_memory_bytes")]["exponent"] == pytest.approx(1.0)
    client = fits[("n", "client_seconds_max")]
    assert client["exponent"] < 0.5  # logarithmic growth: a small exponent ...
    assert client["log_fit"]["max_relative_residual"] < 1e-9  # ... and a + c ln n fits exactly
    assert client["power_fit_max_relative_residual"] > 0.05
    # two values of n are not a fit
    assert scaling_fits(entries[:2]) == []


def test_peer_ratio_is_per_value() -> None:
    e = _entry("paillier", 10, 1000, peers={"phe": {"total_compute_seconds": _m(2.0),
                                                    "values": 100}})
    ours = e["figures"]["compute_seconds_total"]["median"]  # 11 s for 1000 values
    assert peer_ratio(e, "phe") == pytest.approx((2.0 / 100) / (ours / 1000))
    assert peer_ratio(e, "flower") is None


def test_floor_ratios_include_the_upload_over_a_32_bit_payload() -> None:
    from secureagg.bench.floor import ratios

    figures = {"client_seconds_mean": _m(0.3), "client_seconds_max": _m(0.4),
               "server_seconds": _m(2.0), "bytes_up_per_client": _m(4_004_000.0)}
    floor = {"client_seconds": 0.2, "server_seconds": 1.0,
             "unit_costs": {"d": 1_000_000, "bits": 32}}
    r = ratios(figures, floor)
    assert r["upload_over_payload"] == pytest.approx(1.001)
    assert r["server_over_floor"] == pytest.approx(2.0)
    assert r["client_mean_over_floor"] == pytest.approx(1.5)
    assert r["client_max_over_floor"] == pytest.approx(2.0)


def test_targets_read_only_what_was_measured() -> None:
    floor = {"client_mean_over_floor": 1.2, "client_max_over_floor": 1.4,
             "server_over_floor": 1.7}
    small = _entry("secagg+", 100, 100_000, ratio=floor, server_peak_memory_bytes=1000,
                   peers={"flower": {"total_compute_seconds": _m(3000.0), "values": 100_000}})
    big = _entry("secagg+", 1000, 100_000, server_peak_memory_bytes=1400)
    targets = {t["target"]: t for t in evaluate_targets([small, big])}
    assert targets["secagg+ n=100 d=100000: mean client / floor <= 1.5"]["status"] == "met"
    assert targets["secagg+ n=100 d=100000: server / floor <= 1.5"]["status"] == "missed"
    assert targets["secagg+ n=100 d=1e+06: server / floor <= 1.5"]["status"] == "not measured"
    flower = targets["Flower SecAgg+ / ours (total compute) at n=100 d=100000 >= 20"]
    assert flower["measured"] == pytest.approx(3000.0 / 101.0) and flower["met"] is True
    memory = targets["secagg+ d=1e5: server peak memory at n=1000 / at n=100 <= 1.5"]
    assert memory["measured"] == pytest.approx(1.4) and memory["met"] is True
    assert all(t["met"] is None for t in evaluate_targets([]) if "completes" not in t["target"])


def test_ckks_client_target_reads_fresh_and_pooled_apart() -> None:
    """Fresh encryption is judged on all of the client's work; the pooled variant on its work in
    the round, with the pool's offline seconds stated beside (never folded in silently)."""
    peer = {"tenseal": {"client_seconds": _m(0.05), "values": 1000}}
    fresh = _entry("ckks", 10, 1000, client=0.1, peers=peer)
    pooled = _entry("ckks:pooled", 10, 1000, client=0.03, peers=peer)
    pooled["figures"]["client_offline_seconds_max"] = _m(0.07)
    got = {t["target"]: t for t in evaluate_targets([fresh, pooled])}
    f = got["ckks client: bare TenSEAL (FLARE default context) / ours >= 1 at n=10 d=1000"]
    assert f["measured"] == pytest.approx(0.5) and f["status"] == "missed"
    p = got["ckks:pooled client in the round: bare TenSEAL (FLARE default context) / ours >= 1 "
            "at n=10 d=1000"]
    assert p["measured"] == pytest.approx(0.05 / 0.03) and p["status"] == "met"
    assert "0.07 s per client" in p["where"]


def _doc(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "format": "secureagg/bench/v1", "created_utc": "2026-12-06T00:00:00+00:00",
        "finished_utc": "2026-12-06T00:01:00+00:00", "argv": ["secureagg", "bench"],
        "seeded": False, "machine": {"cpu_count": 2, "cpu_model": "Test CPU", "python": "3.11"},
        "grid": {"repeats": 3}, "configurations": entries, "plots": ["vs_floor.png"],
        "scaling": scaling_fits(entries), "targets": evaluate_targets(entries),
    }


def test_report_renders_and_replaces_only_the_generated_part(tmp_path: Path) -> None:
    import json

    entries = [_entry("secagg+", n, 1000, client=0.001 * n, server=0.002 * n)
               for n in (10, 100, 1000)]
    text = render_markdown(_doc(entries), source="run/bench.json", plot_dir="../run")
    assert text.startswith(BEGIN) and text.rstrip().endswith(END)
    assert "Test CPU" in text and "run/bench.json" in text
    assert "![vs_floor.png](../run/vs_floor.png)" in text
    assert "| secagg+ | 1000 | 1,000 |" in text
    assert "Scaling: fitted exponents" in text
    page = "# Benchmarks\n\nhand-written intro\n\n" + BEGIN + "\nold\n" + END + "\n\n## After\n"
    new = replace_generated(page, text)
    assert "hand-written intro" in new and "## After" in new and "\nold\n" not in new
    assert new.count(BEGIN) == 1 and new.count(END) == 1
    with pytest.raises(ConfigurationError):
        replace_generated(BEGIN + " no end", text)
    with pytest.raises(ConfigurationError):
        render_markdown({"format": "other"}, source="x", plot_dir=None)
    # end to end: a results directory rendered into a docs page, twice (idempotent)
    results = tmp_path / "results"
    results.mkdir()
    (results / "bench.json").write_text(json.dumps(_doc(entries)), encoding="utf-8")
    docs = tmp_path / "docs" / "benchmarks.md"
    docs.parent.mkdir()
    docs.write_text("# Benchmarks\n\nintro\n", encoding="utf-8")
    render_into(results, docs)
    once = docs.read_text(encoding="utf-8")
    render_into(results, docs)
    assert docs.read_text(encoding="utf-8") == once
    assert once.startswith("# Benchmarks\n\nintro\n") and "](../results/vs_floor.png)" in once


def test_network_model_dataclass_round_trip() -> None:
    net = NetworkModel(client_up_bps=1e6, client_down_bps=2e6, latency_s=0.05, server_bps=1e9)
    d = net.to_dict()
    assert d["latency_seconds"] == 0.05 and "not a measurement" in d["model"]
