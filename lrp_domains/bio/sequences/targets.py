"""Targets for profile and multi-track genomics models: callables ``output -> (N,)``.

Every target here takes the model's raw output (a tensor, a tuple of heads as bpnet-lite's
BPNet/ChromBPNet return ``(profile, counts)``, or a dict of heads as Enformer returns
``{"human": ..., "mouse": ...}``), picks its head (:meth:`GenomicTarget.pick`) and reduces it to
one value per example. Passed as ``target=`` to :class:`~lrp_domains.bio.SequenceExplainer` the
head is picked before the explained tensor is stored; with the core ``explain`` on a model that
returns several heads, pass ``output=head_output(...)`` too (its default output is the first
element of a tuple), or the target raises when it is handed a head it cannot read.

- :func:`profile_target`: the BPNet profile head weighted by its own softmax, the softmax held
  constant: ``sum_i stop_gradient(softmax(p))_i * p_i`` (Avsec et al. 2021, "Base-resolution
  models of transcription-factor binding reveal soft motif syntax", Nat. Genet., Methods,
  "contribution scores for the profile"; the same quantity bpnet-lite's ``ProfileWrapper`` and
  tangermeme users explain, there with mean-centred logits: ``center=True``).
- :func:`counts_target`: the counts head (log total counts).
- :func:`track_target`: a window of bins of some tracks of a ``(N, bins, tracks)`` output
  (Enformer) or ``(N, tracks, bins)`` (Borzoi: ``layout="NCL"``), summed.
- :func:`specificity_target`: the mean of some tracks minus the mean of the others, each summed
  over a window of bins (the cell-type specificity Decima and CREsted explain).
- ``"A vs B"`` (two output indices): one output minus another (the core's
  :class:`~lrp_domains.core.engine.targets.Contrast`).
- :func:`parse_sequence_target`: these from text (the CLI's ``--target``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Union

import torch

from lrp_domains.core.engine.targets import CONTRAST_SEPARATOR, Contrast, parse_contrast
from lrp_domains.errors import InputError

__all__ = [
    "ContrastTarget",
    "CountsTarget",
    "GenomicTarget",
    "IndexTarget",
    "ProfileTarget",
    "SpecificityTarget",
    "TrackTarget",
    "counts_target",
    "head_output",
    "parse_sequence_target",
    "pick_head",
    "profile_target",
    "specificity_target",
    "track_target",
]

Head = Union[int, str, None]
Bins = Union[slice, tuple, None]

#: Output layouts of multi-track heads: bins then tracks (Enformer), tracks then bins (Borzoi).
LAYOUTS = ("NLC", "NCL")


def pick_head(raw: Any, head: Head) -> torch.Tensor:
    """The tensor of head ``head`` in a model's raw output: ``raw[head]`` for a tuple/list or a
    dict, ``raw`` itself for a tensor (``head`` must then be None or 0: the model has one head);
    ``head=None`` on a dict with a single entry picks that entry."""
    if isinstance(raw, torch.Tensor):
        if head not in (None, 0):
            raise InputError(
                f"target head={head!r}, but the model returns a single tensor "
                f"{tuple(raw.shape)}; leave head out (or give the model's head option, e.g. Enformer's "
                "head='human', when building it)"
            )
        return raw
    if isinstance(raw, Mapping):
        keys = list(raw)
        if head is None:
            if len(keys) == 1:
                return _tensor(raw[keys[0]], keys[0])
            raise InputError(f"the model returns the heads {keys}; say which one with head=... (e.g. head={keys[0]!r})")
        if head not in raw:
            raise InputError(f"target head={head!r}: the model returns the heads {keys}")
        return _tensor(raw[head], head)
    if isinstance(raw, (tuple, list)):
        index = 0 if head is None else head
        if not isinstance(index, int) or isinstance(index, bool) or not -len(raw) <= index < len(raw):
            raise InputError(
                f"target head={head!r}: the model returns {len(raw)} outputs; give an index 0..{len(raw) - 1}"
            )
        return _tensor(raw[index], index)
    logits = getattr(raw, "logits", None)
    if isinstance(logits, torch.Tensor) and head in (None, 0):
        return logits
    raise InputError(f"cannot read head {head!r} from a model output of type {type(raw).__name__}")


def _tensor(value: Any, head: Head) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise InputError(f"head {head!r} of the model's output is a {type(value).__name__}, not a tensor")
    return value


def head_output(head: Head):
    """``output=`` for the core ``explain``: ``(raw, batch) -> raw[head]`` (see :func:`pick_head`)."""

    def output(raw: Any, batch: Any = None) -> torch.Tensor:
        return pick_head(raw, head)

    return output


class GenomicTarget:
    """Base class: a target that reads one head of a model's output (:meth:`pick`) and reduces it
    to one value per example (:meth:`reduce`). Calling it does both."""

    head: Head = None

    def pick(self, raw: Any, batch: Any = None) -> torch.Tensor:
        """The head this target reads (usable as ``output=`` of the core ``explain``)."""
        return pick_head(raw, self.head)

    def reduce(self, output: torch.Tensor) -> torch.Tensor:
        """The explained value per example, ``(N,)``, from the head's tensor."""
        raise NotImplementedError

    def __call__(self, output: Any) -> torch.Tensor:
        return self.reduce(output if isinstance(output, torch.Tensor) else self.pick(output))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class ProfileTarget(GenomicTarget):
    """See :func:`profile_target`."""

    def __init__(self, head: Head = 0, strand: int | None = None, center: bool = False) -> None:
        self.head, self.strand, self.center = head, strand, bool(center)

    def pick(self, raw: Any, batch: Any = None) -> torch.Tensor:
        """The profile head; a model returning one tensor without positions (a classifier's
        ``(N, outputs)``) has none: an InputError saying what it offers."""
        if isinstance(raw, torch.Tensor) and raw.dim() < 3:
            raise InputError(
                f"target 'profile' reads a profile head (N, strands, positions), as BPNet/ChromBPNet "
                f"return beside their counts; this model returns one tensor {_shape(raw)}: "
                f"{_offer(raw)}"
            )
        return super().pick(raw, batch)

    def reduce(self, output: torch.Tensor) -> torch.Tensor:
        """``sum(softmax(p).detach() * p)`` over positions (and strands, jointly, as bpnet-lite
        normalises both strands with one softmax), ``p`` the profile logits ``(N, strands, L)``
        or ``(N, L)``; ``strand`` keeps one strand (its own softmax)."""
        if output.dim() == 2:
            output = output[:, None]
        if output.dim() != 3:
            raise InputError(
                f"profile_target reads a profile head of shape (N, strands, positions) or "
                f"(N, positions); got {tuple(output.shape)} (is head={self.head!r} the profile head?)"
            )
        if self.strand is not None:
            if not -output.shape[1] <= self.strand < output.shape[1]:
                raise InputError(f"profile_target strand={self.strand}: the profile has {output.shape[1]} strand(s)")
            output = output.select(1, self.strand)
        logits = output.reshape(output.shape[0], -1)
        if self.center:
            logits = logits - logits.mean(-1, keepdim=True)
        weights = torch.softmax(logits.detach(), dim=-1)
        return (weights * logits).sum(-1)


