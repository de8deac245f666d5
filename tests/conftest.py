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


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny BERT sentiment classifier saved with its tokenizer, as a user's model folder."""
    import text_models as T

    path = tmp_path_factory.mktemp("tiny-bert")
    model = T.encoder("bert", num_labels=2).float()
    model.config.id2label = {0: "negative", 1: "positive"}
    model.config.label2id = {"negative": 0, "positive": 1}
    model.save_pretrained(path)
    T.wordpiece_tokenizer().save_pretrained(path)
    return str(path)
