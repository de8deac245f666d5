"""Train the default gene-expression model: an MLP classifier on scanpy's ``pbmc68k_reduced``.

Data: ``scanpy.datasets.pbmc68k_reduced()`` (ships with scanpy, read offline): 700 PBMCs x 765 genes,
``adata.X`` log-normalised and z-scaled per gene (used as is, as float32); target ``obs["bulk_labels"]``
(10 classes, very unbalanced; output order = the categorical's category order).

Protocol (all seeded, deterministic for a given seed and thread count on one machine):

1. Stratified 80/20 train/test split (per class: a seeded permutation, ``round(0.2 * n)`` cells to test).
   The test cells are never used to choose anything; their names go into the sidecar.
2. Model selection inside the training split only: stratified ``--cv``-fold cross-validation. Every
   ``--eval-every`` epochs the out-of-fold predictions of all folds are pooled and scored by balanced
   accuracy; the number of epochs of the final fit is the checkpoint with the best pooled score
   (earliest on ties). The whole CV is repeated ``--cv-repeats`` times with other folds and seeds and the
   scores averaged, because the smallest classes have only 6-15 training cells. ``--search`` additionally
   scores a small grid of configurations that way and keeps the best one. ``--cv 0`` skips all of this and
   trains exactly ``--epochs`` epochs.
3. Final fit on the whole training split with the chosen configuration and number of epochs, then one
   evaluation on the held-out test split (accuracy, balanced accuracy, per-class recall).

Writes ``pbmc-mlp.safetensors`` (state dict of ``build_mlp(sizes)``, float32) and ``pbmc-mlp.json`` (the
sidecar read by :mod:`lrp_domains.bio.cells.pbmc_mlp`) into ``--out``.

Caveat: the ``bulk_labels`` come from correlating each cell with FACS-sorted bulk profiles (Zheng et al.
2017) and are noisy; e.g. the "Dendritic" cluster carries classical-monocyte markers. Test accuracy is
bounded by that noise; nothing here tries to tune around it.

Example (the command that produced the shipped weights is recorded in the sidecar under ``command``)::

    python workflows/bio/train_pbmc.py --search
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lrp_domains.bio.cells.pbmc_mlp import state_dict_sha256

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS_NAME = "pbmc-mlp.safetensors"
SIDECAR_NAME = "pbmc-mlp.json"
INPUT_DESCRIPTION = "pbmc68k_reduced adata.X: log-normalised, z-scaled per gene"
LABEL_NOISE_CAVEAT = (
    "bulk_labels were assigned by correlating each cell with FACS-sorted bulk PBMC profiles (Zheng et al. 2017) "
    "and are noisy: e.g. the 'Dendritic' cluster carries classical-monocyte markers (LYZ, S100A8/9), and the "
    "CD4+/CD8+ T-cell subsets overlap. Accuracies are bounded by this noise; the model was not tuned around it."
)


@dataclass(frozen=True)
class Config:
    """Hyper-parameters of one training run (everything except the data split and the epoch count)."""

    hidden: tuple[int, ...] = (256, 128)
    lr: float = 1e-3
    weight_decay: float = 1e-2
    dropout: float = 0.2
    batch_size: int = 64
    class_weight: str = "balanced"  # none | balanced (inverse frequency) | sqrt (inverse sqrt frequency)
    label_smoothing: float = 0.0


def build_mlp(sizes, dropout: float = 0.0) -> nn.Sequential:
    """Linear/ReLU stack; with ``dropout > 0`` a Dropout after every hidden ReLU (training only).

    The Linear/ReLU modules are created in the same order with the same indices shifted by the dropout
    layers; :func:`strip_dropout` maps the trained state dict onto the inference model
    ``lrp_domains.bio.cells.pbmc_mlp.build_mlp(sizes)``.
    """
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def strip_dropout(model: nn.Sequential) -> nn.Sequential:
    """The same network without Dropout modules (shares the Linear layers): the inference layout."""
    return nn.Sequential(*[m for m in model if not isinstance(m, nn.Dropout)])


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out), sorted: per class a seeded permutation, ``round(fraction * n)`` held out."""
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        held.append(rng.permutation(idx)[: int(round(fraction * len(idx)))])
    held_out = np.sort(np.concatenate(held))
    keep = np.setdiff1d(np.arange(len(y)), held_out)
    return keep, held_out


