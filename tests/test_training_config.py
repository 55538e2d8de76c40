"""Training configs, data files and the data order: no model needed."""
import json

import pytest

from l2v_cli.train import parse_overrides
from l2v_core.training import ConfigError, DataError, load_config, load_texts, load_triples, sample_path, train
from l2v_core.training.config import MNTPConfig, SimCSEConfig, SupervisedConfig


def test_defaults_follow_the_paper(required):
    mntp = MNTPConfig(**required)
    assert (mntp.lora_r, mntp.lora_alpha, mntp.lora_dropout) == (16, 32, 0.05)
    assert mntp.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (mntp.max_steps, mntp.batch_size, mntp.max_length, mntp.mask_probability) == (1000, 32, 512, 0.2)
    assert mntp.mask_token == "_" and not mntp.merge_output
    simcse = SimCSEConfig(**required)
    assert (simcse.temperature, simcse.attention_dropout, simcse.lora_dropout) == (0.05, 0.3, 0.3)
    assert simcse.pooling_mode == "mean" and simcse.merge_output
    assert SupervisedConfig(**required).homogeneous_batches


def test_unknown_key_suggests_the_close_one(required):
    with pytest.raises(ConfigError, match=r"Unknown key 'learning_rte'.*did you mean 'learning_rate'"):
        load_config("mntp", None, {**required, "learning_rte": 1e-4})
    # A key of another stage is unknown here.
    with pytest.raises(ConfigError, match="Unknown key 'temperature' for mntp"):
        load_config("mntp", None, {**required, "temperature": 0.05})
    # The trainers' own arguments pass through by name; close misspellings of them are suggested too.
    assert load_config("mntp", None, {**required, "report_to": "tensorboard"}).trainer_args == {"report_to": "tensorboard"}
    with pytest.raises(ConfigError, match="did you mean 'push_to_hub'"):
        load_config("simcse", None, {**required, "push_to_hbu": True})
    # A trainer argument that an l2v key decides is refused in favour of that key.
    with pytest.raises(ConfigError, match="Unknown key 'lr_scheduler_type'"):
        load_config("mntp", None, {**required, "lr_scheduler_type": "linear"})


@pytest.mark.parametrize("key, value, message", [
    ("max_steps", 0, "`max_steps` must be > 0"),
    ("batch_size", "eight", "`batch_size` must be an integer"),
    ("batch_size", True, "`batch_size` must be an integer"),
    ("learning_rate", -1.0, "`learning_rate` must be > 0"),
    ("mask_probability", 1.5, r"`mask_probability` must be in \(0, 1\)"),
    ("lora_dropout", 1.0, r"`lora_dropout` must be in \[0, 1\)"),
    ("lr_scheduler", "cosin", "did you mean 'cosine'"),
    ("dtype", "fp32", "`dtype` must be one of"),
    ("bf16", "yes", "`bf16` must be true, false or \"auto\""),
    ("logging_steps", "often", "`logging_steps` must be a number"),
    ("report_to", "tensorbord", "^`report_to`: unknown logger 'tensorbord'; did you mean 'tensorboard'"),
    ("lora_target_modules", [], "`lora_target_modules` must be a non-empty list"),
])
def test_bad_values_are_named(key, value, message, required):
    with pytest.raises(ConfigError, match=message):
        load_config("mntp", None, {**required, key: value})


def test_missing_required_and_unknown_stage(required):
    with pytest.raises(ConfigError, match="`output_dir` is required"):
        load_config("simcse", None, {"base_model": "m", "train_file": "t.txt"})
    with pytest.raises(ConfigError, match="Unknown training stage 'mlm'"):
        load_config("mlm", None, required)
    with pytest.raises(ConfigError, match="`pooling_mode` must be one of"):
        load_config("simcse", None, {**required, "pooling_mode": "max"})
    with pytest.raises(ConfigError, match=r"`instructions\['nq'\]` must be a string"):
        load_config("supervised", None, {**required, "instructions": {"nq": 3}})


