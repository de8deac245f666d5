"""``lrp-domains bench concepts``: latent relevance (Concept Relevance Propagation) on the default
sequence CNN, cost and motif naming, in one run (issue #16).

**Cost.** For layers ``"0"`` (first Conv1d, 64 filters) and ``"4"`` (second Conv1d, 64 channels)
and one batch of ``batch`` positive synthetic test sequences: the median time (interleaved
repeats) of one plain gradient of the batch, of one LRP pass (``genomics``), and of
:func:`~lrp_domains.core.latent.explain_concepts` with ``channels=None`` (the input relevance
conditioned on each of the 64 channels: per filter slice at the input layer, else one backward per
channel on the first pass's graph) and of its replay strategy (``channel_batch=8``); the ratio to the gradient,
against the budget of 64 gradients (one per channel), and per channel. Reference: the naive way,
64 full LRP passes, each with the gradient at the layer's output masked to one channel by a
tensor hook (:func:`naive_conditional`).

**Motif naming.** On ``n`` positive test sequences: the 64 first-layer filter concepts
(:func:`~lrp_domains.bio.concepts.filters.explain_filters`, ``top=None``) and the common baseline,
the filters' weights read as PPMs (:func:`~lrp_domains.bio.concepts.filters.filter_weight_matches`),
each matched to JASPAR 2024 CORE vertebrates (TOMTOM statistics, E <= 0.05). Counted: the planted
motifs (:data:`~lrp_domains.bench.data.synthetic.JASPAR_COUNTS`, 10) named exactly (a filter's best match
has the planted name, case-insensitive) and the planted TF families named (JASPAR's ``tf_family``;
CTCF and YY1 share one, so 9), and how many filters match anything. Chance control: the same
matching on the same PPMs with their columns shuffled (seeded; ``shuffles`` times, averaged).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

#: Layers of the default CNN whose channels are conditioned on in the cost table.
COST_LAYERS = ("0", "4")


def positive_batch(n: int, whole: bool = False) -> torch.Tensor:
    """The first ``n`` positive sequences of the synthetic test split, ``(n, 4, 200)`` (``whole``:
    all of them)."""
    from lrp_domains.bench.data.cnn import benchmark_data

    data = benchmark_data("test")
    onehot = data.onehot[data.labels == 1]
    if whole:
        return onehot
    if not 1 <= n <= len(onehot):
        raise ValueError(f"n must be in 1..{len(onehot)} (positive test sequences), got {n}")
    return onehot[:n]


def naive_conditional(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    layer: str,
    channels: Sequence[int],
    target: Any = None,
    composite: Any = "genomics",
) -> torch.Tensor:
    """``(N, len(channels), *input_shape)``: one full LRP pass per channel, the gradient arriving at
    ``layer``'s output zeroed outside the channel by a tensor hook (the naive way to condition)."""
    from lrp_domains.core.engine.attribution import explain

    module = dict(model.named_modules())[layer]
    out = []
    for channel in channels:

        def hook(_module, _args, output, channel=channel):
            def keep_one(grad: torch.Tensor) -> torch.Tensor:
                masked = torch.zeros_like(grad)
                masked[:, channel] = grad[:, channel]
                return masked

            if output.requires_grad:
                output.register_hook(keep_one)

        handle = module.register_forward_hook(hook)
        try:
            out.append(explain(model, inputs, target, composite, check_delta=False).relevance)
        finally:
            handle.remove()
    return torch.stack(out, 1)


#: Method names of the cost table.
GRADIENT, LRP, CONDITIONAL, NAIVE = "gradient", "LRP, one pass", "conditional, all channels", "naive, masked LRP passes"
REPLAY = "conditional, all channels, replay (channel_batch 8)"


def cost_methods(
    model: torch.nn.Module, inputs: torch.Tensor, layer: str, composite: Any = "genomics"
) -> dict[str, Callable[[], object]]:
    """The timed callables of one layer: gradient, one LRP pass, all channels conditioned, naive."""
    from lrp_domains import evaluate as E
    from lrp_domains.core.engine.attribution import explain
    from lrp_domains.core.latent import explain_concepts

    channels = dict(model.named_modules())[layer].out_channels
    return {
        GRADIENT: lambda: E.gradient(model, inputs).relevance,
        LRP: lambda: explain(model, inputs, None, composite, check_delta=False).relevance,
        CONDITIONAL: lambda: explain_concepts(model, inputs, layer, None, None, composite).conditional,
        REPLAY: lambda: explain_concepts(model, inputs, layer, None, None, composite, channel_batch=8).conditional,
        NAIVE: lambda: naive_conditional(model, inputs, layer, range(channels), None, composite),
    }