class CountsTarget(GenomicTarget):
    """See :func:`counts_target`."""

    def __init__(self, head: Head = 1, index: int | None = None) -> None:
        self.head, self.index = head, index

    def pick(self, raw: Any, batch: Any = None) -> torch.Tensor:
        """The counts head; a model returning one tensor has none (unless ``head=0`` says that
        tensor is it): an InputError saying what it offers."""
        if isinstance(raw, torch.Tensor) and self.head not in (None, 0):
            offer = (
                "give 'profile' (its one tensor has positions) or an output index" if raw.dim() >= 3 else _offer(raw)
            )
            raise InputError(
                f"target 'counts' reads the counts head of a model returning (profile, counts), as "
                f"BPNet/ChromBPNet do; this model returns one tensor {_shape(raw)}: {offer}"
            )
        return super().pick(raw, batch)

    def reduce(self, output: torch.Tensor) -> torch.Tensor:
        """The count output per example: ``(N,)``, ``(N, 1)`` as is, ``(N, k)`` at ``index``."""
        flat = output.reshape(output.shape[0], -1)
        if self.index is not None:
            if not -flat.shape[1] <= self.index < flat.shape[1]:
                raise InputError(f"counts_target index={self.index}: the counts head has {flat.shape[1]} values")
            return flat[:, self.index]
        if flat.shape[1] != 1:
            raise InputError(
                f"counts_target reads a counts head with one value per example; head={self.head!r} has "
                f"shape {tuple(output.shape)} (is it the profile head? give head=... or index=...)"
            )
        return flat[:, 0]


