"""``lrp-domains bench gpu-models``: the genomics model families on a GPU, in float32 and bfloat16.

For each model (random weights, built from its class: nothing downloaded), at a size where a GPU
matters: bpnet-lite's BPNet (64 filters, 8 dilated layers, 2,114 bp, the profile and the counts
target), enformer-pytorch's Enformer (dim 192, 4 transformer layers, 32,768 bp, one track over 20
bins), borzoi-pytorch's Borzoi (its conv tower, dim 192, 2 transformer layers, 32,768 bp, one
track over 20 bins) and an NT-like DNA language model (ESM, 6 layers, hidden 512, rotary, 6-mer
tokens, 5,994 bp = 999 tokens, the class logit):

- seconds for our explanation (the sequence explainer, or the DNA language model explainer) and
  for a plain gradient of the same explained value (at the one-hot input, or at the token
  embeddings), timed in turns, median of ``repeats``; their ratio; peak GPU memory of each;
- agreement: the float32 relevance on the GPU against the same model's on the CPU (largest
  absolute difference over the largest absolute value, first two sequences), the bfloat16
  relevance's correlation with the float32 one, and the same correlation for the plain gradient
  (how far the bf16 model itself is from the fp32 one).

``tiny=True`` builds tiny versions and short sequences so the same code runs on a CPU in seconds
(``tests/test_bench_gpu_models.py``); peak memory is then not measured.
"""

from __future__ import annotations

import math
import statistics
import warnings
from typing import Any

import torch
from torch import nn

from lrp_domains.bench.measure import correlation, timed_call

MODELS = ("bpnet-profile", "bpnet-counts", "enformer", "borzoi", "nt")


def _random_sequences(n: int, length: int, seed: int = 0) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 4, (n, length), generator=generator)
    return ["".join("ACGT"[i] for i in row.tolist()) for row in codes]


