"""What a newcomer sees first: the demo's tables, the reports' numbers and lists, the command line's lines.

(The genes page's width in a browser: tests/test_demo_browser.py.)
"""

import math
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from lrp_domains.report.blocks import Page, table

GENES = [f"G{i}" for i in range(12)]


def _gene_explanation(target="A"):
    from lrp_domains.bio import ExpressionExplainer

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    values = np.random.default_rng(0).normal(size=(8, 12)).astype(np.float32)
    return ExpressionExplainer(model, GENES, ["A", "B", "C"]).explain(values, target=target)


# -- 1. the demo's marker table never says nan -------------------------------------------------------------
def test_a_table_shows_a_missing_number_as_a_dash_never_nan():
    shown = table(pd.DataFrame({"class": ["A", "B"], "recall": [0.5, math.nan], "found_genes": ["G1", math.nan]}))
    assert "nan" not in shown.lower() and shown.count("\u2013") == 2 and "0.500" in shown


def test_the_demo_marker_table_says_what_a_class_without_a_marker_found_has(tmp_path):
    pytest.importorskip("scanpy")
    from lrp_domains.demo import NONE_FOUND, _genes

    page = Page("demo")
    with pytest.warns(UserWarning, match="not among the model's 765 genes.*CD14"):  # said once, named on the page
        _genes(tmp_path, False, page.section("Genes"))
    index = page.render().replace("<wbr>", "")
    body = index[index.index("known markers in the top 20") :]
    body = body[: body.index("</table>")]
    assert "nan" not in body.lower()
    # the naive CD4 T cells' markers are not in their top 20: said in words
    assert NONE_FOUND in body and "absent_genes" in body and "CD14" in body


# -- 2. long lists wrap (the browser check is in test_demo_browser.py) ---------------------------------------
def test_a_comma_separated_list_may_wrap_after_each_comma_and_headers_after_underscores():
    genes = ",".join(f"GENE{i}" for i in range(60))
    shown = table(pd.DataFrame({"shared_genes": [genes]}))
    assert shown.count(",<wbr>") == 59 and "shared_<wbr>genes" in shown
    assert re.sub(r"<wbr>", "", shown).count(genes) == 1  # the text itself is unchanged


# -- 3. motif_change: one documented value for every explained variant, the same in the report ---------------
def test_motif_change_values_are_documented_and_never_empty():
    from lrp_domains.bio.variants import motifs
    from lrp_domains.bio.variants.motifs import MOTIF_CHANGES, motif_change

    for value in MOTIF_CHANGES:
        assert f'``"{value}"``' in motifs.__doc__
    seen = set()
    for ref in ("", "CTCF"):
        for ref_p in (math.nan, 0.0, 1e-9, 1e-6):
            for site_p in (math.nan, 1e-11, 1e-6, 2e-6, 1e-2):
                for alt in ("", "CTCF", "REST"):
                    seen.add(motif_change(ref, ref_p, site_p, alt))
    assert seen == set(MOTIF_CHANGES)
    assert motif_change("CTCF", 1e-6, 2e-6, "") == "kept" and motif_change("", math.nan, math.nan, "") == "none"


def test_the_variant_report_says_the_value_of_the_table():
    from lrp_domains.report.variants import _motif_text

    row = {"ref_motif": "CTCF", "ref_motif_p": 1e-7, "alt_motif": "CTCF", "alt_motif_p": 2e-7}
    for change in ("kept", "weakened", "strengthened"):
        assert _motif_text(pd.Series({**row, "motif_change": change})).endswith(f": {change}")


# -- 4. p-values readable at any size -----------------------------------------------------------------------
def test_p_values_are_shown_in_significant_digits():
    from lrp_domains.report.variants import _motif_text

    frame = pd.DataFrame(
        {
            "ref_motif_p": [3.2e-6, 0.012, 0.0, math.nan],
            "match_p": [1e-10, 0.5, 1.0, 2e-4],
            "delta_score": [0.0000012, 1.5, 2.0, 3.0],
        }
    )
    shown = table(frame)
    for text in ("3.2e-06", "0.012", "1e-10", "0.5", "0.0002", "< 1e-300"):
        assert f"<td>{text}</td>" in shown
    assert "<td>0.000</td>" in shown  # other numbers keep their fixed decimals
    row = pd.Series(
        {"ref_motif": "CTCF", "ref_motif_p": 3.2e-6, "alt_motif": "", "alt_motif_p": math.nan, "motif_change": "lost"}
    )
    assert _motif_text(row) == "CTCF (p 3.2e-06) -> no motif (none): lost"


# -- 5. markers the model lacks are named -------------------------------------------------------------------
def test_markers_the_model_lacks_are_named_in_a_column_and_one_warning():
    result = _gene_explanation()
    markers = {"A": ["G1", "NOT_A_GENE", "CD14"], "B": ["G2"], "C": ["CD14"]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        overlap = result.marker_overlap(markers)
    said = [w for w in caught if "not among the model's" in str(w.message)]
    assert len(said) == 1 and "NOT_A_GENE, CD14" in str(said[0].message) and "2 marker genes" in str(said[0].message)
    absent = overlap.drop_duplicates("class").set_index("class")["absent_genes"]
    assert absent.to_dict() == {"A": "NOT_A_GENE,CD14", "B": "", "C": "CD14"}
    assert overlap.set_index(["class", "k"]).loc[("A", 20), "markers"] == 1
    assert np.isnan(overlap.set_index(["class", "k"]).loc[("C", 20), "recall"])


def test_the_gene_report_notes_the_markers_the_model_lacks(tmp_path):
    from lrp_domains.report.genes import write_gene_report

    with pytest.warns(UserWarning, match="CD14"):
        written = write_gene_report(_gene_explanation(), tmp_path, markers={"A": ["G1", "CD14"]})
    page = written["report"].read_text()
    assert "not among the model&#x27;s genes" in page and "A: CD14" in page
    assert pd.read_csv(written["markers"])["absent_genes"].tolist() == ["CD14", "CD14"]


@pytest.mark.slow  # a subprocess or a whole dataset: make test runs it, make test-fast does not
# -- 6. piped output keeps its lines whole -------------------------------------------------------------------
def test_piped_command_output_is_not_wrapped_at_80_columns(model_dir):
    text = (
        "This film is a wonderfully strange, sprawling and generous piece of work that rewards patience with "
        "unexpected warmth and a closing scene nobody who sees it will forget"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE")}
    done = subprocess.run(
        [sys.executable, "-m", "lrp_domains", "text", "explain", text, "--model", model_dir],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert text in lines  # the text on one line, not broken at 80 columns
    assert any(line.startswith("prediction: ") and line.rstrip().endswith("attnlrp") for line in lines)
    assert any(line.startswith("most relevant: ") and line.count(",") >= 7 for line in lines)
