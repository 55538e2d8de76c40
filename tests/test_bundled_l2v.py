"""``bundled-l2v``: the encoder adapter shipped with l2v, and the recipe that trained it."""
import json
from pathlib import Path

import pytest

from l2v_core import loading
from l2v_core.training import ConfigError, load_config
from l2v_eval.tasks.bundled import suite_data_roots
from l2v_eval.tasks.real import TRAIN_DIR

RECIPE = Path(loading.__file__).resolve().parent / "training" / "recipes" / "bundled-l2v.json"
ADAPTER = Path(loading.BUNDLED_L2V_DIR)


def test_the_adapter_ships_small_and_names_its_base_portably():
    weights = ADAPTER / "adapter_model.safetensors"
    assert weights.is_file()
    assert weights.stat().st_size <= 10.5 * 2**20
    config = json.loads((ADAPTER / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "bundled"
    assert config["r"] == json.loads(RECIPE.read_text())["lora_r"]
    assert json.loads((ADAPTER / "llm2vec_config.json").read_text())["pooling_mode"] == "mean"


def test_the_recipe_is_a_valid_config_on_the_suites_training_split(tmp_path):
    config = load_config("supervised", str(RECIPE), {"output_dir": str(tmp_path / "run")},
                         data_roots=suite_data_roots())
    assert config.base_model == "bundled"
    assert Path(config.train_file).resolve() == (TRAIN_DIR / "pairs.jsonl.gz").resolve()
    assert config.eval_tasks == "l2v-real"
    assert "l2v_eval" not in RECIPE.read_text()  # the core's files name no path inside the evaluation package


@pytest.mark.parametrize("stage, name, data", [("mntp", "bundled-l2v-mntp", "unlabeled.txt.gz"),
                                               ("simcse", "bundled-l2v-simcse", "unlabeled.txt.gz"),
                                               ("supervised", "bundled-l2v", "pairs.jsonl.gz")])
def test_every_stage_of_the_ablation_has_a_valid_recipe_on_the_training_split(stage, name, data, tmp_path):
    """benchmarks/ablation.sh chains these three recipes; each must load for its stage, on the bundled model,
    reading the suite's training split (never a test file)."""
    recipe = RECIPE.with_name(f"{name}.json")
    config = load_config(stage, str(recipe), {"output_dir": str(tmp_path / "run")}, data_roots=suite_data_roots())
    assert config.base_model == "bundled"
    assert Path(config.train_file).resolve() == (TRAIN_DIR / data).resolve()
    assert "l2v_eval" not in recipe.read_text()


def test_a_named_data_folder_unknown_to_the_caller_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"`train_file` 'l2v-real:train/pairs.jsonl.gz' names the data folder "
                                          r"'l2v-real', which is not known here"):
        load_config("supervised", str(RECIPE), {"output_dir": str(tmp_path / "run")})


@pytest.mark.slow
def test_the_trained_encoder_beats_its_untrained_base(smollm2_gguf):
    from l2v_core import LLM2Vec
    from l2v_eval.live import evaluate_encoder, load_eval_tasks

    tasks = load_eval_tasks("L2VRealQuoteCompletion")
    trained = evaluate_encoder(LLM2Vec.from_pretrained("bundled-l2v"), tasks)["L2VRealQuoteCompletion"]
    untrained = evaluate_encoder(LLM2Vec.from_pretrained("bundled"), tasks)["L2VRealQuoteCompletion"]
    assert trained > untrained + 0.1, (trained, untrained)


def test_only_data_keys_are_read_as_named_data(tmp_path):
    """A colon in an output folder or model path is part of its name, not a suite reference."""
    config = load_config("supervised", str(RECIPE), {"output_dir": "runs:2"}, data_roots=suite_data_roots())
    assert config.output_dir.endswith("runs:2")
