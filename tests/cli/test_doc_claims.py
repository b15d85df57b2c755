"""What the README, the simulation guide and the command's help claim must be what the code does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from secureagg.cli import main

ROOT = Path(__file__).resolve().parents[2]
_PAGES = ("README.md", "docs/simulation.md", "docs/index.md")


def _help_texts(capsys: pytest.CaptureFixture[str]) -> str:
    texts = []
    for command in ([], ["demo"], ["simulate"], ["audit"], ["bench"]):
        assert main([*command, "--help"]) == 0
        texts.append(capsys.readouterr().out)
    return "\n".join(texts)


def test_no_page_or_help_text_says_the_transcript_holds_every_byte(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The transcript records each message's kind, sender, size and sha256, not its bytes."""
    texts = {page: (ROOT / page).read_text(encoding="utf-8") for page in _PAGES}
    texts["--help"] = _help_texts(capsys)
    for where, text in texts.items():
        flat = " ".join(text.split())
        assert not re.search(r"every byte", flat, re.IGNORECASE), where
    readme = " ".join(texts["README.md"].split())
    assert "sizes and sha256 hashes" in readme
    assert "keep_raw=True" in readme  # where the raw bytes are, for who needs them


@pytest.mark.parametrize("page", ["README.md", "docs/simulation.md"])
def test_pages_state_what_curious_mode_gives_up(page: str) -> None:
    flat = " ".join((ROOT / page).read_text(encoding="utf-8").split())
    assert "recover one client's input exactly" in flat
    assert "docs/secagg.md#what-curious-mode-gives-up" in flat or (
        "secagg.md#what-curious-mode-gives-up" in flat
    )


def test_no_page_calls_dp_input_validation_coming() -> None:
    """secagg.md once called DP input validation "coming"; the clip and DistributedDP/CentralDP
    exist, and the page must say so (issue 11, docs that overstate)."""
    for page in ("docs/secagg.md", "docs/dp.md", "README.md"):
        flat = " ".join((ROOT / page).read_text(encoding="utf-8").split())
        assert not re.search(r"\bcoming\b", flat, re.IGNORECASE), page
    secagg = " ".join((ROOT / "docs/secagg.md").read_text(encoding="utf-8").split())
    assert "DistributedDP" in secagg and "CentralDP" in secagg


def test_dp_page_says_what_each_epsilon_covers() -> None:
    """docs/dp.md "What each ε covers": per mechanism the adjacency, what is public, the
    accountant and the theorem (issue 11, acceptance)."""
    text = (ROOT / "docs/dp.md").read_text(encoding="utf-8")
    section = text.split("## What each ε covers", 1)[1].split("\n## ", 1)[0]
    flat = " ".join(section.split()).lower()
    for mechanism in ("dp-sgd", "distributed", "central", "activationdp"):
        assert mechanism in flat, mechanism
    for column in ("adjacency", "public", "accountant", "theorem"):
        assert column in flat, column
    assert "add/remove" in flat or "add-or-remove" in flat or "add or remove" in flat
