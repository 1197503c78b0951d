"""Build `dist/arbitrage`: one file that runs the service on a box with only Python 3.11.

    python3.11 deploy/dist/build.py [--out dist/arbitrage]      (what `make dist` runs)

The file is a zipapp holding the locked runtime dependencies for this platform (from
`uv.lock`, without the dev group, markers evaluated for Python 3.11.0 so that every 3.11.x
finds its backports), the `arbitrage` package and the migrations. Compiled
extensions (chdb, polars, pyarrow, ...) cannot be imported from inside a zip, so on first
start the archive unpacks itself once into a cache directory named after its content hash
(`$ARBITRAGE_DIST_CACHE`, default `~/.cache/arbitrage-dist`) and runs from there; later
starts reuse it. Only the standard library and `uv` are needed to build.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = "3.11"

BOOTSTRAP = '''\
"""Unpack once into a cache named after this archive's build id, then run the CLI from there."""
import os
import sys
import zipfile

BUILD_ID = {build_id!r}
if sys.version_info[:2] != (3, 11):
    sys.exit(f"arbitrage: this build needs Python 3.11, not {{sys.version.split()[0]}} ({{sys.executable}})")
_archive = os.path.dirname(os.path.abspath(__file__))
_cache = os.environ.get("ARBITRAGE_DIST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "arbitrage-dist")
_target = os.path.join(_cache, BUILD_ID)
if not os.path.isfile(os.path.join(_target, ".complete")):
    os.makedirs(_cache, exist_ok=True)
    _staging = f"{{_target}}.{{os.getpid()}}.partial"
    with zipfile.ZipFile(_archive) as _zip:
        _zip.extractall(_staging, [n for n in _zip.namelist() if n.startswith("site/")])
    open(os.path.join(_staging, ".complete"), "w").close()
    try:
        os.rename(_staging, _target)
    except OSError:  # another process unpacked it first
        import shutil

        shutil.rmtree(_staging, ignore_errors=True)
_site = os.path.join(_target, "site")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_site, os.environ.get("PYTHONPATH")) if p)
# Become a plain `python -m arbitrage` over the unpacked tree (same PID): worker processes,
# whether forked or spawned, then start exactly as they do from an installed package.
os.execv(sys.executable, [sys.executable, "-m", "arbitrage", *sys.argv[1:]])
'''


def uv_command() -> list[str]:
    configured = os.environ.get("UV")
    if configured:
        return shlex.split(configured)
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def run(command: list[str], **kwargs: object) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT, **kwargs)  # type: ignore[call-overload]


def build(out: Path) -> Path:
    started = time.monotonic()
    staging = out.parent / ".build"
    shutil.rmtree(staging, ignore_errors=True)
    site = staging / "site"
    site.mkdir(parents=True)
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    requirements = staging / "requirements.txt"
    uv = uv_command()
    run(
        [*uv, "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", "--format", "requirements-txt",
         "--python", f"python{PYTHON}", "-o", str(requirements), "--quiet"],
        env=env,
    )  # fmt: skip
    run(
        [*uv, "pip", "install", "--quiet", "--python", f"python{PYTHON}", "--target", str(site),
         "--python-version", f"{PYTHON}.0", "--no-deps", "--link-mode", "copy", "-r", str(requirements)],
        env=env,
    )  # fmt: skip
    shutil.copytree(ROOT / "arbitrage", site / "arbitrage", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(ROOT / "migrations", site / "arbitrage" / "_migrations")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    metadata = site / f"arbitrage-{project['version']}.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text(f"Metadata-Version: 2.1\nName: arbitrage\nVersion: {project['version']}\n")
    for cache in site.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)

    files = sorted(p for p in site.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(staging)}\0{stat.st_size}\0".encode())
    digest.update(hashlib.sha256((ROOT / "uv.lock").read_bytes()).digest())
    for path in files:
        if path.suffix in (".py", ".sql") and "arbitrage" in path.relative_to(site).parts[:1]:
            digest.update(path.read_bytes())
    build_id = digest.hexdigest()[:16]

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with partial.open("wb") as handle:
        handle.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            archive.writestr("__main__.py", BOOTSTRAP.format(build_id=build_id))
            for path in files:
                archive.write(path, path.relative_to(staging).as_posix())
    partial.chmod(0o755)
    partial.replace(out)
    shutil.rmtree(staging, ignore_errors=True)
    size = out.stat().st_size / 2**20
    print(f"built {out} ({size:.0f} MiB, build {build_id}) in {time.monotonic() - started:.0f}s")
    print(f"run it with: ./{out.name} serve   (Python {PYTHON} on the target, nothing else)")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "arbitrage", help="where to write the file")
    args = parser.parse_args()
    build(args.out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
