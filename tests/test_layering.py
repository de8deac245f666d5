"""Imports flow one way: core <- text, bio <- report, evaluate, commands, bench, demo."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lrp_domains"
FORBIDDEN = {
    "core": ("lrp_domains.text", "lrp_domains.bio", "lrp_domains.report", "lrp_domains.evaluate", "transformers",
             "Bio", "anndata", "scanpy"),
    "text": ("lrp_domains.bio", "lrp_domains.report", "lrp_domains.commands", "lrp_domains.bench"),
    "bio": ("lrp_domains.text", "lrp_domains.report", "lrp_domains.commands", "lrp_domains.bench"),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_packages_import_only_downwards():
    offending = []
    for package, forbidden in FORBIDDEN.items():
        for path in (PACKAGE / package).glob("*.py"):
            for name in _imports(path):
                if name.startswith(forbidden):
                    offending.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not offending, offending


def test_importing_the_core_loads_no_domain_library():
    code = ("import sys, lrp_domains.core, lrp_domains; "
            "print([m for m in ('transformers', 'pandas', 'Bio', 'anndata', 'scanpy') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
