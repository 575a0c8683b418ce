"""The documentation's links hold: every relative link in the README, CONTRIBUTING.md,
sweep/README.md and docs/ (and in every other tracked markdown file) names a file or folder of
the repository that git does not ignore, and every #anchor, in the same page or in another
markdown file, names a heading there under GitHub's slug rules (lowercase, spaces to '-',
punctuation other than '-' and '_' dropped, repeats numbered -1, -2, ...). The README stays
short enough to read in five minutes: at most 200 lines. And every test file a document names
as a statement's guard exists.

Links inside code (fenced blocks, `code spans`) and HTML comments are not links. External
links (http:, https:, mailto:) are not fetched.
"""

from __future__ import annotations

import re
import subprocess
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README_MAX_LINES = 200
# The files the issue names; every other tracked markdown file is checked too.
REQUIRED = ["README.md", "CONTRIBUTING.md", "sweep/README.md", "docs/nodes.md", "docs/strategies.md",
            "docs/verifiers.md", "docs/hosts.md"]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
COMMENT = re.compile(r"<!--.*?-->", re.S)
INLINE = re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?", re.M)
HTML_ATTR = re.compile(r"""<(?:a|img|source)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']*)["']""", re.I)
HTML_ID = re.compile(r"""<[a-z][^>]*?\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.I)
ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)
LINE_ANCHOR = re.compile(r"^L\d+(?:-L\d+)?$")


def prose_lines(text: str) -> list[str]:
    """The file's lines with fenced code blocks blanked (line numbers kept)."""
    out, fence = [], None
    for line in text.split("\n"):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            out.append("")
        elif fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip(fence[0] + " "):
                fence = None
            out.append("")
        else:
            out.append(line)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: its rendered text lowercased, punctuation and
    symbols other than '-' and '_' dropped, each space turned into '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = CODE_SPAN.sub(lambda m: m.group(2).strip(), text)
    kept = "".join(c for c in text.lower()
                   if c in "-_ " or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a markdown file defines: its headings' slugs (repeats numbered as GitHub
    numbers them) and explicit HTML ids/names."""
    found, seen = set(), {}
    lines = prose_lines(COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), text))
    headings = []
    for i, line in enumerate(lines):
        m = ATX.match(line)
        if m:
            headings.append(m.group(2) or "")
        elif SETEXT.match(line) and i > 0 and lines[i - 1].strip() and not ATX.match(lines[i - 1]) \
                and not re.match(r"^\s*([-*+>|]|\d+[.)])", lines[i - 1]):
            headings.append(lines[i - 1].strip())
    for heading in headings:
        base = slug(heading.strip())
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    found.update(HTML_ID.findall(text))
    return found


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image in the prose of a markdown file."""
    lines = prose_lines(COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), text))
    out = []
    for number, line in enumerate(lines, start=1):
        line = CODE_SPAN.sub("", line)
        for pattern in (INLINE, HTML_ATTR):
            out += [(number, t) for t in pattern.findall(line)]
    prose = "\n".join(CODE_SPAN.sub("", line) for line in lines)
    for m in REFERENCE.finditer(prose):
        out.append((prose.count("\n", 0, m.start()) + 1, m.group(1)))
    return out


def ignored(paths: list[Path]) -> set[Path]:
    """The paths git ignores (they would not be in a clone); none when git is not there."""
    if not paths:
        return set()
    try:
        done = subprocess.run(["git", "check-ignore", "--no-index", "--stdin", "-z"], cwd=REPO, check=False,
                              input="\0".join(str(p) for p in paths), capture_output=True, text=True)
    except OSError:
        return set()
    return {Path(p) for p in done.stdout.split("\0") if p}


