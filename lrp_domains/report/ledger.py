"""Where ``delta`` went, in words a reader follows, and as a per-layer bar chart.

The ledger (:mod:`lrp_domains.core.engine.ledger`) says what every module absorbed; a report
groups the modules by what they are (feed-forward biases, LayerNorm shifts, the attention's
softmax under AttnLRP; for sequences, what biases absorbed and what the gamma rule created) and
gives each group's share of the explained value: ``tokens 19% of the logit; feed-forward biases
58%; ...; numerical 0.0%``. The shares of one example add up to 100%.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from lrp_domains.core.engine.ledger import NUMERICAL, LedgerRows

#: ``group(module, rule, absorbed)`` -> the name of what the module is, for a reader.
Grouping = Callable[[str, str, float], str]


def text_group(module: str, rule: str, absorbed: float) -> str:
    """What a transformer module is (names as transformers gives them: BERT, RoBERTa, GPT-2,
    LLaMA-style decoders...)."""
    name = module.lower()
    last = name.rsplit(".", 1)[-1]
    if name.endswith(":attention"):
        return "attention softmax (its gradient, AttnLRP)" if rule.startswith("attnlrp") else "attention"
    if rule == "a constant operand":
        return "constants added in forward"
    if rule.startswith("no rule"):
        return "operations without a rule"
    if "LayerNorm" in rule or "norm" in last:
        return "LayerNorm shifts"
    if any(part in name for part in ("classifier", "pooler", "score", "lm_head")):
        return "classifier and pooler"
    if "attention" in name or "attn" in name:
        return "attention biases"
    if any(part in name for part in ("mlp", "intermediate", "ffn", "feed_forward", "output.dense", "fc")):
        return "feed-forward biases"
    if "Activation" in rule:
        return "activations"
    return "other layers"


def sequence_group(module: str, rule: str, absorbed: float) -> str:
    """Absorbed by biases and stabilizers, or created by a rule that does not conserve (gamma,
    z-box, alpha-beta): the sign of what a layer did."""
    if absorbed >= 0:
        return "biases and stabilizers"
    for name, words in (("Gamma", "gamma"), ("ZBox", "z-box"), ("AlphaBeta", "alpha-beta"), ("ZPlus", "z+")):
        if rule.startswith(name):
            return f"created by the {words} rule"
    return "created by other rules"


def gene_group(module: str, rule: str, absorbed: float) -> str:
    """Expression models: what their dense layers' biases absorbed (or a rule created)."""
    return "biases" if absorbed >= 0 or rule.startswith("Epsilon") else sequence_group(module, rule, absorbed)


def groups(rows: LedgerRows, group: Grouping) -> dict[str, torch.Tensor]:
    """Per group, the relevance absorbed per example (``numerical`` last)."""
    found: dict[str, torch.Tensor] = {}
    for row, (module, rule) in enumerate(zip(rows.modules, rows.rules)):
        for example in range(rows.absorbed.shape[1]):
            value = float(rows.absorbed[row, example])
            if value == 0.0:
                continue
            label = group(module, rule, value)
            found.setdefault(label, torch.zeros(rows.absorbed.shape[1], dtype=torch.float64))[example] += value
    found["numerical"] = rows.numerical.clone()
    return found


def shares(
    rows: LedgerRows, explained: Sequence[float], inputs: dict[str, Sequence[float]], group: Grouping
) -> list[list[tuple[str, float]]]:
    """Per example, ``(what, percent of the explained value)``: the inputs (``tokens``, ``bases``...,
    and other sources) first, then the groups by size, ``numerical`` last. Each example's shares
    sum to 100%."""
    grouped = groups(rows, group)
    found = []
    for example, value in enumerate(explained):
        scale = float(value) if float(value) != 0.0 else 1.0
        parts = [(name, 100.0 * float(v[example]) / scale) for name, v in inputs.items()]
        middle = [(name, 100.0 * float(v[example]) / scale) for name, v in grouped.items() if name != "numerical"]
        middle.sort(key=lambda item: -abs(item[1]))
        parts += [item for item in middle if abs(item[1]) >= 0.05]
        parts.append(("numerical", 100.0 * float(grouped["numerical"][example]) / scale))
        found.append(parts)
    return found


