"""Text benches: AttnLRP and CP-LRP cost on the default sentiment model (``bench text``) and token-perturbation
faithfulness on SST-2 dev (``bench text-faithfulness``)."""
