#!/usr/bin/env python
"""Motifs from a DNA language model: a small Nucleotide-Transformer-like model's base relevance to
seqlets, JASPAR matches and tfmodisco-lite patterns, with the same report as the CNN's.

Steps, each one library call: the model (``train_dna_language_model`` on synthetic planted-motif
data, or the checkpoint folder ``--checkpoint`` written by a previous run: safetensors weights,
config and tokenizer), base relevance of the positive test sequences (``TokenSequenceExplainer``,
AttnLRP through the text machinery; hypothetical contributions from the same backward pass),
seqlets (``call_seqlets``) and their best JASPAR matches (``annotate_seqlets``), the standard
sequence report (``write_sequence_report``) and the motif report of ``workflows/bio/motif_report.py``
(motif table, planted-motif recovery), a dataset run of the ``dna-lm`` explainer and its
tfmodisco-lite export (``explain_dataset``, ``export_modisco``), ``modisco motifs`` when the
program is installed, and ``patterns.csv`` as in ``workflows/bio/modisco_motifs.py``.

    python workflows/bio/language_model_motifs.py --out runs/lm-motifs --checkpoint runs/nt-like   # trains once, ~5 min
    python workflows/bio/language_model_motifs.py --out runs/lm-quick --quick                     # ~1 min, smaller

Offline: the data are generated, JASPAR comes from pyjaspar's bundled database.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from lrp_domains.bench.data.synthetic import make_dataset, write_fasta
from lrp_domains.bio import annotate_seqlets, call_seqlets
from lrp_domains.bio.dna_lm.explainer import TokenSequenceExplainer
from lrp_domains.report.blocks import Page, paragraph, table
from lrp_domains.report.sequences import write_sequence_report

HERE = Path(__file__).resolve().parent
#: ``--quick`` plants only the two longest motifs (CTCF, REST): learnable in a minute.
QUICK_MOTIFS = ["MA0139.2", "MA0138.3"]


def _sibling(name: str) -> ModuleType:
    """A workflow script next to this one, imported by path (the workflows are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"_workflow_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_or_train(
    checkpoint: Path | None, train_n: int, epochs: int, layers: int, motif_ids: list[str] | None = None, log=print
) -> tuple[TokenSequenceExplainer, dict]:
    """The explainer of the checkpoint folder if it holds a model, else of a model trained now on
    ``train_n`` synthetic sequences planting ``motif_ids`` (default: all ten; seed 0; validation:
    1000 sequences, seed 1), saved there."""
    if checkpoint is not None and (checkpoint / "config.json").exists():
        explainer = TokenSequenceExplainer.from_pretrained(checkpoint)
        return explainer, dict(getattr(explainer.model.config, "training", {}) or {})
    from lrp_domains.bench.data.nt_like import train_dna_language_model

    model, tokenizer = train_dna_language_model(
        make_dataset(train_n, seed=0, motif_ids=motif_ids),
        epochs=epochs,
        layers=layers,
        validation=make_dataset(1000, seed=1, motif_ids=motif_ids),
        log=log,
    )
    model.config.training["motif_ids"] = motif_ids
    if checkpoint is not None:
        model.save_pretrained(checkpoint)  # safetensors
        tokenizer.save_pretrained(checkpoint)
    return TokenSequenceExplainer(model, tokenizer), dict(model.config.training)


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Run the workflow; returns the written paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, help="model folder: loaded if it holds a model, else written")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="two layers, 4000 training sequences planting only CTCF and REST (about 2 minutes)",
    )
    parser.add_argument("--train", type=int, help="training sequences (default 12000; 4000 with --quick)")
    parser.add_argument("--epochs", type=int, help="training epochs (default 6; 4 with --quick)")
    parser.add_argument("--test", type=int, help="test sequences, positives explained (default 2000; 600 quick)")
    parser.add_argument("--motifs", default="JASPAR2024", help="JASPAR release or a JASPAR/MEME file")
    parser.add_argument(
        "--modisco",
        default=shutil.which("modisco") or _venv_program("modisco"),
        help="path of the modisco program (tfmodisco-lite); skipped when absent",
    )
    parser.add_argument("--max-seqlets", type=int, default=2000)
    parser.add_argument("--logos", type=int, default=6, help="sequence logos drawn in the report")
    args = parser.parse_args(argv)
    train_n = args.train or (4000 if args.quick else 12000)
    epochs = args.epochs or (4 if args.quick else 6)
    test_n = args.test or (600 if args.quick else 2000)
    layers = 2 if args.quick else 4
    motif_ids = QUICK_MOTIFS if args.quick else None

    args.out.mkdir(parents=True, exist_ok=True)
    explainer, training = load_or_train(args.checkpoint, train_n, epochs, layers, motif_ids)
    motif_ids = training.get("motif_ids", motif_ids)  # a loaded model: the motifs it was trained on
    test = make_dataset(test_n, seed=11, motif_ids=motif_ids)
    positives = test.subset([i for i, label in enumerate(test.labels.tolist()) if label == 1])
    fasta = write_fasta(args.out / "positives.fa", positives)
    from lrp_domains.bench.data.nt_like import accuracy

    test_accuracy = accuracy(explainer.model, explainer.tokenizer, test)
    print(f"test accuracy {test_accuracy:.3f} on {len(test)} sequences")

    explanation = explainer.explain(fasta, target=1)
    seqlets = call_seqlets(explanation)
    if len(seqlets):
        seqlets = annotate_seqlets(seqlets, motifs=args.motifs)
    written = write_sequence_report(
        explanation,
        args.out,
        seqlets,
        logos=args.logos,
        title="Base relevance of a DNA language model (AttnLRP)",
        notes=[
            f"Nucleotide-Transformer-like model (6-mer tokens), test accuracy "
            f"{test_accuracy:.3f}; token relevance split equally over each token's "
            "bases, special tokens' relevance kept apart."
        ],
    )
    report = _sibling("motif_report")
    motifs = report.motif_table(seqlets) if "motif_id" in seqlets else pd.DataFrame()
    motifs.to_csv(args.out / "motifs.csv", index=False)
    written["motifs"] = args.out / "motifs.csv"
    recovery = report.planted_recovery(fasta, seqlets)
    recovery.to_csv(args.out / "planted.csv", index=False)
    written["planted"] = args.out / "planted.csv"
    found, named = float(recovery.found.mean()), float(recovery.named.mean())
    page = Page(
        "Motifs in the relevant regions, DNA language model",
        intro=f"{len(explanation.sequences)} positive test sequences, {len(seqlets)} seqlets; test accuracy "
        f"{test_accuracy:.3f}.",
    )
    page.section("Best JASPAR match of positive seqlets").add(table(motifs))
    per_motif = recovery.groupby("motif_name")[["found", "named"]].mean().reset_index()
    page.section("Planted motifs").add(
        paragraph(f"{len(recovery)} planted motifs: {found:.0%} found by a positive seqlet, {named:.0%} named."),
        table(per_motif),
    )
    written["motif_report"] = page.write(args.out / "motifs.html")
    print(f"planted motifs found {found:.2f}, named {named:.2f} ({len(recovery)} motifs)")

    # the same records as a dataset run of the dna-lm explainer, exported for tfmodisco-lite
    from lrp_domains.run import explain_dataset, export_modisco

    explain_dataset(explainer, fasta, args.out / "run", shard_size=200, progress=False, target=1)
    ohe, attr = export_modisco(args.out / "run", f"{args.out}/")
    written.update(ohe=ohe, attr=attr)
    summary = {
        "test_accuracy": test_accuracy,
        "test_sequences": len(test),
        "explained": len(positives),
        "seqlets": len(seqlets),
        "planted_found": found,
        "planted_named": named,
        "training": training,
    }
    if args.modisco:
        result = args.out / "modisco.h5"
        width = np.load(ohe, mmap_mode="r").shape[2]
        subprocess.run(
            [
                args.modisco,
                "motifs",
                "-s",
                str(ohe),
                "-a",
                str(attr),
                "-n",
                str(args.max_seqlets),
                "-w",
                str(width),
                "-o",
                str(result),
            ],
            check=True,
            capture_output=True,
        )
        written["modisco"] = result
        modisco = _sibling("modisco_motifs")
        patterns = modisco.pattern_table(result, modisco.known_motifs(None))
        patterns.to_csv(args.out / "patterns.csv", index=False)
        written["patterns"] = args.out / "patterns.csv"
        summary["patterns"] = len(patterns)
        print(patterns.to_string(index=False))
    else:
        print(
            f"modisco (tfmodisco-lite) is not installed: pip install modisco-lite, then run\n  modisco motifs -s "
            f"{ohe} -a {attr} -n {args.max_seqlets} -o {args.out}/modisco.h5"
        )
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    written["summary"] = args.out / "summary.json"
    for name, path in written.items():
        print(f"{name}: {path}")
    return written


def _venv_program(name: str) -> str | None:
    """``name`` next to this Python (a virtual environment's ``bin``), if it is there."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else None


if __name__ == "__main__":
    main()
