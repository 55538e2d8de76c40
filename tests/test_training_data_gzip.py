"""Compressed training data (.txt.gz, .jsonl.gz) reads exactly like the plain files, and trains."""
import gzip
import shutil

import pandas as pd
import pytest

from l2v_core.training import DataError, load_config, load_texts, load_triples, sample_path, train


def gzipped(source, target):
    with open(source, "rb") as f, gzip.open(target, "wb") as g:
        shutil.copyfileobj(f, g)
    return str(target)


def test_gzipped_samples_read_like_the_plain_ones(tmp_path):
    texts = gzipped(sample_path("fortunes.txt"), tmp_path / "fortunes.txt.gz")
    assert load_texts(texts).to_list() == load_texts(sample_path("fortunes.txt")).to_list()
    triples = gzipped(sample_path("triples.jsonl"), tmp_path / "triples.jsonl.gz")
    assert load_triples(triples).to_list() == load_triples(sample_path("triples.jsonl")).to_list()
    rows = tmp_path / "rows.jsonl.gz"
    with gzip.open(rows, "wt", encoding="utf-8") as f:
        f.write('{"body": "one"}\n{"body": "two"}\n')
    assert load_texts(str(rows), text_field="body")["text"] == ["one", "two"]


def test_broken_gzip_files_are_named(tmp_path):
    fake = tmp_path / "plain.txt.gz"
    fake.write_text("not compressed at all\n")
    with pytest.raises(DataError, match=rf"^{fake} is not a complete gzip file"):
        load_texts(str(fake))
    cut = tmp_path / "cut.jsonl.gz"
    data = gzip.compress(b'{"text": "a long enough line of text"}\n' * 200)
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"^{cut} is not a complete gzip file"):
        load_texts(str(cut))
    bad = tmp_path / "bad.jsonl.gz"
    with gzip.open(bad, "wt") as f:
        f.write('{"text": "one"}\nnot json\n')
    with pytest.raises(DataError, match=rf"^{bad}, line 2: not valid JSON"):
        load_texts(str(bad))


def test_training_on_gzipped_data(tiny_llama, tmp_path):
    data = gzipped(sample_path("triples.jsonl"), tmp_path / "triples.jsonl.gz")
    result = train("supervised", load_config("supervised", sample_path("supervised.json"), dict(
        base_model=str(tiny_llama), train_file=data, output_dir=str(tmp_path / "run"), max_steps=2, batch_size=4,
        max_length=64, save_steps=0, merge_output=False, progress_bar=False)))
    assert pd.read_csv(result.metrics_file).step.tolist() == [1, 2]
