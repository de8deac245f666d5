"""``lrp-domains bench variants``: do motif-breaking variants rank first, and is the lost motif named?

The genome and the variants come from :func:`lrp_domains.bench.data.variants.make_variant_benchmark`
(random chromosomes with planted JASPAR motifs; per motif one ``break`` SNV at its most informative
core base, one ``flank`` SNV 1-5 bases outside it and one ``far`` SNV more than half a window from
every motif). :func:`~lrp_domains.bio.explain_variants` explains both windows of every variant with
the default CNN; the same windows also get in-silico mutagenesis (ISM,
:func:`lrp_domains.evaluate.baselines.ism`). Per method:

- **AUROC** of ranking ``break`` against ``flank`` + ``far`` (and against ``far`` alone) by the
  size of the effect: ``|delta_score|`` (the model's output; the same for every composite),
  ``|delta_relevance|`` per composite, and for ISM ``|ISM of the REF window at the variant base|``
  (the output minus its mean over the three substitutions there);
- **mean |effect| per category**: ``far`` should be near zero;
- **named**: among ``break`` variants, the fraction whose ``ref_motif`` (the strongest seqlet
  overlapping the variant in the REF window, best JASPAR2024 match,
  :mod:`lrp_domains.bio.variants.motifs`) is the planted motif by name (``exact``), shares its JASPAR
  TF family (``family``: JASPAR holds paralogues such as CEBPE for CEBPB, ELK3 for ELK1), or is
  the planted motif when the library is the ten synthetic motifs only (``planted lib``); ``lost``:
  the fraction with ``motif_change == "lost"``; ``far named``: how often a ``far`` variant's REF
  window gets a name at all (false names). ISM's naming uses the same code on ISM's per-position
  scores of both windows.
- **cost** per variant, in gradients: seconds per variant over the seconds of one plain gradient of
  one window (both windows' gradients taken in batches of 128, divided by their number), timed in
  turns in one run (median of ``repeats``). ISM's cost counts its REF windows only (what the
  ranking needs; its naming needs the ALT windows too, twice that).

Set ``OMP_WAIT_POLICY=PASSIVE`` before torch starts and time with one thread (the CLI does both).
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lrp_domains.errors import InputError

#: Planted motifs per chromosome in the bench's genomes (the chromosomes grow in number with ``n``).
MOTIFS_PER_CHROM = 20
#: Bases per chromosome (room for :data:`MOTIFS_PER_CHROM` motifs with a far variant between each two).
CHROM_LENGTH = 6000


def benchmark(out_dir: str | Path, n: int, seed: int = 0) -> Any:
    """The bench's genome and variants with ``n`` planted motifs (``3 n`` variants) in ``out_dir``."""
    from lrp_domains.bench.data.variants import make_variant_benchmark

    return make_variant_benchmark(
        out_dir, n_chroms=-(-n // MOTIFS_PER_CHROM), chrom_length=CHROM_LENGTH, n_motifs=n, seed=seed
    )


def planted_library(release: str = "JASPAR2024") -> list:
    """The JASPAR motifs of :data:`lrp_domains.bench.data.synthetic.MOTIF_IDS` (all ten synthetic motifs, the
    planted ones and their decoys) from ``release``, as :func:`~lrp_domains.bio.annotate_seqlets` takes them."""
    from lrp_domains.bench.data.synthetic import MOTIF_IDS
    from lrp_domains.bio.motifs.seqlets import load_motifs

    return [m for m in load_motifs(release) if m.matrix_id in MOTIF_IDS]


def families(release: str = "JASPAR2024") -> dict[str, set[str]]:
    """JASPAR name -> its TF families (pyjaspar's ``tf_family``; a name in several matrices gets all)."""
    from lrp_domains.bio.motifs.seqlets import load_motifs

    found: dict[str, set[str]] = {}
    for motif in load_motifs(release):
        found.setdefault(motif.name, set()).update(getattr(motif, "tf_family", None) or [])
    return found


def labelled(table: pd.DataFrame, bench: Any) -> pd.DataFrame:
    """``table`` (one row per variant, an ``id`` column) with the benchmark's ``category`` and
    ``planted`` (motif name, ``""`` for far) columns; an error if a variant is missing or not ``ok``."""
    labels = bench.labels()
    if set(table["id"]) != set(labels) or (table.get("status", pd.Series(["ok"])) != "ok").any():
        raise RuntimeError("the explained table does not hold every benchmark variant with status ok")
    out = table.copy()
    out["category"] = [labels[i][0] for i in out["id"]]
    out["planted"] = [labels[i][1] for i in out["id"]]
    return out


def aurocs(scores: np.ndarray, category: np.ndarray) -> tuple[float, float]:
    """AUROC of ``|scores|`` for ``break`` against ``flank`` + ``far``, and against ``far`` alone."""
    from lrp_domains.evaluate.ground_truth import roc_auc as auroc

    size = np.abs(np.asarray(scores, dtype=np.float64))
    positive = category == "break"
    not_flank = category != "flank"
    return auroc(size, positive), auroc(size[not_flank], positive[not_flank])


def category_means(scores: np.ndarray, category: np.ndarray) -> dict[str, float]:
    """Mean ``|scores|`` per category."""
    size = np.abs(np.asarray(scores, dtype=np.float64))
    return {name: float(size[category == name].mean()) for name in ("break", "flank", "far")}


def naming(table: pd.DataFrame, family_of: dict[str, set[str]] | None = None) -> dict[str, float]:
    """From a labelled table with motif columns: among ``break`` variants the fraction named exactly
    (``ref_motif == planted``), by family (when ``family_of`` is given) and ``lost``; among ``far``
    variants the fraction with any ``ref_motif``."""
    broken = table[table["category"] == "break"]
    far = table[table["category"] == "far"]
    result = {
        "named": float((broken["ref_motif"] == broken["planted"]).mean()),
        "lost": float((broken["motif_change"] == "lost").mean()),
        "far_named": float((far["ref_motif"] != "").mean()),
    }
    if family_of is not None:
        same = [
            bool(family_of.get(name, set()) & family_of.get(planted, set())) or name == planted
            for name, planted in zip(broken["ref_motif"], broken["planted"])
        ]
        result["family"] = float(np.mean(same))
    return result


def ism_windows(model: torch.nn.Module, bench: Any, batch_size: int = 128) -> tuple[pd.DataFrame, list]:
    """ISM on the benchmark's windows: per variant ``id`` and ``ism`` (the REF window's ISM value at
    the variant base), and per variant both windows' ISM scores as
    :func:`~lrp_domains.bio.variants.motifs.variant_motifs` reads them (for naming)."""
    import pyfaidx

    from lrp_domains.bio.sequences.onehot import one_hot
    from lrp_domains.bio.variants.effects import read_vcf, variant_windows
    from lrp_domains.bio.variants.motifs import allele_windows
    from lrp_domains.evaluate.baselines import ism

    with pyfaidx.Fasta(str(bench.fasta), as_raw=True) as genome:
        records = list(read_vcf(bench.vcf))
        windows = [variant_windows(r, genome, bench.window) for r in records]
    dtype = next(model.parameters()).dtype
    per = [
        ism(model, one_hot(side).to(dtype), 0, batch_size=batch_size).relevance.sum(1).double()
        for side in ([w.ref for w in windows], [w.alt for w in windows])
    ]
    center = torch.as_tensor([w.center for w in windows])
    scores = pd.DataFrame({"id": [r.id for r in records], "ism": per[0][torch.arange(len(records)), center].numpy()})
    pairs = [
        allele_windows(per[0][k].numpy(), per[1][k].numpy(), w.ref, w.alt, w.center, r.ref, r.alt)
        for k, (r, w) in enumerate(zip(records, windows))
    ]
    return scores, pairs


def ism_named(scores: pd.DataFrame, pairs: list, motifs: Any) -> pd.DataFrame:
    """``scores`` (from :func:`ism_windows`) with the motif columns named from ISM's scores against ``motifs``."""
    from lrp_domains.bio.variants.motifs import variant_motifs

    return pd.concat([scores.reset_index(drop=True), pd.DataFrame(variant_motifs(pairs, motifs))], axis=1)


def _cost_functions(bench: Any, explainers: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """The timed calls: explain_variants per composite (without naming, and genomics with it), ISM of
    the REF windows, and the plain gradient of every window (both alleles)."""
    import pyfaidx

    from lrp_domains.bio.sequences.onehot import one_hot
    from lrp_domains.bio.variants.effects import explain_variants, read_vcf, variant_windows
    from lrp_domains.evaluate.baselines import gradient, ism

    with pyfaidx.Fasta(str(bench.fasta), as_raw=True) as genome:
        windows = [variant_windows(r, genome, bench.window) for r in read_vcf(bench.vcf)]
    dtype = next(model.parameters()).dtype
    ref = one_hot([w.ref for w in windows]).to(dtype)
    both = one_hot([s for w in windows for s in (w.ref, w.alt)]).to(dtype)
    calls: dict[str, Any] = {
        f"lrp {name}": (lambda e=e: explain_variants(e, bench.vcf, bench.fasta, motifs=None))
        for name, e in explainers.items()
    }
    calls["lrp genomics + naming"] = lambda: explain_variants(explainers["genomics"], bench.vcf, bench.fasta)
    calls["ism"] = lambda: ism(model, ref, 0, batch_size=128)
    calls["gradient"] = lambda: gradient(model, both, 0, batch_size=128)
    return calls


def run(
    n: int = 120,
    seed: int = 0,
    repeats: int = 3,
    quick: bool = False,
    threads: int | None = 1,
    release: str = "JASPAR2024",
) -> dict[str, Any]:
    """The benchmark with ``n`` planted motifs (``3 n`` variants): a row per method (AUROCs, mean
    |effect| per category, naming, cost in gradients) and the run's settings. ``quick``: 30 motifs,
    one timed repeat."""
    if n < 1 or repeats < 1:
        raise InputError("--n and --repeats must be at least 1")
    from lrp_domains.bench.measure import interleaved_times
    from lrp_domains.bio import SequenceExplainer, explain_variants

    warnings.filterwarnings("ignore", message="some explanations lost or gained")
    if quick:
        n, repeats = min(n, 30), 1
    if threads:
        torch.set_num_threads(threads)
    explainers = {name: SequenceExplainer.default(composite=name) for name in ("genomics", "epsilon")}
    model = explainers["genomics"].model
    family_of = families(release)
    library = planted_library(release)
    with tempfile.TemporaryDirectory() as folder:
        bench = benchmark(folder, n, seed)
        tables = {
            name: labelled(explain_variants(e, bench.vcf, bench.fasta, motifs=release), bench)
            for name, e in explainers.items()
        }
        planted_named = {
            name: naming(labelled(explain_variants(e, bench.vcf, bench.fasta, motifs=library), bench))
            for name, e in explainers.items()
        }
        ism_scores, ism_pairs = ism_windows(model, bench)
        ism_rows = labelled(ism_named(ism_scores, ism_pairs, release), bench)
        ism_planted = labelled(ism_named(ism_scores, ism_pairs, library), bench)
        times = interleaved_times(_cost_functions(bench, explainers, model), repeats=repeats, warmup=0 if quick else 1)
        n_variants = len(bench.variants)
    gradient_per_window = times["gradient"] / (2 * n_variants)

    def cost(key: str) -> float:
        return times[key] / n_variants / gradient_per_window

    rows = []
    first = tables["genomics"]
    category = first["category"].to_numpy()
    rows.append(_row("delta_score (model output)", first["delta_score"], category, None, None, math.nan))
    for name, table in tables.items():
        rows.append(
            _row(
                f"delta_relevance, LRP {name}",
                table["delta_relevance"],
                table["category"].to_numpy(),
                naming(table, family_of),
                planted_named[name],
                cost(f"lrp {name}"),
                cost("lrp genomics + naming") if name == "genomics" else math.nan,
            )
        )
    rows.append(
        _row(
            "ISM at the variant (REF window)",
            ism_rows["ism"],
            ism_rows["category"].to_numpy(),
            naming(ism_rows, family_of),
            naming(ism_planted),
            cost("ism"),
        )
    )
    return {
        "rows": rows,
        "n_motifs": n,
        "n_variants": n_variants,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "gradient_ms_per_window": 1e3 * gradient_per_window,
        "release": release,
    }


def _row(
    method: str,
    scores: pd.Series,
    category: np.ndarray,
    named: dict[str, float] | None,
    planted: dict[str, float] | None,
    cost: float,
    cost_named: float = math.nan,
) -> dict[str, Any]:
    auc, auc_far = aurocs(scores.to_numpy(), category)
    means = category_means(scores.to_numpy(), category)
    named = named or {}
    return {
        "method": method,
        "auroc": auc,
        "auroc_far": auc_far,
        **{f"mean_{k}": v for k, v in means.items()},
        "named": named.get("named", math.nan),
        "family": named.get("family", math.nan),
        "planted_lib": (planted or {}).get("named", math.nan),
        "lost": named.get("lost", math.nan),
        "far_named": named.get("far_named", math.nan),
        "cost": cost,
        "cost_named": cost_named,
    }


def print_table(result: dict[str, Any]) -> None:
    """Print the result of :func:`run` (rich)."""
    from rich.console import Console
    from rich.table import Table

    def fmt(value: float, spec: str = ".3f") -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)

    table = Table(
        title=f"bench variants: default CNN, {result['n_variants']} variants ({result['n_motifs']} planted "
        f"motifs: break / flank / far), seed {result['seed']}",
        caption=f"AUROC: break vs flank+far (vs far alone) by |effect|; named: break variants whose REF "
        f"motif is the planted one ({result['release']}: exact name, same TF family; planted lib: "
        f"the 10 synthetic motifs only); cost: seconds per variant / one plain gradient of one "
        f"window ({result['gradient_ms_per_window']:.3f} ms), {result['threads']} thread(s), "
        f"median of {result['repeats']} interleaved",
    )
    columns = (
        "method",
        "AUROC",
        "AUROC vs far",
        "|Δ| break",
        "|Δ| flank",
        "|Δ| far",
        "named exact",
        "named family",
        "named planted lib",
        "lost",
        "far named",
        "cost (grad)",
        "cost + naming",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in result["rows"]:
        table.add_row(
            row["method"],
            fmt(row["auroc"]),
            fmt(row["auroc_far"]),
            fmt(row["mean_break"]),
            fmt(row["mean_flank"]),
            fmt(row["mean_far"]),
            fmt(row["named"], ".2f"),
            fmt(row["family"], ".2f"),
            fmt(row["planted_lib"], ".2f"),
            fmt(row["lost"], ".2f"),
            fmt(row["far_named"], ".2f"),
            fmt(row["cost"], ".1f"),
            fmt(row["cost_named"], ".1f"),
        )
    Console(width=200).print(table)


if __name__ == "__main__":  # python -m lrp_domains.bench.genomics.variants
    print_table(run())
