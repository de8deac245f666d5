"""``lrp-domains bench text-faithfulness``: token-perturbation faithfulness on SST-2 dev.

For the default sentiment model and each method (attnlrp, cp-lrp, gradient x input, integrated
gradients, attention rollout, random), relevance for the predicted class, then:

- AUAC: area under the activation curve (Ali et al. 2022): all non-special tokens replaced by
  ``[UNK]``, then restored most relevant first; the curve is accuracy against the gold labels
  at 0, 10, ..., 100% restored. Higher is better.
- ABPC: area between the LeRF and MoRF deletion curves of the predicted class's probability
  (tokens replaced by ``[UNK]``). Higher is better.
- AU-MSE: area under the mean squared error between the logits with the least relevant tokens
  removed (pruning) and the original logits. Lower is better.
- seconds for the attributions alone, and their ratio to gradient x input.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from lrp_domains.bench.methods import select
from lrp_domains.evaluate import abpc, area, au_mse, curve
from lrp_domains.evaluate import text as T

METHODS = select("attnlrp", "cp-lrp", "gradient x input", "integrated gradients", "attention rollout", "random")


def sst2_dev(data_dir: str | Path | None = None, hub: bool = False) -> tuple[list[str], torch.Tensor]:
    """SST-2 dev sentences and labels: ``datasets/sst2/dev.tsv`` (or ``data_dir/dev.tsv``), or
    ``glue/sst2`` (``hub``)."""
    if hub:
        from datasets import load_dataset

        split = load_dataset("glue", "sst2", split="validation")
        return list(split["sentence"]), torch.tensor(split["label"])
    from lrp_domains.data import sst2_dev as bundled
    from lrp_domains.files.tables import read_records

    path = Path(data_dir) / "dev.tsv" if data_dir else bundled()
    if not path.exists():
        raise FileNotFoundError(
            f"SST-2 dev not found at {path}: pass --data-dir (a folder with dev.tsv, columns "
            "text and label) or --hub to read glue/sst2 with the datasets package (online)"
        )
    rows = read_records(path, ("text", "label"))
    return [row["text"].strip() for row in rows], torch.tensor([int(row["label"]) for row in rows])


def attributions(
    model, tokenizer, labels, encoded: T.EncodedTexts, target: torch.Tensor, batch_size: int, steps: int
) -> dict[str, Callable[[], torch.Tensor]]:
    """One callable per method returning token relevance ``(N, T)``."""
    from lrp_domains.text import TextExplainer

    lrp = {name: TextExplainer(model, tokenizer, composite=name, labels=labels) for name in ("attnlrp", "cp-lrp")}
    return {
        "attnlrp": lambda: T.lrp(lrp["attnlrp"], encoded, target, batch_size),
        "cp-lrp": lambda: T.lrp(lrp["cp-lrp"], encoded, target, batch_size),
        "gradient x input": lambda: T.gradient_x_input(model, encoded, target, batch_size),
        "integrated gradients": lambda: T.integrated_gradients(model, encoded, target, steps, batch_size),
        "attention rollout": lambda: T.attention_rollout(model, encoded, batch_size),
        "random": lambda: T.random_tokens(encoded),
    }


def run(
    limit: int | None = None,
    batch_size: int = 16,
    steps: int = 25,
    data_dir: str | None = None,
    hub: bool = False,
    device: str = "cpu",
    methods: tuple[str, ...] = METHODS,
    progress: bool = True,
) -> list[dict]:
    """Measure every method; rows with AUAC, ABPC, AU-MSE, seconds and the time ratio."""
    from lrp_domains.text.default_model import load_default_model

    texts, gold = sst2_dev(data_dir, hub)
    if limit:
        texts, gold = texts[:limit], gold[:limit]
    model, tokenizer, labels = load_default_model(device=device)
    encoded = T.encode(tokenizer, texts, max_length=128)
    original = T.predict(model, encoded)
    predicted = original.argmax(1)
    valid, protected = encoded.attention_mask.bool(), encoded.special
    replace = T.replace_tokens(encoded, tokenizer.unk_token_id)
    rows_of = torch.arange(len(texts))

    def logits(ids: torch.Tensor) -> torch.Tensor:
        return T.predict(model, encoded, ids)

    found = attributions(model, tokenizer, labels, encoded, predicted, batch_size, steps)
    # Warm every method up on one batch first, so that first-call costs count for none of them.
    warm = T.encode(tokenizer, texts[:batch_size], max_length=128)
    for name, fn in attributions(model, tokenizer, labels, warm, predicted[:batch_size], batch_size, 1).items():
        if name in methods:
            fn()
    rows = []
    for name in methods:
        if progress:
            print(f"[bench text-faithfulness] {name} ...", flush=True)
        start = time.perf_counter()
        relevance = found[name]()
        seconds = time.perf_counter() - start
        kwargs = {"valid": valid, "protected": protected}
        activation = curve(logits, encoded.input_ids, relevance, replace, order="morf", mode="insertion", **kwargs)
        morf = curve(logits, encoded.input_ids, relevance, replace, order="morf", **kwargs)
        lerf = curve(logits, encoded.input_ids, relevance, replace, order="lerf", **kwargs)
        accuracy = (activation.argmax(-1) == gold[:, None]).double()

        def probability(values: torch.Tensor) -> torch.Tensor:
            return values.softmax(-1)[rows_of, :, predicted].double()

        rows.append(
            {
                "method": name,
                "AUAC": area(accuracy).mean().item(),
                "ABPC": abpc(probability(morf), probability(lerf)).mean().item(),
                "AU-MSE": au_mse(lerf, original).mean().item(),
                "seconds": seconds,
            }
        )
    base = next((r["seconds"] for r in rows if r["method"] == "gradient x input"), None)
    for row in rows:
        row["time_ratio"] = row["seconds"] / base if base else float("nan")
        row["sentences"] = len(texts)
        row["accuracy"] = (predicted == gold).double().mean().item()
    return rows


def print_table(rows: list[dict]) -> None:
    """Print the rows (rich)."""
    from rich.console import Console
    from rich.table import Table

    first = rows[0]
    table = Table(
        title=f"bench text-faithfulness: SST-2 dev, {first['sentences']} sentences, default model "
        f"(accuracy {first['accuracy']:.3f}), {torch.get_num_threads()} threads"
    )
    for column in ("method", "AUAC (higher)", "ABPC (higher)", "AU-MSE (lower)", "seconds", "x gradient x input"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        table.add_row(
            row["method"],
            f"{row['AUAC']:.3f}",
            f"{row['ABPC']:.3f}",
            f"{row['AU-MSE']:.3f}",
            f"{row['seconds']:.1f}",
            f"{row['time_ratio']:.2f}x",
        )
    Console().print(table)
