"""Times the LangCell cell encoder in `transformers` (`BertModel`, random weights, eval mode, no
pooler) embedding `--cells` cells of `--tokens` tokens in batches of `--batch`, the counterpart
of `sclm bench langcell-embed`. Prints one JSON line."""
import argparse
import json
import time

import torch
from transformers import BertConfig, BertModel


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cells", type=int, default=32)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--ff", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=25427, hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=a.heads,
                     intermediate_size=a.ff, hidden_act="relu", max_position_embeddings=2048)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    proj = torch.nn.Linear(a.hidden, 256)
    ids = torch.randint(2, 25426, (a.cells, a.tokens))
    ids[:, 0] = 25426
    best = float("inf")
    with torch.no_grad():
        for _ in range(a.reps):
            t = time.perf_counter()
            for s in range(0, a.cells, a.batch):
                h = model(ids[s:s + a.batch], torch.ones_like(ids[s:s + a.batch])).last_hidden_state
                torch.nn.functional.normalize(proj(h[:, 0]), dim=-1)
            best = min(best, time.perf_counter() - t)
    print(json.dumps({"engine": f"transformers {__import__('transformers').__version__} / torch {torch.__version__}",
                      "threads": a.threads, "best_seconds": best, "cells_per_s": a.cells / best}))


if __name__ == "__main__":
    main()
