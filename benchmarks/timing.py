"""Timing helpers shared by the benchmarks: repeated, interleaved measurements and machine facts."""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping

import torch

__all__ = ["Stat", "measure", "measure_interleaved", "machine_info", "load_average", "sync"]


@dataclass
class Stat:
    """Wall-clock and process-CPU times (seconds) of repeated runs of one thing.

    ``median``/``min``/``max`` are wall-clock seconds per run; ``cpu_median`` is the median
    process CPU time (all threads) per run, which is less sensitive to other processes on
    a shared machine than the wall clock. ``per`` (optional) divides each run into units
    (e.g. images), see :meth:`rate`.
    """

    name: str
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    per: float | None = None

    @property
    def n(self) -> int:
        return len(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def max(self) -> float:
        return max(self.times)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    def rate(self) -> float | None:
        """Units per second at the median (e.g. images/s), when ``per`` is set."""
        return None if self.per is None else self.per / self.median

    def summary(self) -> dict:
        d = {"name": self.name, "n": self.n, "median_s": self.median, "min_s": self.min, "max_s": self.max,
             "cpu_median_s": self.cpu_median, "times_s": list(self.times), "cpu_s": list(self.cpu)}
        if self.per is not None:
            d["units"] = self.per
            d["units_per_s"] = self.rate()
        return d


def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued CUDA work (no-op on the CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _once(fn: Callable[[], object], device) -> tuple[float, float]:
    sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def measure(name: str, fn: Callable[[], object], repeats: int = 5, warmup: int = 1, device=None,
            per: float | None = None) -> Stat:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed."""
    return measure_interleaved({name: fn}, repeats, warmup, device, per={name: per})[name]


def measure_interleaved(fns: Mapping[str, Callable[[], object]], repeats: int = 5, warmup: int = 1, device=None,
                        per: Mapping[str, float | None] | None = None,
                        progress: Callable[[str], None] | None = None) -> dict[str, Stat]:
    """Time several functions in rounds (A, B, C, A, B, C, ...) so that a change of machine
    load during the measurement affects all of them alike; ratios of their medians are then
    fair. Each gets ``warmup`` untimed runs first."""
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    stats = {k: Stat(k, per=(per or {}).get(k)) for k in fns}
    for _ in range(warmup):
        for fn in fns.values():
            _once(fn, device)
    for r in range(repeats):
        for k, fn in fns.items():
            wall, cpu = _once(fn, device)
            stats[k].times.append(wall)
            stats[k].cpu.append(cpu)
            if progress is not None:
                progress(f"  {k}: run {r + 1}/{repeats} {wall:.3f} s")
    return stats


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info(device: torch.device | str = "cpu") -> dict:
    """Facts that the numbers depend on."""
    dev = torch.device(device)
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "device": str(dev),
        "load_average": load_average(),
    }
    try:
        import torchattacks

        info["torchattacks"] = torchattacks.__version__
    except ImportError:
        info["torchattacks"] = None
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
        info["cuda"] = torch.version.cuda
        info["bf16"] = torch.cuda.is_bf16_supported()
    return info


def as_dict(obj) -> dict:
    return asdict(obj)
