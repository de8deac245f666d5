"""``python -m lrp_domains``: the same as the ``lrp-domains`` command."""

from lrp_domains.cli import main

main()