def run_cost(
    batch: int = 64,
    repeats: int = 5,
    naive_repeats: int = 3,
    layers: Sequence[str] = COST_LAYERS,
    threads: int | None = None,
    warmup: int = 2,
) -> list[dict]:
    """Rows per layer and method: median ms, ratio to the gradient, budget (channels), per channel.

    Gradient, one LRP pass and the batched conditional relevance are timed in turns (``repeats``
    medians, after ``warmup`` untimed turns); the naive loop in turns with the gradient and one LRP
    pass, ``naive_repeats`` times (after at most one untimed turn), its ratio to the gradient of
    those same turns, and ``naive_vs_lrp``: its time over ``channels`` LRP passes of those turns."""
    from lrp_domains.bench.measure import interleaved_times
    from lrp_domains.bio.sequences.synthetic_cnn import load_default_sequence_model

    warnings.filterwarnings("ignore", message="some explanations lost or gained")
    if threads:
        torch.set_num_threads(threads)
    model = load_default_sequence_model()
    inputs = positive_batch(batch).to(next(model.parameters()).dtype)
    rows = []
    for layer in layers:
        methods = cost_methods(model, inputs, layer)
        naive = methods.pop(NAIVE)
        times = interleaved_times(methods, repeats=repeats, warmup=warmup)
        naive_times = interleaved_times(
            {GRADIENT: methods[GRADIENT], LRP: methods[LRP], NAIVE: naive}, repeats=naive_repeats, warmup=min(warmup, 1)
        )
        channels = dict(model.named_modules())[layer].out_channels
        common = {"layer": layer, "budget": channels, "batch": batch, "channels": channels}
        for name, seconds in times.items():
            ratio = seconds / times[GRADIENT]
            rows.append(
                {
                    **common,
                    "method": name,
                    "ms": 1000 * seconds,
                    "ratio": ratio,
                    "per_channel": ratio / channels,
                    "repeats": repeats,
                }
            )
        ratio = naive_times[NAIVE] / naive_times[GRADIENT]
        rows.append(
            {
                **common,
                "method": NAIVE,
                "ms": 1000 * naive_times[NAIVE],
                "ratio": ratio,
                "per_channel": ratio / channels,
                "repeats": naive_repeats,
                "naive_vs_lrp": naive_times[NAIVE] / (channels * naive_times[LRP]),
            }
        )
    return rows


def _families(library: list) -> dict[str, set[str]]:
    return {motif.matrix_id: set(getattr(motif, "tf_family", None) or []) for motif in library}


def _named(frame, library: list) -> dict[str, Any]:
    """Planted motifs and families named by the ``best_match`` / ``match_id`` columns of ``frame``."""
    from lrp_domains.bench.data.synthetic import JASPAR_COUNTS

    families = _families(library)
    planted = {name.upper(): matrix_id for matrix_id, (name, _) in JASPAR_COUNTS.items()}
    planted_families = {
        family: sorted(name for name, m in planted.items() if family in families.get(m, ()))
        for m in planted.values()
        for family in families.get(m, ())
    }
    matched = frame[frame["match_id"].astype(str) != ""]
    names = {str(name).upper() for name in matched["best_match"]}
    found_families = set().union(*[families.get(m, set()) for m in matched["match_id"]]) if len(matched) else set()
    exact = sorted(set(planted) & names)
    named_families = sorted(f for f in planted_families if f in found_families)
    on_planted = int(sum(1 for name in matched["best_match"] if str(name).upper() in planted))
    return {
        "planted": len(exact),
        "planted_names": exact,
        "families": len(named_families),
        "family_names": named_families,
        "planted_families": len(planted_families),
        "planted_total": len(planted),
        "filters_matched": len(matched),
        "filters_on_planted": on_planted,
    }


def concept_ppms(concepts) -> list[np.ndarray | None]:
    """The PPMs :func:`~lrp_domains.bio.concepts.filters.explain_filters` matched, in its frame's order
    (None where a filter had no seqlets)."""
    from lrp_domains.bio.concepts.filters import trimmed

    return [
        trimmed(concepts.ppm[c], np.abs(concepts.cwm[c]).sum(0)) if n else None
        for c, n in zip(concepts.frame["concept"], concepts.frame["seqlets"])
    ]


