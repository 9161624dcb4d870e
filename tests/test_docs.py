"""The documentation's Python examples run, as written, offline (docs/architecture.md says how).

Each page's ```python blocks run in order in one namespace, in an empty temporary folder. The
names `corpus`, `run` and `clip` are defined for a page that uses them (a small synthetic corpus,
a tiny trained run with its kNN stage, one wav of the corpus). A block marked on the line before
it with `<!-- not run: REASON -->` (real data, network) is only compiled.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```\s*$", re.S | re.M)
NOT_RUN = re.compile(r"<!--\s*not run:\s*\S.*?-->\s*$")
PROVIDED = ("corpus", "run", "clip")


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(line number, code, runs) of each ```python block of a page."""
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        line = text.count("\n", 0, match.start()) + 2
        blocks.append((line, match.group(1), not NOT_RUN.search(before)))
    return blocks


PAGES = sorted(DOCS.glob("*.md"))
PAGES_WITH_CODE = [page for page in PAGES if FENCE.search(page.read_text(encoding="utf-8"))]


def test_the_runner_finds_blocks_and_marks():
    text = "x\n```python\na = 1\n```\n<!-- not run: needs IEMOCAP -->\n```python\nb = 2\n```\n"
    assert python_blocks(text) == [(3, "a = 1\n", True), (7, "b = 2\n", False)]
    assert PAGES_WITH_CODE, f"no python examples found in {DOCS}"


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=[page.name for page in PAGES_WITH_CODE])
def test_docs_examples_run(page: Path, request, tmp_path, monkeypatch):
    blocks = python_blocks(page.read_text(encoding="utf-8"))
    code = "\n".join(block for _, block, _ in blocks)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    uses = {name for name in PROVIDED if re.search(rf"\b{name}\b", code)}
    if uses & {"corpus", "clip"}:
        corpus = request.getfixturevalue("small_synthetic_corpus")
        namespace["corpus"] = corpus
        namespace["clip"] = sorted(corpus.rglob("*.wav"))[0]
    if "run" in uses:
        namespace["run"] = request.getfixturevalue("trained_run")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for line, block, runs in blocks:
        compiled = compile(block, f"{page.name}:{line}", "exec")
        if runs:
            exec(compiled, namespace)


def test_readme_links_point_at_existing_pages_and_anchors():
    """The README is read on GitHub, outside the docs build: its links are checked here."""
    readme = DOCS.parent / "README.md"
    for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#([\w-]+))?\)", readme.read_text()):
        path, anchor = target
        page = readme.parent / path
        assert page.is_file(), f"README links to {path}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in slugs, f"README links to {path}#{anchor}, which has no such heading"