class TrackTarget(GenomicTarget):
    """See :func:`track_target`."""

    def __init__(
        self, track: int | Sequence[int], bins: Bins = None, head: Head = None, layout: str | None = None
    ) -> None:
        tracks = [track] if isinstance(track, int) else list(track)
        if not tracks or any(not isinstance(t, int) or isinstance(t, bool) or t < 0 for t in tracks):
            raise InputError(f"track_target: tracks must be non-negative integers, got {track!r}")
        if layout is not None and layout not in LAYOUTS:
            raise InputError(
                f"track_target layout={layout!r}: give 'NLC' (N, bins, tracks; Enformer) or "
                "'NCL' (N, tracks, bins; Borzoi)"
            )
        self.track, self.bins, self.head, self.layout = track, _bins(bins), head, layout
        self._tracks = tracks

    def resolved(self, layout: str) -> TrackTarget:
        """This target with ``layout`` where it has none (explainers set the model's layout)."""
        return self if self.layout is not None else TrackTarget(self.track, self.bins, self.head, layout)

    def reduce(self, output: torch.Tensor) -> torch.Tensor:
        """The chosen tracks over the chosen bins, summed per example."""
        if output.dim() != 3:
            raise InputError(
                f"track_target reads a multi-track head (N, bins, tracks) or (N, tracks, bins); got "
                f"shape {tuple(output.shape)}"
            )
        layout = self.layout or self._guess(output)
        values = output if layout == "NLC" else output.transpose(1, 2)  # (N, bins, tracks)
        n_bins, n_tracks = values.shape[1], values.shape[2]
        if max(self._tracks) >= n_tracks:
            raise InputError(
                f"track {max(self._tracks)} is out of range: the output has {n_tracks} tracks "
                f"(layout {layout}: {'bins, tracks' if layout == 'NLC' else 'tracks, bins'})"
            )
        window = values[:, self.bins] if self.bins is not None else values
        if self.bins is not None:
            start, stop, _ = self.bins.indices(n_bins)
            if stop <= start or (self.bins.stop is not None and self.bins.stop > n_bins):
                raise InputError(
                    f"bins {_show(self.bins)} are outside the output's {n_bins} bins; give a window within 0-{n_bins}"
                )
        index = torch.tensor(self._tracks, device=output.device)
        return window.index_select(2, index).sum((1, 2))

    def _guess(self, output: torch.Tensor) -> str:
        top = max(self._tracks)
        if top < output.shape[2]:
            return "NLC"
        if top < output.shape[1]:
            raise InputError(
                f"track {top} fits only the second axis of an output of shape {tuple(output.shape)}: "
                "is it (N, tracks, bins) as Borzoi's? give layout='NCL'"
            )
        return "NLC"


class IndexTarget(GenomicTarget):
    """One entry (flat index per example) of one head: ``"5 head=mouse"`` on the command line."""

    def __init__(self, index: int, head: Head = None) -> None:
        self.index, self.head = int(index), head

    def reduce(self, output: torch.Tensor) -> torch.Tensor:
        """``output.reshape(N, -1)[:, index]``."""
        flat = output.reshape(output.shape[0], -1)
        if not 0 <= self.index < flat.shape[1]:
            raise InputError(
                f"target {self.index} is out of range for head {self.head!r} with {flat.shape[1]} values per example"
            )
        return flat[:, self.index]