def sentence(parts: list[tuple[str, float]], what: str = "the explained value") -> str:
    """``tokens 19% of the logit; feed-forward biases 58%; ...; numerical 0.0%``."""
    if not parts:
        return ""
    head, *rest = parts
    words = [f"{head[0]} {_percent(head[1], 0)}% of {what}"]
    words += [f"{name} {_percent(value, 1 if name == 'numerical' else 0)}%" for name, value in rest]
    return "; ".join(words)


def _percent(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0"


def mean_sentence(per_example: list[list[tuple[str, float]]], what: str = "the explained value") -> str:
    """The shares averaged over the examples, as one :func:`sentence`."""
    totals: dict[str, list[float]] = {}
    for parts in per_example:
        for name, value in parts:
            totals.setdefault(name, []).append(value)
    n = max(len(per_example), 1)
    averaged = [(name, sum(values) / n) for name, values in totals.items()]
    first = [averaged[0]] if averaged else []
    rest = sorted((item for item in averaged[1:] if item[0] != "numerical"), key=lambda item: -abs(item[1]))
    numerical = [item for item in averaged if item[0] == "numerical"]
    return sentence(first + rest + numerical, what)


def layer_figure(rows: LedgerRows, explained: Sequence[float], top: int = 20) -> Any:
    """A bar chart of what each module absorbed, in percent of the explained value (mean over
    the examples; the ``top`` modules by size, and ``numerical``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = np.asarray([float(v) if float(v) != 0 else 1.0 for v in explained])
    values = (rows.absorbed.numpy() / scale[None, :]).mean(1) * 100 if rows.absorbed.numel() else np.zeros(0)
    order = np.argsort(-np.abs(values))[:top]
    labels = [rows.modules[i] for i in order] + [NUMERICAL]
    heights = [float(values[i]) for i in order] + [float((rows.numerical.numpy() / scale).mean() * 100)]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(labels) + 1.2))
    ax.barh(range(len(labels)), heights, color=["#c0504d" if h >= 0 else "#4f81bd" for h in heights])
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="#444", lw=0.8)
    ax.set_xlabel("absorbed, % of the explained value (mean over examples; negative: created)")
    fig.tight_layout()
    return fig


def text_shares(results: Sequence[Any]) -> list[list[tuple[str, float]]] | None:
    """Per text explanation (with a ledger), its shares: tokens, the other embeddings (positions,
    token types), then the groups of :func:`text_group`; None when any has no ledger."""
    if not results or any(getattr(r, "ledger_rows", None) is None for r in results):
        return None
    found = []
    for result in results:
        other = sum(float(v.sum()) for v in result.embedding_relevance.values())
        inputs = {"tokens": [float(result.token_relevance.sum())]}
        if other:
            inputs["position and type embeddings"] = [other]
        found.append(shares(result.ledger_rows, [result.explained], inputs, text_group)[0])
    return found


def sequence_shares(explanation: Any) -> list[list[tuple[str, float]]] | None:
    """Per record of a sequence explanation (with a ledger): bases, then what biases absorbed and
    rules created (:func:`sequence_group`); None without a ledger."""
    rows = getattr(explanation, "ledger_rows", None)
    if rows is None:
        return None
    bases = explanation.per_position.double().reshape(len(explanation), -1).sum(1).tolist()
    return shares(rows, explanation.explained.double().tolist(), {"bases": bases}, sequence_group)


def gene_shares(explanation: Any) -> list[list[tuple[str, float]]] | None:
    """Per sample of a gene explanation (with a ledger): genes, then the groups of
    :func:`gene_group`; None without a ledger."""
    rows = getattr(explanation, "ledger_rows", None)
    if rows is None:
        return None
    genes = explanation.relevance.to_numpy().sum(1).tolist()
    return shares(rows, explanation.explained.to_numpy().tolist(), {"genes": genes}, gene_group)
