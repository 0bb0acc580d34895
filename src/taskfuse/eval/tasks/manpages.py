"""Manual-page NAME lines (Debian manpages, manpages-dev) → manual section."""
from __future__ import annotations

import gzip
import re
from pathlib import Path

from .data import Sizes, Task, make_task
from .debian import package_files, package_source

SECTIONS = {"2": "system calls", "3": "library functions", "4": "special files and formats",
            "5": "special files and formats", "7": "overviews and conventions"}
PACKAGES = ("manpages", "manpages-dev")
_ROFF_ESCAPES = re.compile(r"\\f[BIRP]|\\f\(..|\\\(..|\\[&e]")


def name_line(page: Path) -> str | None:
    """The text of the NAME section ("open, openat, creat \\- open and possibly create a file"), or None for a
    page that only redirects to another (`.so man3/x.3`)."""
    with gzip.open(page, "rt", encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\.S[Hh]\s+\"?NAME\"?", line):
            body = []
            for nxt in lines[i + 1:]:
                if nxt.startswith(".S"):
                    break
                if not nxt.startswith(('.\\"', "'\\\"")):
                    body.append(nxt.lstrip(".").removeprefix("B ").removeprefix("nh").removeprefix("ad"))
            text = _ROFF_ESCAPES.sub("", " ".join(body)).replace("\\-", "-")
            return " ".join(text.split()) or None
    return None


# Sections 4 and 5 together hold ~60 usable pages; a looser imbalance cap keeps the other classes from being cut
# to 3× that.
SIZES = Sizes(max_imbalance=5.0)


def section(seed: int = 0, sizes: Sizes = SIZES) -> Task:
    examples = []
    for package in PACKAGES:
        for page in package_files(package):
            m = re.search(r"/man/man(\d)/[^/]+\.\d\w*\.gz$", str(page))
            if m and m.group(1) in SECTIONS and "/man/man" in str(page) and "/share/man/man" in str(page):
                text = name_line(page)
                if text:
                    examples.append((text, SECTIONS[m.group(1)]))
    return make_task("manpage_section", "manual page NAME line → manual section (system call, library function...)",
                     "technical documentation", examples, tuple(package_source(p) for p in PACKAGES), seed, sizes,
                     prompt="documentation of {}")
