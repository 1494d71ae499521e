"""glibc malloc tuning: applied once on glibc Linux, a harmless no-op elsewhere."""

import platform
import sys

import pytest
import torch

from clusterloss.malloc_tuning import tune_malloc


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc-specific")
def test_tune_malloc_applies_once_and_allocation_still_works():
    assert tune_malloc() is True
    assert tune_malloc() is True  # idempotent
    big = torch.ones(64, 1024, 1024)  # 256 MiB: above any mmap threshold, still allocates and frees
    assert float(big[-1, -1, -1]) == 1.0
    del big
