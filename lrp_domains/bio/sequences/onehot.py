"""Biological sequences as one-hot tensors ``(N, alphabet, L)`` (length last), for any alphabet.

One encoder for DNA (``ACGT``), RNA (``ACGU``) and protein (the 20 amino acids). The *unknown*
symbol, encoded as all zeros (or uniform), is ``N`` for nucleotide alphabets and ``X`` for
alphabets that contain ``N`` (in protein, N is asparagine). FASTA files are read by
:func:`lrp_domains.files.fasta.read_fasta` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lrp_domains.errors import InputError
from lrp_domains.files.fasta import read_fasta

__all__ = ["DNA", "PROTEIN", "RNA", "decode", "one_hot", "read_fasta", "reverse_complement", "unknown_symbol"]

DNA = "ACGT"
RNA = "ACGU"
#: The 20 standard amino acids, alphabetically by one-letter code.
PROTEIN = "ACDEFGHIKLMNPQRSTVWY"
#: IUPAC nucleotide ambiguity codes other than N: refused rather than guessed.
IUPAC = set("RYSWKMBDHV")


def unknown_symbol(alphabet: str) -> str:
    """The symbol for an unknown position: ``N``, or ``X`` when ``N`` is a letter of the alphabet,
    or ``?`` when both are."""
    letters = alphabet.upper()
    return next(symbol for symbol in ("N", "X", "?") if symbol not in letters)


def _is_nucleotide(alphabet: str) -> bool:
    return set(alphabet.upper()) <= set("ACGTU")


def one_hot(
    sequences: str | Sequence[str],
    alphabet: str = DNA,
    dtype: torch.dtype = torch.float32,
    n: str = "zeros",
    ids: Sequence[str] | None = None,
) -> torch.Tensor:
    """One-hot encode equal-length sequences as ``(N, len(alphabet), L)`` (length last).

    Lowercase (soft-masked) letters are accepted. The unknown symbol (:func:`unknown_symbol`:
    ``N`` for DNA/RNA, ``X`` for protein) becomes all zeros (``n="zeros"``), 1/A in every row
    (``n="uniform"``) or an error (``n="error"``). Any other character (IUPAC ambiguity codes
    included) is an InputError naming the record and position.
    """
    if n not in ("zeros", "uniform", "error"):
        raise ValueError(f"n must be 'zeros', 'uniform' or 'error', got {n!r}")
    sequences = [sequences] if isinstance(sequences, str) else list(sequences)
    if not sequences:
        raise ValueError("no sequences given")
    names = list(ids) if ids is not None else [f"sequence {i}" for i in range(len(sequences))]
    lengths = {len(s) for s in sequences}
    if len(lengths) > 1:
        raise ValueError(
            f"sequences have different lengths {sorted(lengths)[:5]}; encode them per length "
            "(SequenceExplainer does this for you)"
        )
    alphabet = alphabet.upper()
    if len(set(alphabet)) != len(alphabet):
        raise ValueError(f"the alphabet {alphabet!r} repeats a letter")
    unknown = unknown_symbol(alphabet)
    lookup = np.full(256, -1, dtype=np.int64)
    for index, letter in enumerate(alphabet):
        lookup[ord(letter)] = lookup[ord(letter.lower())] = index
    unknown_code = len(alphabet)
    lookup[ord(unknown)] = lookup[ord(unknown.lower())] = unknown_code
    encoded = np.zeros((len(sequences), len(alphabet), lengths.pop()), dtype=np.float32)
    for row, (name, sequence) in enumerate(zip(names, sequences)):
        raw = np.frombuffer(sequence.encode("ascii", errors="replace"), dtype=np.uint8)
        codes = lookup[raw]
        bad = np.nonzero(codes < 0)[0]
        if len(bad):
            char = sequence[bad[0]]
            kind = (
                "an IUPAC ambiguity code"
                if _is_nucleotide(alphabet) and char.upper() in IUPAC
                else f"not in the alphabet {alphabet}"
            )
            raise InputError(
                f"{name}: {char!r} at position {bad[0] + 1} is {kind} (nor the unknown symbol "
                f"{unknown}); replace it, or mask it as {unknown}"
            )
        is_unknown = codes == unknown_code
        if is_unknown.any() and n == "error":
            raise InputError(
                f"{name}: {unknown} at position {int(np.nonzero(is_unknown)[0][0]) + 1} (pass n='zeros' or 'uniform')"
            )
        positions = np.nonzero(~is_unknown)[0]
        encoded[row, codes[positions], positions] = 1.0
        if n == "uniform":
            encoded[row, :, is_unknown] = 1.0 / len(alphabet)
    return torch.from_numpy(encoded).to(dtype)


def reverse_complement(onehot: torch.Tensor) -> torch.Tensor:
    """Reverse complement of one-hot sequences ``(N, 4, L)`` in ACGT (or ACGU) order: the base
    axis and the length axis reversed."""
    if onehot.dim() != 3 or onehot.shape[1] != 4:
        raise ValueError(f"reverse_complement needs (N, 4, L) one-hot in ACGT order, got shape {tuple(onehot.shape)}")
    return onehot.flip(1).flip(2)


def decode(onehot: torch.Tensor, alphabet: str = DNA) -> list[str]:
    """Sequences back from ``(N, A, L)`` one-hot (all-zero or uniform columns become the unknown
    symbol)."""
    unknown = unknown_symbol(alphabet)
    values = onehot.detach().cpu().numpy()
    if values.size == 0:
        return [""] * values.shape[0]
    index = np.where(values.max(1) > 0.5, values.argmax(1), len(alphabet))  # (N, L); unknown last
    table = alphabet + unknown
    if table.isascii():  # one byte per letter: a lookup and a decode per row, no Python loop per base
        codes = np.frombuffer(table.encode("ascii"), dtype=np.uint8)[index]
        return [row.tobytes().decode("ascii") for row in codes]
    letters = np.array(list(table))
    return ["".join(row) for row in letters[index]]