def _give_zero_layers_weights(model: nn.Module) -> nn.Module:
    """Enformer zero-initialises its attention output projection; random weights there instead."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear) and not module.weight.any():
                module.weight.normal_(0, 0.02)
    return model


def build(name: str, tiny: bool) -> tuple[nn.Module, dict[str, Any], int, int]:
    """``(model, explainer keywords, sequence length, batch)`` of one bench model."""
    torch.manual_seed(0)
    if name.startswith("bpnet"):
        from bpnetlite.bpnet import BPNet

        from lrp_domains.bio.sequences.targets import counts_target, profile_target

        model = BPNet(
            n_filters=8 if tiny else 64, n_layers=2 if tiny else 8, n_outputs=2, n_control_tracks=0, verbose=False
        ).eval()
        target = profile_target() if name.endswith("profile") else counts_target()
        return model, {"target": target}, 256 if tiny else 2114, 4 if tiny else 64
    if name == "enformer":
        from enformer_pytorch import Enformer

        from lrp_domains.bio.sequences.targets import track_target

        if tiny:
            model = Enformer.from_hparams(
                dim=24,
                depth=1,
                heads=2,
                attn_dim_key=4,
                num_downsamples=3,
                dim_divisible_by=4,
                target_length=8,
                output_heads=dict(human=5),
            )
            length, bins = 128, (2, 6)
        else:
            model = Enformer.from_hparams(
                dim=192,
                depth=4,
                heads=8,
                attn_dim_key=32,
                num_downsamples=7,
                dim_divisible_by=32,
                target_length=200,
                output_heads=dict(human=64),
            )
            length, bins = 32768, (90, 110)
        return (
            _give_zero_layers_weights(model.eval()),
            {"head": "human", "target": track_target(0, bins=bins)},
            length,
            2 if tiny else 4,
        )
    if name == "borzoi":
        from borzoi_pytorch import Borzoi
        from borzoi_pytorch.config_borzoi import BorzoiConfig

        from lrp_domains.bio.sequences.targets import track_target

        if tiny:
            config = BorzoiConfig(
                dim=16,
                depth=1,
                heads=2,
                attn_dim_key=4,
                attn_dim_value=8,
                bins_to_return=4,
                return_center_bins_only=True,
            )
            length, bins = 256, (0, 4)
        else:
            config = BorzoiConfig(
                dim=192,
                depth=2,
                heads=8,
                attn_dim_key=32,
                attn_dim_value=24,
                bins_to_return=256,
                return_center_bins_only=True,
            )
            length, bins = 32768, (118, 138)
        model = Borzoi(config).eval()
        model.set_track_subset(list(range(8)))
        # Borzoi's output is (N, tracks, bins): said here, as the plain gradient reads the target directly
        return model, {"target": track_target(0, bins=bins, layout="NCL")}, length, 2 if tiny else 4
    if name == "nt":
        from lrp_domains.bench.data.nt_like import build_nt_like
        from lrp_domains.bio.dna_lm.tokenizers import kmer_tokenizer

        tokens = 16 if tiny else 999
        tokenizer = kmer_tokenizer(6, model_max_length=tokens + 1)
        model = build_nt_like(
            tokenizer,
            hidden_size=32 if tiny else 512,
            layers=1 if tiny else 6,
            heads=2 if tiny else 8,
            max_tokens=tokens + 1,
        )
        return model, {"tokenizer": tokenizer}, 6 * tokens, 2 if tiny else 8
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


class _Bench:
    """One model on one device and dtype: its explanation and its plain gradient."""

    def __init__(self, name: str, model: nn.Module, options: dict[str, Any], sequences: list[str]) -> None:
        self.name, self.model, self.sequences = name, model, sequences
        self.options = dict(options)
        if name == "nt":
            from lrp_domains.bio.dna_lm.explainer import TokenSequenceExplainer

            self.tokenizer = self.options.pop("tokenizer")
            self.explainer = TokenSequenceExplainer(model, self.tokenizer, composite="attnlrp")
        else:
            from lrp_domains.bio.sequences.explainer import SequenceExplainer

            self.target = self.options.pop("target")
            self.explainer = SequenceExplainer(model, **self.options)

    def explain(self) -> torch.Tensor:
        """Our relevance ``(N, 4, L)`` (observed bases), on the CPU, float32."""
        if self.name == "nt":
            result = self.explainer.explain(self.sequences, batch_size=len(self.sequences), hypothetical=False)
        else:
            result = self.explainer.explain(self.sequences, target=self.target, batch_size=len(self.sequences))
        return result.relevance.float()

    def gradient(self) -> torch.Tensor:
        """A plain gradient of the same explained value (one-hot input, or token embeddings)."""
        from lrp_domains.core.engine.attribution import model_dtype

        device = next(self.model.parameters()).device
        dtype = model_dtype(self.model) or torch.float32
        if self.name == "nt":
            encoded = self.tokenizer(self.sequences, return_tensors="pt", padding=True)
            ids = encoded["input_ids"].to(device)
            embeddings = self.model.get_input_embeddings()(ids).detach().requires_grad_(True)
            logits = self.model(inputs_embeds=embeddings, attention_mask=encoded["attention_mask"].to(device)).logits
            value = logits.gather(1, logits.detach().argmax(1, keepdim=True)).sum()
            (grad,) = torch.autograd.grad(value, embeddings)
            return grad
        from lrp_domains.bio.sequences.onehot import one_hot

        onehot = one_hot(self.sequences).to(device, dtype).requires_grad_(True)
        value = self.target(self.explainer.runner(onehot)).sum()
        (grad,) = torch.autograd.grad(value, onehot)
        return grad


def keep_rotary_tables(model: nn.Module) -> nn.Module:
    """``model`` with its rotary-embedding frequency buffers (``inv_freq``) back in float32.

    ``model.to(torch.bfloat16)`` also casts ESM's ``inv_freq`` buffer, to 3 significant digits: the
    angles of positions beyond a few hundred tokens then move by radians, and the bf16 model
    attends differently from the fp32 one (its explanation agreed with the fp32 model's at 200
    tokens and not at 999, with correlation 0.48, until the table was kept in float32)."""
    for module in model.modules():
        table = getattr(module, "inv_freq", None)
        if isinstance(table, torch.Tensor) and table.is_floating_point() and table.dtype != torch.float32:
            fresh = getattr(module, "compute_default_rope_parameters", None)
            config = getattr(module, "config", None)
            exact = fresh(config)[0] if callable(fresh) and config is not None else table.float()
            module.inv_freq = exact.to(device=table.device, dtype=torch.float32)
    return model


def model_rows(name: str, device: torch.device, tiny: bool, repeats: int) -> list[dict[str, Any]]:
    """The rows of one model: float32 and bfloat16 on ``device`` (module docstring)."""
    model, options, length, batch = build(name, tiny)
    sequences = _random_sequences(batch, length, seed=1)
    reference = _Bench(name, model, options, sequences[:2]).explain()  # the CPU, float32
    rows, float32, float32_gradient = [], None, None
    for dtype in (torch.float32, torch.bfloat16):
        # built again (same seed, same weights): Borzoi caches its relative positions, in the dtype
        # of its first forward, outside its buffers, so a model moved after a forward breaks
        model = keep_rotary_tables(build(name, tiny)[0].to(device=device, dtype=dtype))
        bench = _Bench(name, model, options, sequences)
        try:
            bench.gradient()  # warm-up (kernels, caches, Borzoi's relative positions)
        except RuntimeError as error:  # the model's own forward cannot run in this dtype
            rows.append(
                {
                    "model": name,
                    "dtype": str(dtype).replace("torch.", ""),
                    "batch": batch,
                    "length": length,
                    "note": f"its own forward fails in {dtype}: {str(error).splitlines()[0][:120]}",
                }
            )
            continue
        bench.explain()
        times: dict[str, list[float]] = {"lrp": [], "gradient": []}
        peaks: dict[str, float] = {}
        relevance = gradient_values = None
        for _ in range(repeats):
            for method, fn in (("lrp", bench.explain), ("gradient", bench.gradient)):
                seconds, peak, result = timed_call(fn, device, above_start=False)
                times[method].append(seconds)
                peaks[method] = peak / 2**20  # MiB, all the model holds (NaN on a CPU)
                if method == "lrp":
                    relevance = result
                else:
                    gradient_values = result.detach().float().cpu()
        lrp, gradient = statistics.median(times["lrp"]), statistics.median(times["gradient"])
        row = {
            "model": name,
            "dtype": str(dtype).replace("torch.", ""),
            "batch": batch,
            "length": length,
            "lrp_s": lrp,
            "gradient_s": gradient,
            "ratio": lrp / gradient,
            "lrp_mib": peaks["lrp"],
            "gradient_mib": peaks["gradient"],
            "vs_cpu": math.nan,
            "corr_fp32": math.nan,
            "gradient_corr_fp32": math.nan,
            "note": "",
        }
        if dtype == torch.float32:
            float32, float32_gradient = relevance, gradient_values
            scale = reference.abs().max().clamp_min(1e-30)
            row["vs_cpu"] = float((relevance[:2] - reference).abs().max() / scale)
        else:
            row["corr_fp32"] = correlation(relevance, float32)
            # the plain gradient's own agreement: how far the bf16 model itself is from the fp32 one
            row["gradient_corr_fp32"] = correlation(gradient_values, float32_gradient)
        rows.append(row)
        del model, bench
    return rows


def run(
    device: str | None = None, tiny: bool = False, models: tuple[str, ...] = MODELS, repeats: int | None = None
) -> list[dict[str, Any]]:
    """Every model's rows (``device``: default CUDA; a CPU only with ``tiny``)."""
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if chosen.type != "cuda" and not tiny:
        raise ValueError("no CUDA device: a full run measures a GPU; add --tiny to run the tiny models on the CPU")
    warnings.filterwarnings("ignore", message="some explanations lost or gained")
    rows = []
    for name in models:
        rows += model_rows(name, chosen, tiny, repeats or (2 if tiny else 5))
    where = torch.cuda.get_device_name(chosen) if chosen.type == "cuda" else "cpu"
    for row in rows:
        row["device"] = where
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print the rows (rich)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"genomics models on {rows[0]['device'] if rows else '-'}")
    for column in (
        "model",
        "dtype",
        "batch x length",
        "ours s",
        "gradient s",
        "ours / gradient",
        "ours MiB",
        "gradient MiB",
        "fp32 vs CPU",
        "corr. with fp32",
        "gradient's corr.",
    ):
        table.add_column(column)

    def number(value: float, spec: str) -> str:
        return "-" if isinstance(value, float) and math.isnan(value) else format(value, spec)

    notes = []
    for row in rows:
        if row.get("note"):
            notes.append(f"{row['model']} {row['dtype']}: {row['note']}")
            table.add_row(row["model"], row["dtype"], f"{row['batch']} x {row['length']}", *["n/a"] * 8)
            continue
        table.add_row(
            row["model"],
            row["dtype"],
            f"{row['batch']} x {row['length']}",
            number(row["lrp_s"], ".4f"),
            number(row["gradient_s"], ".4f"),
            number(row["ratio"], ".2f"),
            number(row["lrp_mib"], ".0f"),
            number(row["gradient_mib"], ".0f"),
            number(row["vs_cpu"], ".1e"),
            number(row["corr_fp32"], ".4f"),
            number(row["gradient_corr_fp32"], ".4f"),
        )
    Console(width=170).print(table)
    for note in notes:
        print(note)
