"""Whole runs in processes: cold start-up (``bench startup``), dataset-scale throughput and memory (``bench
scale``), a bpnet-lite user's job (``bench bpnet-job``) and one long record (``bench long-record``)."""
