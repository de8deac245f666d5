"""Seqlets and motifs: calling seqlets against a null, JASPAR scans, TOMTOM, seqlets over a whole
run."""
