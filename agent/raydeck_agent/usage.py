"""Machine usage from /proc (Linux), without psutil."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

_NVIDIA_DEVICE = re.compile(r"nvidia\d+$")


class UsageSampler:
    """CPU use is a rate: each sample measures the time since the previous one."""

    def __init__(self, proc: Path | str = "/proc", dev: Path | str = "/dev") -> None:
        self.proc = Path(proc)
        self.dev = Path(dev)
        self._last_cpu = self._cpu_times()

    def sample(self) -> dict[str, Any]:
        total_kb, available_kb = self._meminfo()
        used_kb = max(total_kb - available_kb, 0)
        return {
            "cpu_percent": round(self._cpu_percent(), 1),
            "memory_percent": round(100.0 * used_kb / total_kb, 1) if total_kb else 0.0,
            "memory_used_mb": used_kb // 1024,
            "gpus": self._gpus(),
        }

    def _cpu_percent(self) -> float:
        now = self._cpu_times()
        last, self._last_cpu = self._last_cpu, now
        if now is None or last is None:
            return self._loadavg_percent()
        busy = now[0] - last[0]
        total = now[1] - last[1]
        if total <= 0:
            return self._loadavg_percent()  # sampled twice within one clock tick
        return min(max(100.0 * busy / total, 0.0), 100.0)

    def _cpu_times(self) -> tuple[int, int] | None:
        """(busy, total) jiffies of the aggregate "cpu" line of /proc/stat."""
        try:
            with open(self.proc / "stat") as f:
                fields = f.readline().split()
        except OSError:
            return None
        if not fields or fields[0] != "cpu":
            return None
        # user nice system idle iowait irq softirq steal (guest time is inside user).
        values = [int(v) for v in fields[1:9]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        total = sum(values)
        return total - idle, total

    def _loadavg_percent(self) -> float:
        try:
            load = os.getloadavg()[0]
        except OSError:
            return 0.0
        return min(100.0 * load / (os.cpu_count() or 1), 100.0)

    def _meminfo(self) -> tuple[int, int]:
        """(MemTotal, MemAvailable) in kB."""
        values: dict[str, int] = {}
        try:
            with open(self.proc / "meminfo") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if key in ("MemTotal", "MemAvailable", "MemFree", "Buffers", "Cached"):
                        values[key] = int(rest.split()[0])
        except (OSError, ValueError, IndexError):
            return 0, 0
        total = values.get("MemTotal", 0)
        if "MemAvailable" in values:
            return total, values["MemAvailable"]
        # Kernels before 3.14 have no MemAvailable.
        return total, values.get("MemFree", 0) + values.get("Buffers", 0) + values.get("Cached", 0)

    def _gpus(self) -> int:
        try:
            return sum(1 for name in os.listdir(self.dev) if _NVIDIA_DEVICE.match(name))
        except OSError:
            return 0
