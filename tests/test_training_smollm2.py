"""MNTP on the real SmolLM2-135M GGUF: the path a real training run takes (loads in ~30 s)."""
import json
import math

import pandas as pd
import pytest
from safetensors.torch import load_file

from l2v_core.training import load_config, sample_path, train

pytestmark = pytest.mark.slow


def test_mntp_step_on_the_bundled_gguf(smollm2_gguf, tmp_path):
    out = tmp_path / "mntp"
    config = load_config("mntp", sample_path("mntp.json"), dict(
        base_model="bundled", output_dir=str(out), max_steps=1, batch_size=2, max_length=32, progress_bar=False))
    result = train("mntp", config)
    loss = pd.read_csv(result.metrics_file).loss.iloc[0]
    assert math.isfinite(loss) and 1.0 < loss < 15.0
    adapter = out / "adapter"
    # The base is named portably, never by a path into this machine's site-packages.
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "bundled"
    keys = list(load_file(adapter / "adapter_model.safetensors"))
    assert len(keys) == 30 * 7 * 2 and all(k.startswith("base_model.model.layers.") for k in keys)

