"""The README's claims that can drift: the method table and the set-up commands."""
from pathlib import Path

from taskfuse.cli.main import methods_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_method_table_matches_registry():
    text = (ROOT / "README.md").read_text()
    start = text.index("<!-- methods-table")
    table = text[text.index("\n", start) + 1: text.index("<!-- /methods-table -->")]
    assert table == methods_markdown(), "regenerate with: taskfuse methods --markdown"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "bash .ci/run" in readme
    assert "pytest" in (ROOT / ".ci" / "run").read_text()
