"""Debian package descriptions (apt's index of Debian main) → archive section."""
from __future__ import annotations

from .data import Sizes, Task, make_task
from .debian import main_archive_index, read_apt_index, release_of, stanzas

# Sections whose packages are described by what they do, not by boilerplate ("development files for...").
SECTIONS = ("admin", "database", "editors", "electronics", "games", "graphics", "mail", "science", "sound", "video")


def description_text(description: str) -> str:
    """Synopsis plus the first paragraph of the long description (deb822: ' .' separates paragraphs)."""
    synopsis, _, long = description.partition("\n")
    first = long.split("\n .")[0]
    return f"{synopsis.strip()}. {' '.join(first.split())}".strip(". ")


def section(seed: int = 0, sizes: Sizes = Sizes()) -> Task:
    packages = main_archive_index("Packages")
    translations = main_archive_index("Translation-en")
    section_of = {s["Package"]: s.get("Section", "").split("/")[-1] for s in stanzas(read_apt_index(packages))
                  if "Package" in s}
    examples = []
    for entry in stanzas(read_apt_index(translations)):
        name, description = entry.get("Package"), entry.get("Description-en")
        if name and description and section_of.get(name) in SECTIONS:
            examples.append((description_text(description), section_of[name]))
    return make_task("debian_section", "Debian package description → archive section (games, science, mail...)",
                     "software function", examples, (release_of(packages),), seed, sizes,
                     prompt="software for {}")
