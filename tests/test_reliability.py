"""Inputs an adversarial user tries: converting a model onto itself, texts with no spaces to cut
at, instructions longer than the limit, bad settings, and the modes of the files l2v writes."""
import re
import base64
import hashlib
import json
import os
import random
import shutil
import warnings

import pytest
import torch

from l2v_core import LLM2Vec
from l2v_cli.convert import main as convert
from l2v_core.files import atomic_write, write_json
from tests.reference import assert_close_to_reference, needs_reference, run_reference


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def model_copy(tiny_llama, tmp_path):
    """A private copy, so a failure here can never damage the shared tiny model."""
    return shutil.copytree(tiny_llama, tmp_path / "model")


# ---------------------------------------------------------------- l2v-convert never costs the input
@pytest.mark.parametrize("where", ["same", "inside-input", "holds-input"])
def test_convert_refuses_outputs_that_overlap_the_input(model_copy, tmp_path, capsys, where):
    if where == "holds-input":
        model, output = model_copy, tmp_path
    else:
        model, output = model_copy, (model_copy if where == "same" else model_copy / "encoder")
    before = digest(model_copy)
    assert convert([str(model), str(output), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "Loading" not in err  # refused before the model was loaded
    assert {"same": "is the input", "inside-input": "lies inside the input", "holds-input": "holds the input"}[where] in err
    assert digest(model_copy) == before
    assert not (model_copy / "encoder").exists()


def test_convert_refuses_an_adapter_folder_as_output(model_copy, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    assert convert([str(model_copy), str(adapter), "--peft", str(adapter), "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err
    assert [p.name for p in adapter.iterdir()] == ["adapter_config.json"]


def test_convert_into_a_non_empty_folder_needs_overwrite(model_copy, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    assert convert([str(model_copy), str(out)]) == 2
    err = capsys.readouterr().err
    assert "is not empty (1 entries: notes.txt)" in err and "--overwrite" in err and "Loading" not in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]

    assert convert([str(model_copy), str(out), "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "my notes"  # files of other names stay
    assert (out / "model.safetensors").is_file() and (out / "modules.json").is_file()


def test_convert_refuses_a_file_as_output(model_copy, tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert convert([str(model_copy), str(target), "--overwrite"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert target.read_text() == "x"


# ---------------------------------------------------------------- truncation never leaves nothing
@pytest.fixture(scope="module")
def short_encoder(tiny_llama):
    return LLM2Vec.from_pretrained(tiny_llama, max_length=64, doc_max_length=16)


def pooled_text(encoder, item) -> tuple[str, int]:
    features = encoder.tokenize([item])
    ids = features["input_ids"][0][features["embed_mask"][0].bool()]
    return encoder.tokenizer.decode(ids), len(ids)


def test_unbroken_long_texts_keep_their_own_tokens(short_encoder):
    rng = random.Random(0)
    texts = ["a" * 5000, "b" * 5000,
             base64.b64encode(rng.randbytes(4000)).decode(), base64.b64encode(rng.randbytes(4000)).decode()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vectors = short_encoder.encode(texts, show_progress_bar=False)
    assert any("4 input(s)" in str(w.message) for w in caught)
    assert torch.isfinite(vectors).all()
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            assert not torch.allclose(vectors[i], vectors[j], atol=1e-4), (i, j)
    for text in texts:
        kept, n = pooled_text(short_encoder, text)
        assert 0 < n <= 16 and text.startswith(kept)


def test_cjk_text_survives_the_document_cut(short_encoder):
    text = "我们的模型把文本变成向量，检索系统再比较这些向量。" * 50  # no whitespace anywhere
    kept, n = pooled_text(short_encoder, text)
    assert 0 < n <= 16
    assert kept and text.startswith(kept)  # cut at a character boundary, never inside a character
    other = "東京は日本の首都であり、最も人口の多い都市です。" * 50
    vectors = short_encoder.encode([text, other], show_progress_bar=False)
    assert not torch.allclose(vectors[0], vectors[1], atol=1e-4)


def test_texts_with_words_are_still_cut_word_wise_as_the_reference(short_encoder):
    words = ("the quick brown fox jumps over the lazy dog " * 200).split()
    kept, n = pooled_text(short_encoder, " ".join(words))
    assert 0 < n <= 16
    assert kept.split() == words[:len(kept.split())]  # whole words only


@needs_reference
def test_word_wise_cut_gives_the_reference_vectors(tiny_llama, tmp_path):
    model_dir = shutil.copytree(tiny_llama, tmp_path / "model")
    (model_dir / "llm2vec_config.json").write_text(json.dumps({"max_length": 64, "doc_max_length": 12}))
    texts = [" ".join(["the quick brown fox jumps over the lazy dog"] * 30),
             ["Retrieve passages that answer the question:", "Paris is the capital of France, " * 20],
             "Cats and dogs."]
    ref = run_reference(tmp_path, model_dir, "mean", texts)
    ours = LLM2Vec.from_pretrained(model_dir, pooling_mode="mean").encode(texts, show_progress_bar=False)
    assert_close_to_reference(ours, ref)


def test_a_few_giant_words_are_cut_by_tokens(short_encoder):
    text = "x" * 3000 + " " + "y" * 3000
    kept, n = pooled_text(short_encoder, text)
    assert 0 < n <= 16 and text.startswith(kept)


def test_instruction_that_leaves_no_room_for_the_text_is_named(short_encoder):
    long_instruction = "Represent the sentence for searching relevant passages " * 20
    items = [["Short instruction:", "fine text"], [long_instruction, "the text that would be lost"]]
    with pytest.raises(ValueError, match=r"sentences\[1\]: the instruction takes \d+ tokens .* max_length=64.*no room"):
        short_encoder.encode(items, show_progress_bar=False)
    with pytest.raises(ValueError, match=r"sentences\[1\]"):
        short_encoder.tokenize(items)
    # the same instruction without a text to lose: a whitespace text still encodes
    assert torch.isfinite(short_encoder.encode([["Represent:", "   "]], show_progress_bar=False)).all()


# ---------------------------------------------------------------- settings fail at construction
@pytest.mark.parametrize("bad", [0, -3, 1.5, "400", True])
def test_bad_doc_max_length_is_one_clear_error(tiny_llama, bad):
    with pytest.raises(ValueError, match=r"doc_max_length must be a positive integer .* got " + repr(bad).replace(".", r"\.")):
        LLM2Vec.from_pretrained(tiny_llama, doc_max_length=bad)


def test_convert_reports_bad_doc_max_length(model_copy, tmp_path, capsys):
    assert convert([str(model_copy), str(tmp_path / "out"), "--doc-max-length", "0"]) == 2
    assert "doc_max_length must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- atomic writes: a normal file's mode
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_get_the_mode_of_a_plain_write(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "new.json", {"a": 1})
        (tmp_path / "old.txt").write_text("old")
        atomic_write(tmp_path / "old.txt", lambda p: open(p, "w").write("new"))
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("reference")
    finally:
        os.umask(old)
    for name in ("new.json", "old.txt", "plain.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
    assert (tmp_path / "old.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.json", "old.txt", "plain.txt"]


def test_converted_weights_get_the_mode_of_a_plain_write(model_copy, tmp_path):
    old = os.umask(0o022)
    try:
        assert convert([str(model_copy), str(tmp_path / "out")]) == 0
    finally:
        os.umask(old)
    weights = list((tmp_path / "out").glob("*.safetensors"))
    assert weights
    for file in (tmp_path / "out").iterdir():
        if file.is_file():
            assert file.stat().st_mode & 0o777 == 0o644, file


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old rows")

    def crash(path):
        open(path, "w").write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, crash)
    assert target.read_text() == "old rows"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


@pytest.mark.parametrize("entries_only", [False, True])
def test_atomic_directory_publishes_whole_or_not_at_all(tmp_path, entries_only):
    from l2v_core.files import atomic_directory

    folder = tmp_path / "run"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "old.txt").write_text("old")
    (folder / "kept.txt").write_text("the run's own file")
    with pytest.raises(RuntimeError, match="killed"), atomic_directory(folder, entries_only=entries_only) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "new.txt").write_text("half")
        raise RuntimeError("killed")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == \
        ["run", "run/kept.txt", "run/sub", "run/sub/old.txt"]

    with atomic_directory(folder, entries_only=entries_only) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "new.txt").write_text("new")
        (tmp / "model.json").write_text("{}")
    expected = ["run", "run/model.json", "run/sub", "run/sub/new.txt"]
    if entries_only:  # entries of the same name replaced whole, the others left alone
        expected.insert(1, "run/kept.txt")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == expected


def test_a_json_object_file_is_read_or_refused_in_one_line_naming_it(tmp_path):
    from l2v_core.errors import AdapterError
    from l2v_core.files import read_json_object

    good, broken, listed, binary = (tmp_path / n for n in ("good.json", "broken.json", "list.json", "bin.json"))
    good.write_text('{"r": 8}')
    broken.write_text('{"r": 8,')
    listed.write_text("[1, 2]")
    binary.write_bytes(b"\xff\xfe{")
    assert read_json_object(good) == {"r": 8}
    with pytest.raises(AdapterError, match=rf"^{broken} is not valid JSON"):
        read_json_object(broken, AdapterError)
    with pytest.raises(ValueError, match=rf"^{listed} must hold a JSON object of settings, got list$"):
        read_json_object(listed, what="a JSON object of settings")
    with pytest.raises(ValueError, match=rf"^{binary} is not valid JSON"):
        read_json_object(binary)


@pytest.mark.parametrize("bad", [0, -3, 2.0, True, "8", None])
def test_a_count_setting_is_refused_in_one_line_naming_it(bad):
    from l2v_core.errors import check_positive_int

    with pytest.raises(ValueError, match=rf"^batch_size must be a positive integer, got {re.escape(repr(bad))}$"):
        check_positive_int("batch_size", bad)
    check_positive_int("batch_size", 8)
    check_positive_int("max_length", None, none_means="the encoder's own")
