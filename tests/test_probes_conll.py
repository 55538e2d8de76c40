"""Readers for CoNLL-2003 / CoNLL-2000 / CoNLL-U, split file discovery, and the bundled sample."""
import re

import pytest

from l2v_eval.probes import conll
from l2v_eval.probes.conll import ConllFormatError, iob1_to_iob2, read_conll
from l2v_eval.probes.tasks import bundled_data_dir, load_task_data

CONLL2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O


Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O
BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O"""

CONLLU = """# sent_id = 1
# text = Don't stop.
1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3\tstop\tstop\tVERB\tVB\t_\t0\troot\t_\t_
3.1\tgo\tgo\tVERB\t_\t_\t_\t_\t0:root\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

# sent_id = 2
1\tNew York\tNew York\tPROPN\tNNP\t_\t0\troot\t_\t_
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_conll2003_docstart_blank_lines_and_missing_final_newline(tmp_path):
    sentences = read_conll(write(tmp_path, "train.txt", CONLL2003))
    assert [s.words for s in sentences] == [
        ("EU", "rejects", "German", "call", "."), ("Peter", "Blackburn"), ("BRUSSELS", "1996-08-22")]
    first = sentences[0]
    assert first.tags["pos"] == ("NNP", "VBZ", "JJ", "NN", ".")
    assert first.tags["chunk"] == ("B-NP", "B-VP", "B-NP", "I-NP", "O")
    assert first.tags["ner"] == ("B-ORG", "O", "B-MISC", "O", "O")
    assert [s.line for s in sentences] == [3, 10, 13]
    assert conll.detect_format(tmp_path / "train.txt") == "conll2003"


@pytest.mark.parametrize("bad_line, message", [
    ("EU NNP B-NP", "expected 4 whitespace-separated columns"),
    ("EU NNP B-NP ORG", "ner tag 'ORG' is not IOB"),
    ("EU NNP NP B-ORG", "chunk tag 'NP' is not IOB"),
])
def test_conll2003_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    path = write(tmp_path, "bad.txt", "-DOCSTART- -X- -X- O\n\nrejects VBZ B-VP O\n" + bad_line + "\n")
    with pytest.raises(ConllFormatError, match=re.escape(f"{path}:4: ") + ".*" + re.escape(message)):
        conll.read_conll2003(path)


def test_conll2000_reader_and_errors(tmp_path):
    path = write(tmp_path, "train.txt", "Confidence NN B-NP\nin IN B-PP\n\nthe DT B-NP\npound NN I-NP\n")
    sentences = read_conll(path)
    assert [s.words for s in sentences] == [("Confidence", "in"), ("the", "pound")]
    assert sentences[1].tags == {"pos": ("DT", "NN"), "chunk": ("B-NP", "I-NP")}
    bad = write(tmp_path, "bad.txt", "Confidence NN B-NP\nin IN B-PP O\n")
    with pytest.raises(ConllFormatError, match=re.escape(f"{bad}:2: expected 3")):
        conll.read_conll2000(bad)


def test_conllu_skips_comments_ranges_and_empty_nodes(tmp_path):
    sentences = read_conll(write(tmp_path, "en_ewt-ud-train.conllu", CONLLU))
    assert [s.words for s in sentences] == [("Do", "n't", "stop", "."), ("New York",)]
    assert sentences[0].tags["upos"] == ("AUX", "PART", "VERB", "PUNCT")
    assert sentences[0].tags["xpos"] == ("VBP", "RB", "VB", ".")


def test_conllu_errors(tmp_path):
    short = write(tmp_path, "a.conllu", "1\tDo\tdo\tAUX\n")
    with pytest.raises(ConllFormatError, match=re.escape(f"{short}:1: expected 10 tab-separated")):
        conll.read_conllu(short)
    gap = write(tmp_path, "b.conllu", CONLLU.replace("4\t.\t.", "5\t.\t."))
    with pytest.raises(ConllFormatError, match=re.escape(f"{gap}:8: word ID 5 out of sequence")):
        conll.read_conllu(gap)


def test_empty_and_unrecognisable_files(tmp_path):
    with pytest.raises(ConllFormatError, match="no sentences"):
        read_conll(write(tmp_path, "empty.txt", "-DOCSTART- -X- -X- O\n\n"))
    with pytest.raises(ConllFormatError, match=r"two\.txt:1: cannot tell the format from 2 columns"):
        read_conll(write(tmp_path, "two.txt", "EU NNP\n"))
    with pytest.raises(FileNotFoundError, match="No such data file"):
        read_conll(tmp_path / "missing.txt")


