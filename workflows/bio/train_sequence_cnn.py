"""Train the default DNA sequence model: a small CNN on the synthetic JASPAR-motif benchmark.

Data: :func:`lrp_domains.bench.data.synthetic.make_dataset` (200-bp uniform background; positives carry 1 to 3
planted JASPAR2024 motifs, negatives none), generated with distinct seeds per split
(:data:`lrp_domains.bio.sequences.synthetic_cnn.DATA`: train seed 1, validation seed 2, test seed 3).

Protocol (seeded; deterministic for a given seed and thread count on one machine):

1. Train :func:`lrp_domains.bio.sequences.synthetic_cnn.build_cnn` with AdamW on the binary cross-entropy of its
   one logit, mini-batches reshuffled every epoch, each sequence replaced by its reverse complement with
   probability 1/2 every time it is drawn (same label: the motifs are planted on random strands anyway).
   Everything random is seeded by ``--seed``.
2. After every epoch score the validation split (AUROC); the learning rate drops by ``--lr-factor`` after
   an epoch without improvement; keep the best epoch, stop after ``--patience`` epochs without
   improvement or at ``--epochs``.
3. Reload the best epoch's weights and evaluate once on the test split (never used to choose anything).

Why 100,000 training sequences: the label is an OR over ten motif detectors, some weak (GATA1, FOXA1,
Yy1 carry 10-11 bits), and a CNN learns the detectors slowly. On 20,000 sequences the network starts to
memorise the random background (training AUROC -> 1) while the validation AUROC stalls near 0.7; with
fresh data it needs roughly half a million sequence presentations to approach a scan with the true PPMs
(AUROC about 0.95; recorded in the sidecar under ``metrics.reference_ppm_scan``).

Writes ``synthetic-cnn.safetensors`` (state dict, float32) and ``synthetic-cnn.json`` (sidecar: architecture,
data seeds and sizes, motif IDs, training record, validation/test accuracy and AUROC, the command line) into
``--out``.

Example (the command that produced the shipped weights is recorded in the sidecar under ``command``)::

    python workflows/bio/train_sequence_cnn.py
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lrp_domains.bench.data import synthetic  # noqa: E402
from lrp_domains.bench.data.cnn import evaluate_classifier  # noqa: E402
from lrp_domains.bio.sequences.synthetic_cnn import (  # noqa: E402
    DATA,
    GENERATOR,
    SIDECAR_PATH,
    WEIGHTS_PATH,
    build_cnn,
)
from lrp_domains.evaluate.ground_truth import roc_auc as auroc  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="maximum number of epochs")
    parser.add_argument(
        "--patience", type=int, default=4, help="stop after this many epochs without a better validation AUROC"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the batch order")
    parser.add_argument("--n-train", type=int, default=DATA["train"]["n"])
    parser.add_argument("--n-val", type=int, default=DATA["validation"]["n"])
    parser.add_argument("--n-test", type=int, default=DATA["test"]["n"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument(
        "--lr-factor",
        type=float,
        default=0.3,
        help="learning-rate factor after an epoch without a better validation AUROC",
    )
    parser.add_argument("--no-rc", action="store_true", help="no reverse-complement augmentation")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH.parent, help="output folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Train, evaluate, write weights and sidecar; returns the sidecar dict."""
    args = parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    splits = {
        "train": {"seed": DATA["train"]["seed"], "n": args.n_train},
        "validation": {"seed": DATA["validation"]["seed"], "n": args.n_val},
        "test": {"seed": DATA["test"]["seed"], "n": args.n_test},
    }
    data = {name: synthetic.make_dataset(s["n"], seed=s["seed"], **GENERATOR) for name, s in splits.items()}
    print(
        f"data generated in {time.perf_counter() - started:.1f} s: "
        + ", ".join(f"{k} {len(v)}" for k, v in data.items()),
        flush=True,
    )

    model = build_cnn()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=args.lr_factor, patience=0)
    loss_fn = nn.BCEWithLogitsLoss()
    x_train, y_train = data["train"].onehot, data["train"].labels.float()
    data["train"].pwm = data["train"].pwm[:0]  # not needed for training; frees N x 4 x L floats
    order_rng = torch.Generator().manual_seed(args.seed)

    best = {"auroc": -1.0, "epoch": 0, "state": None}
    history = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        total, seen = 0.0, 0
        for batch in torch.randperm(len(x_train), generator=order_rng).split(args.batch_size):
            x = x_train[batch]
            if not args.no_rc:
                flip = torch.rand(len(batch), generator=order_rng) < 0.5
                x = torch.where(flip[:, None, None], x.flip(1).flip(2), x)
            optimizer.zero_grad()
            loss = loss_fn(model(x).reshape(-1), y_train[batch])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
            seen += len(batch)
        scores = evaluate_classifier(model, data["validation"])
        lr = optimizer.param_groups[0]["lr"]
        history.append(
            {
                "epoch": epoch,
                "lr": lr,
                "train_loss": round(total / seen, 5),
                "validation_accuracy": scores["accuracy"],
                "validation_auroc": round(scores["auroc"], 5),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(
            f"epoch {epoch:2d}  lr {lr:.2e}  loss {total / seen:.4f}  val acc {scores['accuracy']:.4f}  "
            f"val AUROC {scores['auroc']:.4f}  ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        scheduler.step(scores["auroc"])
        if scores["auroc"] > best["auroc"]:
            best = {"auroc": scores["auroc"], "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
        elif epoch - best["epoch"] >= args.patience:
            break

    model.load_state_dict(best["state"])
    model.eval()
    validation = evaluate_classifier(model, data["validation"])
    test = evaluate_classifier(model, data["test"])
    per_motif = _recall_per_motif(model, data["test"])
    reference = {name: _ppm_scan(data[name]) for name in ("validation", "test")}
    wall = time.perf_counter() - started
    print(
        f"best epoch {best['epoch']}: validation acc {validation['accuracy']:.4f} AUROC {validation['auroc']:.4f}; "
        f"test acc {test['accuracy']:.4f} AUROC {test['auroc']:.4f}; {wall:.0f} s",
        flush=True,
    )

    from safetensors.torch import save_file

    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / WEIGHTS_PATH.name
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights), metadata={"format": "pt", "sidecar": SIDECAR_PATH.name})
    ppms = synthetic.motif_ppms()
    sidecar = {
        "model": "synthetic-cnn",
        "description": "CNN classifier: does a 200-bp one-hot DNA sequence (A,C,G,T rows, length last) carry a "
        "planted JASPAR motif? One logit (sigmoid = probability of label 1).",
        "architecture": repr(build_cnn()),
        "builder": "lrp_domains.bio.sequences.synthetic_cnn.build_cnn",
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "weights_bytes": weights.stat().st_size,
        "input": {"alphabet": synthetic.ALPHABET, "shape": ["N", 4, GENERATOR["length"]], "dtype": "float32"},
        "output": {"shape": ["N", 1], "meaning": "logit of label 1 (motif planted)"},
        "data": {
            "generator": "lrp_domains.bench.data.synthetic.make_dataset",
            "settings": {**GENERATOR, "motifs_per_sequence": list(GENERATOR["motifs_per_sequence"])},
            "splits": splits,
            "fingerprints": {name: synthetic.fingerprint(d) for name, d in data.items()},
            "jaspar_release": synthetic.JASPAR_RELEASE,
            "motifs": [{"id": m, "name": ppms[m][0], "width": int(ppms[m][1].shape[1])} for m in synthetic.MOTIF_IDS],
        },
        "training": {
            "seed": args.seed,
            "optimizer": "AdamW",
            "lr": args.lr,
            "lr_schedule": f"ReduceLROnPlateau(max validation AUROC, factor={args.lr_factor}, patience=0)",
            "augmentation": "none" if args.no_rc else "reverse complement with probability 1/2 per draw",
            "weight_decay": args.weight_decay,
            "batch_size": args.batch_size,
            "max_epochs": args.epochs,
            "patience": args.patience,
            "selection": "best validation AUROC",
            "best_epoch": best["epoch"],
            "epochs_run": len(history),
            "history": history,
            "threads": args.threads,
            "wall_seconds": round(wall, 1),
        },
        "metrics": {
            "validation": validation,
            "test": test,
            "test_recall_by_motif": per_motif,
            "reference_ppm_scan": reference,
        },
        "command": "python "
        + " ".join(
            [
                Path(sys.argv[0]).as_posix() if argv is None else "workflows/bio/train_sequence_cnn.py",
                *(sys.argv[1:] if argv is None else argv),
            ]
        ),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
    }
    (args.out / SIDECAR_PATH.name).write_text(json.dumps(sidecar, indent=2) + "\n")
    print(f"wrote {weights} ({weights.stat().st_size} bytes) and {args.out / SIDECAR_PATH.name}")
    return sidecar


@torch.no_grad()
def _ppm_scan(data: synthetic.SyntheticDataset) -> dict[str, float]:
    """Reference classifier with the true motifs: the maximum log-odds score (log2 PPM / 0.25) over all motifs,
    positions and both strands. Its AUROC is a practical ceiling for a learned model (not the Bayes optimum)."""
    x = data.onehot.double()
    best = torch.full((len(data),), -float("inf"), dtype=torch.float64)
    for _, ppm in synthetic.motif_ppms().values():
        log_odds = torch.from_numpy(np.log2(ppm / 0.25))
        for weights in (log_odds, log_odds.flip(0).flip(1)):
            best = torch.maximum(best, torch.nn.functional.conv1d(x, weights[None]).amax(-1)[:, 0])
    return {
        "description": "max log2-odds of the true PPMs over motifs, positions and strands",
        "auroc": auroc(best, data.labels),
    }


@torch.no_grad()
def _recall_per_motif(model: nn.Module, data: synthetic.SyntheticDataset) -> dict[str, dict[str, float]]:
    """Per motif, the share of test positives carrying it (alone or not) that are called positive; and the
    same for positives whose only planted motif it is."""
    predicted = (model(data.onehot).reshape(-1) > 0).numpy()
    result = {}
    for motif_id in synthetic.MOTIF_IDS:
        with_it = [i for i, p in enumerate(data.placements) if any(q.motif_id == motif_id for q in p)]
        alone = [i for i in with_it if len(data.placements[i]) == 1]
        result[motif_id] = {
            "name": synthetic.JASPAR_COUNTS[motif_id][0],
            "n": len(with_it),
            "recall": float(predicted[with_it].mean()) if with_it else float("nan"),
            "n_alone": len(alone),
            "recall_alone": float(predicted[alone].mean()) if alone else float("nan"),
        }
    return result


if __name__ == "__main__":
    main()
