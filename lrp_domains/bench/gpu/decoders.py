"""``lrp-domains bench gpu``: LRP on large decoders and the default models' throughput, on a GPU.

One run measures and prints:

- **Decoders**: AttnLRP and CP-LRP through LLaMA decoders built from configs with random weights
  in bf16 (nothing downloaded): a 1B-class shape (Llama-3.2-1B's numbers) and an 8B-class shape
  (Llama-3.1-8B's), at 1k, 4k and 8k tokens: time and peak memory against a plain gradient of
  the same logit (the next-token logit at the last position, for the predicted token; the
  gradient is taken at the word-embedding output, where our relevance is read), with and
  without gradient checkpointing; then the longest context that fits in memory for each model,
  method and checkpointing setting.
- **Default models**: the default sentiment model's sentences per second at batch 256 and the
  default sequence CNN's sequences per second at batch 1024, explained end to end through their
  explainers, against a plain forward (and a gradient), in fp32 and bf16, with the correlation
  of the bf16 relevance with the fp32 one.

``tiny=True`` swaps in tiny decoder configs, short lengths and small batches, so the whole bench
runs on a CPU in seconds (``tests/test_bench_gpu.py`` does) through the same code; on a CPU, peak
memory is not measured (n/a) and no search can run out of memory, so searches stop at their cap.

Ours runs through :func:`lrp_domains.explain` with ``sources=nn.Embedding`` (as
``TextExplainer.explain_next_token`` does). The composites wrap the model's own attention
implementation (``lrp_domains:attnlrp:sdpa`` calls SDPA), so the plain gradient with the model's
default attention *is* the gradient with our attention; the table says which ran.

Gradient checkpointing in transformers only acts on layers in training mode; ``explain`` keeps
exactly those layers in training mode (their submodules in eval mode). The bench checks that a
layer's forward ran again in the backward pass; should ``explain`` not checkpoint (an older
transformers), it says so (n/a) and measures our rules in a scope entered directly with the model
in training mode (the "scope, train mode" probe: the same rules, the same relevance, which a check
row confirms).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from lrp_domains.bench.measure import NAN, correlation, fits, free, measure
from lrp_domains.bench.methods import select

_LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
#: Llama-3.2-1B and Llama-3.1-8B (config numbers; weights random).
SHAPES: dict[str, dict[str, Any]] = {
    "1b": dict(
        hidden_size=2048,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        intermediate_size=8192,
        vocab_size=128256,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        max_position_embeddings=131072,
        rope_parameters=dict(_LLAMA3_ROPE),
    ),
    "8b": dict(
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=14336,
        vocab_size=128256,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
        max_position_embeddings=131072,
        rope_parameters={**_LLAMA3_ROPE, "factor": 8.0},
    ),
}
#: The same two shapes in miniature (same head grouping, tied/untied embeddings), for CPU runs.
TINY_SHAPES: dict[str, dict[str, Any]] = {
    "1b": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=256,
        vocab_size=512,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        max_position_embeddings=131072,
        rope_parameters=dict(_LLAMA3_ROPE),
    ),
    "8b": dict(
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=224,
        vocab_size=512,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
        max_position_embeddings=131072,
        rope_parameters={**_LLAMA3_ROPE, "factor": 8.0},
    ),
}
LENGTHS = (1024, 4096, 8192)
TINY_LENGTHS = (32, 64)
COMPOSITES = select("attnlrp", "cp-lrp")
GRADIENT = "gradient"
VIA_EXPLAIN = "explain()"
VIA_PROBE = "scope, train mode"
VIA_TRAIN = "train mode"
NO_CHECKPOINTING = (
    "explain() runs the model in eval mode and transformers checkpoints a layer only in training "
    "mode (GradientCheckpointingLayer: gradient_checkpointing and self.training): nothing recomputed"
)
NO_CUDA = "no CUDA device: run with --tiny to check the bench on CPU"


class NoCudaError(RuntimeError):
    """A full (not tiny) run was asked for without a CUDA device."""


# -- models and methods ---------------------------------------------------------------------------
def build_decoder(
    shape: dict[str, Any],
    device: torch.device | str,
    dtype: torch.dtype = torch.bfloat16,
    attention: str = "sdpa",
    seed: int = 0,
) -> nn.Module:
    """A ``LlamaForCausalLM`` with random weights, created directly on ``device`` in ``dtype`` (no
    float32 copy, nothing downloaded); eval mode, parameters not requiring grad."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**shape)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attention)
    return model.eval().requires_grad_(False)


