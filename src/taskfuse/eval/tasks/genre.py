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
        for line in (wordnet.ROOT / pos_file).read_text(encoding="latin-1").splitlines():
            if line.startswith(" ") or "|" not in line:
                continue
            definition, *rest = line.partition("|")[2].split(";")
            out.append((wordnet._strip_domain_label(definition.strip()), "dictionary gloss"))
            out.extend((m, "usage example") for part in rest for m in re.findall(r'"([^"]{12,})"', part))
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
