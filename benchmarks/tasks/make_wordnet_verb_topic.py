"""Writes wordnet_verb_topic.jsonl beside this script: a task in the format a user brings with `--task-file`
(`text` and `label` columns), held out in the published routing study (`taskfuse bench --routing --full
--task-file benchmarks/tasks/wordnet_verb_topic.jsonl`) to show what composition does for a task nobody trained for.
The same glosses as a causal LM's task (`prompt` and `answer` columns, the answers the category names), for the LLM
new-task study (`python benchmarks/llm_new_task.py --task-file benchmarks/tasks/wordnet_verb_topic_llm.jsonl`), go
to wordnet_verb_topic_llm.jsonl.

WordNet 3.0 verb glosses (Debian wordnet-base, the WordNet licence) labelled by their lexicographer file: eight
categories far apart in meaning, 150 glosses each, taken in file order after a seeded shuffle. The built-in tasks
read the noun glosses (topic), every gloss (part of speech) and the usage domains; no built-in task labels verbs by
meaning, so this is a new task over texts like the library's.

    python benchmarks/tasks/make_wordnet_verb_topic.py
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from taskfuse.eval.tasks.wordnet import POS_FILES, _lexnames, synsets

CATEGORIES = ("verb.motion", "verb.communication", "verb.cognition", "verb.creation", "verb.competition",
              "verb.emotion", "verb.consumption", "verb.perception")
PER_CATEGORY = 150
OUT = Path(__file__).resolve().parent / "wordnet_verb_topic.jsonl"
LLM_OUT = OUT.with_name("wordnet_verb_topic_llm.jsonl")
# as the LLM benchmark's WordNet questions are put (llm/tasks.py); it adds the answers to choose from
LLM_QUESTION = "Which kind of action is the verb defined as \"{gloss}\"?"


def main() -> None:
    lexnames = _lexnames()
    by_category = {c: [] for c in CATEGORIES}
    for synset in synsets(POS_FILES["verb"]):
        category = lexnames[synset.fields[1]]
        if category in by_category and len(synset.definition) >= 12:
            by_category[category].append(synset.definition)
    rows = []
    for category, glosses in by_category.items():
        random.Random(f"wordnet_verb_topic:{category}").shuffle(glosses)
        rows += [{"text": gloss, "label": category.removeprefix("verb.")} for gloss in glosses[:PER_CATEGORY]]
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    questions = [{"prompt": LLM_QUESTION.format(gloss=r["text"]), "answer": r["label"]} for r in rows]
    LLM_OUT.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions), encoding="utf-8")
    print(f"{OUT} and {LLM_OUT.name}: {len(rows)} rows, {len(CATEGORIES)} labels")


if __name__ == "__main__":
    main()
