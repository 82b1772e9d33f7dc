"""The README and the pages under docs/: every relative link and #anchor resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The text without code blocks and code spans (their brackets are no links)."""
    return CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to -."""
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    return broken


def test_the_slugs_are_githubs():
    assert (
        slug("The papers' models, as Keras classes")
        == "the-papers-models-as-keras-classes"
    )
    assert slug("Your own model: `export_model` and `--keras`") == (
        "your-own-model-export_model-and---keras"
    )
    assert slug("Real images: CUB-200-2011 birds (STN §4.2, §4.3)") == (
        "real-images-cub-200-2011-birds-stn-42-43"
    )


def test_a_broken_link_and_anchor_are_found(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("## Somewhere else\n")
    page.write_text(
        "# Top\n\n[a](page.md#top) [b](gone.md) [c](#nowhere) [d](other.md#top)\n"
        "[e](other.md#somewhere-else) `[f](x.md)`\n```\n[g](y.md)\n```\n"
    )
    assert broken_links(page) == [
        "gone.md: no such file",
        "#nowhere: no heading #nowhere in page.md",
        "other.md#top: no heading #top in other.md",
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_the_readme_is_a_landing_page():
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= 330, f"README.md has {lines} lines; move detail into docs/"
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in (REPO / "README.md").read_text(), page.name
