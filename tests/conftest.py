import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real CIFAR-10 (a JPEG-decoded copy) lives beside the checkout on developer machines; users won't have it.
SHARED_CIFAR10 = Path(os.environ.get("CLUSTERLOSS_CIFAR10_ROOT", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def cifar10_root() -> Path:
    if not (SHARED_CIFAR10 / "cifar-10-batches-py" / "data_batch_1").exists():
        pytest.skip(f"real CIFAR-10 not found under {SHARED_CIFAR10}/cifar-10-batches-py "
                    "(set CLUSTERLOSS_CIFAR10_ROOT to the folder holding it)")
    return SHARED_CIFAR10
