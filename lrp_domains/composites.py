"""Named composites (re-exported from :mod:`lrp_domains.core.composites`)."""

from lrp_domains.core.composites import get, names, register

__all__ = ["get", "names", "register"]
