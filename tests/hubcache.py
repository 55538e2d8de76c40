"""A Hugging Face Hub cache on disk, in the real layout, holding tiny models and adapters laid
out like the reference's released repositories; and a stand-in Hub server for error replies.

    HF_HOME/hub/models--org--name/refs/<branch>       the commit the branch points at
    HF_HOME/hub/models--org--name/snapshots/<commit>/  the files of that commit

The code under test reads it through huggingface_hub, exactly as it reads a cache filled by
downloads. Nothing here is consulted by the product.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import torch

from tests import tiny

MISTRAL = "mistralai/Mistral-7B-Instruct-v0.2"
MNTP = "McGill-NLP/LLM2Vec-Mistral-7B-Instruct-v2-mntp"
SUPERVISED = "McGill-NLP/LLM2Vec-Mistral-7B-Instruct-v2-mntp-supervised"
# What the reference's MNTP repositories put in config.json: the authors' modeling code, never run here.
AUTO_MAP = {"AutoModel": "modeling_mistral_encoder.MistralEncoderModel"}
REMOTE_CODE = "raise RuntimeError('remote code from the model repository was executed')\n"


def commit_of(*parts: str) -> str:
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()


def add_repo(hub_cache: Path, repo_id: str, files: Path, *, commit: str | None = None,
             branch: str | None = "main") -> Path:
    """Put the files of folder ``files`` in the cache as commit ``commit`` of ``repo_id``."""
    commit = commit or commit_of(repo_id, str(files))
    repo = Path(hub_cache) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    shutil.copytree(files, snapshot, dirs_exist_ok=True)
    if branch:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / branch).write_text(commit)
    return snapshot


def lora_adapter(base_dir: Path, out: Path, seed: int, base_name: str, merge_first: Path | None = None,
                 targets=("q_proj", "v_proj")) -> Path:
    """A random LoRA adapter of the headless model at ``base_dir`` (after merging ``merge_first``),
    its adapter_config naming ``base_name`` as the base, as the reference's training writes it."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModel

    torch.manual_seed(seed)
    model = AutoModel.from_pretrained(base_dir)
    if merge_first is not None:
        model = PeftModel.from_pretrained(model, merge_first).merge_and_unload()
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), init_lora_weights=False))
    lora.save_pretrained(out)
    config_file = out / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base_name
    config_file.write_text(json.dumps(config, indent=2))
    return out


def reference_repos(hub_cache: Path, work: Path, base_id: str = MISTRAL, mntp_id: str = MNTP,
                    adapter_ids: tuple[str, ...] = (SUPERVISED,), arch: str = "mistral") -> dict[str, Path]:
    """The base model, an MNTP repository (full config with auto_map + tokenizer + adapter naming the
    base by Hub id) and supervised / SimCSE adapter repositories stacked on it, all tiny."""
    base = tiny.make_model_dir(work, arch, name=f"tiny-{arch}-base")
    mntp = lora_adapter(base, work / f"{arch}-mntp", 1, base_id)
    config = json.loads((base / "config.json").read_text())
    config.update({"_name_or_path": base_id, "auto_map": AUTO_MAP})
    (mntp / "config.json").write_text(json.dumps(config, indent=2))
    (mntp / "modeling_mistral_encoder.py").write_text(REMOTE_CODE)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base / name, mntp / name)
    repos = {base_id: add_repo(hub_cache, base_id, base), mntp_id: add_repo(hub_cache, mntp_id, mntp),
             "base_dir": base, "mntp_dir": mntp}
    for seed, adapter_id in enumerate(adapter_ids, start=2):
        adapter = lora_adapter(base, work / f"{arch}-adapter-{seed}", seed, mntp_id, merge_first=mntp)
        repos[adapter_id] = add_repo(hub_cache, adapter_id, adapter)
        repos.setdefault("supervised_dir", adapter)
    return repos


class _HubReplies(http.server.BaseHTTPRequestHandler):
    """Answers every request as the Hub answers for a missing repository (or revision ``nope``)."""

    def _reply(self):
        code = "RevisionNotFound" if "/revision/nope" in self.path or "/nope/" in self.path else "RepoNotFound"
        body = json.dumps({"error": code}).encode()
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = _reply

    def log_message(self, *args):
        pass


def start_missing_repo_hub() -> http.server.ThreadingHTTPServer:
    """A local server answering like the Hub for repositories that do not exist; ``.shutdown()`` it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubReplies)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
