"""Domains as plug-ins: the explainer contract and the registry of explainers.

A domain is one explainer class that subclasses :class:`DomainExplainer` and says:

- ``kind`` (``"text"``, ``"sequences"``, ``"genes"``): its name in the registry, the CLI
  (``lrp-domains run KIND``) and run manifests; ``item``: what one input row is;
- :meth:`~DomainExplainer.reader`: how it reads its input files, shard by shard;
- :meth:`~DomainExplainer.explain_batch` and :meth:`~DomainExplainer.result_rows`: how a batch of
  items becomes a result (its own result type) and output rows (``columns``);
- :meth:`~DomainExplainer.settings`: what of it must match for two runs to share a folder;
- ``report``: ``"module:function"`` writing its report (resolved by :mod:`lrp_domains.report`);
- :meth:`~DomainExplainer.from_options`: how to build it from command-line strings.

Explainers register with :func:`register` (a decorator) or, for installed packages, with an entry
point in the ``lrp_domains.explainers`` group (``kind = "package.module:Class"``); the built-in
domains are entry points of this package. ``run/``, the ``run`` command group, the exports and
the reports find explainers here and never name a domain's class. ``docs/design.md`` shows how to
add a domain.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from lrp_domains.errors import InputError
from lrp_domains.options import Option

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from lrp_domains.core.composite import Composite
    from lrp_domains.files.formats import Shard

ENTRY_POINT_GROUP = "lrp_domains.explainers"
#: Columns every output row starts with.
COMMON_COLUMNS = ("row", "id")
#: The column every output row ends with (where the domain does not declare it): ``ok``, or why
#: the row holds no usable explanation (``non-finite``: NaN or Inf in its output or relevance).
STATUS = "status"
OK = "ok"
NON_FINITE = "non-finite"


@dataclass(frozen=True)
class Unusable:
    """An item a reader found but cannot hand to the model (a genome region running off its
    chromosome...): its row is written with every column empty and ``status`` set to
    :attr:`status` (``detail`` says why, in messages)."""

    status: str
    detail: str = ""


class Reader(Protocol):
    """How a domain reads an input: ``shards`` indexes it once, ``read`` returns one shard's ids
    and items (texts, sequences, a cells x genes table...; in a list, an item may be
    :class:`Unusable`). ``path`` names the input in messages; a reader may also have ``source``
    (what to give ``explainer.reader`` to build it again on another machine; default ``path``) and
    ``fingerprint()`` (what identifies the input in a run's manifest; default the file's SHA-256)."""

    path: Path

    def shards(self, shard_size: int) -> list[Shard]: ...

    def read(self, shard: Shard) -> tuple[list[str], Any]: ...


class DomainExplainer:
    """The contract every domain explainer fulfils (see the module docstring)."""

    #: The domain's name.
    kind: ClassVar[str] = ""
    #: What one input row is, for messages and help ("text", "record", "cell").
    item: ClassVar[str] = "item"
    #: Composite used when none is given.
    default_composite: ClassVar[str] = "epsilon"
    #: Options a run passes to :meth:`explain_batch`, with their defaults.
    run_options: ClassVar[dict[str, Any]] = {"target": None, "batch_size": None}
    #: The type of each option whose default does not say it (:class:`lrp_domains.options.Option`:
    #: a choice, a minimum); ``target`` and ``batch_size`` are typed for every explainer.
    option_types: ClassVar[dict[str, Option]] = {}
    #: Output columns after ``row`` and ``id``, in order (``explained`` and ``delta`` first).
    columns: ClassVar[tuple[str, ...]] = ("explained", "delta")
    #: Columns whose NaN or Inf marks a row ``non-finite`` (a NaN relevance makes ``delta`` NaN).
    finite_columns: ClassVar[tuple[str, ...]] = ("explained", "delta")
    #: ``"module:function"`` writing this domain's report: ``function(result, out_dir, **kwargs) -> {name: path}``.
    report: ClassVar[str | None] = None

    model: nn.Module
    composite: Composite

    def reader(self, path: str | Path, column: str | None = None) -> Reader:
        """A reader of ``path`` for this domain (an InputError for a file type it cannot read)."""
        raise NotImplementedError

    @classmethod
    def regions_source(cls, regions: str | Path, genome: str | Path | None, width: int | None = None) -> Any:
        """What :meth:`reader` takes to read windows of ``width`` bases around genome regions (a
        BED or narrowPeak file) from ``genome`` (``--regions``, ``--genome``, ``--width``; None:
        the model's input length). Domains whose items are not genome sequences refuse it."""
        raise InputError(f"a {cls.kind} run does not take --regions")

    def explain_batch(self, ids: Sequence[str], items: Any, first_row: int = 0, **options: Any) -> Any:
        """Explain one batch of items (ids name them in messages, with their ``first_row``)."""
        raise NotImplementedError

    def result_rows(self, result: Any, ids: Sequence[str]) -> dict[str, list]:
        """The output columns (:attr:`columns`) of a result, one value per item."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """Domain settings that must match for a run to resume (added to the manifest)."""
        return {}

    def check_options(self, options: dict[str, Any]) -> None:
        """Raise :class:`~lrp_domains.errors.InputError` for option values this explainer cannot
        use; runs call it before the first item is explained."""

    @classmethod
    def from_options(
        cls, model: str | None = None, weights: str | None = None, composite: str | None = None
    ) -> DomainExplainer:
        """Build from command-line strings (the default model when ``model`` is None)."""
        raise NotImplementedError

    @classmethod
    def report_context(cls, manifest: dict[str, Any]) -> dict[str, Any]:
        """What this domain's report writer needs beyond the rows, from a finished run's manifest
        (genes: the input data, for the differential-expression comparison). Default: nothing."""
        return {}

    @classmethod
    def result_from_rows(cls, rows: pd.DataFrame, settings: dict[str, Any]) -> Any:
        """A result of this domain rebuilt from a finished run's rows (``status`` ``ok`` only) and its
        manifest's settings: the inverse of :meth:`result_rows`, for the steps that read a run (its
        report). Domains without a report need not implement it."""
        raise InputError(
            f"the {cls.kind} explainer cannot rebuild its results from a run's rows (it has no report of a run)"
        )

    def explain_rows(self, ids: Sequence[str], items: Any, first_row: int = 0, **options: Any) -> pd.DataFrame:
        """Explain a batch and return its output rows: ``row``, ``id``, :attr:`columns` and
        ``status`` (``ok``, or ``non-finite`` for a row whose numbers hold NaN or Inf)."""
        import pandas as pd

        unknown = sorted(set(options) - set(self.run_options))
        if unknown:
            raise InputError(
                f"the {self.kind} explainer takes no option {', '.join(map(repr, unknown))}; its options "
                f"are {', '.join(sorted(self.run_options))}"
            )
        ids = list(ids)
        unusable = (
            {i: item for i, item in enumerate(items) if isinstance(item, Unusable)}
            if isinstance(items, (list, tuple))
            else {}
        )
        usable = [i for i in range(len(ids)) if i not in unusable]
        columns: dict[str, list] = {name: [None] * len(ids) for name in self.columns}
        if usable:
            chosen = items if not unusable else [items[i] for i in usable]
            result = self.explain_batch([ids[i] for i in usable], chosen, first_row=first_row, **options)
            found = self.result_rows(result, [ids[i] for i in usable])
            if list(found) != list(self.columns):
                raise TypeError(
                    f"{type(self).__name__}.result_rows gave columns {list(found)}, not its declared "
                    f"{list(self.columns)}"
                )
            for name, values in found.items():
                for i, value in zip(usable, values):
                    columns[name][i] = value
        if STATUS in columns:
            for i, item in unusable.items():
                columns[STATUS][i] = item.status
        rows: dict[str, list[Any]] = {"row": list(range(first_row, first_row + len(ids))), "id": ids, **columns}
        checked = [columns[name] for name in self.finite_columns if name in columns]
        finite = [all(_finite(values[i]) for values in checked) for i in range(len(ids))]
        given = rows.get(STATUS, [OK] * len(ids))
        rows[STATUS] = [
            unusable[i].status if i in unusable else status if good or status != OK else NON_FINITE
            for i, (status, good) in enumerate(zip(given, finite))
        ]
        return pd.DataFrame(rows)


def _finite(value: Any) -> bool:
    """False for a number, or a list/array of numbers, holding NaN or Inf (other values: True)."""
    import numpy as np

    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, (int, float, np.number)):
        return bool(np.isfinite(value))
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        return True
    if array.dtype == object:
        return all(_finite(v) for v in array.ravel())
    return not np.issubdtype(array.dtype, np.number) or bool(np.isfinite(array).all())


_REGISTRY: dict[str, type[DomainExplainer]] = {}


def register(cls: type[DomainExplainer]) -> type[DomainExplainer]:
    """Register an explainer class under its ``kind`` (usable as a class decorator)."""
    if not isinstance(cls, type) or not issubclass(cls, DomainExplainer) or not cls.kind:
        raise TypeError(f"register needs a DomainExplainer subclass with a kind, got {cls!r}")
    _REGISTRY[cls.kind] = cls
    return cls


@functools.lru_cache(maxsize=1)
def _entry_points() -> dict[str, Any]:
    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def kinds() -> list[str]:
    """The registered kinds (entry points included, not loaded)."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def get(kind: str) -> type[DomainExplainer]:
    """The explainer class of ``kind``, loading its entry point on first use."""
    if kind not in _REGISTRY:
        point = _entry_points().get(kind)
        if point is None:
            raise InputError(f"no explainer of kind {kind!r}; known kinds: {', '.join(kinds()) or 'none'}")
        try:
            loaded = point.load()
        except ImportError as error:
            raise ImportError(
                f"the {kind!r} explainer ({point.value}) needs packages that are not installed "
                f'({error}); install its extra (pip install "lrp-domains[all]")'
            ) from error
        register(loaded)
    return _REGISTRY[kind]


def kind_of(explainer: Any) -> str:
    """The kind of an explainer object; a TypeError naming what is missing otherwise."""
    if not isinstance(explainer, DomainExplainer) or not explainer.kind:
        raise TypeError(
            f"expected an explainer that fulfils the DomainExplainer contract (lrp_domains.domains), got "
            f"{type(explainer).__name__}"
        )
    return explainer.kind


def build_explainer(
    kind: str,
    model: str | None = None,
    weights: str | None = None,
    composite: str | None = None,
    device: str | None = None,
) -> DomainExplainer:
    """An explainer of ``kind`` from command-line strings (module-level and picklable through
    ``functools.partial``, so Ray workers can rebuild it), its model on ``device`` (``--device``:
    :func:`lrp_domains.run.devices.resolve_device`; None leaves it where it was loaded). The explainers
    compute where their model is."""
    explainer = get(kind).from_options(model=model, weights=weights, composite=composite)
    if device is not None:
        from lrp_domains.run.devices import resolve_device

        explainer.model.to(resolve_device(device))
    return explainer