def weight_ppms(model: torch.nn.Module, layer: str = "0") -> list[np.ndarray]:
    """The PPMs :func:`~lrp_domains.bio.concepts.filters.filter_weight_matches` matches."""
    from lrp_domains.bio.concepts.filters import trimmed, weights_to_ppm

    values = dict(model.named_modules())[layer].weight.detach().double().cpu().numpy()
    return [trimmed(weights_to_ppm(w), np.abs(w - w.mean(0, keepdims=True)).sum(0)) for w in values]


def shuffled(ppms: list[np.ndarray | None], seed: int) -> list[np.ndarray | None]:
    """Each PPM with its columns in a random order (one seeded generator for the list)."""
    rng = np.random.default_rng(seed)
    return [None if p is None else p[:, rng.permutation(p.shape[1])] for p in ppms]


def _chance(ppms: list, library: list, shuffles: int, seed: int) -> tuple[dict[str, Any], float]:
    from lrp_domains.bio.concepts.filters import match_ppms

    counts, seconds = [], 0.0
    for k in range(shuffles):
        start = time.perf_counter()
        frame = match_ppms(shuffled(ppms, seed + k), "ACGT", library)
        seconds += time.perf_counter() - start
        counts.append(_named(frame, library))
    summary = {key: float(np.mean([c[key] for c in counts])) for key in ("planted", "families", "filters_matched")}
    summary["planted_names"] = sorted(set().union(*[c["planted_names"] for c in counts]))
    summary["family_names"] = sorted(set().union(*[c["family_names"] for c in counts]))
    summary["shuffles"] = shuffles
    return summary, seconds / max(shuffles, 1)


def run_naming(
    n: int = 500, shuffles: int = 3, seed: int = 0, motifs: Any = "JASPAR2024", threads: int | None = None
) -> list[dict]:
    """Rows for filter concepts and the weights baseline: planted motifs and families named, by the
    method and by its column-shuffled PPMs; filters matched; seconds (whole method, matching)."""
    from lrp_domains.bio import SequenceExplainer
    from lrp_domains.bio.concepts.filters import explain_filters, filter_weight_matches, match_ppms
    from lrp_domains.bio.motifs.seqlets import load_motifs

    warnings.filterwarnings("ignore", message="some explanations lost or gained")
    if threads:
        torch.set_num_threads(threads)
    library = load_motifs(motifs)
    explainer = SequenceExplainer.default()
    inputs = positive_batch(n)
    rows = []

    start = time.perf_counter()
    concepts = explain_filters(explainer, inputs, top=None, motifs=library)
    total = time.perf_counter() - start
    ppms = concept_ppms(concepts)
    start = time.perf_counter()
    rematched = match_ppms(ppms, explainer.alphabet, library)
    matching = time.perf_counter() - start
    same = list(rematched["match_id"]) == list(concepts.frame["match_id"])
    chance, _ = _chance(ppms, library, shuffles, seed)
    rows.append(
        {
            "method": "filter concepts (CRP)",
            **_named(concepts.frame, library),
            "chance": chance,
            "seconds": total,
            "match_seconds": matching,
            "ppms": sum(p is not None for p in ppms),
            "filters": len(concepts.frame),
            "reproduced": same,
            "frame": concepts.frame,
        }
    )

    start = time.perf_counter()
    weights = filter_weight_matches(explainer.model, motifs=library)
    total = time.perf_counter() - start
    chance, _ = _chance(weight_ppms(explainer.model), library, shuffles, seed)
    rows.append(
        {
            "method": "filter weights (baseline)",
            **_named(weights, library),
            "chance": chance,
            "seconds": total,
            "match_seconds": total,
            "ppms": len(weights),
            "filters": len(weights),
            "reproduced": None,
            "frame": weights,
        }
    )
    for row in rows:
        row["library"] = len(library)
        row["sequences"] = n
    return rows


