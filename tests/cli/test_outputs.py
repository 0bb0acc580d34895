"""Each command that writes a folder refuses a folder it did not write, and SIGTERM cleans up like Ctrl-C."""
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from taskfuse import merge
from taskfuse.cli.main import app
from taskfuse.errors import OutputExistsError
from taskfuse.eval.encoder import base_encoder_dir
from taskfuse.eval.tasks import load_task
from taskfuse.io.output import MARKER
from taskfuse.zoo.build import train_expert
from taskfuse.zoo.recipe import VARIANTS
from tests.conftest import spec_for
from tests.io.test_output import assert_untouched, foreign_folder

runner = CliRunner()


def test_merge_refuses_a_foreign_folder_and_replaces_its_own_earlier_merge(tmp_path, llama_family):
    base, tunes = llama_family
    folder = foreign_folder(tmp_path)
    with pytest.raises(OutputExistsError):
        merge(spec_for("ties", base, tunes), folder)
    assert_untouched(folder)
    out = tmp_path / "merged"
    merge(spec_for("ties", base, tunes), out)
    first = (out / "taskfuse_spec.yaml").read_text()
    merge(spec_for("task_arithmetic", base, tunes), out)
    assert (out / "taskfuse_spec.yaml").read_text() != first and (out / MARKER).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "mine"]


@pytest.mark.parametrize("routing", [[], ["--routing"]])
def test_bench_refuses_a_foreign_report_folder_before_any_work(tmp_path, monkeypatch, routing):
    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path / "cache"))
    folder = foreign_folder(tmp_path)
    res = runner.invoke(app, ["bench", "--variant", "tiny", "--out", str(folder), *routing])
    assert res.exit_code == 2 and "OutputExistsError" in res.output and "did not write" in res.output
    assert_untouched(folder)
    assert not (tmp_path / "cache").exists()  # refused before the zoo was built


def test_demo_refuses_a_foreign_work_folder(tmp_path):
    folder = foreign_folder(tmp_path)
    res = runner.invoke(app, ["demo", "--workdir", str(folder)])
    assert res.exit_code == 2 and "OutputExistsError" in res.output
    assert_untouched(folder)


def test_a_zoo_expert_is_not_trained_into_a_foreign_folder(tmp_path):
    folder = foreign_folder(tmp_path)
    task = load_task("wordnet_pos", 0, VARIANTS["tiny"].sizes)
    started = time.perf_counter()
    with pytest.raises(OutputExistsError):
        train_expert(task, base_encoder_dir(), VARIANTS["tiny"].recipe, folder)
    assert time.perf_counter() - started < 5  # refused before training, not after
    assert_untouched(folder)


def slow_family(root: Path, tensors: int = 24) -> tuple[Path, list[Path]]:
    """A base and two fine-tunes of 1024x1024 matrices: TSV's SVDs take seconds on one thread."""
    g = torch.Generator().manual_seed(0)
    base = {f"layers.{i}.weight": torch.randn(1024, 1024, generator=g) for i in range(tensors)}
    paths = []
    for name, tensors in [("base", base)] + [(f"ft{k}", {n: t + 0.01 * torch.randn(t.shape, generator=g)
                                                         for n, t in base.items()}) for k in range(2)]:
        (root / name).mkdir(parents=True)
        save_file(tensors, root / name / "model.safetensors")
        paths.append(root / name)
    return paths[0], paths[1:]


def test_sigterm_during_a_merge_leaves_no_staging_folder(tmp_path):
    import yaml

    base, tunes = slow_family(tmp_path / "models")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_for("tsv", base, tunes)))
    script = shutil.which("taskfuse", path=str(Path(sys.executable).parent))
    out = tmp_path / "out" / "merged"
    proc = subprocess.Popen([script, "merge", str(spec), "-o", str(out), "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "out").glob(".merged.partial-*/*.safetensors*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert list((tmp_path / "out").iterdir()) == []


def test_progress_reaches_a_log_while_the_merge_runs(tmp_path):
    """Off a terminal (a pipe here, a log file or a scheduler elsewhere) progress is plain lines, each flushed."""
    import yaml

    base, tunes = slow_family(tmp_path / "models", tensors=4)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_for("tsv", base, tunes)))
    script = shutil.which("taskfuse", path=str(Path(sys.executable).parent))
    proc = subprocess.Popen([script, "merge", str(spec), "-o", str(tmp_path / "o"), "--threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()
    still_running = proc.poll() is None
    rest = proc.communicate(timeout=300)[1]
    assert still_running and first.startswith("merging 1/4 ["), first
    assert proc.returncode == 0 and "merging 4/4" in rest and "\x1b[" not in first + rest  # no bar escapes
