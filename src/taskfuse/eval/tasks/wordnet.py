"""Tasks from WordNet 3.0 (Debian wordnet-base): glosses labelled by topic, usage domain and part of speech."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .data import Sizes, Task, make_task
from .debian import package_source

ROOT = Path("/usr/share/wordnet")
POS_FILES = {"noun": "data.noun", "verb": "data.verb", "adjective": "data.adj", "adverb": "data.adv"}
# Noun lexicographer files (lexnames(5WN)) far apart in meaning, so the topic is in the gloss, not in fine print.
NOUN_TOPICS = ("noun.animal", "noun.artifact", "noun.body", "noun.food", "noun.location", "noun.person",
               "noun.plant", "noun.substance", "noun.communication", "noun.cognition")


@dataclass(frozen=True)
class Synset:
    fields: list[str]  # the data line before the gloss: offset, lexicographer file, type, words, pointers...
    definition: str  # the gloss up to its first ';'
    examples: list[str]  # the quoted usage examples that follow


def synsets(pos_file: str) -> list[Synset]:
    """Every synset line of a WordNet data file (wndb(5WN))."""
    out = []
    for line in (ROOT / pos_file).read_text(encoding="latin-1").splitlines():
        if line.startswith(" ") or "|" not in line:  # licence header lines start with two spaces
            continue
        head, _, gloss = line.partition("|")
        definition, *rest = gloss.split(";")
        examples = [m for part in rest for m in re.findall(r'"([^"]{12,})"', part)]
        out.append(Synset(head.split(), strip_domain_label(definition.strip()), examples))
    return out


def _lexnames() -> dict[str, str]:
    """lexnames(5WN): two-digit file number → name such as noun.animal; the list is fixed by WordNet 3.0."""
    names = ("adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
             "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
             "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
             "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
             "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
             "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
             "adj.ppl").split()
    return {f"{i:02d}": n for i, n in enumerate(names)}


def strip_domain_label(definition: str) -> str:
    """Glosses sometimes open with their domain in parentheses, "(physics) an ideal space": that would give the
    answer away in the domain task, and it is dropped everywhere for consistency."""
    return re.sub(r"^\([^)]*\)\s*", "", definition)


def noun_topic(seed: int = 0, sizes: Sizes = Sizes()) -> Task:
    lexnames = _lexnames()
    examples = [(s.definition, lexnames[s.fields[1]]) for s in synsets(POS_FILES["noun"])
                if lexnames[s.fields[1]] in NOUN_TOPICS]
    return make_task("wordnet_noun_topic", "WordNet noun gloss → lexicographer category (animal, food, person...)",
                     "topic", examples, (package_source("wordnet-base"),), seed, sizes, prompt="a kind of {}")


def part_of_speech(seed: int = 0, sizes: Sizes = Sizes()) -> Task:
    examples = [(s.definition, pos) for pos, f in POS_FILES.items() for s in synsets(f)]
    return make_task("wordnet_pos", "WordNet gloss → part of speech of the word it defines",
                     "syntax", examples, (package_source("wordnet-base"),), seed, sizes,
                     prompt="the definition of a {}")


def usage_domain(seed: int = 0, sizes: Sizes = Sizes()) -> Task:
    """Synsets with a topic-domain pointer (';c') labelled by the domain synset's first word (law, music...)."""
    noun_words = {s.fields[0]: s.fields[4] for s in synsets(POS_FILES["noun"])}
    examples = []
    for pos_file in POS_FILES.values():
        for synset in synsets(pos_file):
            fields = synset.fields
            targets = [fields[i + 1] for i, f in enumerate(fields) if f == ";c" and fields[i + 2] == "n"]
            if len(targets) == 1 and targets[0] in noun_words:
                examples.append((synset.definition, noun_words[targets[0]].replace("_", " ")))
    counts: dict[str, int] = {}
    for _, label in examples:
        counts[label] = counts.get(label, 0) + 1
    top = set(sorted(counts, key=lambda k: (-counts[k], k))[:10])
    return make_task("wordnet_domain", "WordNet gloss → topic domain it is used in (law, music, medicine...)",
                     "domain", [e for e in examples if e[1] in top], (package_source("wordnet-base"),), seed, sizes,
                     prompt="a term used in {}")
