"""``report.html``: rendered from real audited runs, self-contained, escaped, with its headline
visible in a real browser (headless Chromium screenshot at 1280x900)."""

from __future__ import annotations

import base64
import html
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from secureagg.audit.html import render_html
from secureagg.cli import main
from secureagg.errors import InvalidInputError, MissingDependencyError

PASS_GREEN = (0x1A, 0x7F, 0x37)
FAIL_RED = (0xC6, 0x28, 0x28)
SCREENSHOT_COPY = Path("/tmp/secureagg-report-screenshot.png")
_DATA_PNG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"')


def _required(module: str, what: str) -> None:
    """Skip without ``module`` locally; fail in CI, which installs it."""
    if importlib.util.find_spec(module) is None:
        message = f"{module} is not installed ({what})"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it")
        pytest.skip(message)


@pytest.fixture(scope="module")
def mpl() -> None:
    _required("matplotlib", "report.html's plots need the audit extra")


def _audited(run: Path, expected_code: int) -> tuple[dict[str, Any], str]:
    assert main(["audit", str(run)]) == expected_code
    assert (run / "report.html").is_file(), "the audit wrote no report.html"
    return (json.loads((run / "report.json").read_text(encoding="utf-8")),
            (run / "report.html").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def one_round(tmp_path_factory: pytest.TempPathFactory, mpl: None) -> tuple[Path, dict, str]:
    run = tmp_path_factory.mktemp("html") / "sim"
    assert main(["simulate", "--protocol", "secagg+", "--clients", "8", "--dim", "50",
                 "--dropout", "0.3", "--quiet", "--out", str(run)]) == 0
    return (run, *_audited(run, 0))


@pytest.fixture(scope="module")
def tampered(tmp_path_factory: pytest.TempPathFactory, mpl: None) -> tuple[Path, dict, str]:
    """A seeded run whose result.json gained two survivors after it was sealed."""
    run = tmp_path_factory.mktemp("html") / "bad"
    assert main(["simulate", "--protocol", "secagg+", "--clients", "8", "--dim", "50",
                 "--dropout", "0.3", "--seed", "11", "--quiet", "--out", str(run)]) == 0
    doc = json.loads((run / "result.json").read_text())
    dropped = sorted(set(range(8)) - set(doc["survivors"]))
    assert dropped, "seed 11 drops some clients"
    doc["survivors"] = sorted(doc["survivors"] + dropped)
    (run / "result.json").write_text(json.dumps(doc))
    return (run, *_audited(run, 1))


@pytest.fixture(scope="module")
def federated(tmp_path_factory: pytest.TempPathFactory, mpl: None) -> Iterator[tuple[Path, dict,
                                                                                     str]]:
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("sklearn") is None:
        pytest.skip("the federated demo needs torch and scikit-learn")
    import torch

    threads = torch.get_num_threads()
    run = tmp_path_factory.mktemp("html") / "fed"
    try:
        assert main(["demo", "--rounds", "2", "--clients", "4",
                     "--no-baseline", "--quiet", "--out", str(run)]) == 0
        yield (run, *_audited(run, 0))
    finally:
        torch.set_num_threads(threads)


def _headline(page: str) -> str:
    return page[page.index("<main>"):page.index("<nav>")]


def _pngs(page: str) -> dict[str, np.ndarray]:
    import matplotlib.image

    return {alt: matplotlib.image.imread(io.BytesIO(base64.b64decode(data)), format="png")
            for data, alt in _DATA_PNG.findall(page)}


def _self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:|//|file:)""", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "@import" not in page and "url(" not in page
    assert "default-src 'none'; img-src data:" in page  # the CSP forbids fetching anything
    assert re.findall(r'<img src="([^"]{0,22})', page) == ["data:image/png;base64,"] * len(
        re.findall(r"<img ", page))


def test_one_round_report(one_round: tuple[Path, dict, str]) -> None:
    _, report, page = one_round
    _self_contained(page)
    head = _headline(page)
    assert 'class="verdict pass"' in head and ">PASS<" in head and "FAIL" not in head
    applicable = [c for c in report["checks"] if c["ok"] is not None]
    assert applicable and all(c["ok"] for c in applicable)
    proto = report["protocol"]
    assert f"one-round · {proto['protocol'] if isinstance(proto, dict) else proto}" in head
    assert head.count("no differential privacy at this level") == 2  # no DP in simulate
    assert "sealed" in head and report["integrity"]["key_source"] in head
    assert "SEEDED" not in page
    (rd,) = report["rounds"]
    assert f"{len(rd['survivors'])} / {len(rd['sampled'])}</td>" in page
    for client, stage in rd["dropouts"].items():
        assert f"{client} at {stage}" in page
    # a one-round run has no ε and no accuracy over rounds: said, not drawn
    figures = _pngs(page)
    assert {"survivors and dropouts", "bytes per stage"} <= set(figures)
    assert not {"ε per client over rounds", "accuracy per round"} & set(figures)
    assert "No data in this report for: ε per client over rounds, accuracy per round" in page
    for kind, row in report["received_by_kind"].items():
        assert f"<code>{kind}</code></td><td class=\"num\">{row['count']:,}</td>" in page
    for image in figures.values():
        assert image.shape[:2] == (288, 504)  # 5.6 x 3.2 in at 90 dpi: small
    # the bars: green survivors and red dropouts, in proportion to the counts
    bars = (figures["survivors and dropouts"][..., :3] * 255).round()
    green = np.all(np.abs(bars - PASS_GREEN) < 3, axis=-1).sum()
    faded = tuple(round(0.8 * c + 0.2 * 255) for c in FAIL_RED)  # the red bars at alpha 0.8
    red = np.all(np.abs(bars - faded) < 4, axis=-1).sum()
    dropped = len(rd["sampled"]) - len(rd["survivors"])
    if dropped:
        assert red / green == pytest.approx(dropped / len(rd["survivors"]), rel=0.1)
    else:  # every dropout came after its input (fresh randomness): only the legend's patch
        assert red / green < 0.02
    # every check of report.json has its row, and the transcript checks of the CLI too
    for c in report["checks"]:
        assert f"<td>{html.escape(c['check'])}</td>" in page
    assert page.count('<td class="st ok">ok</td>') == len(applicable) + sum(
        1 for t in report["transcript_checks"] if not t["check"].startswith("["))


def test_failed_run_is_red_with_failed_checks_first_and_seeded_banner(
    tampered: tuple[Path, dict, str],
) -> None:
    _, report, page = tampered
    _self_contained(page)
    failed = [c for c in report["checks"] if c["ok"] is False]
    assert {c["group"] for c in failed} >= {"integrity", "survivors"}
    head = _headline(page)
    assert 'class="verdict fail"' in head and ">FAIL<" in head and ">PASS<" not in head
    assert re.search(rf">{len(failed)} of \d+ checks FAILED", head)
    assert 'class="seeded"' in head and "SEEDED RUN — NOT PRIVATE" in head and "(11)" in head
    table = page[page.index('id="checks"'):page.index('id="independent"')]
    rows = re.findall(r"<tr( class=\"fail\")?><td>[^<]*</td><td>([^<]*)</td>", table)
    assert [bool(cls) for cls, _ in rows] == [True] * len(failed) + [False] * (
        len(rows) - len(failed))
    assert [html.unescape(name) for _, name in rows[:len(failed)]] == [
        c["check"] for c in failed]
    statement = page[page.index('id="statement"'):page.index('id="checks"')]
    assert '<p class="loud">THIS RUN FAILED' in statement
    assert '<p class="loud">SEEDED RUN' in statement


def test_federated_report(federated: tuple[Path, dict, str]) -> None:
    _, report, page = federated
    _self_contained(page)
    head = _headline(page)
    levels = report["privacy"]["levels"]
    sample, user = levels["sample"]["epsilon_max"], levels["user"]["epsilon_max"]
    assert 0 < sample <= levels["sample"]["budget"]
    assert f"ε = {sample:.4g}" in head
    assert (f"ε = {user:,.0f}" if user >= 1e4 else f"ε = {user:.4g}") in head
    assert head.count("δ = 1e-05") == 2
    assert f"budget ε ≤ {levels['sample']['budget']:.4g}" in head
    assert "federated · secagg+" in head
    # the independent re-accounting: one row per stream, with its stated and tight ε
    independent = report["privacy"]["independent"]
    section = page[page.index('id="independent"'):page.index('id="plots"')]
    streams = [s for lv in independent["levels"].values() for s in lv["streams"]]
    assert section.count("<tr") == len(streams) + 1  # + the header
    for s in streams:
        tight = s["pld_epsilon"] if s["tight_source"] == "pld" else s["closed_form_epsilon"]
        for value in (s["stated_epsilon"], tight):
            assert (f">{value:,.0f}<" if value >= 1e4 else f">{value:.4g}<") in section
    figures = _pngs(page)
    assert {"ε per client over rounds", "accuracy per round", "survivors and dropouts"} <= set(
        figures)
    # the budget is drawn: a dashed red line across the ε figure, the one red row that long
    eps = (figures["ε per client over rounds"][..., :3] * 255).round()
    reddish = ((eps[..., 0] - eps[..., 1] > 60) & (eps[..., 0] - eps[..., 2] > 60)).sum(axis=1)
    assert reddish.max() > 250 and np.sort(reddish)[-3] < 100
    for rd in report["rounds"]:
        assert f"{rd['accuracy'] * 100:.1f}%" in page


def test_every_string_from_the_report_is_escaped(one_round: tuple[Path, dict, str]) -> None:
    _, report, _ = one_round
    evil = "<script>alert('x')</script>"
    doc = json.loads(json.dumps(report))
    doc["run_dir"] = evil
    doc["kind"] = evil
    doc["protocol"] = evil
    doc["statement"].append(evil)
    doc["checks"][0]["detail"] = evil
    doc["checks"][0]["file"] = evil
    doc["rounds"][0]["dropouts"][evil] = evil
    doc["parameters"][evil] = {evil: [evil, 1.5]}
    doc["integrity"]["key_source"] = evil
    doc["seeded"], doc["seed"] = True, evil
    doc["privacy"]["independent"] = {evil: [{evil: evil}]}
    doc["canary"] = {"claimed_epsilon": 1.0, "epsilon_lower_bound": 0.1, "note": evil}
    doc["stages"] = {evil + "$x^{": {"bytes_up": 10, "bytes_down": 5}}  # no mathtext either
    page = render_html(doc)
    assert "<script" not in page.lower()
    escaped = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
    assert page.count(escaped) >= 18
    assert page.count(escaped) == page.count("alert(")


def test_output_is_deterministic_and_robust(one_round: tuple[Path, dict, str]) -> None:
    run, report, page = one_round
    assert render_html(report) == render_html(json.loads(json.dumps(report)))
    assert main(["audit", str(run)]) == 0
    assert (run / "report.html").read_text(encoding="utf-8") == page
    with pytest.raises(InvalidInputError, match="mapping"):
        render_html([report])  # type: ignore[arg-type]
    # a report without a check that passed is not green, whatever its verdict says
    tiny = render_html({"verdict": "pass", "kind": "one-round", "protocol": "plain"})
    assert 'class="verdict fail"' in tiny and "no check that passed" in tiny
    assert "INSECURE baseline" in tiny
    # fields of the wrong type are shown as they are, not trusted and not fatal
    odd = render_html(dict(report, rounds=[{"round": 1, "accuracy": "n/a", "survivors": None}],
                           stages={"x": 3}, statement=None, checks=[None, {"ok": "maybe"}],
                           transcript_checks=None, integrity="yes"))
    assert ">n/a<" in odd and "no privacy statement" in odd and ">n.a.</td>" in odd


def test_canary_and_generic_independent_sections(one_round: tuple[Path, dict, str]) -> None:
    _, report, _ = one_round
    canary = {"claimed_epsilon": 2.0, "epsilon_lower_bound": 3.25, "confidence": 0.95,
              "canaries": 1000, "refutes_claim": True}
    page = render_html(dict(report, canary=canary,
                            privacy={"levels": {}, "independent": {"engine": "other",
                                                                   "figures": [1.5, 2.5]}}))
    section = page[page.index('id="canary"'):]
    assert "Claimed ε = 2 · empirical lower bound ε ≥ 3.25 at confidence 0.95" in section
    assert "EXCEEDS the claim" in section and ">1,000<" in section
    independent = page[page.index('id="independent"'):page.index('id="plots"')]
    assert ">engine</th><td>other<" in independent and "1.5, 2.5" in independent
    assert 'id="canary"' not in render_html(report)


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(MissingDependencyError, match=re.escape("pip install 'secureagg[audit]'")):
        render_html({"verdict": "pass"})
    # the CLI then writes report.json alone
    run = tmp_path / "sim"
    assert main(["simulate", "--protocol", "secagg", "--clients", "4", "--dim", "8", "--quiet",
                 "--out", str(run)]) == 0
    assert main(["audit", str(run)]) == 0
    assert (run / "report.json").is_file() and not (run / "report.html").exists()


# ------------------------------------------------------------------------------- the browser


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return str(shutil.which(name))
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; CI must install it (apt-get install chromium)")
    pytest.skip("chromium is not installed")


def _screenshot(html_file: Path, out: Path) -> np.ndarray:
    import matplotlib.image

    argv = [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--virtual-time-budget=3000",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            f"--user-data-dir={out.parent / 'chromium-profile'}", "--window-size=1280,900",
            f"--screenshot={out}", html_file.resolve().as_uri()]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group this test started, and nothing else
        proc.communicate()
        pytest.fail("chromium did not take the screenshot within 120 s")
    assert out.is_file(), f"no screenshot (exit {proc.returncode}): {err.decode()[-2000:]}"
    return (matplotlib.image.imread(out)[..., :3] * 255).round()


def _area(pixels: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int(np.all(np.abs(pixels - colour) < 6, axis=-1).sum())


@pytest.mark.parametrize(("case", "colour", "other"), [
    ("federated", PASS_GREEN, FAIL_RED), ("one_round", PASS_GREEN, FAIL_RED),
    ("tampered", FAIL_RED, PASS_GREEN)])
def test_headline_is_visible_in_a_browser(
    case: str, colour: tuple[int, int, int], other: tuple[int, int, int],
    request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    run, report, _ = request.getfixturevalue(case)
    shot = _screenshot(run / "report.html", tmp_path / f"report-{case}.png")
    shutil.copyfile(tmp_path / f"report-{case}.png", SCREENSHOT_COPY if case == "federated" else
                    SCREENSHOT_COPY.with_name(f"secureagg-report-screenshot-{case}.png"))
    assert shot.shape == (900, 1280, 3)
    # not blank: many colours, real contrast
    assert len(np.unique(shot.reshape(-1, 3) // 8, axis=0)) > 30 and shot.std() > 20
    # the verdict banner: rows filled with its colour across most of the width, at least 80 of
    # them, all in the top half of the viewport; none of the other verdict's colour above it
    banner = np.nonzero((np.all(np.abs(shot - colour) < 6, axis=-1)).sum(axis=1) > 900)[0]
    assert banner.size >= 80, f"the {case} banner is missing from the first screen"
    assert banner.max() < 450 and banner.max() - banner.min() < 200
    assert _area(shot[:450], other) < 100
    # below the banner: the white cards with the ε and the seal (dark text on white)
    cards = shot[banner.max() + 1:banner.max() + 320]
    assert _area(cards, (255, 255, 255)) > 120_000
    assert np.all(cards < 60, axis=-1).sum() > 3_000
    if report["seeded"]:  # the SEEDED banner (amber stripes) is above the verdict
        amber = np.nonzero(np.all(np.abs(shot - (0xFF, 0xB3, 0x00)) < 6, axis=-1))[0]
        assert amber.size > 10_000 and amber.max() < banner.min()
