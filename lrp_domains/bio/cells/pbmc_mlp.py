"""The project's default gene-expression model: an MLP cell-type classifier on scanpy's ``pbmc68k_reduced``.

Data: ``scanpy.datasets.pbmc68k_reduced()`` (ships with scanpy, no download): 700 PBMCs x 765 genes.
The model's input is ``adata.X`` as is (float32): log-normalised and z-scaled per gene, so 0 is a gene's mean
over the 700 cells and values run from about -2 to +28. The genes are ``adata.var_names`` in order; the 10
outputs are logits of the ``obs["bulk_labels"]`` categories in category order (see :func:`load_default_model`).

Architecture: ``build_mlp(sizes)`` with ``sizes`` from the sidecar (765 -> hidden -> 10), plain ``nn.Linear``
and ``nn.ReLU`` modules in an ``nn.Sequential`` (dropout was used in training only), so every LRP rule
applies per layer. Because the inputs are z-scores, input relevance under the usual first-layer rules
(``x * grad`` style) is relative to the average cell: a gene at its mean expression gets no relevance, and
a gene expressed below its mean can carry relevance of either sign.

Weights (safetensors, no pickle) and the JSON sidecar (genes, classes, the split seed and held-out test
cells, test metrics, the training configuration and caveats) are written by ``workflows/bio/train_pbmc.py``; the
classes were trained on a stratified 80/20 split and :func:`held_out_cells` names the held-out 20 %.

Caveat: the ``bulk_labels`` are noisy. They were assigned by correlating each cell with FACS-sorted bulk
profiles (Zheng et al. 2017); e.g. the "Dendritic" cluster carries classical-monocyte markers (LYZ,
S100A8/9), and the CD4+/CD8+ T-cell subsets overlap. Accuracy, and explanations of "Dendritic" in
particular, reflect that noise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lrp_domains.models import state_dict_sha256

if TYPE_CHECKING:
    import anndata

__all__ = [
    "INPUT_DESCRIPTION",
    "PBMC_MARKERS",
    "SIDECAR_PATH",
    "WEIGHTS_PATH",
    "build_mlp",
    "held_out_cells",
    "load_default_data",
    "load_default_model",
    "markers_in",
    "model_inputs",
    "read_sidecar",
    "state_dict_sha256",
]

_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
#: The shipped state dict of ``build_mlp(sizes)`` (safetensors, float32).
WEIGHTS_PATH: Path = _WEIGHTS_DIR / "pbmc-mlp.safetensors"
#: Its JSON sidecar: architecture, genes, classes, split and test cells, metrics, training record, caveats.
SIDECAR_PATH: Path = _WEIGHTS_DIR / "pbmc-mlp.json"
#: What the model expects as input.
INPUT_DESCRIPTION = "pbmc68k_reduced adata.X: log-normalised, z-scaled per gene"

_INSTALL_HINT = (
    "The default gene-expression model's data set (scanpy.datasets.pbmc68k_reduced, bundled with scanpy) "
    'needs scanpy. Install it with `pip install scanpy`, or install the bio extra: `pip install "lrp-domains[bio]"`.'
)

#: Canonical marker genes per ``bulk_labels`` class, from the literature: the Seurat PBMC 3k tutorial
#: (IL7R/CCR7 naive CD4 T, IL7R/S100A4 memory CD4 T, CD14/LYZ monocytes, MS4A1 B, CD8A CD8 T, GNLY/NKG7 NK,
#: FCER1A/CST3 DC), Zheng et al. 2017 (the FACS-sorted populations behind ``bulk_labels``), Azimuth PBMC
#: (HSPC: CD34, PRSS57, SPINK2, GATA2) and the usual surface/lineage genes (CD3E/CD3D T cells, FOXP3/IL2RA/CTLA4
#: Treg, CD79A/B B cells, NCAM1 = CD56, FCGR3A = CD16). Many are not among the 765 model genes (e.g. CD14,
#: CD34, FOXP3, IL2RA, NCAM1, CD19); use :func:`markers_in` to keep the present ones.
PBMC_MARKERS: dict[str, list[str]] = {
    "CD4+/CD25 T Reg": ["CD3E", "CD3D", "CD4", "FOXP3", "IL2RA", "CTLA4", "IKZF2", "TIGIT"],
    "CD4+/CD45RA+/CD25- Naive T": ["CD3E", "CD3D", "CD4", "IL7R", "CCR7", "SELL", "LEF1", "TCF7"],
    "CD4+/CD45RO+ Memory": ["CD3E", "CD3D", "CD4", "IL7R", "S100A4", "CD40LG"],
    "CD8+ Cytotoxic T": ["CD3E", "CD3D", "CD8A", "CD8B", "GZMK", "GZMH", "CCL5", "NKG7"],
    "CD8+/CD45RA+ Naive Cytotoxic": ["CD3E", "CD3D", "CD8A", "CD8B", "CCR7", "SELL", "LEF1"],
    "CD14+ Monocyte": ["CD14", "LYZ", "S100A8", "S100A9", "FCN1", "VCAN"],
    "CD19+ B": ["CD19", "MS4A1", "CD79A", "CD79B", "PAX5", "BANK1"],
    "CD34+": ["CD34", "PRSS57", "SPINK2", "GATA2", "KIT", "FLT3"],
    "CD56+ NK": ["NCAM1", "NKG7", "GNLY", "KLRD1", "PRF1", "GZMB", "FCGR3A"],
    "Dendritic": ["FCER1A", "CST3", "CD1C", "CLEC10A", "CLEC4C", "LILRA4"],
}


def build_mlp(sizes: Sequence[int]) -> nn.Sequential:
    """``nn.Sequential`` of ``nn.Linear(sizes[i], sizes[i+1])`` with an ``nn.ReLU`` between consecutive Linears.

    The last layer is a Linear (logits), no dropout, no normalisation, so LRP rules apply layer by layer.
    Module indices are ``0, 2, 4, ...`` for the Linears, matching the keys of the shipped state dict.

    Args:
        sizes: layer widths, input first, e.g. ``[765, 256, 128, 10]``; at least two.
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ValueError(f"build_mlp needs at least two positive layer sizes, got {sizes}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def read_sidecar(path: str | Path | None = None) -> dict[str, Any]:
    """The sidecar of the shipped weights (or of ``path``) as a fresh dict (see the module
    docstring for its content)."""
    from lrp_domains.models import read_sidecar as read

    return read(SIDECAR_PATH if path is None else path, "python workflows/bio/train_pbmc.py")


def load_default_model(device: str | torch.device | None = None) -> tuple[nn.Sequential, list[str], list[str]]:
    """The shipped PBMC MLP, in eval mode, with its input genes and output classes.

    Weights are read with safetensors only and checked against the sidecar's ``weights_sha256``
    (see :func:`state_dict_sha256`).

    Args:
        device: where to put the model (default: CPU).

    Returns:
        ``(model, genes, classes)``: ``model`` maps ``(N, len(genes))`` float32 z-scores (genes in the order
        of ``genes`` = ``pbmc68k_reduced().var_names``) to ``(N, len(classes))`` logits, ``classes`` being the
        ``bulk_labels`` categories in output order.
    """
    from safetensors.torch import load_file

    meta = read_sidecar()
    sizes = meta["architecture"]["sizes"]
    genes, classes = list(meta["genes"]), list(meta["classes"])
    if sizes[0] != len(genes) or sizes[-1] != len(classes):
        raise ValueError(f"{SIDECAR_PATH}: sizes {sizes} do not match {len(genes)} genes / {len(classes)} classes")
    state = load_file(str(WEIGHTS_PATH))
    digest = state_dict_sha256(state)
    if digest != meta["weights_sha256"]:
        raise ValueError(
            f"{WEIGHTS_PATH} does not match its sidecar (sha256 {digest}, expected {meta['weights_sha256']}); "
            "retrain with `python workflows/bio/train_pbmc.py` to write both files together."
        )
    model = build_mlp(sizes)
    model.load_state_dict(state, strict=True)
    model.eval()
    if device is not None:
        model.to(device)
    return model, genes, classes


def load_default_data() -> anndata.AnnData:
    """``scanpy.datasets.pbmc68k_reduced()``: the data the default model was trained on (bundled, offline).

    Raises:
        ImportError: scanpy is not installed; the message says what to install.
    """
    try:
        import scanpy
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    return scanpy.datasets.pbmc68k_reduced()


def default_data_path() -> Path:
    """The file :func:`load_default_data` reads: scanpy's bundled ``10x_pbmc68k_reduced.h5ad``
    (offline), which runs read in backed mode like any ``.h5ad``."""
    try:
        import scanpy.datasets
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    path = Path(scanpy.datasets.__file__).parent / "10x_pbmc68k_reduced.h5ad"
    if not path.is_file():
        raise FileNotFoundError(f"scanpy's bundled PBMC data is not at {path}; reinstall scanpy")
    return path


def held_out_cells() -> list[str]:
    """Names (``obs_names``) of the held-out test cells of the shipped model, in data order."""
    return list(read_sidecar()["split"]["test_cells"])


def model_inputs(
    adata: anndata.AnnData,
    cells: Iterable[str] | None = None,
    genes: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inputs (float32, genes in model order) and label indices (or None without ``bulk_labels``) of ``adata``.

    Args:
        adata: expression data preprocessed like ``pbmc68k_reduced`` (see :data:`INPUT_DESCRIPTION`).
        cells: obs_names to take, in that order (default: all), e.g. :func:`held_out_cells`.
        genes, classes: the model's (default: the sidecar's); a missing gene raises :class:`KeyError`.
    """
    meta = read_sidecar() if genes is None or classes is None else None
    genes = list(meta["genes"]) if genes is None else list(genes)
    classes = list(meta["classes"]) if classes is None else list(classes)
    sub = adata if cells is None else adata[list(cells)]
    missing = [g for g in genes if g not in sub.var_names]
    if missing:
        raise KeyError(f"{len(missing)} model genes are missing from the data, e.g. {missing[:5]}")
    sub = sub[:, genes]
    x = sub.X.toarray() if hasattr(sub.X, "toarray") else np.asarray(sub.X)
    inputs = torch.from_numpy(np.array(x, dtype=np.float32))
    if "bulk_labels" not in sub.obs:
        return inputs, None
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[str(v)] for v in sub.obs["bulk_labels"]], dtype=torch.long)
    return inputs, labels


def markers_in(genes: Iterable[str]) -> dict[str, list[str]]:
    """:data:`PBMC_MARKERS` restricted to ``genes`` (e.g. the model's), list order kept; classes with none dropped."""
    present = set(genes)
    kept = {cls: [g for g in markers if g in present] for cls, markers in PBMC_MARKERS.items()}
    return {cls: markers for cls, markers in kept.items() if markers}
