"""A study's result folder: both files or neither, its own earlier report replaced, a user's folder never."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskfuse.bench.provenance import write_result
from taskfuse.errors import OutputExistsError
from taskfuse.io.output import written_kind
from tests.io.test_output import assert_untouched, foreign_folder

ROOT = Path(__file__).resolve().parents[2]


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


# The studies that take minutes to hours before they write: each checks its --out first.
CHECKING_STUDIES = ["classifier_learning", "embedding_learning", "extract_lora_fidelity", "fisher_labels", "fusionbench_side_by_side",
                    "gguf_input_cost", "learned_over_merge", "learning_seed_spread", "partitions_over_merge"]


@pytest.mark.parametrize("study", CHECKING_STUDIES)
def test_a_study_refuses_a_users_folder_before_it_builds_or_learns_anything(tmp_path, study):
    folder, cache = foreign_folder(tmp_path), tmp_path / "cache"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{study}.py"), "--out", str(folder)],
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
                          env={**os.environ, "TASKFUSE_CACHE": str(cache)})
    assert done.returncode != 0 and "OutputExistsError" in done.stderr, done.stderr[-2000:]
    assert_untouched(folder)
    assert not cache.exists()  # no zoo was built, no model converted