def run(
    n: int = 500,
    batch: int = 64,
    repeats: int = 5,
    naive_repeats: int = 3,
    shuffles: int = 3,
    threads: int | None = None,
    motifs: Any = "JASPAR2024",
) -> dict[str, list[dict]]:
    """Both tables: ``{"cost": run_cost(...), "naming": run_naming(...)}``."""
    for name, value in (("repeats", repeats), ("naive_repeats", naive_repeats), ("shuffles", shuffles)):
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    available = len(positive_batch(1, whole=True))
    for name, value in (("n", n), ("batch", batch)):
        if not 1 <= value <= available:
            raise ValueError(f"--{name} must be in 1..{available} (positive test sequences), got {value}")
    return {
        "cost": run_cost(batch=batch, repeats=repeats, naive_repeats=naive_repeats, threads=threads),
        "naming": run_naming(n=n, shuffles=shuffles, motifs=motifs, threads=threads),
    }


def _console():
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=150)


def print_tables(result: dict[str, list[dict]]) -> None:
    """Print the cost and naming tables (rich)."""
    from rich.table import Table

    console = _console()
    cost = result["cost"]
    first = cost[0]
    table = Table(
        title=f"bench concepts, cost: default CNN, one batch of {first['batch']} positive test sequences, "
        f"{torch.get_num_threads()} threads; x gradient = time / one plain gradient of the batch"
    )
    for column in ("layer", "method", "x gradient", "per channel", "budget", "ms", "repeats"):
        table.add_column(column, justify="left" if column in ("layer", "method") else "right")
    for row in cost:
        per_channel = row["method"] in (CONDITIONAL, REPLAY, NAIVE)
        name = {NAIVE: f"{NAIVE} ({row['channels']})", LRP: f"{LRP} (genomics)"}.get(row["method"], row["method"])
        table.add_row(
            row["layer"],
            name,
            f"{row['ratio']:.2f}x",
            f"{row['per_channel']:.3f}x" if per_channel else "",
            f"{row['budget']}x" if per_channel else "",
            f"{row['ms']:.1f}",
            str(row["repeats"]),
        )
    console.print(table)
    for layer in dict.fromkeys(r["layer"] for r in cost):
        batched = next(r for r in cost if r["layer"] == layer and r["method"] == CONDITIONAL)
        naive = next(r for r in cost if r["layer"] == layer and r["method"] == NAIVE)
        verdict = "within" if batched["ratio"] <= batched["budget"] else "OVER"
        note = (
            f"; naive = {naive['naive_vs_lrp']:.2f} x {naive['channels']} LRP passes" if "naive_vs_lrp" in naive else ""
        )
        console.print(
            f"  layer {layer}: all {batched['channels']} channels in {batched['ratio']:.1f} gradients "
            f"({batched['per_channel']:.2f} per channel), {verdict} the budget of {batched['budget']}; "
            f"naive loop / batched = {naive['ratio'] / batched['ratio']:.2f}{note}"
        )

    naming = result["naming"]
    table = Table(
        title=f"bench concepts, motif naming: {naming[0]['sequences']} positive test sequences, layer 0 "
        f"(64 filters), JASPAR2024 CORE vertebrates ({naming[0]['library']} matrices), TOMTOM "
        "statistics, E <= 0.05; chance = the same PPMs with columns shuffled "
        f"(mean of {naming[0]['chance']['shuffles']} seeds)"
    )
    for column in (
        "method",
        "planted",
        "families",
        "filters matched",
        "on planted",
        "chance planted",
        "chance families",
        "chance filters",
        "seconds",
        "matching",
    ):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in naming:
        chance = row["chance"]
        table.add_row(
            row["method"],
            f"{row['planted']}/{row['planted_total']}",
            f"{row['families']}/{row['planted_families']}",
            f"{row['filters_matched']}/{row['filters']}",
            str(row["filters_on_planted"]),
            f"{chance['planted']:.1f}",
            f"{chance['families']:.1f}",
            f"{chance['filters_matched']:.1f}",
            f"{row['seconds']:.1f}",
            f"{row['match_seconds']:.1f} ({1000 * row['match_seconds'] / max(row['ppms'], 1):.0f} ms/PPM)",
        )
    console.print(table)
    for row in naming:
        chance = row["chance"]
        console.print(
            f"  {row['method']}: planted {', '.join(row['planted_names']) or '-'}; families: "
            f"{'; '.join(row['family_names']) or '-'}. Chance (any seed): "
            f"{', '.join(chance['planted_names']) or '-'}; families: "
            f"{'; '.join(chance['family_names']) or '-'}"
        )
        if row["reproduced"] is False:
            console.print("  warning: re-matching the PPMs explain_filters matched gave other matches")
