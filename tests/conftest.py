import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

#: Peer reference outputs (zennit, LXT), in the repository (see tests/data/README.md).
REFERENCE_DIR = Path(__file__).resolve().parent / "data" / "reference"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