def stratified_folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint index sets covering ``range(len(y))``; each class dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for c in np.unique(y):
        for j, i in enumerate(rng.permutation(np.flatnonzero(y == c))):
            folds[(offset + j) % k].append(int(i))
        offset += len(np.flatnonzero(y == c))  # rotate the start so small classes do not all begin in fold 0
    return [np.sort(np.array(f, dtype=np.int64)) for f in folds]


def class_weights(y: np.ndarray, n_classes: int, mode: str) -> torch.Tensor | None:
    """Loss weights normalised to mean 1 over the samples (so the loss scale does not depend on the mode)."""
    if mode == "none":
        return None
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    counts[counts == 0] = 1.0
    w = 1.0 / counts if mode == "balanced" else 1.0 / np.sqrt(counts)
    w = w / (w[y].mean())
    return torch.tensor(w, dtype=torch.float32)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean recall over the classes present in ``y_true``."""
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in range(n_classes) if np.any(y_true == c)]))


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> list[float | None]:
    return [float(np.mean(y_pred[y_true == c] == c)) if np.any(y_true == c) else None for c in range(n_classes)]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return model(x).argmax(1).numpy()


def train(
    cfg: Config,
    x: torch.Tensor,
    y: np.ndarray,
    n_classes: int,
    epochs: int,
    seed: int,
    eval_x: torch.Tensor | None = None,
    eval_every: int = 10,
) -> tuple[nn.Sequential, dict[int, np.ndarray]]:
    """Train ``epochs`` epochs of AdamW on (x, y); returns the model and {epoch: predictions on eval_x}."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_mlp([x.shape[1], *cfg.hidden, n_classes], cfg.dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss(
        weight=class_weights(y, n_classes, cfg.class_weight), label_smoothing=cfg.label_smoothing
    )
    yt = torch.as_tensor(y, dtype=torch.long)
    preds: dict[int, np.ndarray] = {}
    for epoch in range(1, epochs + 1):
        model.train()
        for batch in torch.randperm(len(yt), generator=gen).split(cfg.batch_size):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[batch]), yt[batch]).backward()
            opt.step()
        if eval_x is not None and (epoch % eval_every == 0 or epoch == epochs):
            preds[epoch] = predict(model, eval_x)
    model.eval()
    return model, preds


def cross_validate(
    cfg: Config,
    x: torch.Tensor,
    y: np.ndarray,
    n_classes: int,
    epochs: int,
    k: int,
    seed: int,
    eval_every: int,
    repeats: int = 1,
) -> dict[int, float]:
    """{epoch: balanced accuracy of the pooled out-of-fold predictions} over ``k`` stratified folds.

    With ``repeats > 1`` the CV is repeated with other fold assignments and training seeds and the
    scores are averaged (the smallest classes have only a handful of training cells, so one CV is noisy).
    """
    totals: dict[int, float] = {}
    for r in range(repeats):
        folds = stratified_folds(y, k, seed + 1000 * r)
        oof: dict[int, np.ndarray] = {}
        for f, val in enumerate(folds):
            fit = np.setdiff1d(np.arange(len(y)), val)
            _, preds = train(cfg, x[fit], y[fit], n_classes, epochs, seed + 1000 * r + 1 + f, x[val], eval_every)
            for epoch, p in preds.items():
                oof.setdefault(epoch, np.full(len(y), -1, dtype=np.int64))[val] = p
        for epoch, p in oof.items():
            totals[epoch] = totals.get(epoch, 0.0) + balanced_accuracy(y, p, n_classes) / repeats
    return dict(sorted(totals.items()))


def search_grid(base: Config) -> list[Config]:
    """The small grid ``--search`` scores (all by CV inside the training split)."""
    grid = [
        base,
        replace(base, class_weight="none"),
        replace(base, class_weight="sqrt"),
        replace(base, dropout=0.5),
        replace(base, dropout=0.0),
        replace(base, weight_decay=1e-1),
        replace(base, lr=3e-4),
        replace(base, hidden=(128, 64)),
        replace(base, hidden=(512, 256)),
        replace(base, label_smoothing=0.1),
        replace(base, dropout=0.5, label_smoothing=0.1),
        replace(base, dropout=0.5, label_smoothing=0.1, hidden=(128, 64)),
    ]
    out: list[Config] = []
    for c in grid:
        if c not in out:
            out.append(c)
    return out


