"""User models: ``MODULE:FACTORY`` specs, safetensors weights, and the one state-dict fingerprint.

``--model MODULE:FACTORY`` *imports that module and runs its code* (as ``python -m`` would, with
the current folder on the import path), then calls ``FACTORY()`` for a ``torch.nn.Module`` or a
tuple ``(module, genes, classes)``. ``--weights`` loads a ``.safetensors`` state dict into it
(never a pickle); a JSON sidecar with the same stem may name ``genes`` and ``classes``. Every
problem is an :class:`~lrp_domains.errors.InputError` saying what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from lrp_domains.errors import InputError


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 identifying a state dict: over its tensors sorted by name, each as ``f"{name}|{dtype}|{shape}|"``
    followed by its raw bytes. Independent of how a file orders its tensors; identifies shipped
    weights (their sidecars' ``weights_sha256``) and the model of a run (its manifest)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    """:func:`state_dict_sha256` of a model's parameters and buffers."""
    return state_dict_sha256(model.state_dict())


#: Files one of which a folder written by a tokenizer's ``save_pretrained`` holds.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model")


def _looks_local(name: str) -> bool:
    """Whether ``name`` can only be a path (``./x``, ``/x``, ``~/x``, ``a/b/c``), not a hub name (``org/model``)."""
    return (name.startswith((".", "~", os.sep, "/")) or os.path.isabs(name) or "\\" in name
            or name.count("/") > 1)


@contextlib.contextmanager
def pretrained_errors(name: str) -> Iterator[None]:
    """Loading a transformers model from folder or hub name ``name``: a missing folder, or a name that
    cannot be loaded (a mistyped folder, a hub name offline), is one InputError saying what to give."""
    path = Path(name).expanduser()
    hint = "give a folder written by save_pretrained, or a Hugging Face Hub name (hub names need the network)"
    if not path.exists() and _looks_local(name):
        raise InputError(f"{name}: no such folder; {hint}")
    if path.exists() and not path.is_dir():
        raise InputError(f"{name}: not a folder; {hint}")
    try:
        yield
    except (OSError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        first = " ".join(str(error).split())[:300]
        if path.is_dir():
            raise InputError(f"{name}: cannot load the model in this folder ({type(error).__name__}: {first}); "
                             "give a folder written by save_pretrained (config, weights and tokenizer)") from error
        raise InputError(f"{name}: no such folder, and no Hugging Face Hub model of that name could be loaded "
                         f"({type(error).__name__}: {first}); {hint}") from error


def pretrained_tokenizer(name: str, loader: Any) -> Any:
    """``loader.from_pretrained(name)`` (e.g. ``AutoTokenizer``), with an InputError when a local
    folder holds a model but no tokenizer."""
    path = Path(name).expanduser()
    if path.is_dir() and not any((path / file).is_file() for file in TOKENIZER_FILES):
        raise InputError(f"{name}: the folder holds no tokenizer (none of {', '.join(TOKENIZER_FILES[:3])}, ...); "
                         "save the model's tokenizer there too: tokenizer.save_pretrained(folder)")
    try:
        return loader.from_pretrained(str(path) if path.is_dir() else name)
    except (TypeError, OSError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        if path.is_dir():
            raise InputError(f"{name}: the folder's tokenizer cannot be loaded ({type(error).__name__}: "
                             f"{' '.join(str(error).split())[:300]}); save the model's tokenizer there with "
                             "tokenizer.save_pretrained(folder)") from error
        raise


class UserModel(NamedTuple):
    """A model built from a ``MODULE:FACTORY`` spec, with the gene and class names it came with."""

    model: nn.Module
    genes: list[str] | None
    classes: list[str] | None


def load_factory(spec: str) -> Any:
    """The callable named by ``MODULE:FACTORY`` (the module is imported: its code runs)."""
    module_name, _, factory_name = spec.partition(":")
    if not module_name or not factory_name:
        raise InputError(f"--model must be MODULE:FACTORY (e.g. mymodels:build), got {spec!r}")
    here = str(Path.cwd())
    if here not in sys.path:  # as `python -m` does: a module in the current folder is found
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InputError(f"--model {spec}: cannot import {module_name!r} ({error}); run from the folder that holds "
                         f"{module_name.replace('.', '/')}.py or add its folder to PYTHONPATH") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise InputError(f"--model {spec}: module {module_name!r} has no function {factory_name!r}")
    return factory


def load_user_model(spec: str, weights: str | Path | None = None) -> UserModel:
    """Build ``MODULE:FACTORY`` and load ``weights`` (safetensors) into it; see the module docstring."""
    factory = load_factory(spec)
    try:
        built = factory()
    except Exception as error:  # the user's code: name it, keep the original as __cause__
        detail = " ".join(str(error).split())[:400]
        raise InputError(f"--model {spec}: the factory raised {type(error).__name__}: {detail}") from error
    model, genes, classes = built if isinstance(built, tuple) and len(built) == 3 else (built, None, None)
    if not isinstance(model, nn.Module):
        raise InputError(f"--model {spec}: the factory returned {type(model).__name__}, not a torch.nn.Module (or a "
                         "tuple (module, genes, classes))")
    if weights is not None:
        path = Path(weights)
        if not path.name.lower().endswith(".safetensors"):
            raise InputError(f"--weights {path.name}: give a .safetensors file (pickled checkpoints are not loaded: "
                             "they can run code); convert with safetensors.torch.save_file(model.state_dict(), ...)")
        if not path.is_file():
            raise InputError(f"--weights: no such file: {path}")
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as error:  # safetensors raises its own error types for a damaged file
            raise InputError(f"--weights {path.name}: not a readable safetensors file ({error})") from None
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            detail = " ".join(str(error).split())[:400]
            raise InputError(f"--weights {path.name} do not fit the model built by {spec}: {detail}") from None
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            try:
                meta = json.loads(sidecar.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as error:
                raise InputError(f"{sidecar.name} (beside the weights) is not valid JSON ({error})") from None
            if isinstance(meta, dict):
                genes, classes = meta.get("genes", genes), meta.get("classes", classes)
    return UserModel(model.eval(), None if genes is None else [str(g) for g in genes],
                     None if classes is None else [str(c) for c in classes])