def test_config_file_paths_resolve_against_the_file(tmp_path):
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "data.txt").write_text("one text\n")
    (folder / "c.json").write_text(json.dumps({"base_model": "org/name", "train_file": "data.txt", "output_dir": "out"}))
    cfg = load_config("mntp", folder / "c.json", {"max_steps": 5})
    assert cfg.train_file == str(folder / "data.txt")
    assert cfg.output_dir == str(folder / "out")
    assert cfg.base_model == "org/name"  # nothing at the relative path: kept as a hub id
    assert cfg.max_steps == 5

    (folder / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config("mntp", folder / "bad.json")
    with pytest.raises(ConfigError, match="Config file not found"):
        load_config("mntp", folder / "missing.json")


def test_command_line_overrides_are_json_or_strings(required):
    parsed = parse_overrides(["--max_steps", "10", "--bf16", "--lora-r=8", "--output_dir", "runs/x",
                              "--lora_target_modules", "q_proj,v_proj", "--mntp_adapter", "null"])
    assert parsed == {"max_steps": 10, "bf16": True, "lora_r": 8, "output_dir": "runs/x",
                      "lora_target_modules": "q_proj,v_proj", "mntp_adapter": None}
    cfg = load_config("simcse", None, {**required, **parsed})
    assert cfg.lora_target_modules == ["q_proj", "v_proj"] and cfg.mntp_adapter is None
    with pytest.raises(ConfigError, match="Expected --key value"):
        parse_overrides(["max_steps", "3"])


def test_text_and_triple_files(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("first line\n\n   \nsecond line\n")
    assert load_texts(str(txt), cache_dir=str(tmp_path / "c"))["text"] == ["first line", "second line"]
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": "one"}\n\n{"text": "two", "id": 3}\n')
    assert load_texts(str(jsonl), cache_dir=str(tmp_path / "c"))["text"] == ["one", "two"]
    jsonl.write_text('{"text": "one"}\n{"body": "two"}\n')
    with pytest.raises(DataError, match=r"line 2: needs a string under 'text' \(keys found: body\)"):
        load_texts(str(jsonl), cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match="not found"):
        load_texts(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="holds no texts"):
        load_texts(str(tmp_path / "empty.txt"))

    triples = tmp_path / "t.jsonl"
    triples.write_text('{"query": "q", "positive": "p", "negative": "n", "dataset": "d"}\n'
                       '{"query": "q2", "positive": "p2"}\n')
    with pytest.raises(DataError, match="line 2: needs a non-empty string under 'negative'"):
        load_triples(str(triples), cache_dir=str(tmp_path / "c"))
    triples.write_text('{"query": "q", "positive": "p", "negative": "n"}\nnot json\n')
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        load_triples(str(triples), cache_dir=str(tmp_path / "c"))


def test_shipped_samples_are_real_and_valid():
    texts = load_texts(sample_path("fortunes.txt"))["text"]
    assert len(texts) >= 300 and all(len(t.split()) >= 4 for t in texts)
    triples = load_triples(sample_path("triples.jsonl"))
    assert set(triples["dataset"]) == {"quotes", "definitions"}
    for stage in ("mntp", "simcse", "supervised"):
        cfg = load_config(stage, sample_path(f"{stage}.json"), {"output_dir": "x"})
        assert cfg.base_model == "bundled"
    with pytest.raises(FileNotFoundError, match="available: "):
        sample_path("nothing.txt")


def test_supervised_data_is_one_dataset_per_name_with_its_instruction_on_queries(tmp_path):
    from l2v_core.training.contrastive import supervised_data

    config = load_config("supervised", sample_path("supervised.json"), {"output_dir": str(tmp_path / "o")})
    parts, prompts = supervised_data(config, str(tmp_path / "c"))
    assert set(parts) == {"quotes", "definitions"}
    assert all(p.column_names == ["query", "positive", "negative"] for p in parts.values())
    assert prompts == {name: {"query": config.instructions[name]} for name in parts}
    total = sum(len(p) for p in parts.values())
    assert total == len(load_triples(sample_path("triples.jsonl")))
    # Batches stay inside one data set, so one of them must fill a batch; refused before the model loads.
    big = load_config("supervised", sample_path("supervised.json"), {"output_dir": str(tmp_path / "big"),
                                                                     "batch_size": 10_000})
    with pytest.raises(DataError, match=r"Not one full batch: .* rows in its largest data set \(sizes \[\d+, \d+\]\)"):
        train("supervised", big)
    mixed = load_config("supervised", sample_path("supervised.json"), {"output_dir": "o", "homogeneous_batches": False})
    with pytest.raises(ConfigError, match="`homogeneous_batches` false"):
        supervised_data(mixed, str(tmp_path / "c"))