class SpecificityTarget(TrackTarget):
    """See :func:`specificity_target`."""

    def __init__(
        self,
        tracks: int | Sequence[int],
        bins: Bins = None,
        off: int | Sequence[int] | None = None,
        head: Head = None,
        layout: str | None = None,
    ) -> None:
        super().__init__(tracks, bins, head, layout)
        self.off = off
        self._off = None if off is None else ([off] if isinstance(off, int) else list(off))
        if self._off is not None:
            if not self._off or any(not isinstance(t, int) or isinstance(t, bool) or t < 0 for t in self._off):
                raise InputError(f"specificity_target: off tracks must be non-negative integers, got {off!r}")
            both = sorted(set(self._tracks) & set(self._off))
            if both:
                raise InputError(f"specificity_target: tracks {both} are both on and off target")

    def resolved(self, layout: str) -> SpecificityTarget:
        """This target with ``layout`` where it has none (explainers set the model's layout)."""
        if self.layout is not None:
            return self
        return SpecificityTarget(self.track, self.bins, self.off, self.head, layout)

    def reduce(self, output: torch.Tensor) -> torch.Tensor:
        """Per example: the on-target tracks' mean minus the off-target tracks' mean, each track
        summed over the bins."""
        if output.dim() != 3:
            raise InputError(
                f"specificity_target reads a multi-track head (N, bins, tracks) or (N, tracks, bins); got "
                f"shape {tuple(output.shape)}"
            )
        layout = self.layout or self._guess(output)
        n_tracks = output.shape[2] if layout == "NLC" else output.shape[1]
        off = self._off if self._off is not None else [t for t in range(n_tracks) if t not in self._tracks]
        if not off:
            raise InputError(f"specificity_target: the output has {n_tracks} tracks, none of them off target")
        if max(off) >= n_tracks:
            raise InputError(f"off-target track {max(off)} is out of range: the output has {n_tracks} tracks")
        on_mean = TrackTarget(self._tracks, self.bins, self.head, layout).reduce(output) / len(self._tracks)
        off_mean = TrackTarget(off, self.bins, self.head, layout).reduce(output) / len(off)
        return on_mean - off_mean


class ContrastTarget(GenomicTarget):
    """One output index minus another, of one head: ``"1 vs 0"`` (``head=H`` optional)."""

    def __init__(self, positive: int, negative: int, head: Head = None, name: str | None = None) -> None:
        self.contrast = Contrast(positive, negative, name)
        self.head = head

    def reduce(self, output: torch.Tensor) -> torch.Tensor:
        """``output.reshape(N, -1)[:, positive] - output.reshape(N, -1)[:, negative]``."""
        try:
            return self.contrast(output)
        except ValueError as error:
            raise InputError(str(error)) from None


def _shape(raw: torch.Tensor) -> str:
    return "(N, " + ", ".join(str(d) for d in raw.shape[1:]) + ")" if raw.dim() > 1 else "(N,)"


def _offer(raw: torch.Tensor) -> str:
    """What a single-tensor model offers as targets: its output indices."""
    count = int(torch.tensor(raw.shape[1:]).prod()) if raw.dim() > 1 else 1
    return "give an output index (0)" if count == 1 else f"give an output index 0..{count - 1}"


def _bins(bins: Bins) -> slice | None:
    if bins is None or isinstance(bins, slice):
        if isinstance(bins, slice) and bins.step not in (None, 1):
            raise InputError(f"bins: a window of consecutive bins, got step {bins.step}")
        return bins
    if isinstance(bins, Sequence) and len(bins) == 2 and all(isinstance(b, int) for b in bins):
        start, stop = bins
        if start < 0 or stop <= start:
            raise InputError(f"bins {start}-{stop}: give start < end, both >= 0 (end excluded)")
        return slice(start, stop)
    raise InputError(f"bins must be a slice, a (start, end) pair (end excluded) or None, got {bins!r}")


def _show(bins: slice) -> str:
    return f"{bins.start or 0}-{'end' if bins.stop is None else bins.stop}"


def profile_target(head: int = 0, strand: int | None = None, *, center: bool = False) -> ProfileTarget:
    """The profile head of a BPNet/ChromBPNet model: its logits ``p`` weighted by their own
    softmax, the softmax detached, ``sum_i stop_gradient(softmax(p))_i * p_i`` over positions
    (and both strands jointly; ``strand`` keeps one).

    This is the profile contribution target of Avsec et al. 2021 (Nat. Genet. 53:354, Methods;
    ``tf.stop_gradient(softmax) * logits`` in their code), which bpnet-lite's ``ProfileWrapper``
    and tangermeme's DeepLiftShap users explain. ``center=True`` subtracts the logits' mean first,
    as ``ProfileWrapper`` does (the value drops by ``mean(p)``; the relevance of a constant shift
    of the logits is then zero).
    """
    return ProfileTarget(head, strand, center)


