"""What software wrote an artefact: soft2hard's version and git commit, and the torch/transformers/peft versions.

Every artefact (a run folder's ``metrics.json``, a DoD bank manifest, a translator, an InSPEcT profile, an
evaluation's ``summary.json``) stores :func:`provenance` under the key ``"provenance"``. It is a record only:
nothing compares it on resume, hashes it into a cache key or checks it for bit-identity, so a rerun under a newer
version still resumes.
"""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
from pathlib import Path

PACKAGES = ("torch", "transformers", "peft")
SOURCE = Path(__file__).resolve().parent  # the package folder: a git checkout's src/soft2hard, or site-packages


def package_version(name: str) -> str | None:
    """The installed version of a distribution, None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def git_commit(source: Path = SOURCE) -> str | None:
    """The commit checked out where ``source`` lives, when that folder is tracked by a git checkout; else None.

    The folder must be inside the repository's work tree and tracked: a package installed into site-packages that
    happens to lie inside some other repository reports None, not that repository's commit."""
    try:
        run = functools.partial(subprocess.run, cwd=source, capture_output=True, text=True, timeout=10, check=True)
        run(["git", "ls-files", "--error-unmatch", "--", "."])  # fails unless files here are tracked
        commit = run(["git", "rev-parse", "--verify", "HEAD"]).stdout.strip()
    except (OSError, subprocess.SubprocessError, ValueError):  # no git, not a checkout, untracked, a hung git
        return None
    return commit if len(commit) in (40, 64) and all(c in "0123456789abcdef" for c in commit) else None


def provenance() -> dict:
    """``{"soft2hard": version, "git_commit": sha or None, "torch": ..., "transformers": ..., "peft": ...}``.

    Computed once per process (one ``git`` call) and never raises; each call returns a fresh copy."""
    return dict(_provenance())


@functools.cache
def _provenance() -> dict:
    return {"soft2hard": package_version("soft2hard"), "git_commit": git_commit(),
            **{name: package_version(name) for name in PACKAGES}}
