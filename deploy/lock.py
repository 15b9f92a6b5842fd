"""Print the runtime dependencies of mail_pipeline pinned at the versions installed here: the
image's lock file, ``deploy/requirements.lock`` (the Dockerfile installs exactly these).

    .venv/bin/python deploy/lock.py > deploy/requirements.lock

The pins are the transitive closure of ``[project].dependencies`` in ``pyproject.toml`` (never
the ``dev`` extra), read from the installed packages' metadata, with environment markers
evaluated for this interpreter: run it in the project's virtualenv, on Linux with CPython 3.11,
as the image is. Upgrade a dependency by installing the new version in the virtualenv
(``make install`` after changing ``pyproject.toml``), running the tests, then this.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def project_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """The runtime dependencies declared in ``pyproject.toml``."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


def _applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras or {""})


def runtime_closure(roots: list[Requirement]) -> dict[str, str]:
    """Every installed distribution the roots need, by canonical name, with its version."""
    pinned: dict[str, str] = {}
    wanted: dict[str, set[str]] = {}
    pending = [(requirement, frozenset()) for requirement in roots]
    while pending:
        requirement, parent_extras = pending.pop()
        if not _applies(requirement, parent_extras):
            continue
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if name in pinned and extras <= wanted[name]:
            continue
        distribution = metadata.distribution(requirement.name)
        pinned[name] = distribution.version
        wanted[name] = wanted.get(name, set()) | extras
        active = frozenset(wanted[name])
        pending.extend((Requirement(text), active) for text in distribution.requires or [])
    return dict(sorted(pinned.items()))


def lock_text(pins: dict[str, str]) -> str:
    header = [
        "# The image's runtime dependencies, pinned (generated: .venv/bin/python deploy/lock.py",
        "# > deploy/requirements.lock). The Dockerfile installs exactly these, then checks them.",
    ]
    return "\n".join([*header, *(f"{name}=={version}" for name, version in pins.items())]) + "\n"


def main() -> int:
    sys.stdout.write(lock_text(runtime_closure(project_requirements())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
