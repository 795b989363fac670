"""This checkout's own wheel, built to ship with a Ray Job (``deeptrain submit --package pip``).

Installing ``deeptrain==<version>`` from a package index would install whatever project
owns that name there (an unrelated one does); the job instead gets the wheel of the code
that planned it. The wheel is built once per content of the sources (``pip wheel
--no-deps`` of a copy of the checkout, so the checkout itself gets no ``build/`` folder)
and kept under ``DEEPTRAIN_HOME/wheels/<hash>/``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from deeptrain import __version__
from deeptrain.errors import InvalidInput

PACKAGES = ("deeptrain", "serve")
IGNORED = ("__pycache__", "*.pyc", "*.egg-info")
WHEEL_NAME = f"deeptrain-{__version__}-py3-none-any.whl"


def checkout_root() -> Path:
    """The folder holding this ``deeptrain`` package (a checkout has its ``pyproject.toml`` there)."""
    return Path(__file__).resolve().parents[2]


def source_hash(root: Path) -> str:
    """A hash of what goes into the wheel: ``pyproject.toml`` and every file of the packages."""
    digest = hashlib.sha256((root / "pyproject.toml").read_bytes())
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def project_wheel(cache_dir: Path, root: Path | None = None) -> Path:
    """This checkout's wheel (built now unless the same sources were built before): its path,
    ``cache_dir/<hash>/<hash>/deeptrain-<version>-py3-none-any.whl``.

    The hash is in the path twice: the outer folder is what the job uploads, the inner one
    makes the path the job installs from differ per content, so Ray never reuses the pip
    environment of other code."""
    root = root or checkout_root()
    if not (root / "pyproject.toml").is_file():
        raise InvalidInput(f"--package pip ships this checkout's wheel, but {root} has no pyproject.toml "
                           "(deeptrain is installed, not a checkout): use --package local, or pip:REQUIREMENT "
                           "with the URL of the wheel to install")
    key = source_hash(root)
    wheel = cache_dir / key / key / WHEEL_NAME
    if not wheel.exists():
        _build(root, wheel)
    return wheel


def _build(root: Path, wheel: Path) -> None:
    """``pip wheel --no-deps`` of a copy of the sources, published into place with a move."""
    wheel.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="deeptrain-wheel-") as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            if (root / name).exists():
                shutil.copy2(root / name, src / name)
        for package in PACKAGES:
            shutil.copytree(root / package, src / package, ignore=shutil.ignore_patterns(*IGNORED))
        # with setuptools here, no isolated build environment (which pip would fill from the index)
        isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "--quiet",
                               "--wheel-dir", str(out), str(src)], capture_output=True, text=True)
        built = out / WHEEL_NAME
        if proc.returncode != 0 or not built.exists():
            raise InvalidInput(f"building this checkout's wheel failed (pip wheel exit {proc.returncode}): "
                               f"{proc.stderr.strip()[-1500:]}")
        shutil.move(str(built), str(wheel.with_suffix(".part")))
        wheel.with_suffix(".part").replace(wheel)
