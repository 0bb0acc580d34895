"""A study's result folder: both files or neither, its own earlier report replaced, a user's folder never."""
import json

import pytest

from taskfuse.bench.provenance import write_result
from taskfuse.errors import OutputExistsError
from taskfuse.io.output import written_kind
from tests.io.test_output import assert_untouched, foreign_folder


def test_a_result_replaces_its_own_report_and_never_a_users_folder(tmp_path):
    out = write_result(tmp_path / "study", {"rows": [1]}, "| a |\n")
    assert json.loads((out / "result.json").read_text()) == {"rows": [1]}
    assert (out / "results.md").read_text() == "| a |\n" and written_kind(out) == "report"
    write_result(out, {"rows": [2]})  # a rerun without a table leaves none behind
    assert json.loads((out / "result.json").read_text()) == {"rows": [2]} and not (out / "results.md").exists()
    folder = foreign_folder(tmp_path)
    with pytest.raises(OutputExistsError):
        write_result(folder, {"rows": [3]}, "| b |\n")
    assert_untouched(folder)


def test_a_result_that_cannot_be_written_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_result(tmp_path / "study", {"rows": {object()}})  # not JSON: fails inside the stage
    assert not any(tmp_path.iterdir())