@pytest.mark.parametrize("name, split", [
    ("train.txt", "train"), ("eng.train", "train"), ("train", "train"), ("en_ewt-ud-train.conllu", "train"),
    ("dev.txt", "dev"), ("valid.txt", "dev"), ("validation.conll", "dev"), ("eng.testa", "dev"),
    ("en_ewt-ud-dev.conllu", "dev"), ("test.txt", "test"), ("eng.testb", "test"), ("testb.txt", "test"),
    ("test.txt.gz", "test"), ("README.txt", None), ("train.py", None), (".train.txt.swp", None),
])
def test_split_names(name, split):
    assert conll.split_of(name) == split


def test_find_split_files_refuses_two_files_for_one_split(tmp_path):
    for name in ("train.txt", "eng.testb", "README.txt"):
        write(tmp_path, name, "x")
    found = {k: v.name for k, v in conll.find_split_files(tmp_path).items()}
    assert found == {"train": "train.txt", "test": "eng.testb"}
    write(tmp_path, "test.txt", "x")
    with pytest.raises(ValueError, match=r"several files look like the test split \(eng\.testb, test\.txt\)"):
        conll.find_split_files(tmp_path)


def test_iob1_to_iob2():
    assert iob1_to_iob2(["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]) == \
        ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG"]
    iob2 = ["B-NP", "I-NP", "B-VP", "O", "B-NP"]
    assert iob1_to_iob2(iob2) == iob2


PTB = set("CC CD DT EX FW IN JJ JJR JJS LS MD NN NNS NNP NNPS PDT POS PRP PRP$ RB RBR RBS RP SYM TO UH VB VBD "
          "VBG VBN VBP VBZ WDT WP WP$ WRB $ # `` '' ( ) , . :".split())


def test_bundled_sample_is_well_formed_conll2003_iob2():
    files = conll.find_split_files(bundled_data_dir())
    counts = {split: len(read_conll(path)) for split, path in files.items()}
    assert counts == {"train": 60, "dev": 20, "test": 20}
    for path in files.values():
        assert conll.detect_format(path) == "conll2003"
        for sentence in read_conll(path):
            assert set(sentence.tags["pos"]) <= PTB
            for column in ("chunk", "ner"):
                tags = list(sentence.tags[column])
                assert iob1_to_iob2(tags) == tags, (path, sentence.line, column)  # already IOB2
    ner = {t[2:] for s in read_conll(files["train"]) for t in s.tags["ner"] if t != "O"}
    assert ner == {"PER", "LOC", "ORG", "MISC"}


def test_task_data_errors_name_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; put CoNLL-2003"):
        load_task_data("probe-ner", tmp_path / "nope")
    write(tmp_path, "train.txt", CONLL2003)
    with pytest.raises(FileNotFoundError, match=r"probe-ner: no test file in .*found: train\.txt.*test\.txt"):
        load_task_data("probe-ner", tmp_path)
    with pytest.raises(ValueError, match="Unknown probe task 'probe-srl'"):
        load_task_data("probe-srl", tmp_path)


def test_task_data_subdirs_formats_and_dev_holdout(tmp_path):
    write(tmp_path, "train.txt", CONLL2003)
    write(tmp_path, "test.txt", CONLL2003)
    pos_dir = tmp_path / "pos"
    pos_dir.mkdir()
    write(pos_dir, "x-train.conllu", CONLLU)
    write(pos_dir, "x-test.conllu", CONLLU)
    splits = load_task_data("probe-ner", tmp_path)
    # No dev file: the last sentence of three (10%, at least one) is held out of train.
    assert [len(splits[k].sentences) for k in ("train", "dev", "test")] == [2, 1, 3]
    assert splits["dev"].word_rows == slice(7, 9)
    assert splits["dev"].labels() == [["B-LOC", "O"]]
    pos = load_task_data("probe-pos", tmp_path)  # the pos/ subdirectory wins
    assert pos["train"].labels()[0] == ["AUX", "PART", "VERB", "PUNCT"]
    assert load_task_data("probe-pos", tmp_path, pos_column="xpos")["test"].labels()[0] == ["VBP", "RB", "VB", "."]
    chunk_dir = tmp_path / "chunk"
    chunk_dir.mkdir()
    write(chunk_dir, "train.conllu", CONLLU)
    write(chunk_dir, "test.conllu", CONLLU)
    with pytest.raises(ValueError, match=r"train\.conllu is conllu data, which has no chunk labels"):
        load_task_data("probe-chunk", tmp_path)


def test_iob1_files_are_read_as_iob2(tmp_path):
    text = "EU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP I-MISC\n"
    write(tmp_path, "train.txt", text + "\n" + text)
    write(tmp_path, "test.txt", text)
    splits = load_task_data("probe-chunk", tmp_path)
    assert splits["test"].labels() == [["B-NP", "B-VP", "B-NP"]]
