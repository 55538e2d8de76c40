"""Run the reference llm2vec (executed by a separate Python that has it, on transformers 4.44).

usage: python reference_runner.py MODEL_DIR INPUTS.json OUT.npy POOLING [PEFT_DIR]
       python reference_runner.py make-adapter BASE_DIR OUT_DIR SEED
The first encodes the inputs (a JSON list of strings / [instruction, text] pairs); the
second writes a LoRA adapter of the reference's bidirectional Llama, as its training does.
"""
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
from llm2vec import LLM2Vec



def make_adapter(base_dir, out_dir, seed):
    from peft import LoraConfig, get_peft_model
    from llm2vec.models import LlamaBiModel

    torch.manual_seed(int(seed))
    base = LlamaBiModel.from_pretrained(base_dir, torch_dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                        init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(out_dir)


if sys.argv[1] == "make-adapter":
    make_adapter(*sys.argv[2:5])
    sys.exit(0)

model_dir, inputs_file, out_file, pooling = sys.argv[1:5]

# Directories written by transformers 5 name their tokenizer class "TokenizersBackend", which
# transformers 4.44 does not know; point a copy at the equivalent fast tokenizer class.
work = tempfile.mkdtemp()
shutil.copytree(model_dir, work, dirs_exist_ok=True)
tok_config = os.path.join(work, "tokenizer_config.json")
if os.path.exists(tok_config):
    with open(tok_config) as f:
        cfg = json.load(f)
    if cfg.get("tokenizer_class") == "TokenizersBackend":
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    with open(tok_config, "w") as f:
        json.dump(cfg, f)
tok_file = os.path.join(work, "tokenizer.json")
if os.path.exists(tok_file):
    # tokenizers >= 0.20 writes BPE merges as pairs; the 0.19 that transformers 4.44 needs reads "a b".
    with open(tok_file) as f:
        tok = json.load(f)
    merges = tok.get("model", {}).get("merges")
    if merges and isinstance(merges[0], list):
        tok["model"]["merges"] = [" ".join(m) for m in merges]
        with open(tok_file, "w") as f:
            json.dump(tok, f)
model_dir = work
peft = sys.argv[5] if len(sys.argv) > 5 else None
with open(inputs_file) as f:
    # the reference only takes all-strings or all-pairs lists; a string s means ["", s]
    sentences = [["", s] if isinstance(s, str) else s for s in json.load(f)]
model = LLM2Vec.from_pretrained(model_dir, peft_model_name_or_path=peft, pooling_mode=pooling,
                                torch_dtype=torch.float32, attn_implementation="eager")
vectors = model.encode(sentences, batch_size=4, show_progress_bar=False)
np.save(out_file, vectors.numpy())
