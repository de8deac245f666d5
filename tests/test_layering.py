"""Imports flow one way: core <- text, bio <- report, evaluate, commands, bench, demo."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lrp_domains"
FORBIDDEN = {
    "core": (
        "lrp_domains.text",
        "lrp_domains.bio",
        "lrp_domains.report",
        "lrp_domains.evaluate",
        "transformers",
        "Bio",
        "anndata",
        "scanpy",
    ),
    "text": ("lrp_domains.bio", "lrp_domains.report", "lrp_domains.commands", "lrp_domains.bench"),
    "bio": ("lrp_domains.text", "lrp_domains.report", "lrp_domains.commands", "lrp_domains.bench"),
}


#: bio modules over token models (DNA language models, transformers over genes) run through the text
#: machinery by design (one engine for text and genomics, issues #14 and #18); nothing else in bio
#: may import text, and importing lrp_domains.bio loads neither (test below).
TEXT_BRIDGES = {"bio/dna_lm/explainer.py", "bio/cells/gene_transformer.py"}


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
        for path in sorted((PACKAGE / package).rglob("*.py")):  # sub-packages too
            relative = str(path.relative_to(PACKAGE))
            for name in _imports(path):
                if relative in TEXT_BRIDGES and name.startswith("lrp_domains.text"):
                    continue
                if name.startswith(forbidden):
                    offending.append(f"{relative} imports {name}")
    assert not offending, offending


#: Within ``bio``, what each sub-package may import of the others (besides the bio root: its
#: composites). A new sub-package needs its line here (the test below says so).
BIO_SUBPACKAGES = {
    "architectures": set(),
    "sequences": {"architectures"},
    "motifs": {"sequences"},
    "dna_lm": {"sequences"},
    "variants": {"sequences", "motifs"},
    "cells": set(),
    "concepts": {"sequences", "motifs", "cells"},
}
#: The most modules a package may hold directly (more: split it into sub-packages).
MODULES_PER_PACKAGE = 12


def test_bio_sub_packages_import_only_what_their_rules_allow():
    offending = []
    bio = PACKAGE / "bio"
    found = {path.name for path in bio.iterdir() if path.is_dir() and (path / "__init__.py").exists()}
    assert found == set(BIO_SUBPACKAGES), f"a sub-package without a rule: {found ^ set(BIO_SUBPACKAGES)}"
    for package, allowed in BIO_SUBPACKAGES.items():
        for path in sorted((bio / package).rglob("*.py")):
            for name in _imports(path):
                parts = name.split(".")
                if (
                    name.startswith("lrp_domains.bio.")
                    and len(parts) > 3
                    and parts[2] != package
                    and parts[2] not in allowed
                ):
                    offending.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not offending, offending


def test_no_package_holds_more_than_twelve_modules():
    crowded = {
        str(folder.relative_to(PACKAGE.parent)): n
        for folder in [PACKAGE, *PACKAGE.rglob("*")]
        if folder.is_dir()
        and (folder / "__init__.py").exists()
        and (n := len([p for p in folder.glob("*.py") if p.name != "__init__.py"])) > MODULES_PER_PACKAGE
    }
    assert not crowded, crowded


def test_importing_bio_loads_neither_the_text_package_nor_transformers():
    code = "import sys, lrp_domains.bio; print([m for m in ('lrp_domains.text', 'transformers') if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_importing_the_core_loads_no_domain_library():
    code = (
        "import sys, lrp_domains.core, lrp_domains; "
        "print([m for m in ('transformers', 'pandas', 'Bio', 'anndata', 'scanpy') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# -- the command line is the top layer -------------------------------------------------------------
ROOT = PACKAGE.parent
#: Everything below the command line (packages, modules and the workflow scripts at the repository root).
BELOW_THE_CLI = (
    "run",
    "bench",
    "report",
    "evaluate",
    "core",
    "text",
    "bio",
    "files",
    "domains.py",
    "models.py",
    "latent.py",
    "demo.py",
)
WORKFLOW_SCRIPTS = ("workflows/text/*.py", "workflows/bio/*.py")
#: The run machinery, the readers, the registry and user-model loading: they see the explainer contract only,
#: never a domain's explainer or the reports.
CONTRACT_ONLY = ("run", "files", "domains.py", "models.py")
NOT_BELOW_THE_CONTRACT = ("lrp_domains.text", "lrp_domains.report")


def _module_of(path: Path) -> str:
    """``lrp_domains.run.dataset`` for ``lrp_domains/run/dataset.py`` (``__init__`` names its package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str = "", is_package: bool = False) -> set[str]:
    """Every module a source imports, anywhere in it (inside functions too): ``import a.b``,
    ``from a import b`` (as ``a`` and ``a.b``, since ``b`` may be a module), relative imports
    resolved against ``module``, and ``importlib.import_module("a.b")`` / ``__import__("a.b")``
    with a literal name."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            parent = ".".join(base + ([node.module] if node.module else []))
            names.add(parent)
            names.update(f"{parent}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in ("import_module", "__import__"):
                names.add(node.args[0].value)
    return {name for name in names if name}


def _sources(entries: tuple[str, ...]) -> list[Path]:
    """The Python files of package folders and modules of ``lrp_domains`` (each entry must exist)."""
    paths = []
    for entry in entries:
        target = PACKAGE / entry
        assert target.exists(), f"{target} is gone: update the layering test"
        paths += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    return paths


def _offending(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in paths:
        names = imported_modules(path.read_text(), _module_of(path), path.name == "__init__.py")
        for name in sorted(names):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


def test_the_import_scan_sees_every_way_to_import():
    source = (
        "import lrp_domains.commands.run\n"
        "def late():\n    from lrp_domains import commands\n    from ..commands import bio\n"
        "    from . import common\n    importlib.import_module('lrp_domains.text')\n"
    )
    names = imported_modules(source, "lrp_domains.run.dataset")
    assert {
        "lrp_domains.commands.run",
        "lrp_domains.commands",
        "lrp_domains.commands.bio",
        "lrp_domains.run.common",
        "lrp_domains.text",
    } <= names
    assert "lrp_domains.commands.text" in imported_modules("from .text import app", "lrp_domains.commands", True)


def test_nothing_below_the_cli_imports_the_commands():
    """Only ``lrp_domains/cli.py`` and ``lrp_domains/commands/`` import ``lrp_domains.commands``:
    the library, the benchmarks, the reports and the workflow scripts work without the CLI."""
    scripts = [path for pattern in WORKFLOW_SCRIPTS for path in sorted(ROOT.glob(pattern))]
    assert scripts, "no workflow scripts found at the repository root"
    offending = _offending(_sources(BELOW_THE_CLI) + scripts, ("lrp_domains.commands",))
    assert not offending, offending
    # the rest of the package too (__main__, demo...): nothing but the CLI itself
    allowed = {PACKAGE / "cli.py", *(PACKAGE / "commands").rglob("*.py")}
    rest = [path for path in sorted(PACKAGE.rglob("*.py")) if path not in allowed]
    offending = _offending(rest, ("lrp_domains.commands",))
    assert not offending, offending


def test_runs_and_readers_know_no_domain():
    """``run/``, ``files/``, the registry and user-model loading import neither a domain's
    explainer (text) nor the reports: they find both through the explainer contract."""
    offending = _offending(_sources(CONTRACT_ONLY), NOT_BELOW_THE_CONTRACT)
    assert not offending, offending
