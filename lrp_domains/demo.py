"""``lrp-domains demo``: the whole toolkit on its three default models, offline, in one folder.

Text: the default sentiment model on the 16 example reviews (word heatmaps, corpus summary).
Sequences: the default CNN on the 40 example FASTA records (logos, seqlets with JASPAR matches,
tfmodisco-lite inputs). Genes: the default PBMC classifier on 700 real cells (top genes per
class, heatmap, marker recovery, overlap with differential expression). ``index.html`` links the
three reports; every page is self-contained (images embedded, no script, no network).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from lrp_domains.report import Page, Section, image, link, paragraph, table, token_heatmap

NOISY_LABELS = (
    "pbmc68k_reduced's bulk_labels are noisy: the 'Dendritic' cluster also carries classical-monocyte "
    "markers (LYZ, S100A8/9), so those genes do not separate monocytes from it."
)


NONE_FOUND = "none in the top 20"
NO_MARKER = "no marker in the model's genes"
MARKER_COLUMNS = (
    "markers: the class's known markers among the model's 765 genes; found_genes: those among its "
    "top 20; absent_genes: known markers the model lacks (not in its input genes, so never ranked)."
)


def _text(out: Path, progress: bool, section: Section) -> str:
    from lrp_domains.data import example_sentences
    from lrp_domains.report.text import write_text_report
    from lrp_domains.text import TextExplainer

    sentences = example_sentences()
    results = TextExplainer.default().explain(sentences, batch_size=16, progress=progress, ledger=True)
    written = write_text_report(results, out / "text", title="Text: sentiment attribution (AttnLRP)")
    summary = pd.read_csv(written["summary"])
    correct = sum(r.prediction == ("positive" if i % 2 == 0 else "negative") for i, r in enumerate(results))
    section.add(
        paragraph(
            f"The default sentiment model (MiniLM fine-tuned on SST-2, dev accuracy 0.899) on "
            f"{len(results)} example reviews ({correct} predicted as written); AttnLRP relevance for "
            "the predicted class, per word: red raises the score, blue lowers it."
        ),
        *(token_heatmap(r) for r in results[:6]),
        table(summary[summary["rank"] <= 5], caption="top words per predicted class"),
        link("text/report.html", "All texts, tables and the corpus summary"),
    )
    return f"text: {len(results)} reviews, {correct} predicted as written"


def _sequences(out: Path, progress: bool, section: Section) -> str:
    from lrp_domains.bio import SequenceExplainer, annotate_seqlets, call_seqlets
    from lrp_domains.data import datasets_dir
    from lrp_domains.report.sequences import write_sequence_report

    explanation = SequenceExplainer.default().explain(
        datasets_dir() / "example_sequences.fa", progress=progress, ledger=True
    )
    seqlets = annotate_seqlets(call_seqlets(explanation), motifs="JASPAR2024")
    written = write_sequence_report(
        explanation, out / "sequences", seqlets, title="Sequences: nucleotide relevance and motifs (genomics composite)"
    )
    matched = seqlets[seqlets.motif_name.fillna("") != ""]
    logos = sorted((out / "sequences" / "logos").glob("*.png"))[:2]
    counts = matched.motif_name.value_counts()
    section.add(
        paragraph(
            f"The default CNN (trained to detect 10 JASPAR motifs planted in random DNA) on "
            f"{len(explanation)} example sequences: {len(seqlets)} seqlets, {len(matched)} with a "
            "JASPAR match (p <= 1e-3)."
        ),
        *(image(path, f"{path.stem}: relevance of the observed bases") for path in logos),
        table(pd.DataFrame({"best JASPAR match": counts.index, "seqlets": counts.to_numpy()}), max_rows=12),
        link("sequences/report.html", "All sequences, seqlets, logos and the tfmodisco-lite inputs"),
    )
    del written
    return f"sequences: {len(explanation)} records, {len(seqlets)} seqlets, {len(matched)} matched to JASPAR"


def _genes(out: Path, progress: bool, section: Section) -> str:
    from lrp_domains.bio import ExpressionExplainer
    from lrp_domains.bio.cells.pbmc_mlp import PBMC_MARKERS, load_default_data
    from lrp_domains.report.genes import write_gene_report

    adata = load_default_data()
    explainer = ExpressionExplainer.default()
    explanation = explainer.explain(
        adata, target=adata.obs["bulk_labels"].astype(str).tolist(), progress=progress, ledger=True
    )
    # every known marker: those the model lacks (CD14, ...) are named on the page, not dropped unsaid
    written = write_gene_report(
        explanation,
        out / "genes",
        markers=PBMC_MARKERS,
        adata=adata,
        groupby="bulk_labels",
        title="Genes: PBMC cell types (epsilon rule)",
        notes=[NOISY_LABELS],
    )
    overlap = pd.read_csv(written["markers"], keep_default_na=False, na_values={"recall": ["", "nan"]})
    at20 = overlap[overlap.k == 20]
    shown = at20[["class", "markers", "found", "found_genes", "absent_genes"]].copy()
    shown["found_genes"] = [
        genes or (NONE_FOUND if n else NO_MARKER) for genes, n in zip(shown.found_genes, shown.markers)
    ]
    shown["absent_genes"] = shown.absent_genes.str.replace(",", ", ").replace("", "\u2013")
    recall = at20.found.sum() / max(at20.markers.sum(), 1)
    section.add(
        paragraph(
            f"The default PBMC classifier (MLP, held-out accuracy 0.852) on 700 real cells of "
            f"scanpy's pbmc68k_reduced, each explained for its own label: {recall:.0%} of the known "
            "markers are among their class's top 20 genes."
        ),
        paragraph(NOISY_LABELS, note=True),
        image(written["heatmap"], "Mean relevance of each class's top genes"),
        table(shown, caption="known markers in the top 20"),
        paragraph(MARKER_COLUMNS, note=True),
        link("genes/report.html", "All classes, bar charts, marker and differential-expression tables"),
    )
    return f"genes: 700 cells x 765 genes, {recall:.0%} of known markers in their class's top 20"


def run_demo(out: str | Path = "lrp-demo", progress: bool = True) -> Path:
    """Write the demo folder and return the path of its ``index.html``."""
    from rich.console import Console

    from lrp_domains.files.writing import OutputFolder

    # The demo folder is a report folder like the others: locked, our files listed, nothing of the
    # user's replaced; its three reports are folders of their own inside it.
    folder = OutputFolder(out, "demo")
    folder.expect(["index.html"])
    out = folder.root
    console = Console()
    console.soft_wrap = not console.is_terminal  # piped: whole lines, never wrapped at 80 columns
    page = Page(
        "lrp-domains demo",
        intro="Layer-wise Relevance Propagation on three default models, offline. "
        "Each section links to its full report.",
    )
    steps: list[tuple[str, Callable[[Path, bool, Section], str]]] = [
        ("Text", _text),
        ("Sequences", _sequences),
        ("Genes", _genes),
    ]
    lines = []
    for title, step in steps:
        start = time.perf_counter()
        if progress:
            console.print(f"[bold]{title}[/bold] ...")
        lines.append(f"{step(out, progress, page.section(title))} ({time.perf_counter() - start:.0f} s)")
    index = folder.write_text("index.html", page.render())
    folder.finish()
    for line in lines:
        console.print(line)
    console.print(f"open {index.resolve()}")
    return index
