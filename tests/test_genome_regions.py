"""Genome coordinates as a run's input (--regions PEAKS --genome GENOME.fa), and the steps that put
a finished run back on the genome: bigWig of relevance, BED of seqlets, tfmodisco inputs."""

from __future__ import annotations

import gzip
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

pyBigWig = pytest.importorskip("pyBigWig")

from lrp_domains import domains  # noqa: E402
from lrp_domains.bio import SequenceExplainer, SequenceExplanation, call_seqlets  # noqa: E402
from lrp_domains.bio.motifs.run_seqlets import RECORD_HEADER, _Null, run_seqlets, write_seqlets_bed  # noqa: E402
from lrp_domains.bio.sequences.regions import GenomeRegions, RegionWindows  # noqa: E402
from lrp_domains.cli import app  # noqa: E402
from lrp_domains.domains import Unusable  # noqa: E402
from lrp_domains.errors import InputError  # noqa: E402
from lrp_domains.run import explain_dataset, read_results  # noqa: E402

SIZES = {"chr1": 3000, "chr2": 2000, "chr10": 1500}
COMPLEMENT = str.maketrans("ACGT", "TGCA")
REGION = re.compile(r"^(.+):(-?\d+)-(\d+)\(([+-])\)$")


def _revcomp(sequence: str) -> str:
    return sequence.translate(COMPLEMENT)[::-1]


