"""Check that the project installs with its gpu extra on a Linux x86-64 machine with CUDA, from metadata only.

    python scripts/check_gpu_install.py                   # the gpu extra as it is (what CI runs)
    python scripts/check_gpu_install.py --with unsloth    # what `pip install ".[gpu]" unsloth` would get

uv's resolver (`uv pip compile`, installed with `pip install uv`) resolves the project for Linux x86-64
(manylinux_2_28, where PyPI's torch is the CUDA build) without installing or downloading the big wheels. If the
resolution holds unsloth or unsloth_zoo, their own requirements on transformers, trl, torch and peft are read
from the resolved release's wheel metadata (a few hundred kB) and must

- be met by the resolved versions, and
- put an upper bound on transformers and trl: a release with none is one the resolver fell back to because every
  newer release excludes the project's pins (unsloth 2025.7.2 for transformers 5.23; it fails at import).

Exit status 0: installable as checked; 1: not; 2: the check could not run (no uv, no network). Takes ~10-20 s.
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PLATFORM, PYTHON = "x86_64-manylinux_2_28", "3.11"
TARGET = {**default_environment(), "sys_platform": "linux", "platform_system": "Linux",
          "platform_machine": "x86_64", "python_version": PYTHON, "python_full_version": f"{PYTHON}.0"}
CHECKED = ("unsloth", "unsloth-zoo")
PINNED = ("transformers", "trl", "torch", "peft")
MUST_CAP = ("transformers", "trl")


def norm(name: str) -> str:
    return name.lower().replace("_", "-")


def uv_command() -> list[str]:
    if shutil.which("uv"):
        return ["uv"]
    try:
        import uv  # noqa: F401
        return [sys.executable, "-m", "uv"]
    except ImportError:
        raise SystemExit("check_gpu_install: uv is not installed; pip install uv") from None


def resolve(extra_requirements: list[str]) -> dict[str, str]:
    """name -> version of the project with its gpu extra (plus extra_requirements) for Linux x86-64."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs = [str(ROOT / "pyproject.toml")]
        if extra_requirements:
            (Path(tmp) / "extra.in").write_text("\n".join(extra_requirements) + "\n")
            inputs.append(str(Path(tmp) / "extra.in"))
        cmd = [*uv_command(), "pip", "compile", *inputs, "--extra", "gpu", "--python-platform", PLATFORM,
               "--python-version", PYTHON, "--no-header", "--no-annotate", "--quiet", "--cache-dir",
               str(Path(tmp) / "cache")]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
    if done.returncode:
        err = done.stderr.strip()
        if "No solution found" in err or "unsatisfiable" in err:
            print(err)
            raise SystemExit(1)
        raise SystemExit(f"check_gpu_install: uv could not resolve ({err[-400:]})")
    pins = {}
    for line in done.stdout.splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split(";")[0].strip().split("==", 1)
            pins[norm(name)] = version.strip()
    return pins


def wheel_requirements(name: str, version: str) -> list[Requirement]:
    """The release's Requires-Dist (extras left out, markers evaluated for TARGET), from its wheel on PyPI."""
    index = urllib.request.Request(f"https://pypi.org/simple/{norm(name)}/",
                                   headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(index, timeout=60) as r:
        files = json.load(r)["files"]
    prefix = f"{name.replace('-', '_')}-{version}-"
    wheel = next((f for f in files if f["filename"].lower().startswith(prefix.lower())
                  and f["filename"].endswith(".whl")), None)
    if wheel is None:
        raise SystemExit(f"check_gpu_install: no wheel of {name} {version} on PyPI to read its requirements from")
    with urllib.request.urlopen(wheel["url"], timeout=120) as r:
        archive = zipfile.ZipFile(io.BytesIO(r.read()))
    meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    reqs = []
    for line in archive.read(meta).decode().splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or req.marker.evaluate({**TARGET, "extra": ""}):
                reqs.append(req)
    return reqs


def problems_of(name: str, version: str, pins: dict[str, str]) -> list[str]:
    found = []
    reqs = {norm(r.name): r for r in wheel_requirements(name, version)}
    for dep in PINNED:
        req = reqs.get(dep)
        if req is None:
            continue
        have = pins.get(dep)
        if have and not req.specifier.contains(have.split("+")[0], prereleases=True):
            found.append(f"{name} {version} needs {dep}{req.specifier}; the resolution has {dep} {have}")
        if dep in MUST_CAP and not any(s.operator in ("<", "<=", "==", "~=") for s in req.specifier):
            found.append(f"{name} {version} puts no upper bound on {dep} ({dep}{req.specifier}): a release the "
                         f"resolver fell back to because newer ones exclude {dep} {have}")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--with", dest="extra", action="append", default=[], metavar="REQUIREMENT",
                   help="also resolve this requirement, e.g. unsloth (repeatable)")
    args = p.parse_args(argv)
    t0 = time.time()
    pins = resolve(args.extra)
    shown = ", ".join(f"{n} {pins[n]}" for n in (*PINNED, "bitsandbytes", *CHECKED) if n in pins)
    print(f"resolved {len(pins)} packages for {PLATFORM}, Python {PYTHON}: {shown}")
    found = [msg for name in CHECKED if name in pins for msg in problems_of(name, pins[name], pins)]
    if not any(name in pins for name in CHECKED):
        print("no unsloth in the resolution: the unsloth backend is not installed by this extra (docs/gpu.md)")
    for msg in found:
        print(f"FAIL: {msg}")
    print(f"{'FAIL' if found else 'OK'} in {time.time() - t0:.1f} s")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
