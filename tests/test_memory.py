"""retain_freed_memory: freed memory stays in the process, so re-allocating a large tensor stops page-faulting."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from reid.conf import compose_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

FAULTS = textwrap.dedent(
    """
    import resource, sys, torch
    from reid.memory import retain_freed_memory
    if sys.argv[1] == "retain":
        assert retain_freed_memory()
    faults = []
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(16 * 2**20).fill_(1.0)  # 64 MiB, above glibc's largest mmap threshold; freed at once
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(min(faults[1:]))
    """
)


def _faults_per_allocation(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True, timeout=120)
    return int(done.stdout.strip().splitlines()[-1])


def test_a_freed_large_tensor_is_reused_without_page_faults():
    pages = 64 * 2**20 // 4096
    assert _faults_per_allocation("default") > pages // 2  # glibc maps and unmaps it every time
    assert _faults_per_allocation("retain") < pages // 100  # the heap keeps the pages


@pytest.mark.parametrize("config", ["train", "evaluate"])
def test_both_entry_points_retain_freed_memory_by_default(config):
    assert compose_config([], config_name=config).retain_freed_memory is True
