"""``secureagg bench --deployed`` (secureagg.bench.deployed*) without starting any process.

CI has no time for a real SuperLink and SuperNodes here, so nothing below starts one: the
arguments and their errors, the missing-Flower error, the summary and ratio arithmetic on
recorded figures (the committed benchmarks/results/flower.json and hand-made runs), the report's
JSON shape, the app directories inside the installed package, the thin script's arguments, and
both apps' ServerApp and ClientApp logic on the in-process stand-in Grid of tests/flower.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from secureagg.bench import deployed
from secureagg.bench.deployed import DeployedSettings, assemble_report, matched_parameters
from secureagg.bench.deployed_summary import format_report, judge, summarize
from secureagg.cli import main
from secureagg.errors import ConfigurationError, MissingDependencyError

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "benchmarks" / "results" / "flower.json"

# ------------------------------------------------------------------------ settings and the CLI


def test_default_and_quick_settings_are_the_documented_ones() -> None:
    d, q = deployed.DEFAULT_SETTINGS, deployed.QUICK_SETTINGS
    assert (d.nodes, d.dims, d.repeats, d.rounds, d.warmup) == (5, (1000, 100000), 3, 1, True)
    assert (q.nodes, q.dims, q.repeats, q.rounds, q.warmup) == (4, (1000,), 1, 1, False)
    assert d.problems() == [] and q.problems() == []


def test_every_bad_setting_is_named_at_once() -> None:
    bad = DeployedSettings(nodes=2, dims=(0, 5, 5), repeats=0, rounds=0, stage_timeout=-1,
                           poll=0, import_repeats=-1)
    with pytest.raises(ConfigurationError) as info:
        bad.validate()
    text = " ".join(info.value.problems)
    for option in ("--nodes", "--d values", "twice", "--repeats", "--rounds", "--stage-timeout",
                   "--poll", "--import-repeats"):
        assert option in text, option
    assert len(info.value.problems) == 8


@pytest.mark.parametrize(("nodes", "ok"), [(3, True), (2, False), (65, False), (True, False)])
def test_node_count_bounds(nodes: Any, ok: bool) -> None:
    assert (DeployedSettings(nodes=nodes).problems() == []) is ok


def test_a_dropped_node_must_leave_enough_shares() -> None:
    # n = 3: t = 2, one node dropped leaves 2: allowed
    assert DeployedSettings(nodes=3, dropout_node=True).problems() == []
    assert DeployedSettings(nodes=3, dims=(10,), poll=400).problems() == [
        "--poll must be in (0, --stage-timeout] seconds, got 400"]


@pytest.mark.parametrize("n", [3, 4, 5, 10])
def test_flower_gets_our_degree_plus_one_and_our_threshold(n: int) -> None:
    import secureagg as sa

    ours = sa.make_aggregator("secagg+", num_clients=n, clip=1.0).parameters()
    params = matched_parameters(n)
    assert params["ours"]["degree_k"] == ours["degree"]
    assert params["flower"]["num_shares"] == ours["degree"] + 1
    assert params["flower"]["reconstruction_threshold"] == ours["threshold"]
    assert params["flower"]["neighbourhood_including_self"] <= n
    assert (params["flower"]["clipping_range"], params["flower"]["max_weight"]) == (1.0, 1.0)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_grid_options_are_refused_with_deployed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(deployed, "run_deployed", _never)
    code, err = _cli(capsys, "bench", "--deployed", "--n", "5", "--seed", "1", "--peers", "none",
                     "--nodes", "2", "--out", str(tmp_path / "o"))
    assert code == 2
    for part in ("--n is an option of the grid", "--seed is an option", "--peers is an option",
                 "--nodes must be an integer in [3, 64]"):
        assert part in err, part


def test_deployed_options_need_deployed(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(capsys, "bench", "--nodes", "4", "--tls", "--plan")
    assert code == 2
    assert "--nodes, --tls go(es) with --deployed" in err


def _never(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("run_deployed must not be reached")


def test_an_existing_result_is_not_overwritten(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("flwr")
    monkeypatch.setattr(deployed, "run_deployed", _never)
    (tmp_path / deployed.RESULT_FILE).write_text("{}", encoding="utf-8")
    code, err = _cli(capsys, "bench", "--deployed", "--quick", "--out", str(tmp_path))
    assert code == 2 and "already holds a benchmark (deployed.json)" in err


def test_without_flower_the_error_names_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "flwr" else real(name, *a))
    monkeypatch.setattr(deployed, "run_deployed", _never)
    with pytest.raises(MissingDependencyError, match=r"secureagg\[flower\]"):
        deployed.require_flower()
    code, err = _cli(capsys, "bench", "--deployed", "--quick", "--out", str(tmp_path / "o"))
    assert code == 2
    assert "flwr is needed for secureagg bench --deployed" in err
    assert "pip install 'secureagg[flower]'" in err
    assert not (tmp_path / "o").exists()


def test_help_says_what_it_starts_how_long_and_what_it_needs(
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for part in ("--deployed", "STARTS REAL PROCESSES", "SuperLink", "SuperNodes",
                 "127.0.0.1", "--quick: n=4, d=1000, 1 repeat, no warm-up (about 2-3 minutes)",
                 "pip install 'secureagg[flower]'", "--nodes N", "--dropout-node",
                 "deployed.json"):
        assert part in text, part


# ------------------------------------------------------------------------ summaries and ratios


def _round(r: int, wall: float | None, *, status: str = "ok", up: float = 100.0,
           error: float | None = 1e-9, engine: dict[str, Any] | None = None) -> dict[str, Any]:
    stages = [{"labels": ["a"], "wall_seconds": wall / 2}, {"labels": ["b"], "wall_seconds":
              wall / 2}] if wall is not None else []
    out = {"round": r, "status": status, "max_abs_error": error, "survivors": 4,
           "meter": {"wall_seconds": wall, "stages": stages, "pull_requests": 7,
                     "meter_overhead_seconds": 0.001,
                     "bytes_per_client": {"up_mean": up, "down_mean": 2 * up}}}
    if engine is not None:
        out["engine_stages"] = engine
    return out


def _engine(compute: float, wall: float) -> dict[str, Any]:
    return {name: {"seconds": wall, "server_seconds": compute / 2,
                   "client_seconds_max": compute / 2, "bytes_up": 400, "bytes_down": 800}
            for name in ("advertise", "share")}


def _runs() -> list[dict[str, Any]]:
    return [
        {"impl": "ours", "repeat": 0, "rounds": [_round(1, 8.0, engine=_engine(0.2, 4.0))]},
        {"impl": "flower", "repeat": 0, "rounds": [_round(1, 10.0, up=300.0)]},
        {"impl": "ours", "repeat": 1, "rounds": [_round(1, 12.0, engine=_engine(0.6, 6.0))]},
        {"impl": "flower", "repeat": 1, "rounds": [_round(1, 20.0, up=500.0)]},
        # a failed round: counted as measured, never in a median or a ratio
        {"impl": "ours", "repeat": 2, "rounds": [_round(1, 1.0, status="aborted",
                                                        engine=_engine(0.1, 0.5))]},
        {"impl": "flower", "repeat": 2, "rounds": [_round(1, 30.0)]},
    ]


def test_summary_medians_minima_and_ratios() -> None:
    s = summarize(_runs(), n=4)
    ours, flower = s["ours"], s["flower"]
    assert (ours["rounds_measured"], ours["rounds_ok"]) == (3, 2)
    assert ours["wall_seconds_median"] == 10.0 and ours["wall_seconds_min"] == 8.0
    assert flower["wall_seconds_median"] == 20.0 and flower["wall_seconds_min"] == 10.0
    assert s["ratio_ours_over_flower_wall_median"] == pytest.approx(0.5)
    assert s["ratio_ours_over_flower_wall_min"] == pytest.approx(0.8)
    assert s["ratio_ours_over_flower_wall_paired"] == pytest.approx([0.8, 0.6])
    assert s["ratio_ours_over_flower_wall_paired_median"] == pytest.approx(0.7)
    assert flower["up_bytes_per_client_median"] == 300.0
    assert flower["down_bytes_per_client_median"] == 600.0
    # ours' stages are named by the engine, Flower's by their labels
    assert set(ours["stage_wall_seconds_median"]) == {"advertise", "share"}
    assert set(flower["stage_wall_seconds_median"]) == {"a", "b"}
    split = ours["stages"]["advertise"]
    assert split["compute_seconds_median"] == pytest.approx(0.4)
    assert split["compute_share_median"] == pytest.approx(0.075)  # (0.05 + 0.1) / 2
    assert split["compute_share_max"] == pytest.approx(0.1)
    assert split["rest_seconds_median"] == pytest.approx(4.6)
    assert ours["protocol_payload_up_bytes_per_client_median"] == pytest.approx(200.0)


def test_no_completed_round_gives_no_ratio() -> None:
    runs = [{"impl": "ours", "repeat": 0, "rounds": [_round(1, 5.0, status="aborted",
                                                            engine=_engine(0.1, 1.0))]},
            {"impl": "flower", "repeat": 0, "rounds": [_round(1, 6.0)]}]
    s = summarize(runs, n=5)
    assert s["ours"]["wall_seconds_median"] is None
    assert s["ratio_ours_over_flower_wall_median"] is None
    assert s["ratio_ours_over_flower_wall_paired"] == []
    target = judge({1000: s}, 5)[0]
    assert target["met"] is None and "missing" in target["note"]


def _summary_with(ratio: float, share: float) -> dict[str, Any]:
    return {"ratio_ours_over_flower_wall_median": ratio,
            "ours": {"stages": {"masked": {"compute_share_median": share,
                                           "compute_share_max": share}}}}


def test_the_targets_are_judged_from_the_figures() -> None:
    met = judge({1000: _summary_with(0.99, 0.02), 100000: _summary_with(0.9, 0.05)}, 5)
    assert [t["met"] for t in met] == [True, True]
    assert "decreases" in met[0]["note"]
    flat = judge({1000: _summary_with(0.9, 0.02), 100000: _summary_with(1.0, 0.02)}, 5)
    assert flat[0]["met"] is False  # not below 1.0 at the largest d
    slow = judge({1000: _summary_with(1.01, 0.11)}, 5)
    assert [t["met"] for t in slow] == [False, False]
    other_n = judge({1000: _summary_with(0.5, 0.01)}, 4)
    assert other_n[0]["met"] is None and "n=4" in other_n[0]["note"]


def test_the_committed_result_is_reproduced_from_its_own_runs() -> None:
    """The arithmetic moved into the package unchanged: summarizing the committed runs gives
    the committed summary and targets."""
    if not RECORDED.is_file():
        pytest.skip("benchmarks/results/flower.json is not in this checkout")
    doc = json.loads(RECORDED.read_text(encoding="utf-8"))
    n = doc["configuration"]["nodes"]
    summary = {int(d): summarize(runs, n) for d, runs in doc["runs"].items()}
    for d, s in summary.items():
        for key in ("ratio_ours_over_flower_wall_median", "ratio_ours_over_flower_wall_min",
                    "ratio_ours_over_flower_wall_paired"):
            assert s[key] == pytest.approx(doc["summary"][str(d)][key]), (d, key)
        for impl in ("ours", "flower"):
            assert s[impl]["wall_seconds_median"] == pytest.approx(
                doc["summary"][str(d)][impl]["wall_seconds_median"])
    assert [t["met"] for t in judge(summary, n)] == [t["met"] for t in doc["targets"]]


def test_report_shape_json_and_table(tmp_path: Path) -> None:
    settings = DeployedSettings(nodes=4, dims=(1000,), repeats=2, warmup=False,
                                dropout_node=True)
    runs = {1000: _runs()}
    report = assemble_report(settings, runs, params=matched_parameters(4),
                             machine={"flwr": "1.42.0", "cpu_count": 2}, warmup=[],
                             imports={}, created="2026-01-01T00:00:00+00:00", argv=["x"],
                             seconds=12.5)
    report["failures"] = deployed.report_failures(report)
    assert report["format"] == "secureagg/bench-deployed/v1"
    for key in ("machine", "configuration", "definitions", "summary", "targets",
                "clientapp_import", "runs", "total_seconds", "created_utc", "argv"):
        assert key in report, key
    cfg = report["configuration"]
    assert cfg["dropped_partitions"] == [3] and cfg["dims"] == [1000]
    assert cfg["warmup"] == "none"
    assert set(report["summary"]) == {"1000"} and set(report["runs"]) == {"1000"}
    assert report["failures"] == ["d=1000 repeat 2 ours round 1: status aborted, max error 1e-09"]
    from secureagg.bench.output import write_json

    write_json(tmp_path / "deployed.json", report)
    again = json.loads((tmp_path / "deployed.json").read_text(encoding="utf-8"))
    assert again["summary"]["1000"]["ratio_ours_over_flower_wall_median"] == pytest.approx(0.5)
    text = "\n".join(format_report(again))
    assert "of medians 0.50x" in text and "0.80, 0.60" in text and "[n/a]" in text


def test_a_wrong_aggregate_is_a_failure() -> None:
    report = {"runs": {"10": [{"impl": "flower", "repeat": 0,
                               "rounds": [_round(1, 3.0, error=0.5), _round(2, 3.0, error=None)]}]}}
    assert len(deployed.report_failures(report)) == 2


# ------------------------------------------------------------------------ the shipped apps


@pytest.mark.parametrize("impl", ["ours", "flower"])
def test_the_app_directories_ship_in_the_package(impl: str) -> None:
    tomllib = pytest.importorskip("tomllib")
    from importlib.resources import files

    path = deployed.app_dir(impl)
    assert path == Path(str(files("secureagg.bench") / "deployed_apps" / impl))
    app = tomllib.loads((path / "pyproject.toml").read_text(encoding="utf-8"))
    components = app["tool"]["flwr"]["app"]["components"]
    module = deployed.APP_MODULES[impl]
    assert components == {"serverapp": f"{module}:server_app",
                          "clientapp": f"{module}:client_app"}
    # every run-config key the benchmark sends is declared by the app (Flower refuses others)
    sent = deployed.run_config(impl, n=4, d=10, rounds=1, dropped=[], params=matched_parameters(4),
                               result=Path("r.json"), timeout=5.0, poll=0.1)
    assert set(sent) == set(app["tool"]["flwr"]["app"]["config"])
    # and a wheel ships the directory (package data), as it ships the demos' apps
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    data = project["tool"]["setuptools"]["package-data"]["secureagg"]
    assert f"bench/deployed_apps/{impl}/pyproject.toml" in data
    with pytest.raises(ConfigurationError, match="unknown implementation"):
        deployed.app_dir("other")


# ------------------------------------------------------------------------ the thin script


def test_the_thin_script_keeps_the_old_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = importlib.util.spec_from_file_location("bench_flower_script",
                                                  ROOT / "benchmarks" / "bench_flower.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    calls: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        calls.append(argv)
        out = Path(argv[argv.index("--out") + 1])
        (out / deployed.RESULT_FILE).write_text('{"ok": 1}', encoding="utf-8")
        return 0

    monkeypatch.setattr(script, "secureagg_main", fake_main)
    target = tmp_path / "sub" / "flower.json"
    assert script.main(["--repeats", "5", "--dropout-node", "--out", str(target)]) == 0
    argv = calls[-1]
    assert argv[:2] == ["bench", "--deployed"]
    assert argv[argv.index("--nodes") + 1] == "5" and argv[argv.index("--d") + 1] == "1000,100000"
    assert argv.count("--repeats") == 1 and argv[argv.index("--repeats") + 1] == "5"
    assert "--dropout-node" in argv
    assert json.loads(target.read_text(encoding="utf-8")) == {"ok": 1}
    script.main(["--quick", "--out", str(target)])
    assert "--nodes" not in calls[-1] and "--quick" in calls[-1]


# ------------------------------------------------------------------------ apps on the fake Grid


def _fake_grid_run(impl: str, tmp_path: Path, *, n: int = 4, d: int = 12, rounds: int = 2,
                   dropout: bool = False) -> dict[str, Any]:
    pytest.importorskip("flwr")
    sys.path.insert(0, str(ROOT / "tests" / "flower"))
    from fake_grid import FakeGrid
    from flwr.app import Context, RecordDict

    app = importlib.import_module(deployed.APP_MODULES[impl])
    dropped = [n - 1] if dropout else []
    nodes = {900 + 7 * i: {"partition-id": i, "num-partitions": n, "bench-drop": i in dropped}
             for i in range(n)}
    config = deployed.run_config(impl, n=n, d=d, rounds=rounds, dropped=dropped,
                                 params=matched_parameters(n), result=tmp_path / "r.json",
                                 timeout=5.0, poll=0.01)
    grid = _flower_grid(FakeGrid)(app.client_app, nodes, run_config=config)
    server = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(),
                     run_config=dict(config))
    app.main(grid, server)
    return dict(json.loads((tmp_path / "r.json").read_text(encoding="utf-8")))


def _flower_grid(base: Any) -> Any:
    """The stand-in Grid plus what Flower's legacy DefaultWorkflow asks of a Grid."""
    from flwr.app import Message
    from flwr.supercore.run import Run

    class Grid(base):  # type: ignore[misc,valid-type]
        run = Run.create_empty(1)

        def set_run(self, run: Any) -> None:
            self.run = run

        def create_message(self, content: Any, message_type: str, dst_node_id: int,
                           group_id: str, ttl: float | None = None) -> Any:
            return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    return Grid




