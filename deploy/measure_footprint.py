"""The installed footprint of `handspring[server]`: what the container image adds to its base.

Makes a fresh virtual environment, installs the package with the server extra (not the
test extra) the way the Dockerfile does, and prints the size of each installed package,
from the file lists pip records, largest first, with the totals. Needs pip >= 22.3
(for `--python`) where it runs.

    python deploy/measure_footprint.py                  # this checkout, extra "server"
    python deploy/measure_footprint.py --extra photos   # another extra
    python deploy/measure_footprint.py --keep /tmp/fp   # keep the venv there

Needs network access to the package index (or a local mirror pip is configured for).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024

# Runs inside the new venv: sizes by distribution, from each one's RECORD.
SIZES_BY_PACKAGE = """
import json, sys, sysconfig
from importlib.metadata import distributions
from pathlib import Path

site = Path(sysconfig.get_paths()["purelib"])
out = {}
for dist in distributions(path=[str(site)]):
    total = 0
    for file in dist.files or []:
        path = Path(dist.locate_file(file))
        if path.is_file():
            total += path.stat().st_size
    out[f"{dist.metadata['Name']} {dist.version}"] = total
print(json.dumps({"site": str(site), "packages": out}))
"""


def tree_size(folder: Path) -> int:
    total = 0
    for base, _, files in os.walk(folder):
        for name in files:
            path = Path(base, name)
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def measure(venv: Path, extra: str) -> None:
    # As the Dockerfile does: a venv without pip, filled by the pip outside it (`--python`),
    # so pip and setuptools are not part of what the image carries. The base interpreter,
    # not this venv's: a venv made from inside another one can fail to bootstrap.
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    print(f"installing {ROOT}[{extra}] into {venv} ...", file=sys.stderr)
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    subprocess.run([*pip, "install", "--quiet", "--no-cache-dir", f"{ROOT}[{extra}]"], check=True)
    found = json.loads(
        subprocess.run(
            [python, "-c", SIZES_BY_PACKAGE], check=True, capture_output=True, text=True
        ).stdout
    )
    packages: dict[str, int] = found["packages"]
    site = Path(found["site"])
    counted = sum(packages.values())
    print(f"handspring[{extra}] installed with Python {sys.version.split()[0]}\n")
    print("| package | installed size |\n|---|---:|")
    for name, size in sorted(packages.items(), key=lambda item: -item[1]):
        print(f"| {name} | {size / MIB:.1f} MiB |")
    print(f"| **all packages** | **{counted / MIB:.1f} MiB** |")
    print(f"\nsite-packages on disk: {tree_size(site) / MIB:.1f} MiB")
    print(f"whole venv on disk (what the image copies): {tree_size(venv) / MIB:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--extra", default="server")
    parser.add_argument("--keep", type=Path, help="make the venv here and leave it")
    args = parser.parse_args()
    if args.keep is not None:
        if args.keep.exists():
            sys.exit(f"{args.keep} exists; give a new folder")
        measure(args.keep, args.extra)
        return
    with tempfile.TemporaryDirectory(prefix="handspring-footprint-") as tmp:
        measure(Path(tmp) / "venv", args.extra)


if __name__ == "__main__":
    main()
