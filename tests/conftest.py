import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "reference"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def reference_dir() -> Path:
    if not (REFERENCE_DIR / "zennit_rules.safetensors").exists():
        pytest.skip(f"peer reference data not found at {REFERENCE_DIR} (see ../shared/data/README.md)")
    return REFERENCE_DIR
