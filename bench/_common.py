"""Shared helpers of the benchmarks: the machine description, timers, subprocess runs, sample data.

Every benchmark prints ratios measured in the same run (never absolute times alone) and starts
with :func:`describe_machine`, so a figure can always be traced to the CPU, core count, torch
version, thread count and load it was measured with.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def describe_machine(extra: str = "") -> str:
    """One paragraph on the machine: CPU, cores, torch/timm/Lightning versions, threads, GPU, load."""
    lines = [f"machine: {cpu_model()}, {cpu_count()} cores, Python {platform.python_version()}, "
             f"{platform.system()} {platform.release()}"]
    try:
        import torch

        from importlib.metadata import PackageNotFoundError, version

        versions = [f"torch {torch.__version__}"]
        for name in ("torchvision", "timm", "pytorch-lightning"):
            try:
                versions.append(f"{name} {version(name)}")
            except PackageNotFoundError:
                pass
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
        lines.append(f"software: {', '.join(versions)}; torch threads {torch.get_num_threads()}, "
                     f"CPU capability {torch.backends.cpu.get_cpu_capability()}, GPU {gpu}")
    except ImportError:
        lines.append("software: torch not importable")
    lines.append(f"load average (1/5/15 min) at start: {load_average()}"
                 + ("  <- busy machine: ratios are noisier" if _busy() else ""))
    if extra:
        lines.append(extra)
    return "\n".join(lines)


def _busy() -> bool:
    try:
        return os.getloadavg()[0] >= 1.0
    except OSError:
        return False


def tlkit_command() -> list[str]:
    """The ``tlkit`` console script of this Python (not a pyenv shim, whose bash start-up is not ours).

    With ``TLKIT_BENCH_PYTHONPATH`` set (``--tlkit-pythonpath``), ``python -m tlkit.cli`` with that
    path first, to time another checkout of tlkit (e.g. the one before an optimisation).
    """
    if os.environ.get("TLKIT_BENCH_PYTHONPATH"):
        # -P: the working directory (this checkout, when run from it) must not come first on sys.path
        return [sys.executable, *(["-P"] if sys.version_info >= (3, 11) else []), "-m", "tlkit.cli"]
    script = Path(sys.executable).with_name("tlkit")
    if script.is_file():
        return [str(script)]
    found = shutil.which("tlkit")
    if found:
        return [found]
    return [sys.executable, "-m", "tlkit.cli"]


def make_data(root: Path, *, per_class: int, image_size: int) -> Path:
    """The built-in shapes data (4 classes) at ``image_size`` px, ``per_class`` images per class."""
    from tlkit.sample_data import make_sample_dataset

    return make_sample_dataset(root, per_class=per_class, image_size=image_size)


class EpochWatcher:
    """Polls a run's ``metrics.json`` and records the wall time at which each epoch's record appears.

    ``tlkit fit`` rewrites metrics.json at the end of every epoch (after validation, checkpoints and
    the learning-curve plot), so the differences between these times are whole epochs as a user
    sees them, with every per-epoch cost of ours included, measured without touching tlkit.
    """

    def __init__(self, metrics_path: Path, interval: float = 0.02):
        self.path = Path(metrics_path)
        self.interval = interval
        self.times: dict[int, float] = {}
        self._seen_mtime = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._poll()

    def _poll(self):
        try:
            mtime = self.path.stat().st_mtime
            if mtime == self._seen_mtime:
                return
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        self._seen_mtime = mtime
        for record in document.get("epochs", []):
            # the file's mtime is when the record was written; the poll only notices it later
            self.times.setdefault(int(record["epoch"]), mtime)

    def _run(self):
        while not self._stop.wait(self.interval):
            self._poll()


def epoch_seconds(epoch_end_times: dict[int, float]) -> list[float]:
    """Durations of epochs 1.. from the wall times at which consecutive epochs ended."""
    ends = [epoch_end_times[k] for k in sorted(epoch_end_times)]
    return [b - a for a, b in zip(ends, ends[1:])]


def run_timed(cmd: list[str], *, env=None, cwd=None, check=True) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``cmd`` to completion; return its wall time (seconds) and the completed process."""
    if cwd is None and os.environ.get("TLKIT_BENCH_PYTHONPATH"):
        cwd = tempfile.gettempdir()  # not a checkout of tlkit, whatever Python puts first on sys.path
    started = time.perf_counter()
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if check and result.returncode != 0:
        sys.exit(f"benchmark command failed ({result.returncode}): {' '.join(map(str, cmd))}\n"
                 f"{result.stderr[-3000:]}")
    return seconds, result


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def ratio_line(name: str, ours: float, reference: float, target: float | None = None, unit: str = "s") -> str:
    ratio = ours / reference if reference else float("inf")
    verdict = ""
    if target is not None:
        verdict = f"  target <= {target:.2f}x: {'HOLDS' if ratio <= target else 'MISSED'}"
    return f"{name}: {ratio:.3f}x  ({ours:.2f} {unit} vs {reference:.2f} {unit}){verdict}"


def temp_dir(prefix: str, keep: bool = False):
    """A temporary directory (kept when ``keep``), as a context manager yielding a Path."""
    if keep:
        path = Path(tempfile.mkdtemp(prefix=prefix))
        print(f"work folder (kept): {path}")

        class _Keep:
            def __enter__(self):
                return path

            def __exit__(self, *exc):
                return False

        return _Keep()

    class _Temp:
        def __enter__(self):
            self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
            return Path(self._tmp.name)

        def __exit__(self, *exc):
            self._tmp.cleanup()
            return False

    return _Temp()


def quiet_env(**extra) -> dict:
    """The environment for benchmark subprocesses: warnings off, plugin set fixed, ``extra`` added."""
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    if env.get("TLKIT_BENCH_PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env["TLKIT_BENCH_PYTHONPATH"], env.get("PYTHONPATH")]))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def add_checkout_option(parser) -> None:
    """``--tlkit-pythonpath DIR``: time the tlkit (and tlkit_builtins) found in DIR instead of the installed one."""
    parser.add_argument("--tlkit-pythonpath", metavar="DIR",
                        help="time the tlkit package in DIR (e.g. an export of an older commit) instead of the "
                             "installed one")


def apply_checkout_option(args) -> None:
    if getattr(args, "tlkit_pythonpath", None):
        os.environ["TLKIT_BENCH_PYTHONPATH"] = str(Path(args.tlkit_pythonpath).resolve())
        print(f"timing the tlkit in {os.environ['TLKIT_BENCH_PYTHONPATH']}")
