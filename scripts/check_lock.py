"""Fail when requirements.lock does not pin what pyproject.toml pins (run `make lock`).

pyproject.toml pins the direct dependencies; requirements.lock pins those and every transitive
one. A direct pin missing from the lock, or locked at another version, means the lock is stale.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\[=<>!~;\s]", requirement, maxsplit=1)[0]).lower()


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        wanted += extra
    locked = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            locked[_name(name)] = version.strip()
    problems = []
    for requirement in wanted:
        pinned = requirement.split("==", 1)[1].strip() if "==" in requirement else None
        name = _name(requirement)
        if name not in locked:
            problems.append(f"{name} is not in requirements.lock")
        elif pinned and locked[name] != pinned:
            problems.append(f"{name}: pyproject.toml pins {pinned}, the lock {locked[name]}")
    if problems:
        print(
            "requirements.lock is stale (run `make lock`):", *problems, sep="\n  ", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