def best_epoch(scores: dict[int, float]) -> tuple[int, float]:
    """Earliest checkpoint with the highest score."""
    top = max(scores.values())
    epoch = min(e for e, s in scores.items() if s >= top - 1e-12)
    return epoch, top


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--epochs",
        type=int,
        default=200,
        help="maximum epochs; with --cv > 0 the final fit uses the CV-best checkpoint (default 200)",
    )
    p.add_argument("--hidden", default="256,128", help="hidden layer sizes, comma-separated (default 256,128)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay (default 1e-2)")
    p.add_argument("--dropout", type=float, default=0.2, help="dropout after hidden ReLUs, training only (0.2)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--class-weight",
        choices=["none", "balanced", "sqrt"],
        default="balanced",
        help="cross-entropy class weights (default balanced = inverse class frequency)",
    )
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the folds and the training (default 0)")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--cv", type=int, default=5, help="CV folds inside the training split; 0 = no selection (5)")
    p.add_argument("--cv-repeats", type=int, default=2, help="CV repetitions averaged for selection (default 2)")
    p.add_argument("--eval-every", type=int, default=10, help="CV checkpoint spacing in epochs (default 10)")
    p.add_argument("--search", action="store_true", help="score a small grid around the given config by CV first")
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1; results can differ by thread count)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "lrp_domains" / "bio" / "weights",
        help="output folder (default lrp_domains/bio/weights/)",
    )
    p.add_argument("--no-save", action="store_true", help="train and report only")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    import scanpy as sc
    from safetensors.torch import save_file

    adata = sc.datasets.pbmc68k_reduced()
    labels = adata.obs["bulk_labels"]
    classes = [str(c) for c in labels.cat.categories]
    genes = [str(g) for g in adata.var_names]
    n_classes = len(classes)
    x_all = torch.from_numpy(np.asarray(adata.X, dtype=np.float32).copy())
    y_all = labels.cat.codes.to_numpy().astype(np.int64)
    train_idx, test_idx = stratified_split(y_all, args.test_fraction, args.seed)
    x_tr, y_tr, x_te, y_te = x_all[train_idx], y_all[train_idx], x_all[test_idx], y_all[test_idx]
    print(
        f"data: {adata.n_obs} cells x {adata.n_vars} genes, {n_classes} classes; "
        f"train {len(train_idx)}, test {len(test_idx)} (seed {args.seed})"
    )

    base = Config(
        hidden=tuple(int(h) for h in args.hidden.split(",") if h),
        lr=args.lr,
        weight_decay=args.weight_decay,
        dropout=args.dropout,
        batch_size=args.batch_size,
        class_weight=args.class_weight,
        label_smoothing=args.label_smoothing,
    )
    cfg, epochs, cv_score, tried = base, args.epochs, None, []
    if args.cv > 0:
        candidates = search_grid(base) if args.search else [base]
        best = None
        for c in candidates:
            t = time.perf_counter()
            scores = cross_validate(
                c, x_tr, y_tr, n_classes, args.epochs, args.cv, args.seed, args.eval_every, args.cv_repeats
            )
            e, s = best_epoch(scores)
            tried.append(
                {
                    "config": asdict(c),
                    "cv_balanced_accuracy": s,
                    "best_epoch": e,
                    "cv_balanced_accuracy_last_epoch": scores[max(scores)],
                }
            )
            print(
                f"cv {args.cv}-fold x{args.cv_repeats}  {c}  best epoch {e:4d}  bal.acc {s:.4f}  "
                f"(at {max(scores)}: {scores[max(scores)]:.4f})  [{time.perf_counter() - t:.1f}s]",
                flush=True,
            )
            if best is None or s > best[2] + 1e-12:
                best = (c, e, s)
        cfg, epochs, cv_score = best
        print(f"selected: {cfg}, {epochs} epochs (CV balanced accuracy {cv_score:.4f})")

    model, _ = train(cfg, x_tr, y_tr, n_classes, epochs, args.seed)
    model = strip_dropout(model)
    pred_tr, pred_te = predict(model, x_tr), predict(model, x_te)
    metrics = {
        "train_accuracy": float(np.mean(pred_tr == y_tr)),
        "train_balanced_accuracy": balanced_accuracy(y_tr, pred_tr, n_classes),
        "test_accuracy": float(np.mean(pred_te == y_te)),
        "test_balanced_accuracy": balanced_accuracy(y_te, pred_te, n_classes),
        "test_per_class_recall": dict(zip(classes, per_class_recall(y_te, pred_te, n_classes))),
        "test_per_class_support": dict(zip(classes, np.bincount(y_te, minlength=n_classes).tolist())),
        "chance_balanced_accuracy": 1.0 / n_classes,
        "majority_class_test_accuracy": float(np.max(np.bincount(y_te)) / len(y_te)),
    }
    wall = time.perf_counter() - t0
    print(f"train: accuracy {metrics['train_accuracy']:.4f}  balanced {metrics['train_balanced_accuracy']:.4f}")
    print(f"test:  accuracy {metrics['test_accuracy']:.4f}  balanced {metrics['test_balanced_accuracy']:.4f}")
    for name in classes:
        r = metrics["test_per_class_recall"][name]
        print(f"  recall {name:30s} {r:.3f}  (n={metrics['test_per_class_support'][name]})")
    print(f"wall time {wall:.1f}s")
    if args.no_save:
        return

    sizes = [len(genes), *cfg.hidden, n_classes]
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    args.out.mkdir(parents=True, exist_ok=True)
    weights_path = args.out / WEIGHTS_NAME
    save_file(state, str(weights_path), metadata={"format": "pt", "sizes": ",".join(map(str, sizes))})
    weights_path.chmod(0o644)  # safetensors creates the file owner-only
    sidecar = {
        "name": "pbmc-mlp",
        "description": "MLP classifier of PBMC cell types (bulk_labels) from 765-gene expression profiles",
        "architecture": {
            "type": "mlp",
            "sizes": sizes,
            "activation": "relu",
            "layers": "nn.Sequential of Linear, ReLU, ..., Linear (logits); no dropout at inference",
        },
        "weights_sha256": state_dict_sha256(state),
        "weights_sha256_definition": "sha256 over tensors sorted by name: f'{name}|{dtype}|{shape}|' + raw bytes",
        "genes": genes,
        "classes": classes,
        "input": {
            "description": INPUT_DESCRIPTION,
            "dtype": "float32",
            "source": "scanpy.datasets.pbmc68k_reduced()",
            "obs_key": "bulk_labels",
            "scanpy_version": importlib.metadata.version("scanpy"),
        },
        "split": {
            "seed": args.seed,
            "test_fraction": args.test_fraction,
            "method": "per class: numpy default_rng(seed) permutation, round(test_fraction*n) to test",
            "n_train": len(train_idx),
            "n_test": len(test_idx),
            "test_cells": [str(adata.obs_names[i]) for i in test_idx],
        },
        "metrics": metrics,
        "selection": {
            "method": f"{args.cv}-fold stratified CV (x{args.cv_repeats}, averaged) inside the training "
            "split, pooled out-of-fold balanced accuracy every eval_every epochs; earliest "
            "best checkpoint; best configuration of the grid tried"
            if args.cv > 0
            else "none (fixed epochs)",
            "cv_balanced_accuracy": cv_score,
            "tried": tried,
        },
        "training": {
            **asdict(cfg),
            "epochs": epochs,
            "max_epochs": args.epochs,
            "optimizer": "AdamW",
            "loss": "cross-entropy",
            "seed": args.seed,
            "cv_folds": args.cv,
            "cv_repeats": args.cv_repeats,
            "eval_every": args.eval_every,
            "threads": args.threads,
            "torch": torch.__version__,
            "wall_time_s": round(wall, 2),
        },
        "command": "python workflows/bio/train_pbmc.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "caveats": [LABEL_NOISE_CAVEAT],
    }
    (args.out / SIDECAR_NAME).write_text(json.dumps(sidecar, indent=1) + "\n")
    print(f"wrote {weights_path} ({weights_path.stat().st_size} bytes) and {args.out / SIDECAR_NAME}")


if __name__ == "__main__":
    main()
