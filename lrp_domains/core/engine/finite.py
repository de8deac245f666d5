"""Numbers that are not numbers: where a model's NaN or Inf comes from.

A report over explanations whose values are all NaN or infinite has nothing to show; the usual
cause is the model itself (a NaN weight after a diverged training run, an overflowed buffer).
:func:`first_nonfinite_parameter` names it, and :class:`NonFiniteOutputs` is the error a report
raises, before writing anything, when every record is non-finite.
"""

from __future__ import annotations

import torch
from torch import nn

from lrp_domains.errors import InputError

__all__ = ["NonFiniteOutputs", "first_nonfinite_parameter"]


def first_nonfinite_parameter(model: nn.Module) -> str | None:
    """The name of the model's first parameter (then buffer) holding NaN or Inf (``"0.weight"``);
    None when every one is finite."""
    found = _first_nonfinite(model)
    return None if found is None else found[0]


def _first_nonfinite(model: nn.Module) -> tuple[str, int, int] | None:
    """``(name, non-finite values, values)`` of the first parameter (then buffer) holding NaN or Inf."""
    for tensors in (model.named_parameters(), model.named_buffers()):
        for name, tensor in tensors:
            if not tensor.is_floating_point() and not tensor.is_complex():
                continue
            bad = int((~torch.isfinite(tensor.detach())).sum())
            if bad:
                return name, bad, tensor.numel()
    return None


class NonFiniteOutputs(InputError):
    """Every explained record is NaN or infinite: a report has nothing to show.

    Raised by report writers before they write anything; :func:`lrp_domains.report.write_report`
    adds the model's first non-finite parameter (:meth:`naming`)."""

    def __init__(self, count: int, item: str = "records") -> None:
        self.count = count
        self.item = item
        super().__init__(self._message())

    def _message(self, model: nn.Module | None = None) -> str:
        text = (
            f"every output was NaN or Inf (all {self.count} {self.item}: the explained value or its relevance), "
            "so there is nothing to report"
        )
        if not isinstance(model, nn.Module):
            return text
        found = _first_nonfinite(model)
        if found is not None:
            name, bad, total = found
            return (
                f"{text}; the model's parameter '{name}' holds NaN or Inf ({bad} of {total} values): check the weights"
            )
        return f"{text}; every parameter of the model is finite: check the inputs' scale and the model's forward"

    def naming(self, model: nn.Module | None) -> NonFiniteOutputs:
        """The same error, its message naming ``model``'s first non-finite parameter."""
        error = NonFiniteOutputs(self.count, self.item)
        error.args = (self._message(model),)
        return error
