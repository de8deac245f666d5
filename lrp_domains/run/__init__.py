"""Dataset-scale explanation: streaming, resumable runs into Parquet shards, locally or on Ray."""

from lrp_domains.run.concepts import reference_examples
from lrp_domains.run.dataset import explain_dataset, iter_shards, read_manifest, read_results
from lrp_domains.run.modisco import export_modisco

__all__ = ["explain_dataset", "export_modisco", "iter_shards", "read_manifest", "read_results", "reference_examples"]
