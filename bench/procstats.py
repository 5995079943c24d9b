"""Per-process figures from /proc (psutil is not a dependency): peak RSS, CPU time, who is whose child.

Everything here is synchronous and cheap; it is called between the phases of a run, never in a
hot path.
"""

from __future__ import annotations

import hashlib
import os
import platform
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces and parentheses)."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def parent_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of the process so far."""
    fields = _stat_fields(pid)
    # utime and stime are fields 14 and 15 of stat(5), i.e. 11 and 12 after the command name.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS if fields else None


def _status_kib(pid: int, key: str) -> int | None:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_kib(pid: int) -> int | None:
    """VmHWM: the process's peak resident set size."""
    return _status_kib(pid, "VmHWM")


def peak_rss_mib(pids: dict[int, str]) -> dict[str, float]:
    """Peak RSS in MiB (one decimal) per name of ``pids``; 0 for a process that is gone."""
    return {name: round((peak_rss_kib(pid) or 0) / 1024, 1) for pid, name in pids.items()}


def own_cpu_seconds() -> float:
    """User + system CPU time of the calling process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` (children, grandchildren, ...), by scanning /proc."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            parent = parent_of(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def label(pid: int) -> str:
    """``services.gateway`` → ``gateway``; otherwise the command name."""
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    args = [a.decode(errors="replace") for a in argv if a]
    if "-m" in args and args.index("-m") + 1 < len(args):
        return args[args.index("-m") + 1].removeprefix("services.")
    return Path(args[0]).name if args else str(pid)


def pids_named(comm: str) -> list[int]:
    """Processes whose command name (/proc/<pid>/comm) is ``comm``, e.g. the shared broker's."""
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == comm:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def open_files_limit(pid: int) -> int | None:
    """The soft "Max open files" of a local process (None if it cannot be read)."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                value = line.split()[3]
                return None if value == "unlimited" else int(value)
    except (OSError, ValueError, IndexError):
        return None
    return None


def machine_busy_seconds() -> float:
    """CPU seconds spent by all processes on all cores since boot (/proc/stat, less idle and iowait)."""
    fields = [int(v) for v in (PROC / "stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / CLOCK_TICKS


@dataclass
class CpuMeter:
    """CPU seconds used by a set of processes between ``start()`` and ``stop()``."""

    pids: dict[int, str]
    _started: dict[int, float] | None = None
    used: dict[str, float] | None = None

    _machine_started: float = 0.0

    def start(self) -> None:
        self._started = {pid: cpu_seconds(pid) or 0.0 for pid in self.pids}
        self._machine_started = machine_busy_seconds()

    def stop(self) -> dict[str, float]:
        """CPU seconds per name, plus ``machine`` (every process) and ``others`` (the machine less
        the named processes and the caller's own, which it adds itself): the noise of a shared box."""
        assert self._started is not None, "stop() before start()"
        used: dict[str, float] = {}
        for pid, name in self.pids.items():
            now = cpu_seconds(pid)
            if now is not None:
                used[name] = round(used.get(name, 0.0) + now - self._started[pid], 2)
        used["machine"] = round(machine_busy_seconds() - self._machine_started, 2)
        self.used = used
        return used


def shared_services() -> dict[int, str]:
    """RabbitMQ and Redis: shared with whoever else uses them on this machine, so only indicative."""
    return {pid: name for name in ("beam.smp", "redis-server") for pid in pids_named(name)}


def source_fingerprint(root: Path = Path(__file__).resolve().parents[1]) -> str:
    """A hash of the node's code as it is on disk: the work tree may differ from any commit."""
    digest = hashlib.sha256()
    for path in sorted([*root.glob("services/**/*.py"), *root.glob("shared/**/*.py")]):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def machine() -> dict[str, object]:
    model = "unknown"
    try:
        for line in (PROC / "cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return {
        "source_fingerprint": source_fingerprint(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "loadavg_at_start": os.getloadavg(),
        "git": commit,
    }
