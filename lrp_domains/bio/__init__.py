"""Bio adapter: gene-level relevance for expression models, nucleotide and motif relevance for
one-hot sequence models. Importing it registers the ``genomics`` composite."""

from lrp_domains.bio import composites as _composites  # noqa: F401  (registers "genomics")
from lrp_domains.bio.cells.expression import ExpressionExplainer
from lrp_domains.bio.cells.genes import GeneExplanation
from lrp_domains.bio.concepts.filters import FilterConcepts, explain_filters
from lrp_domains.bio.concepts.units import UnitTable, hidden_units
from lrp_domains.bio.motifs.seqlets import annotate_seqlets, call_seqlets, plot_logo, to_bed, to_modisco
from lrp_domains.bio.sequences.attribution import attribute
from lrp_domains.bio.sequences.explainer import SequenceExplainer, SequenceExplanation
from lrp_domains.bio.sequences.onehot import DNA, PROTEIN, RNA, one_hot, read_fasta, reverse_complement
from lrp_domains.bio.sequences.targets import (
    counts_target,
    parse_sequence_target,
    profile_target,
    specificity_target,
    track_target,
)
from lrp_domains.bio.sequences.tracks import parse_region, run_to_bigwig, seqlets_to_genome_bed, to_bigwig
from lrp_domains.bio.variants.effects import explain_variants, read_vcf, variants_to_bigwig

__all__ = [
    "DNA",
    "PROTEIN",
    "RNA",
    "ExpressionExplainer",
    "FilterConcepts",
    "GeneExplanation",
    "SequenceExplainer",
    "SequenceExplanation",
    "UnitTable",
    "annotate_seqlets",
    "attribute",
    "call_seqlets",
    "explain_filters",
    "explain_variants",
    "hidden_units",
    "one_hot",
    "parse_region",
    "plot_logo",
    "read_fasta",
    "read_vcf",
    "reverse_complement",
    "run_to_bigwig",
    "seqlets_to_genome_bed",
    "to_bed",
    "to_bigwig",
    "to_modisco",
    "variants_to_bigwig",
    "counts_target",
    "parse_sequence_target",
    "profile_target",
    "specificity_target",
    "track_target",
]
