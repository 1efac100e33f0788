"""retain_freed_memory: freed memory stays in the process, so re-allocating a large tensor stops page-faulting."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from reid.conf import compose_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

# one "step": three large tensors (the sizes of big activations), each filled, then freed
SIZES_MIB = (24, 40, 96)
FAULTS = textwrap.dedent(
    f"""
    import resource, sys, torch
    from reid.memory import retain_freed_memory
    if sys.argv[1] == "retain":
        assert retain_freed_memory()
    faults = []
    for _ in range(12):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for mib in {SIZES_MIB}:
            torch.empty(mib * 2**18).fill_(1.0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(*faults)
    """
)


def _faults_per_step(mode: str) -> list[int]:
    done = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True, timeout=120)
    return [int(count) for count in done.stdout.strip().splitlines()[-1].split()]


def test_freed_large_tensors_are_reused_without_page_faults():
    pages = sum(SIZES_MIB) * 2**20 // 4096
    default, retained = _faults_per_step("default"), _faults_per_step("retain")
    # glibc maps and unmaps every block above its mmap threshold: each step faults its pages again
    assert all(count > pages // 2 for count in default[-3:]), default
    # retained: once the heap has grown to the step's peak, the next steps reuse its pages
    assert sum(retained[-3:]) < pages // 100, retained


@pytest.mark.parametrize("config", ["train", "evaluate"])
def test_both_entry_points_retain_freed_memory_by_default(config):
    assert compose_config([], config_name=config).retain_freed_memory is True
