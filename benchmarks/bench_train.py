"""Training throughput of the experiment recipes on this machine, side by side in one run.

For each width, the images per second of one training step (forward, backward, SGD step) of
the Myrtle CNN at batch 256 on random CIFAR-shaped inputs, in the layouts and precisions the
``cpu`` preset can choose between: float32 contiguous, float32 channels-last, and bfloat16
autocast with channels-last. ``precision="auto"`` (the preset's) picks bfloat16 only where
this reports the CPU computes it natively; the last column says what it picks here.

    python benchmarks/bench_train.py [--widths 16,24] [--threads 1] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from torch_bridge.experiments._train import native_bfloat16, resolve_precision
from torch_bridge.models import myrtle

SETTINGS = (("float32, contiguous", False, False), ("float32, channels-last", True, False),
            ("bfloat16 autocast, channels-last", True, True))


def images_per_second(width: int, channels_last: bool, bf16: bool, steps: int, batch: int = 256) -> float:
    torch.manual_seed(0)
    model = myrtle(width=width)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2)
    times = []
    for i in range(steps + 1):  # the first step warms up (oneDNN primitive creation)
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="16,24")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"native bfloat16: {native_bfloat16(cpu)}, precision='auto' -> {resolve_precision('auto', cpu)}, "
          f"{a.threads} thread(s), batch 256")
    print("| width | " + " | ".join(name for name, _, _ in SETTINGS) + " | bf16 / best float32 |")
    print("|---" * (len(SETTINGS) + 2) + "|")
    for w in (int(v) for v in a.widths.split(",")):
        ips = [images_per_second(w, cl, bf, a.steps) for _, cl, bf in SETTINGS]
        print(f"| {w} | " + " | ".join(f"{v:.0f} img/s" for v in ips) + f" | {ips[2] / max(ips[:2]):.2f}x |",
              flush=True)


if __name__ == "__main__":
    main()
