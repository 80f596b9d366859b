"""Start-up time of the command line: ``tlkit --help`` and ``tlkit list backbones`` against ``python -c pass``.

Each command runs ``--runs`` times as a subprocess, interleaved with the reference; the medians are
compared. Heavy libraries (torch, Lightning, Gradio) are imported only by the commands that need
them, so these two commands should cost little more than the interpreter itself.
Target: ``tlkit --help`` under 0.5 s.

The console script of this Python is timed directly; a pyenv-style shim in front of it (a bash script
that runs ``pyenv exec``) adds its own start-up, which is reported separately when there is one.

    python bench/startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import describe_machine, median, quiet_env, tlkit_command  # noqa: E402

HELP_TARGET_S = 0.5


def wall(cmd, env) -> float:
    started = time.perf_counter()
    result = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {result.stderr[-2000:]}")
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    tlkit = tlkit_command()
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "tlkit --help": [*tlkit, "--help"],
        "tlkit list backbones": [*tlkit, "list", "backbones"],
    }
    on_path = shutil.which("tlkit")
    shim = on_path and Path(on_path).resolve() != Path(tlkit[0]).resolve() and not tlkit[0].endswith("python")
    if shim:
        commands["tlkit --help (via PATH)"] = [on_path, "--help"]
    env = quiet_env()
    print("== command-line start-up ==")
    print(describe_machine())
    print(f"setup: median of {args.runs} runs each, interleaved; tlkit = {' '.join(tlkit)}")
    for cmd in commands.values():  # warm the file cache (first runs read .pyc files from disk)
        wall(cmd, env)
    times = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, cmd in commands.items():
            times[name].append(wall(cmd, env))
    reference = median(times["python -c pass"])
    print("results (median wall time; ratio to python -c pass):")
    for name, values in times.items():
        m = median(values)
        line = f"  {name:26s} {m:6.3f} s  {m / reference:5.2f}x"
        if name == "tlkit --help":
            line += f"  target < {HELP_TARGET_S} s: {'HOLDS' if m < HELP_TARGET_S else 'MISSED'}"
        if name.endswith("(via PATH)"):
            line += f"  ({on_path}: a shim, {m - median(times['tlkit --help']):+.3f} s of its own)"
        print(line)


if __name__ == "__main__":
    main()
