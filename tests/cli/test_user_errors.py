"""Every failure a user can cause, run through the installed `taskfuse` script: a typed one-paragraph error naming
the problem and the fix, exit status 2, no traceback, nothing left behind."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from taskfuse import merge
from taskfuse.cli import main as cli_main
from taskfuse.cli import merge as merge_command
from taskfuse.errors import OutputWriteError
from taskfuse.io import output
from taskfuse.testing.checkpoints import save_as_bin
from tests.conftest import spec_for

SCRIPT = shutil.which("taskfuse", path=str(Path(sys.executable).parent))


def taskfuse(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def assert_user_error(done: subprocess.CompletedProcess, *patterns: str) -> str:
    text = " ".join((done.stdout + done.stderr).split())  # rich wraps long lines
    assert done.returncode == 2, text
    assert "Traceback" not in text and "internal error" not in text, text
    for pattern in patterns:
        assert pattern in text, f"{pattern!r} not in: {text}"
    return text


def write_spec(tmp_path, spec, name="spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_malformed_config_json_is_refused_before_any_work(family_copy, tmp_path):
    base, tunes = family_copy
    (tunes[1] / "config.json").write_text('{"model_type": "llama",')
    done = taskfuse("merge", write_spec(tmp_path, spec_for("ties", base, tunes)), "-o", tmp_path / "o")
    assert_user_error(done, "CheckpointError", "config.json is not valid JSON", "Fix")
    assert not (tmp_path / "o").exists()


def test_a_spec_that_is_not_utf8(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(b"method: ties\nmodels: [\xff\xfe]\n")
    assert_user_error(taskfuse("merge", spec, "-o", tmp_path / "o"), "SpecError", "not UTF-8", "Fix")


@pytest.mark.parametrize("args, patterns", [
    (["--threads", "-1"], ["Invalid value for '--threads'", "greater than or equal to 1"]),
    (["--device", "bogus"], ["DeviceError", "'bogus' is not a torch device", "Fix"]),
    (["--device", "mps"], ["DeviceError", "cpu or cuda only"]),
    # options the output would not use are refused, not dropped
    (["--outtype", "q8_0"], ["UsageError", "--outtype q8_0 has no effect on --format hf", "Fix: drop them"]),
    (["--format", "gguf", "--max-shard-size", "1GB"], ["--max-shard-size 1GB has no effect on --format gguf"]),
])
def test_bad_merge_options(tmp_path, llama_family, args, patterns):
    base, tunes = llama_family
    done = taskfuse("merge", write_spec(tmp_path, spec_for("ties", base, tunes)), "-o", tmp_path / "o", *args)
    assert_user_error(done, *patterns)
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU, so --device cuda is valid here")
def test_cuda_on_a_cpu_only_torch(tmp_path, llama_family):
    base, tunes = llama_family
    done = taskfuse("merge", write_spec(tmp_path, spec_for("ties", base, tunes)), "-o", tmp_path / "o",
                    "--device", "cuda")
    assert_user_error(done, "DeviceError", "--device 'cuda'", "no CUDA support", "Fix: use --device cpu")


@pytest.mark.parametrize("command", [["zoo"], ["bench", "--out", "report"], ["eval", "somewhere"]])
def test_an_unknown_zoo_variant(tmp_path, command):
    done = taskfuse(*command, "--variant", "nope", cwd=tmp_path, env={"TASKFUSE_CACHE": str(tmp_path / "c")})
    assert_user_error(done, "ZooError", "unknown zoo variant 'nope'", "full, quick, tiny")


def test_two_benchmark_sizes_at_once(tmp_path):
    done = taskfuse("bench", "--full", "--variant", "tiny", cwd=tmp_path, env={"TASKFUSE_CACHE": str(tmp_path / "c")})
    assert_user_error(done, "UsageError", "choose one benchmark size", "full and tiny")


def test_a_split_typo_fails_before_the_zoo_is_built(tmp_path):
    done = taskfuse("eval", tmp_path, "--variant", "tiny", "--split", "tset", env={"TASKFUSE_CACHE": str(tmp_path / "c")})
    assert_user_error(done, "TaskDataError", "unknown split 'tset'", "train, validation, test")
    assert not (tmp_path / "c").exists()


def test_an_old_format_pytorch_bin_loads(tmp_path, bert_family):
    from taskfuse.io.checkpoint import Checkpoint

    base, tunes = bert_family
    folders = save_as_bin([base, *tunes], tmp_path / "legacy", legacy=True)
    done = taskfuse("merge", write_spec(tmp_path, spec_for("task_arithmetic", folders[0], folders[1:])),
                    "-o", tmp_path / "o")
    assert done.returncode == 0, done.stderr
    expected = merge(spec_for("task_arithmetic", base, tunes), tmp_path / "from-safetensors")
    ours, theirs = Checkpoint.open(tmp_path / "o"), Checkpoint.open(expected.out)
    assert all(torch.equal(ours.read(n), theirs.read(n)) for n in theirs.tensors)


def test_dry_run_says_no_where_the_merge_would(tmp_path, llama_family):
    base, tunes = llama_family
    spec = write_spec(tmp_path, spec_for("ties", base, tunes))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert_user_error(taskfuse("merge", spec, "-o", mine, "--dry-run"), "OutputExistsError", "not empty")
    ok = taskfuse("merge", spec, "-o", tmp_path / "new", "--dry-run")
    assert ok.returncode == 0 and "can be written" in ok.stderr and not (tmp_path / "new").exists()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs: a real full disk (needs root to mount; CI runs as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def big_family(root: Path):
    from safetensors.torch import save_file

    paths = []
    for i in range(3):
        (root / f"m{i}").mkdir(parents=True)
        save_file({f"w{k}": torch.full((256, 256), float(i + k)) for k in range(8)}, root / f"m{i}" / "model.safetensors")
        paths.append(root / f"m{i}")
    return paths[0], paths[1:]  # 2 MiB outputs


def test_a_disk_too_small_for_the_output_is_refused_before_writing(tmp_path, tiny_disk):
    base, tunes = big_family(tmp_path / "models")
    done = taskfuse("merge", write_spec(tmp_path, spec_for("task_arithmetic", base, tunes)), "-o", tiny_disk / "o")
    assert_user_error(done, "OutputWriteError", "needs", "free", "Fix")
    assert list(tiny_disk.iterdir()) == []


def test_a_disk_that_fills_up_during_the_write_is_a_typed_error_and_leaves_nothing(tmp_path, tiny_disk, monkeypatch):
    base, tunes = big_family(tmp_path / "models")
    monkeypatch.setattr("taskfuse.api.check_free_space", lambda *a: None)  # as if another process filled the disk
    with pytest.raises(OutputWriteError, match="disk is full.*Nothing was left behind"):
        merge(spec_for("task_arithmetic", base, tunes), tiny_disk / "o")
    assert list(tiny_disk.iterdir()) == []


def test_an_unexpected_error_prints_one_paragraph_and_saves_the_traceback(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("an internal invariant failed")

    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path))
    monkeypatch.setattr(merge_command, "STANDALONE", False)  # main() sets it; restored afterwards
    monkeypatch.setattr(cli_main.api, "plan", broken)
    monkeypatch.setattr(sys, "argv", ["taskfuse", "plan", "spec.yaml"])
    with pytest.raises(SystemExit) as exit_:
        cli_main.main()
    assert exit_.value.code == 70
    text = " ".join(capsys.readouterr().err.split())
    saved = list((tmp_path / "crashes").iterdir())
    assert "internal error (RuntimeError: an internal invariant failed)" in text and str(saved[0]) in text
    assert "Traceback" not in text and "Traceback" in saved[0].read_text() and "broken" in saved[0].read_text()
