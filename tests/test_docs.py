"""The README keeps up with the code: every hook has a section, the quick start is two commands."""

import re
from pathlib import Path

import pytest

from tlkit import hookspecs

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

HOOKS = sorted(name for name, obj in vars(hookspecs).items() if callable(obj) and hasattr(obj, "tlkit_spec"))


def headings(text):
    """(level, title, line index) of every Markdown heading outside fenced code blocks."""
    found, fenced = [], False
    for index, line in enumerate(text.splitlines()):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (match := re.match(r"(#{1,6})\s+(.*?)\s*#*\s*$", line)):
            found.append((len(match.group(1)), match.group(2), index))
    return found


def section(text, title, level, *, subsections=True):
    """Lines under heading ``title`` up to the next heading of ``level`` or higher (or of any level)."""
    lines = text.splitlines()
    marks = headings(text)
    starts = [i for lvl, t, i in marks if lvl == level and t.lower() == title.lower()]
    assert starts, f"README.md has no {'#' * level} {title} heading"
    start = starts[0]
    stop = level if subsections else 6
    end = next((i for lvl, _, i in marks if i > start and lvl <= stop), len(lines))
    return "\n".join(lines[start + 1:end])


@pytest.fixture(scope="module")
def readme():
    if not README.is_file():
        pytest.fail("README.md is missing")
    return README.read_text(encoding="utf-8")


def test_the_hook_specs_are_found():
    assert {"register_backbones", "register_heads", "register_augmentations", "register_interpreters"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_in_the_readme(readme, hook):
    reference = section(readme, "Hook reference", level=2)
    documented = [title for level, title, _ in headings(reference) if level == 3]
    assert hook in documented, f"README.md's '## Hook reference' has no '### {hook}' section"


def test_hook_reference_documents_no_hook_that_does_not_exist(readme):
    reference = section(readme, "Hook reference", level=2)
    documented = {title for level, title, _ in headings(reference) if level == 3}
    assert documented - set(HOOKS) == set()


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_spec_has_a_docstring(hook):
    doc = getattr(hookspecs, hook).__doc__ or ""
    assert len(doc.strip()) > 40, f"{hook} in tlkit/hookspecs.py needs a docstring (it is the reference)"


def code_blocks(text):
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def commands(block):
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_quick_start_is_exactly_two_commands(readme):
    quick_start = section(readme, "Quick start", level=2, subsections=False)
    blocks = code_blocks(quick_start)
    assert len(blocks) == 1, (f"'## Quick start' should hold one code block before its next heading, "
                              f"it holds {len(blocks)}: the quick start is two commands, nothing else")
    install_and_run, install_and_test = commands(blocks[0])  # exactly two
    assert "pip install" in install_and_run and "tlkit fit" in install_and_run
    assert "pip install" in install_and_test and "[test]" in install_and_test and "pytest" in install_and_test


def test_ci_runs_the_quick_start_test_command(readme):
    ci = ROOT / ".ci" / "run"
    if not ci.is_file():
        pytest.skip(".ci/run does not exist yet")
    blocks = code_blocks(section(readme, "Quick start", level=2, subsections=False))
    test_command = commands(blocks[0])[-1]
    assert test_command in ci.read_text(encoding="utf-8"), f".ci/run should run {test_command!r}"
