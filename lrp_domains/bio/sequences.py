"""DNA/RNA sequences: FASTA reading, one-hot encoding ``(N, alphabet, L)``, reverse complements."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

DNA = "ACGT"
#: IUPAC codes other than N: ambiguous bases, refused rather than guessed.
IUPAC = set("RYSWKMBDHV")
COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A", "U": "A", "N": "N"}


def read_fasta(path: str | Path) -> tuple[list[str], list[str]]:
    """Record ids and sequences of a FASTA file (``.gz`` too), read with Biopython."""
    from Bio import SeqIO

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such FASTA file: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        records = list(SeqIO.parse(handle, "fasta"))
    if not records:
        raise ValueError(f"{path.name} contains no FASTA records")
    return [r.id for r in records], [str(r.seq) for r in records]


def one_hot(sequences: str | Sequence[str], alphabet: str = DNA, dtype: torch.dtype = torch.float32,
            n: str = "zeros", ids: Sequence[str] | None = None) -> torch.Tensor:
    """One-hot encode equal-length sequences as ``(N, len(alphabet), L)`` (length last).

    Lowercase (soft-masked) bases are accepted. ``N`` becomes all zeros (``n="zeros"``), 1/A in
    every row (``n="uniform"``) or an error (``n="error"``). Any other character, IUPAC
    ambiguity codes included, is an error naming the record and position.
    """
    if n not in ("zeros", "uniform", "error"):
        raise ValueError(f"n must be 'zeros', 'uniform' or 'error', got {n!r}")
    sequences = [sequences] if isinstance(sequences, str) else list(sequences)
    if not sequences:
        raise ValueError("no sequences given")
    names = list(ids) if ids is not None else [f"sequence {i}" for i in range(len(sequences))]
    lengths = {len(s) for s in sequences}
    if len(lengths) > 1:
        raise ValueError(f"sequences have different lengths {sorted(lengths)[:5]}; encode them per length "
                         "(SequenceExplainer does this for you)")
    alphabet = alphabet.upper()
    lookup = np.full(256, -1, dtype=np.int64)
    for index, base in enumerate(alphabet):
        lookup[ord(base)] = index
        lookup[ord(base.lower())] = index
    n_code = len(alphabet)
    for char in "Nn":
        lookup[ord(char)] = n_code
    encoded = np.zeros((len(sequences), len(alphabet), lengths.pop()), dtype=np.float32)
    for row, (name, sequence) in enumerate(zip(names, sequences)):
        raw = np.frombuffer(sequence.encode("ascii", errors="replace"), dtype=np.uint8)
        codes = lookup[raw]
        bad = np.nonzero(codes < 0)[0]
        if len(bad):
            char = sequence[bad[0]]
            kind = "an IUPAC ambiguity code" if char.upper() in IUPAC else "not a base"
            raise ValueError(f"{name}: {char!r} at position {bad[0] + 1} is {kind} (alphabet {alphabet} plus N); "
                             "replace it, or mask it as N")
        is_n = codes == n_code
        if is_n.any() and n == "error":
            raise ValueError(f"{name}: N at position {int(np.nonzero(is_n)[0][0]) + 1} (pass n='zeros' or 'uniform')")
        positions = np.nonzero(~is_n)[0]
        encoded[row, codes[positions], positions] = 1.0
        if n == "uniform":
            encoded[row, :, is_n] = 1.0 / len(alphabet)
    return torch.from_numpy(encoded).to(dtype)


def reverse_complement(onehot: torch.Tensor) -> torch.Tensor:
    """Reverse complement of one-hot sequences ``(N, 4, L)`` in ACGT (or ACGU) order: the base
    axis and the length axis reversed."""
    if onehot.dim() != 3 or onehot.shape[1] != 4:
        raise ValueError(f"reverse_complement needs (N, 4, L) one-hot in ACGT order, got shape {tuple(onehot.shape)}")
    return onehot.flip(1).flip(2)


def decode(onehot: torch.Tensor, alphabet: str = DNA) -> list[str]:
    """Sequences back from ``(N, A, L)`` one-hot (all-zero or uniform columns become N)."""
    values = onehot.detach().cpu().numpy()
    result = []
    for row in values:
        best = row.argmax(0)
        certain = row.max(0) > 0.5
        result.append("".join(alphabet[b] if c else "N" for b, c in zip(best, certain)))
    return result
