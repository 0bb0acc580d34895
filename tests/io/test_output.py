"""The one staging helper: outputs appear whole or not at all, and a folder taskfuse did not write is never replaced."""
import json
import os
import subprocess
import sys

import pytest

from taskfuse.errors import OutputExistsError
from taskfuse.io import output
from taskfuse.io.output import MARKER, claim_folder, remove_stale_stages, staged_output, written_kind


def foreign_folder(tmp_path, name="mine"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    return folder


def assert_untouched(folder):
    assert [p.name for p in folder.iterdir()] == ["thesis.tex"]
    assert (folder / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("kind", ["merge", "report", "expert", "demo"])
def test_a_foreign_folder_is_refused_and_survives(tmp_path, kind):
    folder = foreign_folder(tmp_path)
    with pytest.raises(OutputExistsError, match=f"{folder}.*not empty.*did not write.*Fix"):
        with staged_output(folder, kind) as stage:
            (stage / "x").write_text("x")
    assert_untouched(folder)
    with pytest.raises(OutputExistsError):
        claim_folder(folder, kind)
    assert_untouched(folder)
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no staging folder left either


def test_a_previous_output_of_the_same_kind_is_replaced_and_of_another_kind_refused(tmp_path):
    out = tmp_path / "report"
    with staged_output(out, "report") as stage:
        (stage / "old.txt").write_text("old")
    assert written_kind(out) == "report"
    with staged_output(out, "report") as stage:
        (stage / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "new.txt"]
    with pytest.raises(OutputExistsError, match="taskfuse benchmark report"):
        with staged_output(out, "merge"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_a_marker_that_is_not_ours_does_not_count(tmp_path):
    folder = foreign_folder(tmp_path)
    (folder / MARKER).write_text("not json")
    with pytest.raises(OutputExistsError):
        with staged_output(folder, "report"):
            pass
    assert (folder / "thesis.tex").exists()


def test_an_empty_folder_or_a_file_in_the_way(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with staged_output(empty, "merge") as stage:
        (stage / "w").write_text("w")
    assert (empty / "w").exists()
    afile = tmp_path / "afile"
    afile.write_text("data")
    with pytest.raises(OutputExistsError, match="not a folder"):
        with staged_output(afile, "merge"):
            pass
    assert afile.read_text() == "data"


def test_an_error_inside_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with staged_output(tmp_path / "o", "merge") as stage:
            (stage / "half").write_text("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_appears_during_the_work_is_not_replaced(tmp_path):
    out = tmp_path / "o"
    with pytest.raises(OutputExistsError):
        with staged_output(out, "merge") as stage:
            (stage / "w").write_text("w")
            foreign_folder(tmp_path, "o")  # e.g. the user copied files there during a 25-minute run
    assert_untouched(out)
    assert [p.name for p in tmp_path.iterdir()] == ["o"]


def test_stale_stages_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # exited: no process has this pid now (pids are not reused this fast)
    out = tmp_path / "o"
    stale = tmp_path / f".o.partial-{dead_pid}"
    stale_old = tmp_path / f".o.replaced-{dead_pid}"
    live = tmp_path / f".o.partial-{os.getppid()}"
    for d in (stale, stale_old, live):
        (d / "shards").mkdir(parents=True)
    other = tmp_path / f".other.partial-{dead_pid}"
    other.mkdir()
    with staged_output(out, "merge"):
        pass
    assert not stale.exists() and not stale_old.exists()
    assert live.exists() and other.exists()  # a live process's stage, another output's stage
    assert remove_stale_stages(tmp_path / "other") == [other]


def test_everything_is_synced_before_the_rename(tmp_path, monkeypatch):
    synced, renamed = [], []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def replace(src, dst):
        renamed.append((str(src), len(synced)))
        return real_replace(src, dst)

    monkeypatch.setattr(output.os, "fsync", fsync)
    monkeypatch.setattr(output.os, "replace", replace)
    out = tmp_path / "o"
    with staged_output(out, "merge") as stage:
        (stage / "config.json").write_text("{}")
        (stage / "sub").mkdir()
        (stage / "sub" / "tokenizer.json").write_text("{}")
    stage_name, synced_before = renamed[0]
    before = synced[:synced_before]
    for name in ("config.json", "sub/tokenizer.json", MARKER, "sub", ""):
        assert os.path.join(stage_name, name).rstrip("/") in before
    assert str(tmp_path) in synced[synced_before:]  # the new directory entry itself
    assert json.loads((out / MARKER).read_text())["kind"] == "merge"


def test_a_failed_rename_puts_the_earlier_output_back(tmp_path, monkeypatch):
    out = tmp_path / "report"
    with staged_output(out, "report") as stage:
        (stage / "old.txt").write_text("old")
    real_replace = os.replace

    def replace(src, dst):
        if ".partial-" in str(src):
            raise OSError(5, "Input/output error", str(dst))  # the device fails at the last step
        return real_replace(src, dst)

    monkeypatch.setattr(output.os, "replace", replace)
    with pytest.raises(OSError):
        with staged_output(out, "report") as stage:
            (stage / "new.txt").write_text("new")
    assert (out / "old.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
