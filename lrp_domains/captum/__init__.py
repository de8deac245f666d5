"""Captum's interface to this project's LRP: :class:`LRP` and :class:`LayerLRP` are Captum
``Attribution`` classes (Captum must be installed: ``pip install "lrp-domains[peers]"``), usable in
``NoiseTunnel``, Captum's visualisation and inseq (:mod:`lrp_domains.captum.inseq`)."""

from lrp_domains.captum.attribution import LRP, LayerLRP

__all__ = ["LRP", "LayerLRP"]