def counts_target(head: int = 1, *, index: int | None = None) -> CountsTarget:
    """The counts head (log total counts) of a BPNet/ChromBPNet model; ``index`` picks one value
    of a counts head with several (e.g. per strand)."""
    return CountsTarget(head, index)


def track_target(
    track: int | Sequence[int], bins: Bins = None, head: Head = None, *, layout: str | None = None
) -> TrackTarget:
    """One or more tracks of a multi-track output over a window of bins, summed per example.

    ``bins``: ``slice(400, 420)`` or ``(400, 420)`` (end excluded, as in BED) or None (all
    bins). ``head``: the output head (``"human"`` for Enformer's dict output; an index for a
    tuple). ``layout``: ``"NLC"`` (N, bins, tracks), Enformer's; ``"NCL"`` (N, tracks, bins),
    Borzoi's. Left None, :class:`~lrp_domains.bio.SequenceExplainer` sets it from the model's
    architecture, and elsewhere ``"NLC"`` is assumed (an error says so where the track index only
    fits the other axis).
    """
    return TrackTarget(track, bins, head, layout)


def specificity_target(
    tracks: int | Sequence[int],
    bins: Bins = None,
    off: int | Sequence[int] | None = None,
    head: Head = None,
    *,
    layout: str | None = None,
) -> SpecificityTarget:
    """The specificity of some tracks over the others: the mean of the on-target ``tracks`` minus
    the mean of the off-target tracks (every other track unless ``off`` names them), each track
    summed over ``bins`` (a window, end excluded; None: all bins). This is the cell-type
    specificity Decima (Lal et al. 2025) and CREsted (Kempynck et al. 2024) explain.

    ``head`` and ``layout`` as for :func:`track_target`. On the command line:
    ``"specific: tracks 3,7 vs rest, bins 400-420"`` or ``"specific: tracks 3,7 vs 1,2"``.
    """
    return SpecificityTarget(tracks, bins, off, head, layout)


_INT = r"-?\d+"
_PROFILE = re.compile(r"^profile(?:\s*[:=]\s*(?P<strand>\d+))?$", re.IGNORECASE)
_COUNTS = re.compile(r"^counts?(?:\s*[:=]\s*(?P<index>\d+))?$", re.IGNORECASE)
_TRACK = re.compile(
    r"^tracks?\s*[=\s:]\s*(?P<tracks>\d+(?:\s*,\s*\d+)*?)"
    r"(?:\s*(?::|,?\s*bins?\s*[=\s:]?)\s*(?P<start>\d+)\s*[-:]\s*(?P<stop>\d+))?$",
    re.IGNORECASE,
)
_SPECIFIC = re.compile(
    r"^specific(?:ity)?\s*:?\s*tracks?\s*[=\s:]?\s*(?P<on>\d+(?:\s*,\s*\d+)*)"
    r"(?:\s+vs\.?\s+(?:(?P<rest>rest|others?|all)|(?:tracks?\s*[=\s:]?\s*)?(?P<off>\d+(?:\s*,\s*\d+)*)))?"
    r"(?:\s*,?\s*bins?\s*[=\s:]?\s*(?P<start>\d+)\s*[-:]\s*(?P<stop>\d+))?$",
    re.IGNORECASE,
)
_OPTION = re.compile(r"\s+(?P<key>head|strand|layout)\s*=\s*(?P<value>[\w.-]+)\s*$", re.IGNORECASE)

#: What ``--target`` accepts, for help texts and errors.
TARGET_SYNTAX = (
    "an output index (e.g. 0), 'profile' (BPNet profile head, softmax-weighted), 'profile:S' (strand S), "
    "'counts', 'track 12, bins 400-420' or 'track=12:400-420' (end excluded; several tracks: "
    "'track=3,5:0-10'), 'specific: tracks 3,7 vs rest, bins 400-420' (the mean of tracks 3 and 7 minus "
    "the others' mean; 'vs 1,2': those off-target tracks), '1 vs 0' (one output minus another), each "
    "optionally followed by head=H (an index or a name such as human) or layout=NCL"
)


