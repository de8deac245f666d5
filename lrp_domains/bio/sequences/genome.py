"""A genome read by coordinates: indexed without writing beside it, and the window a model takes.

:func:`open_fasta` opens a FASTA (plain or bgzip) with its own ``.fai`` when there, else with an
index built once into our cache folder; nothing is ever written beside the genome and a user's
index is never rewritten. :func:`genome_sizes` gives chromosome lengths; :func:`default_window`
the length a model was trained on. Regions, tracks and variants all read genomes through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lrp_domains.errors import InputError

if TYPE_CHECKING:
    import pyfaidx

    from lrp_domains.bio.sequences.explainer import SequenceExplainer

__all__ = ["default_window", "genome_sizes", "index_cache_dir", "open_fasta"]


def default_window(explainer: SequenceExplainer) -> int:
    """The window the model was trained on: the explainer's or model's ``window`` attribute if set,
    else 200 for the project's default CNN (recognised by its architecture, see
    :mod:`lrp_domains.bio.sequences.synthetic_cnn`); otherwise an InputError asking for ``window=``."""
    for owner in (explainer, getattr(explainer, "model", None)):
        value = getattr(owner, "window", None)
        if isinstance(value, int) and value > 0:
            return value
    from lrp_domains.bio.sequences.synthetic_cnn import GENERATOR, build_cnn

    model = getattr(explainer, "model", None)
    if model is not None and repr(model) == repr(build_cnn()):
        return int(GENERATOR["length"])
    raise InputError(
        "explain_variants: the model's training length is not known; give window= (the number of "
        "bases the model was trained on)"
    )


def open_fasta(fasta: str | Path | pyfaidx.Fasta) -> tuple[pyfaidx.Fasta, bool]:
    """An indexed genome (``pyfaidx.Fasta``, opened from a path, or as given) and whether it was
    opened here (then the caller closes it); an InputError for a missing or unindexable file.

    Nothing is ever written beside the genome, and a user's index is never rewritten: the genome's
    own ``.fai`` (and ``.gzi`` for bgzip) is read when there, else an index is built once into our
    cache folder (:func:`index_cache_dir`, keyed by the genome's path, size and modification time),
    or into a temporary folder when the cache is not writable."""
    import pyfaidx

    if isinstance(fasta, pyfaidx.Fasta):
        return fasta, False
    path = Path(fasta)
    if not path.is_file():
        raise InputError(f"{path}: no such FASTA file")
    try:
        return _open_indexed(path), True
    except (pyfaidx.FastaIndexingError, pyfaidx.UnsupportedCompressionFormat) as error:
        raise InputError(
            f"{path.name}: cannot index this FASTA ({error}); give a plain or bgzip-compressed "
            "FASTA with equal line lengths per record"
        ) from error
    except OSError as error:
        raise InputError(f"{path}: cannot read this FASTA or index it ({error})") from error


def genome_sizes(fasta: str | Path | pyfaidx.Fasta) -> dict[str, int]:
    """Chromosome lengths of a genome, from its index (:func:`open_fasta`; nothing written beside it)."""
    genome, opened = open_fasta(fasta)
    try:
        return {name: len(genome[name]) for name in genome.keys()}
    finally:
        if opened:
            genome.close()


def index_cache_dir() -> Path:
    """Where genome indexes are built: ``$XDG_CACHE_HOME/lrp-domains/fai`` (``~/.cache`` without the variable)."""
    import os

    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "lrp-domains" / "fai"


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _open_indexed(path: Path) -> pyfaidx.Fasta:
    import pyfaidx

    bgzf = _is_gzip(path)
    fai, gzi = Path(f"{path}.fai"), Path(f"{path}.gzi")
    if fai.is_file() and (not bgzf or gzi.is_file()):  # the user's index: read, never rebuilt
        return pyfaidx.Fasta(
            str(path),
            as_raw=True,
            read_ahead=None,
            indexname=str(fai),
            gzi_indexname=str(gzi) if bgzf else None,
            rebuild=False,
            build_index=False,
        )
    try:
        return _open_cached(path, bgzf, index_cache_dir())
    except OSError:  # the cache is not writable: index into a temporary folder, read, delete
        import tempfile

        with tempfile.TemporaryDirectory(prefix="lrp-domains-fai-") as folder:
            return _open_cached(path, bgzf, Path(folder))


def _open_cached(path: Path, bgzf: bool, folder: Path) -> pyfaidx.Fasta:
    """The genome opened with an index in ``folder`` (built there first if missing; pyfaidx reads
    the index into memory, so the folder may go once this returns)."""
    import hashlib
    import os
    import uuid

    import pyfaidx

    info = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{info.st_size}\0{info.st_mtime_ns}".encode()).hexdigest()[:24]
    stem = folder / f"{key}-{path.name}"
    fai, gzi = Path(f"{stem}.fai"), Path(f"{stem}.gzi")
    if not fai.is_file() or (bgzf and not gzi.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".{key}-{uuid.uuid4().hex}"  # concurrent builders never share a name
        tmp_fai, tmp_gzi = Path(f"{temporary}.fai"), Path(f"{temporary}.gzi")
        try:
            pyfaidx.Faidx(
                str(path), indexname=str(tmp_fai), gzi_indexname=str(tmp_gzi) if bgzf else None, rebuild=False
            ).close()
            if bgzf:
                os.replace(tmp_gzi, gzi)
            os.replace(tmp_fai, fai)
        finally:
            for leftover in (tmp_fai, tmp_gzi):
                leftover.unlink(missing_ok=True)
    return pyfaidx.Fasta(
        str(path),
        as_raw=True,
        read_ahead=None,
        indexname=str(fai),
        gzi_indexname=str(gzi) if bgzf else None,
        rebuild=False,
        build_index=False,
    )
