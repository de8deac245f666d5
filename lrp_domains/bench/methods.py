"""The attribution methods the benches compare, in one table; each bench selects its rows by name.

A row names a method as the benches' tables print it and says what it costs per explained item in
gradients (forward and backward passes): LRP and gradient x input one, integrated gradients one per
step, the controls none.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """One attribution method: its name in the tables, its kind and its cost in gradients (None: one
    per integration step, the bench's setting)."""

    name: str
    kind: str
    gradients: int | None
    about: str


#: Every method a bench compares, by name.
TABLE: dict[str, Method] = {
    method.name: method
    for method in (
        Method("epsilon", "lrp", 1, "LRP, the epsilon rule on every layer"),
        Method("epsilon-gamma", "lrp", 1, "LRP, the gamma rule on every layer but the last (epsilon)"),
        Method("zplus", "lrp", 1, "LRP, the z+ rule"),
        Method("alpha2beta1", "lrp", 1, "LRP, the alpha-beta rule with alpha 2, beta 1"),
        Method("attnlrp", "lrp", 1, "AttnLRP (transformers)"),
        Method("cp-lrp", "lrp", 1, "CP-LRP: LRP with attention held constant (transformers)"),
        Method("attnlrp (gene embedding)", "lrp", 1, "AttnLRP's relevance of the gene embedding alone (same pass)"),
        Method("epsilon + ledger", "lrp", 1, "epsilon, with the conservation ledger recorded in the same pass"),
        Method("attnlrp + ledger", "lrp", 1, "AttnLRP, with the conservation ledger recorded in the same pass"),
        Method("gradient x input", "gradient", 1, "the input times the gradient of the explained output"),
        Method("integrated gradients", "gradient", None, "integrated gradients from a zero baseline"),
        Method("integrated gradients, 8 steps", "gradient", 8, "integrated gradients from a zero baseline, 8 steps"),
        Method("attention rollout", "attention", 0, "attention rollout (no gradient)"),
        Method("expression value", "control", 0, "the input itself: genes ranked by their expression"),
        Method("random", "control", 0, "random scores: the chance level"),
    )
}


def select(*names: str) -> tuple[str, ...]:
    """``names`` in the order given, each a row of :data:`TABLE` (a name not in it is an error)."""
    unknown = [name for name in names if name not in TABLE]
    if unknown:
        raise KeyError(f"not in the method table: {unknown}; add a row to lrp_domains.bench.methods.TABLE")
    return names


def gradients(name: str, steps: int | None = None) -> int:
    """The cost of ``name`` in gradients per item (``steps``: integrated gradients' steps)."""
    cost = TABLE[name].gradients
    if cost is None:
        if steps is None:
            raise ValueError(f"{name} costs one gradient per step: pass steps")
        return steps
    return cost
