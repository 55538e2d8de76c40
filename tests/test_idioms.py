"""sentence-transformers and llm2vec idioms on l2v's encoder, and the l2v-eval command line's readable
output (headers, help texts, one score scale, --no-baselines on runs)."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from l2v_cli.eval import build_parser, main
from l2v_core import LLM2Vec, load_sentence_transformer

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital and most populous city of France."]
PROMPT = "Retrieve passages that answer the question:"


@pytest.fixture(scope="module")
def encoder(tiny_llama):
    return LLM2Vec.from_pretrained(str(tiny_llama))


@pytest.fixture(scope="module")
def saved(encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("idioms") / "encoder"
    encoder.save(out)
    return out


def test_encode_normalize_embeddings(encoder):
    plain = encoder.encode(TEXTS, show_progress_bar=False)
    unit = encoder.encode(TEXTS, show_progress_bar=False, normalize_embeddings=True)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(len(TEXTS)))
    torch.testing.assert_close(unit, torch.nn.functional.normalize(plain, dim=-1))
    assert not torch.allclose(plain.norm(dim=-1), torch.ones(len(TEXTS)))


def test_encode_prompt_is_an_instruction_for_plain_strings(encoder):
    with_prompt = encoder.encode(TEXTS, show_progress_bar=False, prompt=PROMPT)
    torch.testing.assert_close(with_prompt, encoder.encode([[PROMPT, t] for t in TEXTS], show_progress_bar=False))
    assert not torch.allclose(with_prompt, encoder.encode(TEXTS, show_progress_bar=False))
    mixed = encoder.encode([TEXTS[0], ["Other instruction:", TEXTS[1]]], show_progress_bar=False, prompt=PROMPT)
    torch.testing.assert_close(mixed[1], encoder.encode([["Other instruction:", TEXTS[1]]], show_progress_bar=False)[0])
    with pytest.raises(TypeError, match="prompt"):
        encoder.encode(TEXTS, prompt=3)


def test_encode_keeps_the_reference_signature_and_defaults():
    params = inspect.signature(LLM2Vec.encode).parameters
    assert list(params)[:7] == ["self", "sentences", "batch_size", "show_progress_bar", "convert_to_numpy",
                                "convert_to_tensor", "device"]
    assert [params[n].default for n in list(params)[2:7]] == [32, True, False, False, None]
    assert params["normalize_embeddings"].default is False and params["prompt"].default is None


def test_sentence_transformer_prompt_and_max_seq_length(encoder, saved):
    model = load_sentence_transformer(saved)
    np.testing.assert_allclose(model.encode(TEXTS, prompt=PROMPT),
                               encoder.encode(TEXTS, show_progress_bar=False, prompt=PROMPT).numpy(), atol=1e-5)
    full = model.encode(TEXTS)
    model.max_seq_length = 4
    assert model.max_seq_length == 4 and model[0].encoder.max_length == 4
    assert not np.allclose(model.encode(TEXTS), full, atol=1e-5)  # texts cut at 4 tokens
    with pytest.raises(ValueError, match="max_seq_length"):
        model.max_seq_length = 0


@pytest.mark.parametrize("member", ["__init__", "from_pretrained", "encode", "plan", "save"])
def test_public_api_has_docstrings_and_type_hints(member):
    assert LLM2Vec.__doc__ and "from_pretrained" in LLM2Vec.__doc__
    function = getattr(LLM2Vec, member)
    if member != "__init__":
        assert function.__doc__ and len(function.__doc__.strip()) > 80
    signature = inspect.signature(function)
    annotated = [p for name, p in signature.parameters.items() if name not in ("self", "cls", "model", "tokenizer")
                 and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    assert all(p.annotation is not inspect.Parameter.empty for p in annotated), member
    assert signature.return_annotation is not inspect.Signature.empty or member == "__init__"
    loader = inspect.signature(load_sentence_transformer)
    assert load_sentence_transformer.__doc__ and loader.return_annotation is not inspect.Signature.empty


def test_list_commands_print_a_header(capsys):
    assert main(["tasks", "l2v-mini"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == ["task", "type", "splits"] and lines[1].startswith("L2VMiniSTS\t")
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == ["name", "revision", "what it loads"] and lines[1].startswith("bundled\t")


def test_every_option_has_help_text():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, f"l2v-eval {name} {'/'.join(action.option_strings) or action.dest} has no help"


RUN_FLAGS = {"--model", "--revision", "--tasks", "--output", "--embedding-cache", "--instructions", "--batch-size",
             "--device", "--dtype", "--max-length", "--pooling", "--peft", "--causal", "--name", "--data-dir",
             "--probe-data", "--probe-layers", "--seed", "--overwrite", "--offline", "--no-progress", "--no-baselines"}


def test_run_flags_are_the_fields_of_the_typed_config(tmp_path):
    """`l2v-eval run`'s flags come from EvalConfig: one per field with help text, with the field's help and
    default, spelled as scripts spell them; the parsed flags build the config."""
    import dataclasses

    from l2v_cli.eval import config_from_args
    from l2v_eval.harness import EvalConfig

    run = build_parser()._subparsers._group_actions[0].choices["run"]
    actions = {a.dest: a for a in run._actions if a.dest != "help"}
    declared = {f.name: f for f in dataclasses.fields(EvalConfig) if f.metadata.get("help")}
    assert set(actions) == set(declared)
    assert {flag for a in actions.values() for flag in a.option_strings} == RUN_FLAGS
    for name, action in actions.items():
        default = declared[name].default
        assert action.help == declared[name].metadata["help"]
        assert action.default == (list(default) if isinstance(default, tuple) else default), name
    args = build_parser().parse_args(["run", "--output", str(tmp_path), "--batch-size", "4", "--probe-layers", "0,2",
                                      "--peft", "a", "--peft", "b", "--no-progress", "--dtype", "float32"])
    config = config_from_args(args, EvalConfig)
    assert (config.model, config.tasks, config.batch_size, config.probe_layers, config.peft, config.show_progress,
            config.baselines, config.dtype) == ("bundled", "l2v-real", 4, (0, 2), ("a", "b"), False, True, "float32")


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "batch_size must be a positive integer, got 0"),
    (["--max-length", "0"], "max_length must be a positive integer, got 0"),
    (["--probe-layers", "1,x"], "layers must be comma-separated integers, got '1,x'"),
    (["--pooling", "max"], "Unknown pooling mode 'max'"),
    (["--name", "plain"], "organization/name"),
])
def test_run_values_are_checked_by_the_config_before_anything_loads(flags, message, tmp_path, capsys):
    assert main(["--output", str(tmp_path / "out"), *flags]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_online_is_not_a_flag(capsys):
    """Downloads are allowed unless --offline is given; the old no-op --online is refused by the parser."""
    with pytest.raises(SystemExit) as refused:
        main(["--online"])
    assert refused.value.code == 2 and "unrecognized arguments: --online" in capsys.readouterr().err


def test_run_scores_are_x100_and_no_baselines_leaves_them_out(tiny_llama, tmp_path, capsys):
    argv = ["--model", str(tiny_llama), "--tasks", "l2v-mini", "--output", str(tmp_path), "--no-progress",
            "--embedding-cache", "none"]
    assert main([*argv, "--no-baselines"]) == 0
    out = capsys.readouterr().out
    sts = next(line for line in out.splitlines() if line.strip().startswith("L2VMiniSTS"))
    value = float(sts.split("cosine_spearman=")[1].split()[0])
    table = next(line for line in out.splitlines() if line.startswith("* "))
    assert abs(value) > 1 and abs(value - float(table.split()[2])) <= 0.051  # the table's scale (x100)
    assert "shipped baselines left out" in out and "all-MiniLM-L6-v2" not in out
    assert main(argv) == 0  # every task already done: the same table, now with the baselines
    assert "all-MiniLM-L6-v2" in capsys.readouterr().out