def broken_links(md: Path, repo: Path = REPO) -> list[str]:
    """What is wrong with the links of one markdown file: one line per broken link."""
    text = md.read_text(encoding="utf-8")
    problems, targets = [], []
    where = md.relative_to(repo)
    for number, target in links(text):
        if not target or EXTERNAL.match(target):
            if not target:
                problems.append(f"{where}:{number}: empty link target")
            continue
        path_part, _, anchor = target.partition("#")
        if path_part.startswith("/"):
            resolved = (repo / path_part.lstrip("/")).resolve()
        elif path_part:
            resolved = (md.parent / path_part).resolve()
        else:
            resolved = md
        label = f"{where}:{number}: ({target})"
        if repo != resolved and repo not in resolved.parents:
            problems.append(f"{label} points outside the repository")
            continue
        if not resolved.exists():
            problems.append(f"{label}: {resolved.relative_to(repo)} does not exist")
            continue
        targets.append((label, resolved))
        if not anchor:
            continue
        if resolved.suffix.lower() == ".md":
            if anchor not in anchors(resolved.read_text(encoding="utf-8")):
                problems.append(f"{label}: no heading with the anchor #{anchor} in {resolved.relative_to(repo)}")
        elif not (resolved.is_file() and LINE_ANCHOR.match(anchor)):
            problems.append(f"{label}: #{anchor} is not an anchor of {resolved.relative_to(repo)}")
    hidden = ignored([p.relative_to(repo) for _, p in targets])
    problems += [f"{label}: git ignores {p.relative_to(repo)}, a clone would not have it"
                 for label, p in targets if p.relative_to(repo) in hidden]
    return problems


def markdown_files() -> list[Path]:
    """The required files plus every other markdown file git tracks (or would track)."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
                                cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        listed = []
    names = set(REQUIRED) | {n for n in listed if (REPO / n).is_file()}
    names |= {str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md")}
    return [REPO / n for n in sorted(names)]


def test_the_required_documents_exist():
    missing = [n for n in REQUIRED if not (REPO / n).is_file()]
    assert missing == []


@pytest.mark.parametrize("md", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(md):
    problems = broken_links(md)
    assert not problems, "\n".join(problems)


TEST_FILE = re.compile(r"`(tests/[\w/.-]+\.py)(?:::\w+)?`")


@pytest.mark.parametrize("md", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_test_file_a_document_names_exists(md):
    """The docs say which tests guard a statement (`tests/test_x.py`): a renamed or removed test
    file must be renamed there too, or the statement has lost its guard."""
    text = md.read_text(encoding="utf-8")
    named = {m.group(1) for line in prose_lines(text) for m in TEST_FILE.finditer(line)}
    assert sorted(n for n in named if not (REPO / n).is_file()) == []


def test_readme_is_at_most_200_lines():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_slugs_follow_githubs_rules():
    assert slug("Particle steering, early rejection, tree search") == "particle-steering-early-rejection-tree-search"
    assert slug("Where the weights go, and downloads") == "where-the-weights-go-and-downloads"
    assert slug("The `NoiseSearch` node (v0.3.75)") == "the-noisesearch-node-v0375"
    assert slug("snake_case and kebab-case") == "snake_case-and-kebab-case"
    assert slug("A — B") == "a--b"
    assert slug("[Linked](x.md) heading") == "linked-heading"


def test_the_checker_catches_broken_links_and_anchors(tmp_path):
    """A checker that passes everything would prove nothing: it must name each kind of break."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## Some section\n\n## Some section\n", encoding="utf-8")
    (tmp_path / "README.md").write_text(
        "# Title\n\n## Here, too\n\n"
        "[fine](docs/other.md) [fine](docs/other.md#some-section) [fine](docs/other.md#some-section-1) "
        "[fine](#here-too) [fine](https://example.com/missing.md) [fine](docs/)\n"
        "`[code](missing.md)`\n\n```\n[code](missing.md)\n```\n<!-- [comment](missing.md) -->\n"
        "[gone](docs/missing.md)\n"
        "[no heading](docs/other.md#nowhere)\n"
        "[no heading here](#nowhere)\n"
        "![image](docs/missing.png)\n"
        "[ref]: docs/also-missing.md\n"
        "<img src=\"docs/missing.jpg\">\n"
        "[outside](../elsewhere.md)\n",
        encoding="utf-8")
    problems = broken_links(tmp_path / "README.md", repo=tmp_path)
    named = " ".join(problems)
    for target in ("docs/missing.md", "docs/other.md#nowhere", "(#nowhere)", "docs/missing.png",
                   "docs/also-missing.md", "docs/missing.jpg", "../elsewhere.md"):
        assert target in named, (target, problems)
    assert len(problems) == 7, problems
