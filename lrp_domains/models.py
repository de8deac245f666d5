"""User models: ``MODULE:FACTORY`` specs, safetensors weights, and the one state-dict fingerprint.

``--model MODULE:FACTORY`` *imports that module and runs its code* (as ``python -m`` would, with
the current folder on the import path), then calls ``FACTORY()`` for a ``torch.nn.Module`` or a
tuple ``(module, genes, classes)``. ``--weights`` loads a ``.safetensors`` state dict into it
(never a pickle); a JSON sidecar with the same stem may name ``genes`` and ``classes``. Weights
written by ``safetensors.torch.save_model`` (which keeps one name of parameters that share storage,
as Enformer's aliased submodules do) load too: a key the file lacks is filled from the one it
aliases in the built model.

``--model model.torch`` (or ``.pt``): a whole model saved with ``torch.save(model, path)``, as
bpnet-lite's BPNet and ChromBPNet are saved (:func:`load_saved_module`). It is read with
``torch.load(weights_only=True)`` and an allowlist of the classes such files hold
(:data:`SAVED_MODULE_CLASSES`); a file holding any other class is refused, never unpickled.

Every problem is an :class:`~lrp_domains.errors.InputError` saying what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
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
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def _looks_local(name: str) -> bool:
    """Whether ``name`` can only be a path (``./x``, ``/x``, ``~/x``, ``a/b/c``), not a hub name (``org/model``)."""
    return name.startswith((".", "~", os.sep, "/")) or os.path.isabs(name) or "\\" in name or name.count("/") > 1


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
            raise InputError(
                f"{name}: cannot load the model in this folder ({type(error).__name__}: {first}); "
                "give a folder written by save_pretrained (config, weights and tokenizer)"
            ) from error
        raise InputError(
            f"{name}: no such folder, and no Hugging Face Hub model of that name could be loaded "
            f"({type(error).__name__}: {first}); {hint}"
        ) from error


def refuse_weights(weights: object, holder: str) -> None:
    """An InputError when ``--weights`` is given for a model whose ``holder`` (a folder, a saved
    file) holds its own weights."""
    if weights is not None:
        raise InputError(f"--weights is for MODULE:FACTORY models; {holder} holds its own weights")


@contextlib.contextmanager
def as_model_option(name: str) -> Iterator[None]:
    """Loading ``--model name`` for the command line: an InputError about finding ``name`` (it
    begins with the name) is said as ``--model name: ...``; a problem of the model itself is
    left as it is."""
    try:
        yield
    except InputError as error:
        if not str(error).startswith(f"{name}:"):
            raise
        raise InputError(f"--model {error}") from error.__cause__


def pretrained_tokenizer(name: str, loader: Any) -> Any:
    """``loader.from_pretrained(name)`` (e.g. ``AutoTokenizer``), with an InputError when a local
    folder holds a model but no tokenizer."""
    path = Path(name).expanduser()
    if path.is_dir() and not any((path / file).is_file() for file in TOKENIZER_FILES):
        raise InputError(
            f"{name}: the folder holds no tokenizer (none of {', '.join(TOKENIZER_FILES[:3])}, ...); "
            "save the model's tokenizer there too: tokenizer.save_pretrained(folder)"
        )
    try:
        return loader.from_pretrained(str(path) if path.is_dir() else name)
    except (TypeError, OSError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        if path.is_dir():
            raise InputError(
                f"{name}: the folder's tokenizer cannot be loaded ({type(error).__name__}: "
                f"{' '.join(str(error).split())[:300]}); save the model's tokenizer there with "
                "tokenizer.save_pretrained(folder)"
            ) from error
        raise


#: Suffixes of a whole model saved with ``torch.save(model, path)`` (bpnet-lite writes ``.torch``).
SAVED_MODULE_SUFFIXES = (".torch", ".pt")

#: The classes (by ``module.name``) a model file saved with ``torch.save`` may hold beyond what
#: ``weights_only`` always allows (tensors, parameters, containers, numbers): exactly what
#: bpnet-lite's BPNet and ChromBPNet files hold, as ``fit`` saves them (their training log holds
#: numpy scalars), and the torch.nn modules they are made of. Nothing else is unpickled.
SAVED_MODULE_CLASSES = (
    "bpnetlite.bpnet.BPNet",
    "bpnetlite.chrombpnet.ChromBPNet",
    "bpnetlite.chrombpnet._Exp",
    "bpnetlite.chrombpnet._Log",
    "bpnetlite.logging.Logger",
    "torch.nn.modules.conv.Conv1d",
    "torch.nn.modules.linear.Linear",
    "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.container.ModuleList",
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray.scalar",
    "numpy.dtype",
)


def is_saved_module(spec: str | Path) -> bool:
    """Whether ``--model`` names a model file saved with ``torch.save`` (by its suffix), not ``MODULE:FACTORY``."""
    return str(spec).lower().endswith(SAVED_MODULE_SUFFIXES)


def _allowed(name: str) -> Any:
    """The object of allowlisted ``module.name`` (numpy's ``core`` is ``_core`` since numpy 2)."""
    module_name, _, attribute = name.rpartition(".")
    for candidate in (
        module_name,
        module_name.replace("numpy.core", "numpy._core"),
        module_name.replace("numpy._core", "numpy.core"),
    ):
        try:
            return getattr(importlib.import_module(candidate), attribute)
        except (ImportError, AttributeError):
            continue
    return None


def load_saved_module(path: str | Path) -> nn.Module:
    """A model saved whole with ``torch.save(model, path)`` (bpnet-lite's BPNet or ChromBPNet),
    returned as saved (on the CPU; training mode and dtype untouched).

    Read with ``torch.load(weights_only=True)`` and the allowlist :data:`SAVED_MODULE_CLASSES`:
    the classes the file names are read from the pickle without running it first, and a file naming
    any other class is refused (an InputError naming it), never unpickled."""
    path = Path(path).expanduser()
    hint = (
        "--model takes a bpnet-lite BPNet or ChromBPNet saved with torch.save(model, 'model.torch'), or "
        "MODULE:FACTORY with --weights (.safetensors) for any other model"
    )
    if not path.is_file():
        raise InputError(f"--model {path}: no such file; {hint}")
    try:
        named = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as error:  # not a zip written by torch.save, a TorchScript archive, a damaged file
        detail = " ".join(str(error).split())[:200]
        raise InputError(f"--model {path.name}: not a model file written by torch.save ({detail}); {hint}") from None
    refused = sorted(set(named) - set(SAVED_MODULE_CLASSES))
    if refused:
        which = "which is" if len(refused) == 1 else "which are"
        raise InputError(
            f"--model {path.name}: the file holds {', '.join(refused)}, {which} not loaded (unpickling "
            f"could run code; only bpnet-lite's BPNet and ChromBPNet files are): give MODULE:FACTORY "
            "building the model and its state dict as .safetensors with --weights"
        )
    allowed: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = []
    for name in sorted(set(named)):
        found = _allowed(name)
        if found is None:
            package = name.split(".")[0]
            raise InputError(
                f"--model {path.name}: the file holds {name}, which cannot be imported; install "
                f"{'bpnet-lite' if package == 'bpnetlite' else package}"
            )
        allowed.append((found, name))
    if "numpy.dtype" in named:  # a numpy scalar's dtype is rebuilt from its class (not seen by the scan)
        import numpy as np

        allowed += [
            type(np.dtype(kind))
            for kind in (
                "bool",
                "int8",
                "int16",
                "int32",
                "int64",
                "uint8",
                "uint16",
                "uint32",
                "uint64",
                "float16",
                "float32",
                "float64",
            )
        ]
    try:
        with torch.serialization.safe_globals(allowed):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the weights-only unpickler refuses what was not allowed, or a damaged file
        text = str(error)
        if "WeightsUnpickler error:" in text:  # the reason, without torch's advice to load unsafely
            text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
        detail = " ".join(text.split())[:300]
        raise InputError(
            f"--model {path.name}: cannot be loaded safely ({type(error).__name__}: {detail}); {hint}"
        ) from None
    if not isinstance(loaded, nn.Module):
        what = "a state dict" if isinstance(loaded, Mapping) else f"a {type(loaded).__name__}"
        raise InputError(
            f"--model {path.name}: the file holds {what}, not a model; give MODULE:FACTORY building the "
            "model, with the weights as .safetensors (--weights): safetensors.torch.save_file(state, ...)"
        )
    return loaded


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Load ``state`` into ``model`` strictly, except that a key the state lacks is filled from the
    one it aliases in ``model`` (parameters and buffers sharing storage, e.g. Enformer's ``_trunk``
    and ``stem``: ``safetensors.torch.save_model`` keeps one name of each). Every key truly missing
    or unexpected is named (``where`` says whose weights)."""
    own = model.state_dict()

    def place(tensor: torch.Tensor) -> tuple | None:
        if tensor.device.type == "meta" or tensor.numel() == 0:
            return None
        return tensor.device, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride())

    given = {place(own[key]) for key in state if key in own} - {None}
    missing, named = [], set()
    for key in own:  # a tensor with several names that the state lacks is named once (its first name)
        spot = place(own[key])
        if key in state or (spot is not None and (spot in given or spot in named)):
            continue
        missing.append(key)
        if spot is not None:
            named.add(spot)
    unexpected = [key for key in state if key not in own]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {', '.join(unexpected)}")
    if problems:
        raise InputError(f"{where}: {'; '.join(problems)}")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes that differ: every one is named
        raise InputError(f"{where}: {' '.join(str(error).split())}") from None


def read_sidecar(path: str | Path, how_to_make: str) -> dict[str, Any]:
    """A shipped model's JSON sidecar (what its weights are, how they were trained) as a fresh
    dict; a FileNotFoundError saying ``how_to_make`` it when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall lrp-domains or make it with `{how_to_make}`")
    return json.loads(path.read_text(encoding="utf-8"))


class UserModel(NamedTuple):
    """A model built from a ``MODULE:FACTORY`` spec, with the gene and class names it came with."""

    model: nn.Module
    genes: list[str] | None
    classes: list[str] | None


def load_factory(spec: str) -> Any:
    """The callable named by ``MODULE:FACTORY`` (the module is imported: its code runs)."""
    if is_saved_module(spec):
        raise InputError(
            f"--model {spec}: a model saved with torch.save (bpnet-lite's BPNet or ChromBPNet) is taken "
            "by the sequence commands (run sequences|variants, bio sequences|variants|concepts); here "
            "give MODULE:FACTORY (e.g. mymodels:build)"
        )
    module_name, _, factory_name = spec.partition(":")
    if not module_name or not factory_name:
        raise InputError(f"--model must be MODULE:FACTORY (e.g. mymodels:build), got {spec!r}")
    here = str(Path.cwd())
    if here not in sys.path:  # as `python -m` does: a module in the current folder is found
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InputError(
            f"--model {spec}: cannot import {module_name!r} ({error}); run from the folder that holds "
            f"{module_name.replace('.', '/')}.py or add its folder to PYTHONPATH"
        ) from None
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
        raise InputError(
            f"--model {spec}: the factory returned {type(model).__name__}, not a torch.nn.Module (or a "
            "tuple (module, genes, classes))"
        )
    if weights is not None:
        path = Path(weights)
        if not path.name.lower().endswith(".safetensors"):
            raise InputError(
                f"--weights {path.name}: give a .safetensors file (pickled checkpoints are not loaded: "
                "they can run code); convert with safetensors.torch.save_file(model.state_dict(), ...)"
            )
        if not path.is_file():
            raise InputError(f"--weights: no such file: {path}")
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as error:  # safetensors raises its own error types for a damaged file
            raise InputError(f"--weights {path.name}: not a readable safetensors file ({error})") from None
        load_state(model, state, f"--weights {path.name} do not fit the model built by {spec}")
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            try:
                meta = json.loads(sidecar.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as error:
                raise InputError(f"{sidecar.name} (beside the weights) is not valid JSON ({error})") from None
            if isinstance(meta, dict):
                genes, classes = meta.get("genes", genes), meta.get("classes", classes)
    return UserModel(
        model.eval(),
        None if genes is None else [str(g) for g in genes],
        None if classes is None else [str(c) for c in classes],
    )
