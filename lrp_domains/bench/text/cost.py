"""``lrp-domains bench text``: AttnLRP and CP-LRP cost over gradient x input on the default
sentiment model (batch 16, about 32 tokens), and sentences per second, in one run; and AttnLRP
with the conservation ledger (``ledger=True``) over AttnLRP without it.

Every method starts from raw strings (tokenization included) and ends with per-token relevance;
the gradient baseline feeds the word embeddings as ``inputs_embeds`` and multiplies them by
their gradient. Times are interleaved medians; peak memory comes from fresh processes.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable

import torch

from lrp_domains.bench.measure import interleaved_times, peak_bytes, peak_bytes_here
from lrp_domains.bench.methods import select

COMPOSITES = select("attnlrp", "cp-lrp")
METHODS = select("gradient x input", *COMPOSITES, "attnlrp + ledger")


def setup(device: str = "cpu"):
    """The default model and tokenizer on ``device`` and the 16 example sentences."""
    from lrp_domains.data import example_sentences
    from lrp_domains.text.default_model import load_default_model

    model, tokenizer, labels = load_default_model(device=device)
    return model, tokenizer, labels, example_sentences()[:16]


def methods(model, tokenizer, labels, sentences) -> dict[str, Callable[[], object]]:
    """One callable per method, each explaining the predicted class of all sentences."""
    from lrp_domains.text import TextExplainer

    device = next(model.parameters()).device
    embeddings = model.get_input_embeddings()

    def gradient_x_input() -> torch.Tensor:
        batch = tokenizer(sentences, padding=True, return_tensors="pt").to(device)
        with torch.no_grad():
            words = embeddings(batch["input_ids"])
        leaf = words.detach().requires_grad_(True)
        logits = model(
            inputs_embeds=leaf, attention_mask=batch["attention_mask"], token_type_ids=batch.get("token_type_ids")
        ).logits
        explained = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
        (grad,) = torch.autograd.grad(explained, leaf)
        return (leaf.detach() * grad).sum(-1).cpu()

    found: dict[str, Callable[[], object]] = {"gradient x input": gradient_x_input}
    for name in COMPOSITES:
        explainer = TextExplainer(model, tokenizer, composite=name, labels=labels)
        found[name] = lambda explainer=explainer: explainer.explain(sentences, batch_size=16)
    with_ledger = TextExplainer(model, tokenizer, composite="attnlrp", labels=labels)
    found["attnlrp + ledger"] = lambda: with_ledger.explain(sentences, batch_size=16, ledger=True)
    return found


def run(device: str = "cpu", repeats: int = 10, memory: bool = True, threads: int | None = None) -> list[dict]:
    """Rows: method, milliseconds per batch, sentences per second, time and memory ratios (``threads``: torch's
    threads, for the memory probes too)."""
    if threads:
        torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", message="some explanations lost or gained")
    model, tokenizer, labels, sentences = setup(device)
    tokens = tokenizer(sentences, padding=True, return_tensors="pt")["input_ids"].shape[1]
    found = methods(model, tokenizer, labels, sentences)
    times = interleaved_times(found, repeats=repeats)
    peaks = {}
    if memory:
        for name in found:
            if device.startswith("cuda"):
                peaks[name] = peak_bytes_here(found[name], torch.device(device))
            else:
                peaks[name] = min(peak_bytes(__name__, "text", name, device, torch.get_num_threads()) for _ in range(2))
    rows = []
    for name in found:
        rows.append(
            {
                "method": name,
                "ms": 1000 * times[name],
                "sentences_per_s": len(sentences) / times[name],
                "time_ratio": times[name] / times["gradient x input"],
                "vs_without_ledger": times[name] / times["attnlrp"] if name == "attnlrp + ledger" else float("nan"),
                "peak_mb": peaks[name] / 2**20 if memory else float("nan"),
                "memory_ratio": peaks[name] / peaks["gradient x input"] if memory else float("nan"),
                "batch": len(sentences),
                "tokens": tokens,
            }
        )
    return rows


def print_table(rows: list[dict], device: str) -> None:
    """Print the rows (rich)."""
    from rich.console import Console
    from rich.table import Table

    first = rows[0]
    table = Table(
        title=f"bench text: default MiniLM sentiment model, batch {first['batch']} x {first['tokens']} "
        f"tokens, {device}, {torch.get_num_threads()} threads"
    )
    for column in ("method", "ms", "sentences/s", "time", "peak MB", "memory", "ledger"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        measured = row["peak_mb"] == row["peak_mb"]
        table.add_row(
            row["method"],
            f"{row['ms']:.1f}",
            f"{row['sentences_per_s']:.0f}",
            f"{row['time_ratio']:.2f}x",
            f"{row['peak_mb']:.1f}" if measured else "-",
            f"{row['memory_ratio']:.2f}x" if measured else "-",
            f"{row['vs_without_ledger']:.2f}x" if row["vs_without_ledger"] == row["vs_without_ledger"] else "",
        )
    Console().print(table)
    Console().print("  ledger: time of attnlrp + ledger over attnlrp (target: at most 1.10x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--peak", nargs=4, metavar=("CASE", "METHOD", "DEVICE", "THREADS"))
    args = parser.parse_args()
    if args.peak:
        _, method, device, threads = args.peak
        if int(threads):
            torch.set_num_threads(int(threads))
        warnings.filterwarnings("ignore", message="some explanations lost or gained")
        fn = methods(*setup(device))[method]
        print(json.dumps({"peak_bytes": peak_bytes_here(fn, torch.device(device))}))
