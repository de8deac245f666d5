"""Reports: tables, figures and pages shared by the text, sequence and gene reports."""

from lrp_domains.report.blocks import Page, Section, figure, image, link, logo, paragraph, raw, table, token_heatmap

__all__ = ["Page", "Section", "figure", "image", "link", "logo", "paragraph", "raw", "table", "token_heatmap"]
