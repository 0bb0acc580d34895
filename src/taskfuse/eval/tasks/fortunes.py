"""Tasks from the fortune-cookie databases (Debian fortunes, fortunes-min and fortunes-de/-es/-it/-ru)."""
from __future__ import annotations

from pathlib import Path

from .data import Sizes, Task, make_task
from .debian import package_files, package_source

# English categories of the `fortunes` package that are about one subject (not "miscellaneous", "people").
TOPICS = ("computers", "politics", "science", "work", "art", "law", "food", "education", "medicine", "sports")
LANGUAGES = {"english": ("fortunes", "fortunes-min"), "german": ("fortunes-de",), "spanish": ("fortunes-es",),
             "italian": ("fortunes-it",), "russian": ("fortunes-ru",)}
MAX_CHARS = 400  # long fortunes (poems, dialogues) are cut; the encoder sees ~48 tokens anyway


def read_fortunes(path: Path) -> list[str]:
    """A strfile database: entries separated by lines holding only '%'."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return [e.strip()[:MAX_CHARS] for e in text.split("\n%\n") if e.strip() and e.strip() != "%"]


def _databases(package: str) -> list[Path]:
    """The package's fortune files: not the strfile indexes (.dat) and not the .u8 aliases."""
    return sorted(p for p in package_files(package)
                  if "/games/fortunes" in str(p) and p.suffix not in (".dat", ".u8") and "/doc/" not in str(p))


def topic(seed: int = 0, sizes: Sizes = Sizes()) -> Task:
    examples = [(text, p.name) for p in _databases("fortunes") if p.name in TOPICS for text in read_fortunes(p)]
    return make_task("fortune_topic", "English fortune cookie → its database (computers, law, food, science...)",
                     "topic (humour)", examples, (package_source("fortunes"),), seed, sizes,
                     prompt="a joke about {}")


def language(seed: int = 0, sizes: Sizes = Sizes()) -> Task:
    examples = [(text, lang) for lang, packages in LANGUAGES.items()
                for package in packages for p in _databases(package) for text in read_fortunes(p)]
    sources = tuple(package_source(p) for packages in LANGUAGES.values() for p in packages)
    return make_task("fortune_language", "fortune cookie → language (English, German, Spanish, Italian, Russian)",
                     "language", examples, sources, seed, sizes, prompt="a text written in {}")
