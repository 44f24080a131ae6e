"""Training throughput and peak memory on a CUDA device: batch 256, d_model 256, 4 layers,
bf16 autocast versus fp32. Synthetic inputs (throughput does not depend on the values).

    .venv/bin/python bench/gpu_train.py        # writes bench/results/gpu_train.json

Without a CUDA device it says so and exits with status 2, writing nothing: the CPU path of
the platform never depends on this benchmark.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ml.model import ModelConfig, TimeSeriesTransformer  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "gpu_train.json"


def measure(precision: str, *, batch: int, seq_len: int, channels: int, classes: int, steps: int, warmup: int) -> dict:
    torch.manual_seed(0)
    dev = torch.device("cuda")
    cfg = ModelConfig(n_channels=channels, d_model=256, n_layers=4, n_heads=8, d_ff=1024, n_classes=classes,
                      max_len=seq_len)
    model = TimeSeriesTransformer(cfg).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, seq_len, channels, device=dev)
    mask = torch.ones(batch, seq_len, dtype=torch.bool, device=dev)
    y = torch.randint(0, classes, (batch,), device=dev)
    inputs = {"sensor": x, "sensor_mask": mask}

    def step():
        if precision == "bf16":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                _, loss = model(inputs, "classification", y)
        else:
            _, loss = model(inputs, "classification", y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"precision": precision, "samples_per_s": batch * steps / dt, "step_ms": 1000 * dt / steps,
            "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20, "final_loss": float(loss)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--channels", type=int, default=6)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device on this machine: bench/gpu_train.py measures GPU training and has nothing to"
              " measure here (nothing written)", file=sys.stderr)
        return 2
    shape = dict(batch=args.batch, seq_len=args.seq_len, channels=args.channels, classes=args.classes)
    runs = [measure(p, steps=args.steps, warmup=args.warmup, **shape) for p in ("fp32", "bf16")]
    payload = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
               "model": {"d_model": 256, "n_layers": 4, "n_heads": 8, "d_ff": 1024}, "shape": shape,
               "steps": args.steps, "runs": runs,
               "bf16_speedup": runs[1]["samples_per_s"] / runs[0]["samples_per_s"]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