@pytest.fixture(scope="module", autouse=True)
def _index_cache(tmp_path_factory):
    """Genome indexes are built into a cache of this module's own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    """A random genome of three chromosomes (60 bases a line, one soft-masked stretch)."""
    rng = np.random.default_rng(11)
    sequences = {name: "".join(rng.choice(list("ACGT"), size=size)) for name, size in SIZES.items()}
    path = tmp_path_factory.mktemp("genome") / "genome.fa"
    text = sequences["chr1"][:100] + sequences["chr1"][100:160].lower() + sequences["chr1"][160:]
    lines = [">chr1\n" + "\n".join(text[i : i + 60] for i in range(0, len(text), 60))]
    for name in ("chr2", "chr10"):
        lines.append(
            f">{name} a description\n" + "\n".join(sequences[name][i : i + 60] for i in range(0, SIZES[name], 60))
        )
    path.write_text("\n".join(lines) + "\n")
    return path, sequences


@pytest.fixture(scope="module")
def explainer():
    return SequenceExplainer.default()


def _read_all(reader):
    ids, items = [], []
    for shard in reader.shards(2):
        got_ids, got_items = reader.read(shard)
        ids += got_ids
        items += got_items
    return ids, items


@pytest.mark.parametrize("gzipped", [False, True])
def test_windows_of_bed3_bed6_and_narrowpeak(genome, explainer, tmp_path, gzipped):
    path, sequences = genome
    peaks = tmp_path / ("peaks.narrowPeak" + (".gz" if gzipped else ""))
    text = (
        "track name=peaks\nbrowser position chr1:1-100\n# a comment\n\n"
        "chr1\t400\t700\tp1\t0\t.\t1\t1\t1\t120\n"  # summit 520: window 420-620
        "chr1\t500\t900\tp2\t0\t-\t1\t1\t1\t-1\n"  # no summit: centre 700, minus strand
        "chr10\t1000\t1300\tp3\t0\t+\t1\t1\t1\t50\n"  # summit 1050: 950-1150
        "chr2\t1900\t2000\tp4\t0\t+\t1\t1\t1\t90\n"  # 1890-2090: runs off chr2's end
        "chr1\t0\t50\tp5\t0\t+\t1\t1\t1\t5\n"  # -95-105: runs off chr1's start
        "chrUn\t10\t300\tp6\t0\t+\t1\t1\t1\t10\n"
    )  # a chromosome the genome lacks
    if gzipped:
        peaks.write_bytes(gzip.compress(text.encode()))
    else:
        peaks.write_text(text)
    source = SequenceExplainer.regions_source(peaks, path, None)
    reader = explainer.reader(source)
    assert reader.width == 200 and reader.source == GenomeRegions(str(peaks), str(path), 200)
    ids, items = _read_all(reader)
    assert ids == [
        "chr1:420-620(+)",
        "chr1:600-800(-)",
        "chr10:950-1150(+)",
        "chr2:1890-2090(+)",
        "chr1:-95-105(+)",
        "chrUn:-80-120(+)",
    ]
    assert items[0] == sequences["chr1"][420:620]
    assert items[1] == _revcomp(sequences["chr1"][600:800])
    assert items[2] == sequences["chr10"][950:1150]
    assert [item.status for item in items[3:]] == ["off_chromosome", "off_chromosome", "unknown_chrom"]
    assert all(isinstance(item, Unusable) for item in items[3:])

    bed3 = tmp_path / "peaks.bed"
    bed3.write_text("chr1\t100\t300\nchr2\t10\t1210\n")
    bed6 = tmp_path / "peaks6.bed"
    bed6.write_text("chr1\t100\t300\tx\t0\t-\nchr1\t150\t161\ty\t0\t+\n")
    ids3, items3 = _read_all(explainer.reader(SequenceExplainer.regions_source(bed3, path, 50)))
    assert ids3 == ["chr1:175-225(+)", "chr2:585-635(+)"] and items3[1] == sequences["chr2"][585:635]
    ids6, items6 = _read_all(explainer.reader(SequenceExplainer.regions_source(bed6, path, 20)))
    assert ids6 == ["chr1:190-210(-)", "chr1:145-165(+)"]
    assert items6 == [_revcomp(sequences["chr1"][190:210]), sequences["chr1"][145:165]]  # soft-masking read as upper

    # The rows of the unusable windows carry their status, the others equal explain on the windows.
    rows = explainer.explain_rows(ids, items)
    assert rows.status.tolist() == ["ok"] * 3 + ["off_chromosome", "off_chromosome", "unknown_chrom"]
    assert rows.relevance[3:].isna().all()
    direct = explainer.explain(items[:3], ids=ids[:3])
    for i in range(3):
        np.testing.assert_allclose(rows.relevance[i], direct.per_position[i].double().numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(
            rows.hypothetical[i], direct.hypothetical[i].double().reshape(-1).numpy(), rtol=1e-5, atol=1e-7
        )
    assert rows.explained[:3].tolist() == pytest.approx(direct.explained.tolist(), rel=1e-6)

    # The fingerprint: the BED's hash, the genome by name, size and sequences (never hashed), the width.
    found = reader.fingerprint()
    assert found["genome"] == {"name": "genome.fa", "bytes": path.stat().st_size, "sequences": SIZES}
    assert found["width"] == 200 and len(found["sha256"]) == 64
    assert not path.with_name("genome.fa.fai").exists()  # nothing written beside the genome


def test_bad_peak_lines_and_refusals(genome, explainer, tmp_path):
    path, _ = genome
    for text, words in [
        ("chr1\t10\t20\nchr1\tx\t30\n", "peaks.bed, line 2: start and end must be integers"),
        ("# header\nchr1\t30\t20\n", "peaks.bed, line 2: a region needs"),
        ("chr1\t10\n", "peaks.bed, line 1: a BED line needs at least 3"),
        ("chr1\t10\t20\tx\t0\t*\n", "peaks.bed, line 1: column 6"),
        ("track only\n", "holds no regions"),
    ]:
        bed = tmp_path / "peaks.bed"
        bed.write_text(text)
        with pytest.raises(InputError, match=re.escape(words)):
            explainer.reader(SequenceExplainer.regions_source(bed, path, 100)).shards(10)
    peak = tmp_path / "p.narrowPeak"
    peak.write_text("chr1\t10\t20\tx\t0\t.\t1\t1\t1\t10\n")
    with pytest.raises(InputError, match=r"p.narrowPeak, line 1: summit offset 10 lies outside"):
        explainer.reader(SequenceExplainer.regions_source(peak, path, 100)).shards(10)
    with pytest.raises(InputError, match="a genes run does not take --regions"):
        domains.get("genes").regions_source(peak, path, 100)
    with pytest.raises(InputError, match="needs --genome"):
        SequenceExplainer.regions_source(peak, None, 100)
    with pytest.raises(InputError, match="no such genome FASTA file"):
        SequenceExplainer.regions_source(peak, tmp_path / "nothing.fa", 100)
    with pytest.raises(InputError, match="give --width"):
        RegionWindows(GenomeRegions(str(peak), str(path)))
    runner = CliRunner()
    both = runner.invoke(
        app,
        ["run", "sequences", str(peak), "--regions", str(peak), "--genome", str(path), "--out", str(tmp_path / "o")],
    )
    assert both.exit_code == 2 and "not both" in both.output
    neither = runner.invoke(app, ["run", "sequences", "--out", str(tmp_path / "o")])
    assert neither.exit_code == 2 and "--regions PEAKS" in neither.output
    alone = runner.invoke(app, ["run", "sequences", str(peak), "--genome", str(path), "--out", str(tmp_path / "o")])
    assert alone.exit_code == 2 and "--genome is for --regions" in alone.output
    text = runner.invoke(
        app, ["run", "text", "--regions", str(peak), "--genome", str(path), "--out", str(tmp_path / "o")]
    )
    assert text.exit_code == 2 and "a text run does not take --regions" in text.output
    assert not (tmp_path / "o").exists()


def test_null_is_bounded_and_exact_below_the_bound():
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=n) for n in (40, 70, 30, 90)]
    exact = _Null(1000, 0)
    for part in parts:
        exact.add(part)
    np.testing.assert_array_equal(exact.values(), np.concatenate(parts))
    bounded = _Null(60, 0)
    for part in parts:
        bounded.add(part)
    assert 0 < len(bounded.values()) <= 60 and set(bounded.values()) <= set(np.concatenate(parts))


def _expected_track(rows: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per chromosome: the sums and counts of the windows' relevance in genome orientation."""
    tracks = {name: (np.zeros(size), np.zeros(size)) for name, size in SIZES.items()}
    for name, values in zip(rows["id"], rows["relevance"]):
        chrom, start, end, strand = REGION.match(name).groups()
        values = np.asarray(values)[::-1] if strand == "-" else np.asarray(values)
        sums, counts = tracks[chrom]
        sums[int(start) : int(end)] += values
        counts[int(start) : int(end)] += 1
    return tracks


