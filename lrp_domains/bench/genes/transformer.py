"""``lrp-domains bench genes``, gene-transformer rows: a tiny Geneformer-style BERT on PBMCs, by method.

The model (:func:`lrp_domains.bio.cells.gene_transformer.train_gene_transformer`, trained once on
``pbmc68k_reduced`` and cached under ``cache_dir``) reads each cell as ``[CLS]`` plus its top
``max_genes`` genes by median-normalised expression. For each method, relevance of every gene
token for each cell's true class (``bulk_labels``) on all 700 cells, then as in
:mod:`lrp_domains.bench.genes.mlp`:

- markers@20 / markers@50: recall of the canonical PBMC markers in each class's top genes (mean
  relevance over the class's cells; genes outside a cell's sentence count 0), averaged over classes;
- DE@50: overlap of each class's top 50 with its top 50 Wilcoxon DE genes (scanpy, on ``.X``);
- deletion: gene tokens removed from the sentence (the rest move up a rank, as Geneformer's in
  silico deletion), most relevant first and in a random order, at 0, 1, 2, 5, 10 and 20% of each
  cell's sentence; the true-class probability; ABC = area between the random and the
  most-relevant-first curves. The fractions are of the sentence's tokens (not of all 765 genes,
  as for the MLP), so the ABCs of the two models are not on one scale;
- seconds (fastest of ``repeats`` runs, methods interleaved A B A B in one process) and cost in
  gradients (forward + backward passes per cell).

Methods: ``attnlrp`` and ``cp-lrp`` (token relevance: all of a token's embeddings, see
:mod:`lrp_domains.bio.cells.gene_transformer`), ``attnlrp (gene embedding)`` (the same pass, gene
embedding only), gradient x input and integrated gradients on the gene embeddings
(:mod:`lrp_domains.evaluate.text`, zero-embedding baseline), random.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lrp_domains.bench.cache import cache_dir as bench_cache
from lrp_domains.bench.methods import gradients, select
from lrp_domains.evaluate import area, curve

FRACTIONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
METHODS = select("attnlrp", "cp-lrp", "attnlrp (gene embedding)", "gradient x input", "integrated gradients", "random")


def load_or_train(
    cache_dir: str | Path | None = None,
    seed: int = 0,
    max_genes: int = 128,
    epochs: int = 30,
    log: Callable[[str], None] | None = None,
    values: bool = False,
):
    """The PBMC gene transformer from ``cache_dir`` (default: the benches' cache folder,
    :func:`lrp_domains.bench.cache.cache_dir`; trained and saved there on the first call); ``values``:
    the scGPT-style variant with value-bin embeddings."""
    from lrp_domains.bio.cells.gene_transformer import TrainedGeneTransformer, train_gene_transformer
    from lrp_domains.bio.cells.pbmc_mlp import load_default_data

    root = Path(cache_dir) if cache_dir is not None else bench_cache()
    folder = root / f"pbmc-gene-transformer-g{max_genes}-e{epochs}-s{seed}{'-values' if values else ''}"
    if (folder / "model.json").is_file():
        return TrainedGeneTransformer.load(folder)
    if log is not None:
        log(f"training the gene transformer (cached in {folder})")
    trained = train_gene_transformer(
        load_default_data(), seed=seed, max_genes=max_genes, epochs=epochs, dropout=0.3, lr=3e-3, log=log, values=values
    )
    trained.save(folder)
    return trained


def _remove(sentences, removed: torch.Tensor):
    """``sentences`` without the removed tokens: the others move up (rank order kept), padding at the end."""
    from lrp_domains.bio.cells.gene_tokens import CellSentences

    keep = sentences.attention_mask.bool() & ~removed
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    ids = torch.where(keep, sentences.input_ids, 0).gather(1, order)
    values = None if sentences.value_ids is None else torch.where(keep, sentences.value_ids, 0).gather(1, order)
    return CellSentences(ids, keep.gather(1, order).long(), values, sentences.truncated)


def run(
    cache_dir: str | Path | None = None,
    seed: int = 0,
    repeats: int = 2,
    ig_steps: int = 32,
    batch_size: int = 64,
    max_genes: int = 128,
    epochs: int = 30,
    log: Callable[[str], None] | None = None,
    values: bool = False,
) -> list[dict]:
    """Measure every method on the cached (or freshly trained) gene transformer; one row per method
    (``method``, ``markers@20``, ``markers@50``, ``DE@50``, ``deletion ABC``, ``seconds``,
    ``gradients``, ``time_ratio`` to gradient x input (to attnlrp for ``values``), and the model's
    held-out accuracy). ``values``: the scGPT-style variant; LRP and random only (the embedding
    gradients of :mod:`lrp_domains.evaluate.text` do not pass value bins)."""
    import warnings

    from lrp_domains.bench.genes.mlp import _class_tops, de_tops
    from lrp_domains.bio.cells.gene_transformer import GeneTransformerExplainer, predict, tokens_to_genes
    from lrp_domains.bio.cells.pbmc_mlp import load_default_data, markers_in
    from lrp_domains.evaluate import text as T

    warnings.filterwarnings("ignore", message="some explanations lost or gained")
    threads = torch.get_num_threads()  # scanpy's rank_genes_groups changes torch's thread count: restored below
    trained = load_or_train(cache_dir, seed, max_genes, epochs, log, values)
    adata = load_default_data()
    torch.set_num_threads(threads)
    genes = trained.vocab.genes
    explainers = {
        name: GeneTransformerExplainer(trained.model, trained.vocab, trained.classes, composite=name)
        for name in ("attnlrp", "cp-lrp")
    }
    sentences, cells = explainers["attnlrp"].sentences(adata)
    labels = pd.Series(adata.obs["bulk_labels"].astype(str).to_numpy(), index=cells)
    target = torch.tensor([trained.classes.index(c) for c in labels])
    special = sentences.input_ids == trained.vocab.cls_id
    encoded = T.EncodedTexts(sentences.input_ids, sentences.attention_mask, None, special)
    model = trained.model
    word = explainers["attnlrp"].text._word_source
    found: dict[str, Callable[[], dict[str, torch.Tensor]]] = {
        name: (lambda name=name: _lrp(explainers[name], sentences, target, batch_size, word))
        for name in ("attnlrp", "cp-lrp")
    }
    if not values:
        found["gradient x input"] = lambda: {"gradient x input": T.gradient_x_input(model, encoded, target, batch_size)}
        found["integrated gradients"] = lambda: {
            "integrated gradients": T.integrated_gradients(
                model, encoded, target, steps=ig_steps, batch_size=batch_size
            )
        }
    found["random"] = lambda: {"random": T.random_tokens(encoded, seed=seed + 1)}
    cost = {name: gradients(name, ig_steps) for name in METHODS}
    seconds: dict[str, float] = {}
    scores: dict[str, torch.Tensor] = {}
    for _ in range(repeats):  # interleaved: A B A B
        for name, method in found.items():
            start = time.perf_counter()
            result = method()
            elapsed = time.perf_counter() - start
            for key, value in result.items():
                seconds[key] = min(seconds.get(key, float("inf")), elapsed)
                scores[key] = value.double()
            if log is not None:
                log(f"{name}: {elapsed:.1f} s")

    markers = {c: m for c, m in markers_in(genes).items() if m and c in set(labels)}
    with warnings.catch_warnings():  # scanpy's log fold changes of all-zero genes: its noise
        warnings.simplefilter("ignore", RuntimeWarning)
        de = de_tops(adata, "bulk_labels", 50)
    torch.set_num_threads(threads)
    valid = sentences.attention_mask.bool() & ~special

    def probability(perturbed) -> torch.Tensor:
        return predict(model, perturbed, batch_size=batch_size).double().softmax(-1).gather(1, target[:, None])[:, 0]

    random_order = T.random_tokens(encoded, seed=seed + 2)
    random_curve = curve(probability, sentences, random_order, _remove, fractions=FRACTIONS, valid=valid)
    rows = []
    for name in [m for m in METHODS if m in scores]:
        token_scores = scores[name][:, : sentences.input_ids.shape[1]]
        frame = pd.DataFrame(tokens_to_genes(sentences.input_ids, token_scores, len(genes)), index=cells, columns=genes)
        tops = {n: _class_tops(frame, labels, n) for n in (20, 50)}
        recall = {n: np.mean([len(set(m) & set(tops[n][c])) / len(m) for c, m in markers.items()]) for n in (20, 50)}
        overlap = np.mean([len(set(tops[50][c]) & set(de[c])) / 50 for c in tops[50] if c in de])
        padded = torch.nn.functional.pad(token_scores, (0, sentences.input_ids.shape[1] - token_scores.shape[1]))
        morf = curve(probability, sentences, padded, _remove, fractions=FRACTIONS, valid=valid)
        abc = (area(random_curve, FRACTIONS) - area(morf, FRACTIONS)).mean().item()
        rows.append(
            {
                "method": name,
                "markers@20": float(recall[20]),
                "markers@50": float(recall[50]),
                "DE@50": float(overlap),
                "deletion ABC": abc,
                "seconds": seconds[name],
                "gradients": cost[name],
                "test_accuracy": trained.metrics.get("test_accuracy"),
                "test_balanced_accuracy": trained.metrics.get("test_balanced_accuracy"),
                "threads": threads,
                "values": values,
            }
        )
    base = seconds["gradient x input" if "gradient x input" in seconds else "attnlrp"]
    for row in rows:
        row["time_ratio"] = row["seconds"] / base
    return rows


def _lrp(explainer, sentences, target: torch.Tensor, batch_size: int, word: str) -> dict[str, torch.Tensor]:
    """Token relevance (all embeddings) and the gene embedding's alone, from one pass."""
    tokens = explainer.explain_tokens(sentences, target=target, batch_size=batch_size)
    found = {explainer.composite.name: tokens.relevance}
    if explainer.composite.name == "attnlrp":
        found["attnlrp (gene embedding)"] = tokens.sources[word]
    return found


