"""``lrp-domains bench gpu`` on a CPU with tiny configs: every row is there and measured, the
bench explains what ``lrp_domains.explain`` explains, the search logic, and the no-GPU message."""

import math

import pytest
import torch

pytestmark = pytest.mark.slow

pytest.importorskip("transformers")

import lrp_domains as L  # noqa: E402
import lrp_domains.text  # noqa: E402,F401  (registers attnlrp and cp-lrp)
from lrp_domains.bench.gpu import decoders as G  # noqa: E402

SHAPES = ("1b (tiny)", "8b (tiny)")
METHODS = (G.GRADIENT, *G.COMPOSITES)


@pytest.fixture
def one_thread():
    """Two busy-waiting OpenMP threads on a shared 2-core machine make tiny models 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rows():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return G.run(device="cpu", tiny=True)
    finally:
        torch.set_num_threads(threads)


def _finite_positive(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_every_decoder_row_is_measured(rows):
    decoder = [r for r in rows if r["section"] == "decoder"]
    for shape in SHAPES:
        for length in G.TINY_LENGTHS:
            for checkpointed in (False, True):
                for method in METHODS:
                    found = [
                        r
                        for r in decoder
                        if (r["model"], r["tokens"], r["checkpointing"], r["method"])
                        == (shape, length, checkpointed, method)
                    ]
                    measured = [r for r in found if r["measured"]]
                    assert len(measured) == 1, (shape, length, checkpointed, method, found)
                    row = measured[0]
                    assert _finite_positive(row["ms"]) and _finite_positive(row["time_ratio"]), row
                    assert math.isnan(row["peak_mib"]) and math.isnan(row["memory_ratio"])  # not measured on a CPU
                    # explain() checkpoints (the checkpointed layers stay in training mode): measured as is
                    if method != G.GRADIENT:
                        assert row["via"] == G.VIA_EXPLAIN
    assert {r["time_ratio"] for r in decoder if r["method"] == G.GRADIENT} == {1.0}


def test_every_search_reaches_its_cap_on_a_cpu(rows):
    longest = [r for r in rows if r["section"] == "longest"]
    for shape in SHAPES:
        for checkpointed in (False, True):
            for method in METHODS:
                found = {
                    r["via"]: r
                    for r in longest
                    if (r["model"], r["checkpointing"], r["method"]) == (shape, checkpointed, method)
                }
                (row,) = found.values()
                assert row["longest"] == 256 and row["stopped"] == "cap" and row["failed"] is None, row
                assert _finite_positive(row["longest_ratio"]) and _finite_positive(row["seconds"])


def test_default_models_throughput_and_bf16_agreement(rows):
    throughput = [r for r in rows if r["section"] == "throughput"]
    for model in ("sentiment MiniLM", "sequence CNN"):
        for dtype in ("float32", "bfloat16"):
            found = {r["method"]: r for r in throughput if r["model"] == model and r["dtype"] == dtype}
            assert "forward" in found and "gradient x input" in found and len(found) == 3, found
            for row in found.values():
                assert _finite_positive(row["items_per_s"]) and _finite_positive(row["time_ratio"]), row
            (explained,) = [r for r in found.values() if r["explained"]]
            assert explained["correlation"] > (0.999999 if dtype == "float32" else 0.99), explained


def test_checks_say_what_ran(rows):
    checks = [r for r in rows if r["section"] == "check"]
    for shape in SHAPES:
        mine = {r["check"]: r for r in checks if r["model"] == shape}
        assert "lrp_domains:attnlrp:sdpa" in mine["attention"]["value"]
        recomputed = mine["recomputed under checkpointing"]
        assert recomputed["gradient"] and recomputed["probe"] and recomputed["explain"]  # explain() checkpoints
        for name in G.COMPOSITES:
            assert mine[f"{name}: checkpointed scope vs explain()"]["difference"] < 1e-6
            assert math.isfinite(mine[f"{name}: summed relevance / explained logit"]["conservation"])


@pytest.mark.parametrize("composite", G.COMPOSITES)
def test_the_bench_explains_what_explain_explains(composite, one_thread):
    """The bench's callables, on a tiny float32 decoder, against calls written out here: ours equals
    ``lrp_domains.explain`` for the next-token logit (attention mask given, target and source named);
    the gradient equals d logit / d embedding output x embedding output; the checkpointed probe
    recomputes and equals explain()."""
    model = G.build_decoder(G.TINY_SHAPES["8b"], "cpu", dtype=torch.float32)
    ids = torch.randint(model.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = int(model(ids).logits[0, -1].argmax())
    expected = L.explain(
        model,
        {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
        target=target,
        composite=composite,
        sources=["model.embed_tokens"],
        output=lambda raw, batch: raw.logits[:, -1],
        check_delta=False,
    )
    methods = G.decoder_methods(model, ids, checkpointed=False)
    ours = methods[(composite, G.VIA_EXPLAIN)]()
    torch.testing.assert_close(ours, expected.sources["model.embed_tokens"].sum(-1), rtol=1e-5, atol=1e-6)

    seen = {}
    hook = model.get_input_embeddings().register_forward_hook(
        lambda m, i, out: seen.setdefault("e", out).requires_grad_(True)
    )
    try:
        with torch.enable_grad():
            logit = model(ids).logits[0, -1, target]
            (grad,) = torch.autograd.grad(logit, seen["e"])
    finally:
        hook.remove()
    gradient = methods[(G.GRADIENT, "")]()
    torch.testing.assert_close(gradient, (seen["e"].detach() * grad).sum(-1), rtol=1e-5, atol=1e-6)
    assert (ours - gradient).abs().max() > 1e-3 * gradient.abs().max()  # the rules changed something

    with G.checkpointing(model):
        checkpointed = G.decoder_methods(model, ids, checkpointed=True, explain_checkpoints=True)
        run = checkpointed[(composite, G.VIA_EXPLAIN)]
        assert G.recomputes(model, run)  # explain() itself recomputes the checkpointed layers
        torch.testing.assert_close(run(), ours, rtol=1e-5, atol=1e-6)


def test_checkpointing_is_undone(one_thread):
    model = G.build_decoder(G.TINY_SHAPES["1b"], "cpu")
    embeddings = model.get_input_embeddings()
    with G.checkpointing(model):
        assert model.training and model.model.layers[0].gradient_checkpointing
        assert not embeddings._forward_hooks  # the reentrant-only hook is removed
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    assert not embeddings._forward_hooks
    assert "forward" not in model.model.layers[0].mlp.__dict__


def test_longest_fitting_doubles_then_bisects():
    tried = []

    def try_length(n):
        tried.append(n)
        return n <= 3000

    found = G.longest_fitting(try_length, 1024, 131072, max_seconds=60)
    assert tried == [1024, 2048, 4096, 3072, 2560, 2816]
    assert (found["longest"], found["failed"], found["stopped"]) == (2816, 3072, "out of memory")
    found = G.longest_fitting(lambda n: True, 1024, 4096, max_seconds=60)
    assert (found["longest"], found["failed"], found["stopped"]) == (4096, None, "cap")
    found = G.longest_fitting(lambda n: False, 1024, 4096, max_seconds=60)
    assert (found["longest"], found["failed"], found["stopped"]) == (0, 1024, "out of memory")
    assert G.longest_fitting(lambda n: True, 1024, 4096, max_seconds=0)["stopped"] == "time limit"


def test_fits_catches_out_of_memory_only():
    def too_big():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    def broken():
        raise RuntimeError("a real bug")

    def cublas():
        raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")

    assert G.fits(lambda: torch.zeros(3), torch.device("cpu"))
    assert not G.fits(cublas, torch.device("cpu"))
    assert not G.fits(too_big, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="a real bug"):
        G.fits(broken, torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_without_cuda_a_full_run_says_to_use_tiny(capsys):
    with pytest.raises(G.NoCudaError, match="--tiny"):
        G.run(device="cuda")
    with pytest.raises(G.NoCudaError, match="--tiny"):
        G.run(device="cpu")
    assert G.main() == 2
    assert capsys.readouterr().err.strip() == f"error: {G.NO_CUDA}"


def test_print_table_prints_every_section(rows, capsys):
    G.print_table(rows)
    out = capsys.readouterr().out
    for title in ("LLaMA decoders", "longest context", "default models", "checks"):
        assert title in out
    assert "n/a: explain() runs the model in eval mode" not in out  # explain() checkpoints now


def test_unknown_shape_is_a_value_error():
    with pytest.raises(ValueError, match="unknown shape"):
        G.run(device="cpu", tiny=True, shapes=["70b"])
