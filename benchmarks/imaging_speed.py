"""Imaging throughput: training and inference images/s per backbone, CPU vs GPU (when present).

Random 1-channel images at the model's size (throughput does not depend on content). Training =
forward + class-weighted BCE + backward + AdamW step, with the same AMP/channels_last settings as
``imaging.train`` (bfloat16 autocast and channels_last on CUDA only). Prints a table and, when a
GPU is present, the GPU/CPU ratio per configuration.

Usage::

    nice -n 10 python benchmarks/imaging_speed.py                     # CPU, 1 thread, default configs
    python benchmarks/imaging_speed.py --configs densenet121:224 --threads 16 --cpu-batches 2
    python benchmarks/imaging_speed.py --json out.json                # also write the numbers
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F

from imaging.models import CXRFindingModel


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(arch: str, size: int, device: torch.device, *, batch: int, batches: int, warmup: int = 1) -> dict:
    torch.manual_seed(0)
    model = CXRFindingModel(arch=arch, findings=("a", "b", "c", "d"), image_size=size).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    x = torch.rand(batch, 1, size, size, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, 4, device=device) < 0.3).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    pw = torch.full((4,), 2.0, device=device)

    def train_step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=pw)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def infer_step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
            model(x)

    out = {"arch": arch, "image_size": size, "device": str(device), "batch": batch}
    for name, step, mode in (("train", train_step, model.train), ("infer", infer_step, model.eval)):
        mode()
        for _ in range(warmup):
            step()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(batches):
            step()
        _sync(device)
        out[f"{name}_img_per_s"] = batch * batches / (time.perf_counter() - t0)
    return out


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="small:128,resnet18:128,densenet121:224",
                    help="comma-separated arch:size")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--cpu-batch", type=int, default=16)
    ap.add_argument("--cpu-batches", type=int, default=3)
    ap.add_argument("--gpu-batch", type=int, default=128)
    ap.add_argument("--gpu-batches", type=int, default=20)
    ap.add_argument("--no-gpu", action="store_true")
    ap.add_argument("--json", default=None, help="write results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    rows = []
    for cfg in args.configs.split(","):
        arch, size = cfg.split(":")
        cpu = measure(arch, int(size), torch.device("cpu"), batch=args.cpu_batch, batches=args.cpu_batches)
        rows.append(cpu)
        line = (f"{arch:12s} {size:>4s} px  CPU({args.threads} thr): train {cpu['train_img_per_s']:8.1f} img/s"
                f"  infer {cpu['infer_img_per_s']:8.1f} img/s")
        if torch.cuda.is_available() and not args.no_gpu:
            gpu = measure(arch, int(size), torch.device("cuda"), batch=args.gpu_batch, batches=args.gpu_batches,
                          warmup=3)
            rows.append(gpu)
            line += (f" | GPU: train {gpu['train_img_per_s']:8.1f}  infer {gpu['infer_img_per_s']:8.1f} img/s"
                     f" | ratio train {gpu['train_img_per_s'] / cpu['train_img_per_s']:.0f}x"
                     f"  infer {gpu['infer_img_per_s'] / cpu['infer_img_per_s']:.0f}x")
        print(line, flush=True)
    meta = {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "threads": args.threads,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    print(json.dumps(meta))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": rows}, fh, indent=2)
    return rows


if __name__ == "__main__":
    main()
