"""The sequence report: relevance arrays, tables, seqlets with motif matches, logos, one page.

Takes one :class:`~lrp_domains.bio.SequenceExplanation` or the groups of
:meth:`~lrp_domains.bio.SequenceExplainer.explain_groups` (records of different lengths), and
never writes padding: tables are per record, and the tfmodisco arrays are per length.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lrp_domains.bio.motifs.run_seqlets import write_seqlets_bed
from lrp_domains.bio.motifs.seqlets import annotate_seqlets, call_seqlets
from lrp_domains.bio.sequences.explainer import SequenceExplanation
from lrp_domains.core.engine.finite import NonFiniteOutputs
from lrp_domains.core.engine.ledger import LedgerRows
from lrp_domains.files.writing import OutputFolder
from lrp_domains.report.blocks import Page, figure, logo, paragraph, plain_text, table
from lrp_domains.report.ledger import layer_figure, mean_sentence, sentence, sequence_shares

DELTA_NOTE = (
    "delta is the explained value minus the summed relevance: what the layers' biases absorbed (each bias "
    "takes its share of the relevance passing through its layer) and what the gamma rule moves (it favours "
    "positive contributions, so it does not conserve exactly). It is reported, not corrected."
)


def _groups(explanation: SequenceExplanation | Sequence[SequenceExplanation]) -> list[SequenceExplanation]:
    given = list(explanation) if isinstance(explanation, (list, tuple)) else [explanation]
    return [group for item in given for group in item.by_length()]


def _not_finite(groups: list[SequenceExplanation]) -> list[str]:
    """The ids of the records whose explained value or relevance is NaN or Inf."""
    bad = []
    for group in groups:
        explained = group.explained.double().cpu().numpy()
        per_position = group.per_position.double().cpu().numpy()
        bad += [
            name
            for name, value, row, length in zip(group.ids, explained, per_position, group.lengths)
            if not (np.isfinite(value) and np.isfinite(row[:length]).all())
        ]
    return bad


def _few(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(map(str, names[:limit]))
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def write_sequence_report(
    explanation: SequenceExplanation | Sequence[SequenceExplanation],
    out_dir: str | Path,
    seqlets: pd.DataFrame | None = None,
    logos: int = 6,
    title: str = "Sequence relevance",
    notes: Sequence[str] = (),
    motifs: Any = None,
) -> dict[str, Path]:
    """Write ``ohe.npz``/``attr.npz`` (tfmodisco-lite layout; ``ohe_L<length>.npz``... per length
    when records differ in length), ``relevance.parquet`` (id, position, base, relevance),
    ``per_position.tsv`` (a line per record, as long as the record), ``seqlets.csv`` and
    ``seqlets.bed``, ``logos/*.png`` for the sequences with the largest explained values, and
    ``report.html``. ``seqlets``: from :func:`~lrp_domains.bio.call_seqlets` (called here when
    None, and annotated with ``motifs`` when given).

    Records whose explained value or relevance is NaN or Inf are named in a warning and a note,
    and left out of the seqlets, the summary's ranking, the logos and the tfmodisco arrays (the
    per-record tables keep them); when every record is, a
    :class:`~lrp_domains.core.engine.finite.NonFiniteOutputs` error is raised before anything is
    written."""
    groups = _groups(explanation)
    records = [(g, k) for g in groups for k in range(len(g))]
    bad = _not_finite(groups)
    if records and len(bad) == len(records):
        raise NonFiniteOutputs(len(records), "sequences")
    if bad:
        message = (
            f"{len(bad)} of {len(records)} sequences have a NaN or Inf explained value or relevance: "
            f"{_few(bad)}; they are left out of the seqlets, the ranking, the logos and the tfmodisco "
            "arrays (the per-record tables keep them)"
        )
        warnings.warn(message, stacklevel=3)
        notes = [*notes, message + "."]
    if seqlets is None:
        seqlets = call_seqlets(groups)
        if motifs is not None and len(seqlets):
            seqlets = annotate_seqlets(seqlets, motifs=motifs)
    folder = OutputFolder(out_dir, "sequence-report")
    written: dict[str, Path] = {}
    _write_arrays(groups, folder, written, set(bad))
    with folder.atomic("relevance.parquet") as temporary:
        pd.concat([g.to_frame() for g in groups], ignore_index=True).to_parquet(temporary, index=False)
    written["relevance"] = folder.root / "relevance.parquet"
    written["seqlets"] = folder.write_text("seqlets.csv", seqlets.to_csv(index=False))
    with folder.atomic("seqlets.bed") as temporary:  # genome coordinates when the ids are regions
        write_seqlets_bed(seqlets, temporary)
    written["bed"] = folder.root / "seqlets.bed"
    lines = []
    for group in groups:
        for row, length in zip(group.per_position.double().numpy(), group.lengths):
            lines.append("\t".join(f"{v:.6g}" for v in row[:length]))
    written["per_position"] = folder.write_text("per_position.tsv", "\n".join(lines) + "\n")

    summary = pd.DataFrame(
        {
            "id": [g.ids[k] for g, k in records],
            "length": [g.lengths[k] for g, k in records],
            "explained": [float(g.explained[k]) for g, k in records],
            "relevance": [float(g.per_position[k].sum()) for g, k in records],
            "delta": [float(g.delta[k]) for g, k in records],
        }
    )
    counts = seqlets["id"].value_counts() if len(seqlets) else pd.Series(dtype=int)
    summary["seqlets"] = [int(counts.get(name, 0)) for name in summary.id]
    where = [sequence_shares(g) for g in groups]
    ledgered = all(w is not None for w in where)
    if ledgered:  # where delta went, instead of a bare delta (the files keep delta)
        words = {g.ids[k]: sentence(parts, "the logit") for g, w in zip(groups, where) for k, parts in enumerate(w)}
        summary["where the explained value went"] = summary.id.map(words)
        summary = summary.drop(columns="delta")
    left_out = summary.id.isin(set(bad))
    summary = pd.concat([summary[~left_out].sort_values("explained", ascending=False), summary[left_out]])
    left_out = summary.id.isin(set(bad))
    composite = groups[0].composite
    page = Page(title, intro=f"{len(records)} sequences, composite {composite}.")
    section = page.section("Sequences")
    if ledgered:
        usable = [parts for g, w in zip(groups, where) for k, parts in enumerate(w) if g.ids[k] not in set(bad)]
        said = f"Where it went, mean over the sequences: {mean_sentence(usable, 'the logit')}."
    else:
        deltas = pd.Series([float(g.delta[k]) for g, k in records], index=[g.ids[k] for g, k in records])
        explained = pd.Series([float(g.explained[k]) for g, k in records], index=deltas.index)
        ratio = (deltas.abs() / explained.abs().clip(lower=1e-12))[~deltas.index.isin(set(bad))].median()
        said = f"Median |delta| / |explained| over the sequences: {ratio:.2f}. {DELTA_NOTE}"
    section.add(
        paragraph(f"Relevance is seeded with the explained output (the logit) of each sequence. {said}"),
        *(paragraph(n, note=True) for n in notes),
        table(summary, max_rows=30),
    )
    if ledgered:
        rows = LedgerRows.concatenate([g.ledger_rows for g in groups if g.ledger_rows is not None])
        fig = layer_figure(rows, [float(g.explained[k]) for g, k in records])
        with folder.atomic("ledger.png") as temporary:
            chart = figure(
                fig, "What each layer absorbed (positive) or created (negative), mean over the sequences", temporary
            )
        written["ledger"] = folder.root / "ledger.png"
        page.section("Where the relevance went").add(
            paragraph(
                "Each layer's share is the relevance entering it minus the relevance leaving it (the "
                "ledger, recorded in the same backward pass): biases and stabilizers absorb relevance, the "
                "gamma and z-box rules create some; numerical is what no layer accounts for."
            ),
            chart,
        )
    logo_section = page.section("Logos")
    logo_section.add(
        paragraph("One letter per position: the relevance of the observed base (the position's total).", note=True)
    )
    where = {g.ids[k]: (g, k) for g, k in records}
    with plain_text():
        for name in summary.id[~left_out][:logos]:
            group, index = where[name]
            mine = seqlets[seqlets["id"] == name] if len(seqlets) else seqlets
            if len(mine):
                best = mine.sort_values("relevance", ascending=False).iloc[0]
                start, end = max(0, int(best.start) - 15), int(best.end) + 15
            else:
                start, end = 0, min(group.lengths[index], 60)
            file = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            with folder.atomic(f"logos/{file}.png") as temporary:
                logo_section.add(
                    logo(
                        group,
                        index,
                        start,
                        end,
                        f"{name}: relevance of the observed bases, positions {start}-{min(end, group.lengths[index])}",
                        temporary,
                    )
                )
    written["logos"] = folder.root / "logos"
    motif_section = page.section("Seqlets and motif matches")
    if len(seqlets):
        shown = seqlets.drop(columns=[c for c in ("threshold", "motifs_scanned") if c in seqlets]).copy()
        threshold = float(seqlets["threshold"].iloc[0]) if "threshold" in seqlets else float("nan")
        motif_section.add(
            paragraph(
                f"{len(seqlets)} seqlets: windows whose relevance exceeds the 99% quantile of a "
                f"position-shuffled null ({threshold:.3g}; see lrp_domains.bio.motifs.seqlets)."
            ),
            table(shown, max_rows=40),
        )
        if "motif_name" in seqlets:
            matched = seqlets[seqlets.motif_name.fillna("") != ""].motif_name.value_counts()
            if len(matched):
                motif_section.add(
                    table(
                        pd.DataFrame({"motif": matched.index, "seqlets": matched.to_numpy()}),
                        caption="best JASPAR match (p <= 1e-3) per seqlet",
                    )
                )
    else:
        motif_section.add(paragraph("No seqlet passed the threshold."))
    written["report"] = folder.write_text("report.html", page.render())
    folder.finish()
    return written


def _write_arrays(
    groups: list[SequenceExplanation], folder: OutputFolder, written: dict[str, Path], left_out: set[str] = frozenset()
) -> None:
    """tfmodisco-lite's ``ohe.npz``/``attr.npz``: one pair, or one pair per length (no padding),
    without the records in ``left_out`` (NaN or Inf would poison tfmodisco's statistics)."""
    lengths = sorted({length for g in groups for length in g.lengths})
    for group in groups:
        keep = [k for k, name in enumerate(group.ids) if name not in left_out]
        suffix = "" if len(lengths) == 1 else f"_L{group.lengths[0]}"
        for key, name, values in (
            ("ohe", f"ohe{suffix}.npz", group.onehot),
            ("attr", f"attr{suffix}.npz", group.hypothetical),
        ):
            with folder.atomic(name) as temporary, temporary.open("wb") as handle:
                np.savez_compressed(handle, values[keep].float().cpu().numpy())
            written[key if len(lengths) == 1 else f"{key}{suffix}"] = folder.root / name