def _explanation(rows: pd.DataFrame) -> SequenceExplanation:
    """The explanation of a run's ok rows, per position exactly as the rows hold it."""
    n, width = len(rows), max(len(s) for s in rows["sequence"])
    channels = torch.zeros(n, 4, width, dtype=torch.float64)
    for i, values in enumerate(rows["relevance"]):
        channels[i, 0, : len(values)] = torch.as_tensor(np.array(values, dtype=np.float64))
    zeros = torch.zeros(n, dtype=torch.float64)
    return SequenceExplanation(
        rows["id"].tolist(),
        rows["sequence"].tolist(),
        torch.zeros(n, 4, width),
        zeros,
        channels,
        channels,
        zeros,
        zeros,
        [len(s) for s in rows["sequence"]],
        channel_relevance=channels,
    )


def _journey(tmp_path, genome, kind: str, extra: list[str]):
    """The user's commands: a run over peaks, its bigWig, its seqlets BED, its tfmodisco inputs;
    returns the run folder and its ok rows after checking the bigWig and the BED."""
    path, _ = genome
    peaks = tmp_path / "peaks.narrowPeak"
    peaks.write_text(
        "chr1\t400\t700\tp1\t0\t.\t5\t1\t1\t120\n"
        "chr1\t450\t650\tp2\t0\t-\t5\t1\t1\t-1\n"  # overlaps p1 on the other strand
        "chr10\t1000\t1300\tp3\t0\t+\t5\t1\t1\t50\n"
        "chr2\t1950\t2000\tp4\t0\t+\t5\t1\t1\t40\n"  # off the chromosome's end
        "chrUn\t10\t300\tp5\t0\t+\t5\t1\t1\t10\n"  # not in the genome
        "chr2\t100\t400\tp6\t0\t-\t5\t1\t1\t200\n"
    )
    out = tmp_path / "D"
    runner = CliRunner()
    command = [
        "run",
        kind,
        "--regions",
        str(peaks),
        "--genome",
        str(path),
        "--out",
        str(out),
        "--shard-size",
        "2",
        "--no-progress",
        *extra,
    ]
    done = runner.invoke(app, command)
    assert done.exit_code == 0, done.output
    rows = read_results(out)
    assert rows.status.tolist() == ["ok", "ok", "ok", "off_chromosome", "unknown_chrom", "ok"]
    ok = rows[rows.status == "ok"].reset_index(drop=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["genome"]["sequences"] == SIZES

    # bigWig: the windows' relevance, minus strands reversed, overlaps averaged, chromosome sizes
    # from the run's genome.
    bigwig = runner.invoke(app, ["run", "bigwig", str(out), "--out", str(tmp_path / "r.bw")])
    assert bigwig.exit_code == 0, bigwig.output
    with pyBigWig.open(str(tmp_path / "r.bw")) as bw:
        assert bw.chroms() == SIZES
        for chrom, (sums, counts) in _expected_track(ok).items():
            got = np.array(bw.values(chrom, 0, SIZES[chrom]))
            covered = counts > 0
            assert np.isnan(got[~covered]).all()
            np.testing.assert_allclose(got[covered], sums[covered] / counts[covered], rtol=1e-5, atol=1e-6)
        assert (_expected_track(ok)["chr1"][1] == 2).any()  # the two chr1 windows overlap

    # Seqlets: over the whole run (as call_seqlets on the explanation of its ok rows), placed on the
    # genome inside their chromosomes.
    record = run_seqlets(out)
    pd.testing.assert_frame_equal(record, call_seqlets(_explanation(ok)))
    seqlets = runner.invoke(app, ["run", "seqlets", str(out), "--out", str(tmp_path / "s.bed"), "--motifs", "none"])
    assert seqlets.exit_code == 0 and "genome coordinates" in seqlets.output, seqlets.output
    bed = pd.read_csv(
        tmp_path / "s.bed", sep="\t", header=None, names=["chrom", "start", "end", "name", "score", "strand"]
    )
    expected = []
    for name, start, end, relevance in zip(record.id, record.start, record.end, record.relevance):
        chrom, begin, finish, strand = REGION.match(name).groups()
        place = (int(finish) - end, int(finish) - start) if strand == "-" else (int(begin) + start, int(begin) + end)
        expected.append((chrom, *place, "seqlet", strand, relevance))
    got = [(c, s, e, n, st, v) for c, s, e, n, v, st in bed.itertuples(index=False)]
    assert len(got) > 0 and [g[:5] for g in sorted(got)] == [e[:5] for e in sorted(expected)]
    assert [g[5] for g in sorted(got)] == pytest.approx([e[5] for e in sorted(expected)], rel=1e-5, abs=1e-6)
    assert all(0 <= s < e <= SIZES[c] for c, s, e, *_ in got)

    modisco = runner.invoke(app, ["run", "export-modisco", str(out)])
    assert modisco.exit_code == 0, modisco.output
    assert np.load(out / "attr.npy").shape == (len(ok), 4, len(ok.sequence[0]))

    # Resuming in the same folder recomputes nothing.
    times = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    again = runner.invoke(app, command)
    assert again.exit_code == 0, again.output
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")} == times and len(times) == 3
    return out, ok


def test_sequences_journey_from_the_command_line(genome, tmp_path):
    out, ok = _journey(tmp_path, genome, "sequences", [])
    assert ok.id.tolist() == ["chr1:420-620(+)", "chr1:450-650(-)", "chr10:950-1150(+)", "chr2:200-400(-)"]
    _, sequences = genome
    assert ok.sequence[1] == _revcomp(sequences["chr1"][450:650])
    direct = SequenceExplainer.default().explain(ok.sequence.tolist(), ids=ok.id.tolist())
    for i in range(len(ok)):
        np.testing.assert_allclose(ok.relevance[i], direct.per_position[i].double().numpy(), rtol=1e-5, atol=1e-7)


def test_a_run_without_coordinates_gets_record_coordinates_and_a_bigwig_refusal(tmp_path):
    rng = np.random.default_rng(3)
    fasta = tmp_path / "in.fa"
    fasta.write_text("".join(f">seq{i}\n{''.join(rng.choice(list('ACGT'), size=200))}\n" for i in range(4)))
    explain_dataset(SequenceExplainer.default(), fasta, tmp_path / "D", shard_size=2, progress=False)
    runner = CliRunner()
    (tmp_path / "chrom.sizes").write_text("chr1\t1000\n")
    refused = runner.invoke(
        app,
        [
            "run",
            "bigwig",
            str(tmp_path / "D"),
            "--out",
            str(tmp_path / "r.bw"),
            "--chrom-sizes",
            str(tmp_path / "chrom.sizes"),
        ],
    )
    assert refused.exit_code == 2 and "ids carry no genome coordinates" in refused.output
    assert "--regions" in refused.output and not (tmp_path / "r.bw").exists()
    done = runner.invoke(app, ["run", "seqlets", str(tmp_path / "D"), "--out", str(tmp_path / "s.bed")])
    assert done.exit_code == 0, done.output
    lines = (tmp_path / "s.bed").read_text().splitlines()
    assert lines[0] == RECORD_HEADER
    seqlets = run_seqlets(tmp_path / "D")
    assert len(lines) == len(seqlets) + 1 > 1
    assert [line.split("\t")[:3] for line in lines[1:]] == [
        [i, str(s), str(e)] for i, s, e in zip(seqlets.id, seqlets.start, seqlets.end)
    ]
    # call_seqlets' frame works too (the sequence report writes its BED with it).
    write_seqlets_bed(seqlets, tmp_path / "again.bed")
    assert (tmp_path / "again.bed").read_text() == (tmp_path / "s.bed").read_text()


def test_dna_language_model_journey_from_the_command_line(genome, tmp_path):
    pytest.importorskip("transformers")
    import transformers as tf

    import lrp_domains.text  # noqa: F401  (registers attnlrp)
    from lrp_domains.bio.dna_lm.tokenizers import kmer_tokenizer

    tokenizer = kmer_tokenizer(3)
    torch.manual_seed(0)
    config = tf.EsmConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=80,
        position_embedding_type="rotary",
        pad_token_id=tokenizer.pad_token_id,
        mask_token_id=tokenizer.mask_token_id,
        num_labels=2,
        initializer_range=0.2,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    folder = tmp_path / "model"
    tf.EsmForSequenceClassification(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    explainer = domains.get("dna-lm").from_options(str(folder))
    # Default width: as many bases as the k-mer tokenizer fits into the model's 80 tokens (CLS first).
    (tmp_path / "peaks.bed").write_text("chr1\t0\t1000\n")
    assert explainer.reader(explainer.regions_source(tmp_path / "peaks.bed", genome[0])).width == 79 * 3
    out, ok = _journey(tmp_path, genome, "dna-lm", ["--model", str(folder), "--width", "60"])
    assert ok.id.tolist() == ["chr1:490-550(+)", "chr1:520-580(-)", "chr10:1020-1080(+)", "chr2:270-330(-)"]
    direct = explainer.explain(ok.sequence.tolist(), ids=ok.id.tolist())
    for i in range(len(ok)):
        np.testing.assert_allclose(ok.relevance[i], direct.per_position[i].double().numpy(), rtol=1e-4, atol=1e-7)
