import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

#: Peer reference outputs (zennit, LXT); ``LRP_DOMAINS_SHARED`` overrides ``../shared``.
SHARED_DIR = Path(os.environ.get("LRP_DOMAINS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
REFERENCE_DIR = SHARED_DIR / "data" / "reference"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