def print_table(rows: list[dict]) -> None:
    """Print the rows (rich)."""
    from rich.console import Console
    from rich.table import Table

    first = rows[0] if rows else {}
    style = "scGPT-style, value bins" if first.get("values") else "Geneformer-style"
    table = Table(
        title=f"bench genes: PBMC gene transformer ({style}, tiny BERT), 700 cells, true class, "
        f"held-out accuracy {first.get('test_accuracy', float('nan')):.2f} (balanced "
        f"{first.get('test_balanced_accuracy', float('nan')):.2f}), {first.get('threads')} threads"
    )
    for column in (
        "method",
        "markers@20",
        "markers@50",
        "DE@50",
        "deletion ABC",
        "seconds",
        "gradients",
        "x attnlrp" if first.get("values") else "x gradient x input",
    ):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        table.add_row(
            row["method"],
            f"{row['markers@20']:.2f}",
            f"{row['markers@50']:.2f}",
            f"{row['DE@50']:.2f}",
            f"{row['deletion ABC']:.3f}",
            f"{row['seconds']:.2f}",
            str(row["gradients"]),
            f"{row['time_ratio']:.2f}x",
        )
    Console(width=max(Console().width, 130)).print(table)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None, help="default: the benches' cache folder")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--values", action="store_true", help="the scGPT-style variant (value-bin embeddings)")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    print_table(
        run(arguments.cache_dir, seed=arguments.seed, repeats=arguments.repeats, log=print, values=arguments.values)
    )
