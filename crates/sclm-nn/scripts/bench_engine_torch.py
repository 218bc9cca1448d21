"""Times one PyTorch transformer encoder layer, the counterpart of sclm-nn's
`bench_encoder_layer` (pre-norm, exact GELU, no dropout). Prints one JSON line."""
import argparse
import json
import statistics
import time

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--d-ff", type=int, default=2048)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(
        a.d_model, a.heads, a.d_ff, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    x = torch.randn(a.batch, a.seq, a.d_model)

    def fwd():
        with torch.no_grad():
            layer(x).sum().item()

    def fwd_bwd():
        layer.zero_grad(set_to_none=True)
        layer(x).sum().backward()

    def timed(f):
        for _ in range(a.warmup):
            f()
        ts = []
        for _ in range(a.iters):
            t = time.perf_counter()
            f()
            ts.append((time.perf_counter() - t) * 1e3)
        return statistics.median(ts)

    layer.train()  # dropout is 0; train mode avoids the fused inference fast path for fwd_bwd
    fb = timed(fwd_bwd)
    layer.eval()
    f = timed(fwd)
    print(json.dumps({"engine": "torch " + torch.__version__, "threads": a.threads,
                      "forward_ms": f, "forward_backward_ms": fb}))


if __name__ == "__main__":
    main()
