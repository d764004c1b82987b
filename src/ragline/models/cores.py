"""How many cores this process may use: its CPU affinity, capped by a cgroup CPU quota.

`os.cpu_count()` counts the machine's cores. In a container with a CPU limit (a Kubernetes pod
with `limits.cpu: 2` on a 32-core node) that would start 32 model threads on 2 cores' worth
of time, and throttling would stall every call.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cgroup_quota(root: Path = CGROUP) -> float | None:
    """The CPU quota in cores (cgroup v2 `cpu.max`, else v1 `cpu.cfs_quota_us`), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


@lru_cache(maxsize=1)
def available_cores() -> int:
    return cores_allowed(CGROUP)


def cores_allowed(root: Path) -> int:
    """Cores in this process's affinity mask, at most the cgroup quota rounded up, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = cgroup_quota(root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)
