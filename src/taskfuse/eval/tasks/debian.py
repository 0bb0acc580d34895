"""Reading what Debian packages installed: their files, versions, licences, and apt's package index."""
from __future__ import annotations

import re
import subprocess
from functools import lru_cache
from pathlib import Path

from ...errors import TaskDataError
from .data import Source

_INSTALL_HINT = "run `bash scripts/install_task_data.sh` as root (it apt-installs the benchmark's text packages)"


def _run(args: list[str], what: str) -> str:
    try:
        return subprocess.run(args, check=True, capture_output=True, text=True).stdout
    except FileNotFoundError as e:
        raise TaskDataError(f"{what}: `{args[0]}` is not available; the built-in tasks need a Debian system") from e
    except subprocess.CalledProcessError as e:
        raise TaskDataError(f"{what}: {e.stderr.strip() or e}; {_INSTALL_HINT}") from e


@lru_cache(maxsize=None)
def package_files(package: str) -> tuple[Path, ...]:
    """Regular files the package installed (dpkg's own list, so other packages' files never leak in)."""
    listing = _run(["dpkg-query", "-L", package], f"Debian package {package!r} is not installed")
    return tuple(p for p in map(Path, listing.splitlines()) if p.is_file() and not p.is_symlink())


@lru_cache(maxsize=None)
def package_source(package: str) -> Source:
    version = _run(["dpkg-query", "-W", "-f=${Version}", package], f"Debian package {package!r} is not installed")
    return Source(package, version, package_licence(package))


def package_licence(package: str) -> str:
    """The licence of `Files: *` in a machine-readable copyright file, else where to read it."""
    path = Path("/usr/share/doc") / package / "copyright"
    text = path.read_text(errors="replace") if path.exists() else ""
    for stanza in re.split(r"\n\s*\n", text):
        if re.search(r"^Files:\s*\*\s*$", stanza, re.M):
            found = re.search(r"^License:\s*(\S.*)$", stanza, re.M)
            if found:
                return found.group(1).strip()
    return f"see {path}"


def apt_lists() -> Path:
    return Path("/var/lib/apt/lists")


def main_archive_index(kind: str) -> Path:
    """The base release's main index of `kind` (Packages, Translation-en), not updates or security."""
    pattern = "*_main_i18n_Translation-en*" if kind == "Translation-en" else "*_main_binary-*_Packages*"
    found = sorted(p for p in apt_lists().glob(pattern)
                   if "-updates_" not in p.name and "-security_" not in p.name and "-backports_" not in p.name)
    if not found:
        raise TaskDataError(f"apt's {kind} index is missing under {apt_lists()}; {_INSTALL_HINT}")
    return found[0]


def read_apt_index(path: Path) -> str:
    """apt stores indexes compressed (lz4, gz); apt-helper decompresses whatever apt itself wrote."""
    return _run(["/usr/lib/apt/apt-helper", "cat-file", str(path)], f"reading {path}")


def stanzas(text: str) -> list[dict[str, str]]:
    """Deb822 stanzas; continuation lines are kept (with their newline) in the field's value."""
    out: list[dict[str, str]] = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            out.append(fields)
    return out


def release_of(index: Path) -> Source:
    """Provenance of an apt index: the archive's Release file (suite, version, date)."""
    release = index.parent / (index.name.split("_main_")[0] + "_InRelease")
    text = release.read_text(errors="replace") if release.exists() else ""
    fields = next((s for s in stanzas(text) if "Codename" in s), {})
    version = f"{fields.get('Codename', '?')} {fields.get('Version', '')} ({fields.get('Date', 'date unknown')})"
    return Source("apt index of Debian main", version.strip(),
                  "package descriptions: each package's own (Debian main is DFSG-free)")
