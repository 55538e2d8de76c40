"""Run under torchrun: every rank encodes the same list; rank 0 saves the gathered vectors."""
import sys

import torch
import torch.distributed as dist

from l2v_core import LLM2Vec

model_dir, out_file, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
dist.init_process_group("gloo")
words = "the quick brown fox jumps over the lazy dog while cats and dogs sleep".split()
texts = [" ".join(words[: 1 + (i * 7) % len(words)]) * (1 + i % 3) for i in range(n)]
texts = [[ "Represent the sentence:", t] if i % 4 == 0 else t for i, t in enumerate(texts)]
vectors = LLM2Vec.from_pretrained(model_dir, dtype="float32").encode(texts, batch_size=3, show_progress_bar=False)
gathered = [torch.empty_like(vectors) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, vectors)  # every rank must hold the same full result
if dist.get_rank() == 0:
    assert all(torch.equal(g, vectors) for g in gathered)
    torch.save({"vectors": vectors, "texts": texts}, out_file)
dist.barrier()  # no rank tears gloo down while another still saves (an abort at exit under load)
dist.destroy_process_group()
