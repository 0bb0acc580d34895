"""The built-in tasks are real Debian text, cut into fixed, disjoint, class-capped splits."""
import json
import subprocess

import pytest

from taskfuse.errors import TaskDataError
from taskfuse.eval.tasks import BUILTIN, SPLITS, Sizes, load_task, make_task
from taskfuse.eval.tasks import manpages
from taskfuse.eval.tasks.data import Source


@pytest.fixture(scope="module", params=sorted(BUILTIN))
def task(request):
    return load_task(request.param)


def test_eight_builtin_tasks_of_different_kinds():
    assert len(BUILTIN) >= 8


def test_splits_are_disjoint_and_nonempty(task):
    texts = [set(task.splits[s].texts) for s in SPLITS]
    assert all(texts)
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])


def test_class_imbalance_is_capped_and_every_class_in_every_split(task):
    counts = task.class_counts()
    assert len(counts) >= 2
    cap = manpages.SIZES.max_imbalance if task.name == "manpage_section" else Sizes().max_imbalance  # builders' own
    assert max(counts.values()) <= cap * min(counts.values())
    for split in SPLITS:
        assert set(task.splits[split].labels) == set(range(task.num_labels))


def test_sources_name_installed_packages_with_their_versions(task):
    for source in task.sources:
        if source.package.startswith("apt index"):
            assert "bookworm" in source.version or "(" in source.version
            continue
        version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", source.package], capture_output=True,
                                 text=True, check=True).stdout
        assert source.version == version
        assert source.licence


def test_same_seed_same_splits_other_seed_other_splits():
    a, b, c = load_task("wordnet_pos", 0), load_task("wordnet_pos", 0), load_task("wordnet_pos", 1)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()


def test_domain_labels_are_not_left_in_the_glosses():
    task = load_task("wordnet_domain")
    assert not any(t.startswith("(") for s in task.splits.values() for t in s.texts)


def test_sizes_cap_the_examples():
    task = load_task("fortune_language", sizes=Sizes(max_examples=100, min_class=5))
    assert sum(len(s) for s in task.splits.values()) <= 100


def test_a_text_with_two_labels_is_dropped():
    examples = [("same text", "a"), ("same text", "b")] + [(f"a{i}", "a") for i in range(30)] + \
               [(f"b{i}", "b") for i in range(30)]
    task = make_task("t", "", "", examples, (Source("p", "1", "x"),), 0, Sizes(min_class=5))
    assert "same text" not in {t for s in task.splits.values() for t in s.texts}


def test_unknown_task_name_suggests_the_closest():
    with pytest.raises(TaskDataError, match="wordnet_pos"):
        load_task("wordnet_poss")


def test_user_jsonl_task_without_split_column_is_cut_by_seed(tmp_path):
    path = tmp_path / "sentiment.jsonl"
    rows = [{"text": f"good thing number {i}", "label": "pos"} for i in range(40)] + \
           [{"text": f"bad thing number {i}", "label": "neg"} for i in range(40)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    task = load_task(path)
    assert task.name == "sentiment" and task.label_names == ("neg", "pos")
    assert sum(len(s) for s in task.splits.values()) == 80
    assert task.sources[0].version.startswith("sha256:")


def test_user_csv_task_keeps_its_split_column(tmp_path):
    path = tmp_path / "mine.csv"
    lines = ["text,label,split"] + [f"text {i},{'xy'[i % 2]},{['train', 'dev', 'test'][i % 3]}" for i in range(30)]
    path.write_text("\n".join(lines))
    task = load_task(path)
    assert [len(task.splits[s]) for s in SPLITS] == [10, 10, 10]
    assert task.splits["validation"].texts[0] == "text 1"


@pytest.mark.parametrize("content, match", [
    ('{"text": "a"}\n', "lack a 'text' or 'label'"),
    ('{"text": "a", "label": "x"\n', "not a JSON object"),
    ('{"text": "a", "label": "x", "split": "holdout"}\n', "not train/validation/test"),
])
def test_bad_user_task_files_are_typed_errors_naming_the_problem(tmp_path, content, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(TaskDataError, match=match):
        load_task(path)


def test_missing_task_file_is_a_typed_error(tmp_path):
    with pytest.raises(TaskDataError, match="does not exist"):
        load_task(tmp_path / "nope.jsonl")


def test_a_task_is_frozen_when_first_built_and_survives_a_vanished_apt_index(tmp_path, monkeypatch):
    from taskfuse.eval.tasks import debian, packages
    from taskfuse.eval.tasks.frozen import frozen_path

    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path / "cache"))
    sizes = Sizes(max_examples=200)
    first = load_task("debian_section", 0, sizes)
    assert frozen_path("debian_section", 0, sizes).exists() and first.frozen_at
    monkeypatch.setattr(debian, "apt_lists", lambda: tmp_path / "moved-away")  # what `apt-get update` can do
    with pytest.raises(TaskDataError, match="index is missing"):
        packages.section(0, sizes)  # the builder itself now fails...
    again = load_task("debian_section", 0, sizes)  # ...the benchmark does not, and sees the same data
    assert again == first and again.fingerprint() == first.fingerprint()
    with pytest.raises(TaskDataError, match="missing"):
        load_task("debian_section", 1, sizes)  # another seed was never frozen


def test_damaged_frozen_data_is_a_typed_error_naming_the_file(tmp_path, monkeypatch):
    from taskfuse.eval.tasks.frozen import frozen_path

    monkeypatch.setenv("TASKFUSE_CACHE", str(tmp_path / "cache"))
    sizes = Sizes(max_examples=100, min_class=8)
    load_task("wordnet_pos", 0, sizes)
    path = frozen_path("wordnet_pos", 0, sizes)
    data = json.loads(path.read_text())
    data["splits"]["test"]["labels"][0] = (data["splits"]["test"]["labels"][0] + 1) % 4
    path.write_text(json.dumps(data))
    with pytest.raises(TaskDataError, match=f"{path.name}.*fingerprint.*delete"):
        load_task("wordnet_pos", 0, sizes)
    path.write_text("{ not json")
    with pytest.raises(TaskDataError, match="unreadable.*delete"):
        load_task("wordnet_pos", 0, sizes)
