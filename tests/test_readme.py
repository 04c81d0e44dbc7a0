"""The README stays a short guide whose figures are the cards', and no doc link is broken.

Reads text and JSON only (no env, no jax), so it runs in well under a second.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 200
RESULTS_HEADING = "## Shipped policies"

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def results_rows(text: str) -> list[dict[str, str]]:
    """The rows of the first table under RESULTS_HEADING, as {column: cell}."""
    lines = text.splitlines()
    start = lines.index(RESULTS_HEADING)
    table: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    header = [h.lower() for h in _cells(table[0])]
    return [dict(zip(header, _cells(row), strict=True)) for row in table[2:]]


def card_figures(card: dict) -> dict[str, str]:
    """What the README shows for a card, formatted from the card's own values.

    Success is the card's headline figure: for a policy its first independent evaluation
    (scripts/eval_policy.py on starts the trainer never picked on), for the encoder its test
    accuracy; wall time is the card's measured wall time.
    """
    if card.get("independent_evaluations"):
        ev = card["independent_evaluations"][0]
        rate, count = ev["success_rate"], (ev["successes"], ev["episodes"])
        wall = card["wall_seconds"]
        m = card["machine"]
        machine = f"{m['cpu']}, {m['cpus_available']} CPUs"
    elif "test_accuracy" in card:
        rate = card["test_accuracy"]
        count = (round(rate * card["test_images"]), card["test_images"])
        wall = card["wall_time_s"]
        machine = card["device"]
    else:
        raise AssertionError(f"no headline figure in card {sorted(card)}")
    return {
        "success": f"{100 * rate:.1f}% ({count[0]}/{count[1]})",
        "wall time": f"{wall:,g} s",
        "machine": machine,
    }


def test_readme_is_short():
    n = len(_readme().splitlines())
    assert n < MAX_README_LINES, f"README.md has {n} lines; move detail into docs/"


def test_results_table_matches_cards():
    rows = results_rows(_readme())
    cards = sorted((ROOT / "params").glob("*.json"))
    assert rows, "no shipped-policies table in README.md"
    shown = set()
    for row in rows:
        (path,) = LINK.findall(row["card"])
        card_path = (ROOT / path).resolve()
        assert card_path.parent == (ROOT / "params").resolve(), path
        card = json.loads(card_path.read_text(encoding="utf-8"))
        if "env_name" in card:
            assert card["env_name"] in row["task"], (path, row["task"])
        for column, want in card_figures(card).items():
            assert row[column] == want, f"{path}: README says {row[column]!r}, card {want!r}"
        shown.add(card_path)
    assert shown == {c.resolve() for c in cards}, "every card in params/ gets one row"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    text = FENCE.sub("", md.read_text(encoding="utf-8"))
    return {_slug(m) for m in re.findall(r"^#+\s+(.*)$", text, re.M)}


def _links(md: Path) -> list[str]:
    text = FENCE.sub("", md.read_text(encoding="utf-8"))
    return LINK.findall(CODE_SPAN.sub("", text))


@pytest.mark.parametrize("md", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(md: Path):
    broken = []
    for link in _links(md):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto:
            continue
        path, _, anchor = link.partition("#")
        target = (md.parent / path).resolve() if path else md
        if not target.exists():
            broken.append(link)
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link} (no such heading)")
    assert not broken, f"{md.relative_to(ROOT)}: {broken}"