@pytest.mark.parametrize("impl", ["ours", "flower"])
@pytest.mark.parametrize("dropout", [False, True])
def test_each_app_aggregates_the_known_updates_on_the_stand_in_grid(
    impl: str, dropout: bool, tmp_path: Path
) -> None:
    n, d = 4, 12
    result = _fake_grid_run(impl, tmp_path, n=n, d=d, rounds=2, dropout=dropout)
    assert result["impl"] == impl and result["num_nodes"] == n and result["dim"] == d
    assert [r["round"] for r in result["rounds"]] == [1, 2]
    for r in result["rounds"]:
        assert r["status"] == "ok", r
        # the aggregate is the mean of the survivors' fixed updates, within the quantization
        assert r["max_abs_error"] is not None and r["max_abs_error"] < deployed.ERROR_TOLERANCE
        assert r["survivors"] == (n - 1 if dropout else n)
        meter = r["meter"]
        assert meter["wall_seconds"] > 0 and meter["clients"] == n
        assert meter["bytes_per_client"]["up_mean"] > 0
        assert meter["bytes_per_client"]["down_mean"] > 4 * d  # the model went down
        assert sum(s["errors"] for s in meter["stages"]) == (1 if dropout else 0)
        if impl == "ours":
            assert list(r["engine_stages"]) == ["advertise", "share", "masked", "unmask"]
            assert len(meter["stages"]) == 4
        else:
            labels = [s["labels"] for s in meter["stages"]]
            assert ["collect_masked_vectors"] in labels and ["unmask"] in labels
    summary = summarize([{**result, "repeat": 0}], n)
    assert summary[impl]["rounds_ok"] == 2
    assert math.isfinite(summary[impl]["wall_seconds_median"])
