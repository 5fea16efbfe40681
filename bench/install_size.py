"""What an install of Handspring weighs, and that the runtime-only one runs.

Two fresh venvs (no pip or setuptools of their own: the pip running this bench installs
into them), each measured as the bytes its distributions' RECORD files list:

    full      pip install .                                   (builds graphs, downloads)
    runtime   pip install --no-deps . -r requirements-runtime.txt

Then the full install builds a tiny CLIP's int8 graphs (`handspring cache build`), and the
runtime install embeds a photo and a text from that graph cache and the model's folder.
Its vectors must equal the full install's, bit for bit, or the bench fails.

    python bench/install_size.py            # ~2 min with a warm pip cache
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
TARGET_MB = 200  # issue #16: the runtime install
SIZES = """
import json
from importlib.metadata import distributions
sizes = {}
for dist in distributions():
    total = 0
    for file in dist.files or []:
        path = file.locate()
        if path.is_file():
            total += path.stat().st_size
    sizes[dist.metadata["Name"].lower()] = total
print(json.dumps(sizes))
"""


def make_venv(folder: Path, install: list[str]) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    pip = [sys.executable, "-m", "pip", "--python", str(folder / "bin" / "python"), "install"]
    subprocess.run([*pip, "-q", *install], check=True, cwd=ROOT)
    return folder


def sizes(venv: Path) -> dict[str, int]:
    python = str(venv / "bin" / "python")
    out = subprocess.run([python, "-c", SIZES], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def embed(venv: Path, model: Path, photo: Path, out: Path, env: dict[str, str]) -> None:
    command = [str(venv / "bin" / "handspring"), "embed", "-m", str(model), "-i", str(photo)]
    command += ["-t", "a cat", "--precision", "int8", "-o", str(out)]
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="Build the venvs here and keep them.")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.support.checkpoints import write_hf_clip
    from tests.support.images import jpeg

    with tempfile.TemporaryDirectory(prefix="hs-install-") as scratch:
        base = args.keep or Path(scratch)
        full = make_venv(base / "full", ["."])
        runtime = make_venv(base / "runtime", ["--no-deps", ".", "-r", "requirements-runtime.txt"])
        measured = {"full": sizes(full), "runtime": sizes(runtime)}

        model = write_hf_clip(base / "tiny-clip")
        photo = jpeg(base / "photo.jpg", 480, 640)
        env = os.environ | {"HANDSPRING_CACHE": str(base / "cache"), "HF_HUB_OFFLINE": "1"}
        build = [str(full / "bin" / "handspring"), "cache", "build", str(model)]
        subprocess.run([*build, "--precision", "int8"], check=True, env=env)
        embed(full, model, photo, base / "full.json", env)
        embed(runtime, model, photo, base / "runtime.json", env)
        same = json.loads((base / "full.json").read_text()) == json.loads(
            (base / "runtime.json").read_text()
        )

    names = sorted(measured["full"], key=lambda n: -measured["full"][n])
    print("| distribution | full install MB | runtime-only MB |")
    print("|---|--:|--:|")
    for name in names:
        full_mb = measured["full"][name] / 1e6
        runtime_mb = measured["runtime"].get(name, 0) / 1e6
        if full_mb >= 1 or runtime_mb >= 1:
            print(f"| {name} | {full_mb:.1f} | {f'{runtime_mb:.1f}' if runtime_mb else '-'} |")
    small = [n for n in names if measured["full"][n] < 1e6]
    print(
        f"| {len(small)} others under 1 MB each | "
        f"{sum(measured['full'][n] for n in small) / 1e6:.1f} | "
        f"{sum(measured['runtime'].get(n, 0) for n in small) / 1e6:.1f} |"
    )
    totals = {k: sum(v.values()) / 1e6 for k, v in measured.items()}
    print(f"| **total** | **{totals['full']:.0f}** | **{totals['runtime']:.0f}** |")
    verdict = "met" if totals["runtime"] <= TARGET_MB else "missed"
    print(
        f"\nruntime-only install: {totals['runtime']:.0f} MB, target <= {TARGET_MB} MB: {verdict}"
    )
    print(f"its vectors from the full install's graph cache equal the full install's: {same}")
    if not same:
        raise SystemExit("the runtime-only install's vectors differ")


if __name__ == "__main__":
    main()