def parse_sequence_target(text: str | int | None) -> int | GenomicTarget | None:
    """A sequence target from text (the CLI's ``--target``): an integer output index (``"5 head=mouse"``:
    of one head), or
    ``"profile"`` / ``"profile:1"`` (strand 1) / ``"counts"`` / ``"counts:0"`` (one value of
    several) / ``"track 12, bins 400-420"`` / ``"track=12:400-420"`` / ``"track=3,5"`` (all
    bins), each optionally followed by ``head=H``, ``strand=S`` (profile) or ``layout=NCL``
    (tracks); ``"specific: tracks 3,7 vs rest, bins 400-420"`` (:func:`specificity_target`; ``vs
    1,2``: those off-target tracks; without ``vs``: the rest); ``"1 vs 0"`` (one output index minus
    another). None and integers pass through."""
    if text is None or (isinstance(text, int) and not isinstance(text, bool)):
        return text
    if not isinstance(text, str):
        raise InputError(f"target: expected text or an integer, got {type(text).__name__}")
    spec = " ".join(text.strip().split())
    if not spec:
        raise InputError(f"target is empty; give {TARGET_SYNTAX}")
    options: dict[str, str] = {}
    while (found := _OPTION.search(spec)) is not None:
        if found["key"] in options:
            raise InputError(f"target {text!r}: {found['key']}= is given twice")
        options[found["key"].lower()] = found["value"]
        spec = spec[: found.start()].rstrip(" ,")
    head = _head(options.pop("head", None), text)
    if re.fullmatch(_INT, spec):
        _no_options(options, text, "an output index")
        return int(spec) if head is None else IndexTarget(int(spec), head)
    if (match := _PROFILE.fullmatch(spec)) is not None:
        strand = match["strand"] or options.pop("strand", None)
        _no_options(options, text, "a profile")
        return profile_target(0 if head is None else head, None if strand is None else int(strand))
    if (match := _COUNTS.fullmatch(spec)) is not None:
        _no_options(options, text, "a counts")
        return counts_target(1 if head is None else head, index=None if match["index"] is None else int(match["index"]))
    if (match := _SPECIFIC.fullmatch(spec)) is not None:
        on = [int(t) for t in match["on"].split(",")]
        off = None if match["off"] is None else [int(t) for t in match["off"].split(",")]
        bins = None if match["start"] is None else (int(match["start"]), int(match["stop"]))
        layout = options.pop("layout", None)
        _no_options(options, text, "a specificity")
        return specificity_target(on, bins, off, head, layout=None if layout is None else layout.upper())
    if spec.lower().startswith("specific"):
        raise InputError(f"target {text!r} is not understood; write e.g. 'specific: tracks 3,7 vs rest, bins 400-420'")
    if CONTRAST_SEPARATOR.search(spec) is not None:
        _no_options(options, text, "a contrast")

        def index(side: int | str) -> int:
            if not isinstance(side, int):
                raise InputError(f"target {text!r}: each side of 'vs' must be an output index, got {side!r}")
            return side

        contrast = parse_contrast(spec, index, dash=False)
        assert contrast is not None
        return ContrastTarget(contrast.positive, contrast.negative, head, text)
    if (match := _TRACK.fullmatch(spec)) is not None:
        tracks = [int(t) for t in match["tracks"].split(",")]
        bins = None if match["start"] is None else (int(match["start"]), int(match["stop"]))
        layout = options.pop("layout", None)
        _no_options(options, text, "a track")
        return track_target(
            tracks[0] if len(tracks) == 1 else tracks, bins, head, layout=None if layout is None else layout.upper()
        )
    raise InputError(f"target {text!r} is not understood; give {TARGET_SYNTAX}")


def _head(value: str | None, text: str) -> Head:
    if value is None:
        return None
    return int(value) if re.fullmatch(_INT, value) else value


def _no_options(options: dict[str, str], text: str, kind: str) -> None:
    if options:
        raise InputError(f"target {text!r}: {', '.join(f'{k}=' for k in options)} does not apply to {kind} target")