def last_logits(raw: Any, batch: Any = None) -> torch.Tensor:
    """The logits of the next token after the last position, ``(N, vocabulary)`` (no padding)."""
    logits = raw.logits if hasattr(raw, "logits") else raw[0]
    return logits[:, -1]


def gradient_relevance(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Gradient x input at the word-embedding output for the predicted next-token logit, ``(N, T)``:
    the same forward as ours (the embedding's output fed back as ``inputs_embeds``)."""
    with torch.no_grad():
        words = model.get_input_embeddings()(ids)
    leaf = words.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = last_logits(model(inputs_embeds=leaf))
        explained = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
        (grad,) = torch.autograd.grad(explained, leaf)
    return (leaf.detach() * grad).sum(-1)


def _word_embedding(model: nn.Module) -> str:
    embeddings = model.get_input_embeddings()
    return next(name for name, module in model.named_modules() if module is embeddings)


def lrp_relevance(model: nn.Module, ids: torch.Tensor, composite: str) -> torch.Tensor:
    """Our relevance of each token for the predicted next-token logit, ``(N, T)``: ``explain`` with
    the relevance read at the embeddings (as ``TextExplainer.explain_next_token``)."""
    from lrp_domains.core.engine.attribution import explain

    result = explain(
        model, {"input_ids": ids}, composite=composite, sources=nn.Embedding, output=last_logits, check_delta=False
    )
    return result.sources[_word_embedding(model)].sum(-1)


def scope_relevance(model: nn.Module, ids: torch.Tensor, composite: str) -> torch.Tensor:
    """As :func:`lrp_relevance`, in a scope entered directly so that the model keeps its training
    mode (the probe for gradient checkpointing: ``explain`` switches to eval mode)."""
    from lrp_domains.core.engine.attribution import read_relevance, resolve_composite, run_tracked
    from lrp_domains.core.engine.targets import select_target

    names = [name for name, module in model.named_modules() if isinstance(module, nn.Embedding)]
    with torch.enable_grad(), resolve_composite(composite).context(model) as scope:
        scope.inputs.read_sources(names)
        raw, leaves, _ = run_tracked(model, scope, {"input_ids": ids})
        explained, _ = select_target(last_logits(raw), None)
        _, read, _, _ = read_relevance(scope, leaves, explained.sum(), None)
    return read[_word_embedding(model)].sum(-1)


@contextlib.contextmanager
def checkpointing(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Gradient checkpointing of every decoder layer (non-reentrant) with the model in training
    mode (the only mode in which transformers checkpoints); everything restored on exit."""
    if not enabled:
        yield
        return
    modes = {module: module.training for module in model.modules()}
    enable = getattr(model, "activation_checkpointing_enable", None)
    disable = getattr(model, "activation_checkpointing_disable", None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            if enable is not None:
                enable()
            else:  # transformers < 5.x
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # Only reentrant checkpointing needs the embedding output to require grad; the hook that
        # enabling installs for it would be reported as an uncovered requires_grad_ in our scope.
        if hasattr(model, "disable_input_require_grads"):
            model.disable_input_require_grads()
        model.train()
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            (disable or model.gradient_checkpointing_disable)()
        for module, mode in modes.items():
            module.training = mode


def recomputes(model: nn.Module, fn: Callable[[], object]) -> bool:
    """Whether one call of ``fn`` ran the first decoder layer's MLP more than once (checkpointing
    recomputes it in the backward pass; module hooks do not see the recomputation, so the MLP's
    forward is counted through an instance attribute, removed afterwards)."""
    mlp = model.get_decoder().layers[0].mlp
    original = mlp.forward
    calls = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    mlp.__dict__["forward"] = counting
    try:
        fn()
    finally:
        mlp.__dict__.pop("forward", None)
    return len(calls) > 1


def decoder_methods(
    model: nn.Module, ids: torch.Tensor, checkpointed: bool, explain_checkpoints: bool = False
) -> dict[tuple[str, str], Callable[[], torch.Tensor] | None]:
    """``{(method, via): callable}`` for one length. With checkpointing, ours runs through
    ``explain`` where that checkpoints (``explain_checkpoints``); else ``explain`` is listed with
    None (n/a) and the scope probe is measured instead."""
    found: dict[tuple[str, str], Callable[[], torch.Tensor] | None] = {
        (GRADIENT, VIA_TRAIN if checkpointed else ""): lambda: gradient_relevance(model, ids)
    }
    for name in COMPOSITES:
        if not checkpointed or explain_checkpoints:
            found[(name, VIA_EXPLAIN)] = lambda name=name: lrp_relevance(model, ids, name)
        else:
            found[(name, VIA_EXPLAIN)] = None
            found[(name, VIA_PROBE)] = lambda name=name: scope_relevance(model, ids, name)
    return found


# -- the longest context that fits (timing in turns, out of memory: bench.measure) ----------------
def longest_fitting(
    try_length: Callable[[int], bool], start: int, cap: int, max_seconds: float, bisections: int = 3, step: int = 256
) -> dict[str, Any]:
    """The longest length at which ``try_length(n)`` (True: it ran) succeeds: doubling from
    ``start`` up to ``cap``, then up to ``bisections`` halvings of the gap between the last length
    that ran and the first that did not (rounded to ``step``).

    Stops before a try that could end after ``max_seconds``: a try (at most twice the length of the
    last one that ran) is assumed to take up to four times as long (attention is quadratic).
    Returns ``longest`` (0: not even ``start``), ``failed`` (the shortest length that did not fit,
    or None), ``stopped`` ("out of memory", "cap", "time limit") and ``seconds``."""
    began = time.perf_counter()
    longest, failed, last = 0, None, 0.0

    def attempt(n: int) -> bool | None:
        nonlocal last
        elapsed = time.perf_counter() - began
        if elapsed + 4 * last > max_seconds:
            return None
        tick = time.perf_counter()
        ok = try_length(n)
        if ok:  # a failure (out of memory) usually comes early and says little about the next try
            last = time.perf_counter() - tick
        return ok

    n, stopped = start, "cap"
    while True:
        ok = attempt(n)
        if ok is None:
            stopped = "time limit"
            break
        if not ok:
            failed, stopped = n, "out of memory"
            break
        longest = n
        if n >= cap:
            break
        n = min(2 * n, cap)
    if failed is not None and longest:
        low, high = longest, failed
        for _ in range(bisections):
            middle = (low + high) // 2 // step * step
            if middle <= low or middle >= high:
                break
            ok = attempt(middle)
            if ok is None:
                break
            if ok:
                low = longest = middle
            else:
                high = failed = middle
    return {"longest": longest, "failed": failed, "stopped": stopped, "seconds": time.perf_counter() - began}


# -- the decoder part -----------------------------------------------------------------------------
def _attention_inside(model: nn.Module, composite: str) -> str:
    from lrp_domains.core.engine.attribution import resolve_composite

    with resolve_composite(composite).context(model):
        return str(model.config._attn_implementation)


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _random_ids(model: nn.Module, length: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(model.config.vocab_size, (1, length), generator=generator).to(device)


def decoder_rows(
    name: str,
    shape: dict[str, Any],
    device: torch.device,
    lengths: Sequence[int],
    repeats: int,
    search: bool,
    max_seconds: float,
    max_length: int,
    attention: str,
    log: Callable[[str], None],
    tiny: bool,
) -> list[dict[str, Any]]:
    """Check rows, measured rows and search rows for one decoder shape (the model is freed after)."""
    log(f"building the {name} decoder ({'tiny, ' if tiny else ''}random bf16 weights) on {device}")
    model = build_decoder(shape, device, attention=attention)
    label = f"{name}{' (tiny)' if tiny else ''}"
    try:
        rows, explain_checkpoints = decoder_checks(model, label, device, min(lengths))
        rows += decoder_measurements(model, label, device, lengths, repeats, explain_checkpoints, log)
        if search:
            rows += decoder_searches(
                model,
                label,
                device,
                min(lengths),
                max(max_length, max(lengths)),
                max_seconds,
                16 if tiny else 256,
                explain_checkpoints,
                log,
            )
    finally:
        del model
        free(device)
    return rows


def decoder_checks(
    model: nn.Module, label: str, device: torch.device, length: int
) -> tuple[list[dict[str, Any]], bool]:
    """Check rows on one short input: the attention that runs, whether checkpointing recomputes
    (gradient, ``explain``, the scope probe), the probe's relevance against ``explain``'s, and the
    summed relevance over the explained logit. Also returns whether ``explain`` checkpoints."""
    ids = _random_ids(model, length, device)
    inside = {c: _attention_inside(model, c) for c in COMPOSITES}
    rows = [
        {
            "section": "check",
            "model": label,
            "check": "attention",
            "value": f"gradient: {model.config._attn_implementation}; ours: "
            + ", ".join(f"{c} -> {inside[c]}" for c in COMPOSITES)
            + " (the same kernel: one gradient baseline serves both)",
        }
    ]
    with checkpointing(model):
        gradient_recomputes = recomputes(model, lambda: gradient_relevance(model, ids))
        explain_checkpoints = recomputes(model, lambda: lrp_relevance(model, ids, "attnlrp"))
        probe_recomputes = recomputes(model, lambda: scope_relevance(model, ids, "attnlrp"))
        probes = {c: scope_relevance(model, ids, c) for c in COMPOSITES}
    plain = {c: lrp_relevance(model, ids, c) for c in COMPOSITES}
    rows.append(
        {
            "section": "check",
            "model": label,
            "check": "recomputed under checkpointing",
            "value": f"gradient (train mode): {_yes(gradient_recomputes)}; explain(): "
            f"{_yes(explain_checkpoints)}; scope in train mode: {_yes(probe_recomputes)}",
            "gradient": gradient_recomputes,
            "explain": explain_checkpoints,
            "probe": probe_recomputes,
        }
    )
    for c in COMPOSITES:
        difference = _relative_difference(probes[c], plain[c])
        rows.append(
            {
                "section": "check",
                "model": label,
                "check": f"{c}: checkpointed scope vs explain()",
                "value": f"largest difference {difference:.1e} of the largest relevance",
                "difference": difference,
            }
        )
    with torch.no_grad():
        logit = float(last_logits(model(ids)).max())
    for c in COMPOSITES:
        share = float(plain[c].double().sum()) / logit
        rows.append(
            {
                "section": "check",
                "model": label,
                "check": f"{c}: summed relevance / explained logit",
                "value": f"{share:.3f} ({length} tokens, bf16)",
                "conservation": share,
            }
        )
    return rows, explain_checkpoints


def decoder_measurements(
    model: nn.Module,
    label: str,
    device: torch.device,
    lengths: Sequence[int],
    repeats: int,
    explain_checkpoints: bool,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """One row per length, checkpointing setting and method: time and peak memory over the gradient."""
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    rows = []
    for length in lengths:
        ids = _random_ids(model, length, device)
        for checkpointed in (False, True):
            log(f"  {label}: {length} tokens, checkpointing {'on' if checkpointed else 'off'}")
            with checkpointing(model, checkpointed):
                methods = decoder_methods(model, ids, checkpointed, explain_checkpoints)
                measured = measure({k: fn for k, fn in methods.items() if fn is not None}, device, repeats)
            base = measured[(GRADIENT, VIA_TRAIN if checkpointed else "")]
            for (method, via), fn in methods.items():
                result = measured.get((method, via)) or {
                    "seconds": NAN,
                    "peak": NAN,
                    "note": f"n/a: {NO_CHECKPOINTING}",
                }
                rows.append(
                    {
                        "section": "decoder",
                        "model": label,
                        "tokens": length,
                        "checkpointing": checkpointed,
                        "method": method,
                        "via": via,
                        "ms": 1000 * result["seconds"],
                        "peak_mib": result["peak"] / 2**20,
                        "time_ratio": result["seconds"] / base["seconds"],
                        "memory_ratio": result["peak"] / base["peak"] if base["peak"] > 0 else NAN,
                        "note": result["note"],
                        "measured": fn is not None and not result["note"],
                        "weights_gib": weights_gib,
                    }
                )
                log(
                    f"    {method} {via}: {_number(rows[-1]['ms'])} ms, {_number(rows[-1]['peak_mib'], 0)} MiB, "
                    f"{_number(rows[-1]['time_ratio'], 2, 'x')} time, {_number(rows[-1]['memory_ratio'], 2, 'x')} "
                    f"memory {rows[-1]['note'][:40]}"
                )
        del ids
        free(device)
    return rows


def decoder_searches(
    model: nn.Module,
    label: str,
    device: torch.device,
    start: int,
    cap: int,
    max_seconds: float,
    step: int,
    explain_checkpoints: bool,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """The longest context each method runs at, with and without checkpointing."""
    rows = []
    for checkpointed in (False, True):
        with checkpointing(model, checkpointed):
            for (method, via), fn in decoder_methods(model, None, checkpointed, explain_checkpoints).items():
                row = {
                    "section": "longest",
                    "model": label,
                    "method": method,
                    "via": via,
                    "checkpointing": checkpointed,
                }
                if fn is None:
                    rows.append(
                        {**row, "longest": NAN, "failed": None, "stopped": f"n/a: {NO_CHECKPOINTING}", "seconds": NAN}
                    )
                    continue
                log(f"  {label}: longest context, {method} {via}, checkpointing {'on' if checkpointed else 'off'}")

                def try_length(n: int, key: tuple[str, str] = (method, via), checkpointed: bool = checkpointed) -> bool:
                    ids = _random_ids(model, n, device)
                    return fits(decoder_methods(model, ids, checkpointed, explain_checkpoints)[key], device)

                rows.append({**row, **longest_fitting(try_length, start, cap, max_seconds, step=step)})
                log(
                    f"    longest {rows[-1]['longest']} tokens, first failed {rows[-1]['failed']}, stopped by "
                    f"{rows[-1]['stopped']} ({rows[-1]['seconds']:.0f} s)"
                )
                free(device)
    for row in rows:
        base = next(r for r in rows if r["method"] == GRADIENT and r["checkpointing"] == row["checkpointing"])
        row["longest_ratio"] = row["longest"] / base["longest"] if base["longest"] else NAN
    return rows


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# -- the default models ---------------------------------------------------------------------------
def _throughput_rows(
    model_name: str,
    item: str,
    dtype: torch.dtype,
    batch: int,
    methods: dict[str, Callable[[], Any]],
    explained: str,
    device: torch.device,
    repeats: int,
) -> tuple[list[dict[str, Any]], Any]:
    kept: dict[str, Any] = {}

    def keeping(fn: Callable[[], Any] = methods[explained]) -> Any:
        kept["relevance"] = fn()
        return kept["relevance"]

    measured = measure({**methods, explained: keeping}, device, repeats)
    relevance = kept["relevance"] if "relevance" in kept and explained not in _failed(measured) else NAN
    base = measured["forward"]
    rows = []
    for method, result in measured.items():
        rows.append(
            {
                "section": "throughput",
                "model": model_name,
                "item": item,
                "dtype": str(dtype).removeprefix("torch."),
                "batch": batch,
                "method": method,
                "explained": method == explained,
                "ms": 1000 * result["seconds"],
                "items_per_s": batch / result["seconds"],
                "time_ratio": result["seconds"] / base["seconds"],
                "peak_mib": result["peak"] / 2**20,
                "note": result["note"],
                "correlation": NAN,
            }
        )
    return rows, relevance


def sentiment_rows(
    device: torch.device, batch: int, dtypes: Sequence[torch.dtype], repeats: int, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """The default sentiment model: forward, gradient x input and AttnLRP through ``TextExplainer``
    (strings in, word relevance out) on ``batch`` SST-2 dev sentences, per dtype."""
    from lrp_domains.data import sst2_dev

    lines = sst2_dev().read_text(encoding="utf-8").splitlines()[1:]
    sentences = [line.split("\t")[0].strip() for line in lines if line.strip()]
    sentences = (sentences * (batch // len(sentences) + 1))[:batch]
    rows, relevance = [], {}
    for dtype in dtypes:
        log(f"default sentiment model, {dtype}, batch {batch}")
        found, relevance[dtype] = _sentiment(device, dtype, sentences, repeats)
        _log_throughput(found, log)
        rows += found
        free(device)
    _add_correlation(rows, relevance)
    return rows


def _sentiment(
    device: torch.device, dtype: torch.dtype, sentences: list[str], repeats: int
) -> tuple[list[dict[str, Any]], torch.Tensor]:
    from lrp_domains.text import TextExplainer
    from lrp_domains.text.default_model import load_default_model

    model, tokenizer, labels = load_default_model(device=device, dtype=dtype)
    model.requires_grad_(False)
    explainer = TextExplainer(model, tokenizer, composite="attnlrp", labels=labels)
    embeddings = model.get_input_embeddings()

    def forward() -> torch.Tensor:
        inputs = tokenizer(sentences, padding=True, return_tensors="pt").to(device)
        with torch.inference_mode():
            return model(**inputs).logits.float().cpu()

    def gradient() -> torch.Tensor:
        inputs = tokenizer(sentences, padding=True, return_tensors="pt").to(device)
        with torch.no_grad():
            words = embeddings(inputs["input_ids"])
        leaf = words.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(
                inputs_embeds=leaf, attention_mask=inputs["attention_mask"], token_type_ids=inputs.get("token_type_ids")
            ).logits
            (grad,) = torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), leaf)
        return (leaf.detach() * grad).sum(-1).float().cpu()

    def explained() -> torch.Tensor:
        return torch.cat([r.token_relevance for r in explainer.explain(sentences, batch_size=len(sentences))])

    return _throughput_rows(
        "sentiment MiniLM",
        "sentences",
        dtype,
        len(sentences),
        {"forward": forward, "gradient x input": gradient, "attnlrp (TextExplainer)": explained},
        "attnlrp (TextExplainer)",
        device,
        repeats,
    )


def sequence_rows(
    device: torch.device, batch: int, dtypes: Sequence[torch.dtype], repeats: int, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """The default sequence CNN: forward, gradient x input and the genomics composite through
    ``SequenceExplainer`` (one-hot on the host in, per-position relevance out) on ``batch``
    synthetic 200-bp sequences, per dtype."""
    from lrp_domains.bench.data.synthetic import make_dataset

    onehot = make_dataset(batch, seed=3).onehot
    rows, relevance = [], {}
    for dtype in dtypes:
        log(f"default sequence CNN, {dtype}, batch {batch}")
        found, relevance[dtype] = _sequences(device, dtype, onehot, repeats)
        _log_throughput(found, log)
        rows += found
        free(device)
    _add_correlation(rows, relevance)
    return rows


def _sequences(
    device: torch.device, dtype: torch.dtype, onehot: torch.Tensor, repeats: int
) -> tuple[list[dict[str, Any]], torch.Tensor]:
    from lrp_domains.bio import SequenceExplainer
    from lrp_domains.bio.sequences.synthetic_cnn import load_default_sequence_model

    model = load_default_sequence_model(device).to(dtype).requires_grad_(False)
    explainer = SequenceExplainer(model)

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return model(onehot.to(device, dtype)).float().cpu()

    def gradient() -> torch.Tensor:
        x = onehot.to(device, dtype).requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(model(x).sum(), x)
        return (x.detach() * grad).sum(1).float().cpu()

    def explained() -> torch.Tensor:
        return explainer.explain(onehot, batch_size=len(onehot)).per_position

    return _throughput_rows(
        "sequence CNN",
        "sequences",
        dtype,
        len(onehot),
        {"forward": forward, "gradient x input": gradient, "genomics (SequenceExplainer)": explained},
        "genomics (SequenceExplainer)",
        device,
        repeats,
    )


def _log_throughput(rows: list[dict[str, Any]], log: Callable[[str], None]) -> None:
    for row in rows:
        log(
            f"    {row['method']}: {_number(row['items_per_s'], 0)} {row['item']}/s, "
            f"{_number(row['time_ratio'], 2, 'x')} forward {row['note']}"
        )


def _failed(measured: dict[Any, dict[str, Any]]) -> list[Any]:
    return [key for key, result in measured.items() if result["note"]]


def _add_correlation(rows: list[dict[str, Any]], relevance: dict[torch.dtype, Any]) -> None:
    """The correlation of each dtype's explained relevance with the float32 one, on the explained rows."""
    reference = relevance.get(torch.float32)
    for row in rows:
        if (
            row["explained"]
            and isinstance(reference, torch.Tensor)
            and isinstance(relevance[getattr(torch, row["dtype"])], torch.Tensor)
        ):
            row["correlation"] = correlation(relevance[getattr(torch, row["dtype"])], reference)


# -- the bench --------------------------------------------------------------------------------------
def resolve_device(device: str | None, tiny: bool) -> torch.device:
    """``device`` (default: CUDA when there is one, else the CPU for tiny runs); a full run
    without CUDA raises :class:`NoCudaError`."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise NoCudaError(NO_CUDA)
    if resolved.type != "cuda" and not tiny:
        if torch.cuda.is_available():
            raise ValueError(f"a full run measures a CUDA device, not {resolved}: leave --device out, or add --tiny")
        raise NoCudaError(NO_CUDA)
    return resolved


def run(
    device: str | None = None,
    tiny: bool = False,
    lengths: Sequence[int] | None = None,
    shapes: Sequence[str] = ("1b", "8b"),
    repeats: int | None = None,
    search: bool = True,
    max_seconds: float | None = None,
    max_length: int | None = None,
    defaults: bool = True,
    attention: str = "sdpa",
    text_batch: int | None = None,
    sequence_batch: int | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Measure everything; return rows (``section``: ``decoder``, ``longest``, ``throughput``,
    ``check``; see :func:`print_table`).

    ``tiny``: tiny decoder configs, lengths 32 and 64, searches capped at 256 tokens, batches of
    8 sentences and 32 sequences, 2 repeats: the whole bench in seconds on a CPU. Otherwise a
    CUDA device is required (:class:`NoCudaError`)."""
    dev = resolve_device(device, tiny)
    lengths = tuple(lengths or (TINY_LENGTHS if tiny else LENGTHS))
    repeats = repeats or (2 if tiny else 5)
    max_seconds = max_seconds if max_seconds is not None else (10.0 if tiny else 60.0)
    max_length = max_length or (256 if tiny else 131072)
    table = TINY_SHAPES if tiny else SHAPES
    unknown = [s for s in shapes if s not in table]
    if unknown:
        raise ValueError(f"unknown shape(s) {unknown}; choose from {sorted(table)}")
    if not lengths or min(lengths) < 2:
        raise ValueError(f"lengths must be at least 2 tokens, got {list(lengths)}")
    log = (lambda message: print(message, file=sys.stderr, flush=True)) if progress else (lambda message: None)
    import lrp_domains.text  # noqa: F401  (registers the attnlrp and cp-lrp composites)

    # Random weights: biases and the random head make deltas and coverage notes uninformative here.
    warnings.filterwarnings("ignore", message="some explanations lost or gained")
    rows: list[dict[str, Any]] = []
    for name in shapes:
        rows += decoder_rows(
            name, table[name], dev, lengths, repeats, search, max_seconds, max_length, attention, log, tiny
        )
    if defaults:
        dtypes = (torch.float32, torch.bfloat16)
        rows += sentiment_rows(dev, text_batch or (8 if tiny else 256), dtypes, repeats, log)
        rows += sequence_rows(dev, sequence_batch or (32 if tiny else 1024), dtypes, repeats, log)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    for row in rows:
        row["device"] = where
    return rows


def _number(value: float, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}{suffix}"


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print the rows: decoders, longest contexts, default models, checks (rich tables); notes
    too long for a cell are numbered below the tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=170)
    notes: list[str] = []

    def note(text: str) -> str:
        if len(text) <= 20:
            return text
        if text not in notes:
            notes.append(text)
        return f"{text.split(':')[0]} [{notes.index(text) + 1}]"

    def off(flag: bool) -> str:
        return "on" if flag else "off"

    device = rows[0]["device"] if rows else "?"
    decoder = [r for r in rows if r["section"] == "decoder"]
    if decoder:
        weights = {r["model"]: r["weights_gib"] for r in decoder}
        table = Table(
            title=f"bench gpu: LLaMA decoders with random bf16 weights, batch 1, {device}: the predicted "
            "next-token logit; time and memory over the plain gradient with the same checkpointing; "
            "peak memory above the weights (" + ", ".join(f"{m} {w:.2f} GiB" for m, w in weights.items()) + ")"
        )
        for column in ("model", "tokens", "ckpt", "method", "via", "ms", "peak MiB", "time", "memory", "note"):
            table.add_column(
                column, justify="left" if column in ("model", "method", "via", "note", "ckpt") else "right"
            )
        for r in decoder:
            table.add_row(
                r["model"],
                str(r["tokens"]),
                off(r["checkpointing"]),
                r["method"],
                r["via"],
                _number(r["ms"]),
                _number(r["peak_mib"], 0),
                _number(r["time_ratio"], 2, "x"),
                _number(r["memory_ratio"], 2, "x"),
                note(r["note"]),
            )
        console.print(table)
    longest = [r for r in rows if r["section"] == "longest"]
    if longest:
        table = Table(title=f"bench gpu: longest context that runs (doubling, then bisection), {device}")
        for column in ("model", "method", "via", "ckpt", "longest", "x gradient", "first failed", "stopped by", "s"):
            table.add_column(
                column, justify="left" if column in ("model", "method", "via", "ckpt", "stopped by") else "right"
            )
        for r in longest:
            table.add_row(
                r["model"],
                r["method"],
                r["via"],
                off(r["checkpointing"]),
                _number(r["longest"], 0),
                _number(r.get("longest_ratio", NAN), 2, "x"),
                str(r["failed"] or "-"),
                note(r["stopped"]),
                _number(r["seconds"], 1),
            )
        console.print(table)
    throughput = [r for r in rows if r["section"] == "throughput"]
    if throughput:
        table = Table(title=f"bench gpu: default models explained end to end, against a plain forward, {device}")
        for column in ("model", "dtype", "batch", "method", "ms", "per second", "x forward", "peak MiB", "corr. fp32"):
            table.add_column(column, justify="left" if column in ("model", "dtype", "method") else "right")
        for r in throughput:
            table.add_row(
                r["model"],
                r["dtype"],
                str(r["batch"]),
                r["method"],
                _number(r["ms"]),
                f"{_number(r['items_per_s'], 0)} {r['item']}",
                _number(r["time_ratio"], 2, "x"),
                _number(r["peak_mib"], 0),
                _number(r["correlation"], 4),
            )
        console.print(table)
    checks = [r for r in rows if r["section"] == "check"]
    if checks:
        table = Table(title="bench gpu: checks")
        for column in ("model", "check", "value"):
            table.add_column(column)
        for r in checks:
            table.add_row(r["model"], r["check"], r["value"])
        console.print(table)
    for number, text in enumerate(notes, 1):
        console.print(f"[{number}] {text}", markup=False)


def main(
    device: str | None = None,
    tiny: bool = False,
    lengths: str = "",
    shapes: str = "1b,8b",
    repeats: int = 0,
    search: bool = True,
    max_seconds: float = 0.0,
    max_length: int = 0,
    defaults: bool = True,
    attention: str = "sdpa",
    progress: bool = True,
) -> int:
    """The command: run and print; 2 with a one-line message when a full run has no CUDA device."""
    try:
        rows = run(
            device=device,
            tiny=tiny,
            lengths=[int(v) for v in lengths.split(",") if v.strip()] or None,
            shapes=[s.strip() for s in shapes.split(",") if s.strip()],
            repeats=repeats or None,
            search=search,
            max_seconds=max_seconds or None,
            max_length=max_length or None,
            defaults=defaults,
            attention=attention,
            progress=progress,
        )
    except NoCudaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(tiny="--tiny" in sys.argv))
