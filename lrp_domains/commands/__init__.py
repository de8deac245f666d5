"""The ``lrp-domains text ...`` and ``lrp-domains bio ...`` command groups (typer)."""
