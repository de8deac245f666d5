"""GPU benches: LRP on large decoders and the default models' throughput (``bench gpu``), the genomics model
families in float32 and bfloat16 (``bench gpu-models``)."""
