"""Cores a process may use: affinity capped by the cgroup CPU quota, in the files' own formats."""

from __future__ import annotations

import os
from pathlib import Path

from ragline.models.cores import cgroup_quota, cores_allowed

AFFINITY = len(os.sched_getaffinity(0))


def test_a_cgroup_v2_quota_caps_the_cores_rounded_up(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota(tmp_path) == 1.5
    assert cores_allowed(tmp_path) == min(AFFINITY, 2)


def test_no_quota_leaves_the_affinity_mask(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path) is None
    assert cores_allowed(tmp_path) == AFFINITY
    assert cores_allowed(tmp_path / "no-cgroup-here") == AFFINITY


def test_a_cgroup_v1_quota_is_read_and_minus_one_means_none(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    assert cgroup_quota(tmp_path) == 0.5
    assert cores_allowed(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(tmp_path) is None


def test_a_quota_never_goes_below_one_core(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("1000 100000\n")
    assert cores_allowed(tmp_path) == 1
