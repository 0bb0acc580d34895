"""Which kind of text is this: a dictionary gloss, a usage example, a fortune, a man-page summary, a package
description. The texts come from the other tasks' packages, so the task is about style, not topic."""
from __future__ import annotations

import re

from . import fortunes, manpages, packages, wordnet
from .data import Sizes, Task, make_task
from .debian import main_archive_index, package_files, package_source, read_apt_index, release_of, stanzas


def _wordnet_examples() -> list[tuple[str, str]]:
    out = []
    for pos_file in wordnet.POS_FILES.values():
        for synset in wordnet.synsets(pos_file):
            out.append((synset.definition, "dictionary gloss"))
            out.extend((example, "usage example") for example in synset.examples)
    return out


def genre(seed: int = 0, sizes: Sizes = Sizes()) -> Task:
    examples = _wordnet_examples()
    for package in ("fortunes",):
        examples += [(t, "fortune cookie") for p in fortunes._databases(package) for t in fortunes.read_fortunes(p)]
    for package in manpages.PACKAGES:
        examples += [(t, "manual page summary") for p in package_files(package)
                     if re.search(r"/share/man/man\d/", str(p)) for t in [manpages.name_line(p)] if t]
    index = main_archive_index("Translation-en")
    examples += [(packages.description_text(s["Description-en"]), "package description")
                 for s in stanzas(read_apt_index(index)) if "Description-en" in s]
    sources = (package_source("wordnet-base"), package_source("fortunes"),
               *(package_source(p) for p in manpages.PACKAGES), release_of(index))
    return make_task("text_genre", "text → genre (dictionary gloss, usage example, fortune, man page, package "
                     "description)", "genre", examples, sources, seed, sizes, prompt="this text is a {}")
