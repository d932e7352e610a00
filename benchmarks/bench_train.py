"""Training and inference throughput of the chart CNNs (``make bench-train``).

For I5, I20 and I60 on random images: training images/s (the production ``run_epoch`` step:
autocast forward, cross-entropy, backward, Adam) and inference images/s (``predict_proba``), forward
FLOPs per image (conv + linear multiply-accumulates x 2, counted analytically and checked against
torch.utils.flop_counter), achieved GFLOP/s (training = 3 x forward FLOPs), and the fraction of the
machine's peak measured in the same run by a large bf16 and fp32 matmul.

    python -m benchmarks.bench_train [--models I5 I20 I60] [--precision auto|bf16|fp32] [--seconds 6]

Timings on a shared machine are noisy: each figure is the best of several timed repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.config import TrainConfig
from pipeline.models.cnn import macs_per_image
from pipeline.models.registry import create_model, model_spec
from pipeline.predict.core import predict_proba
from pipeline.train.data import normalise
from pipeline.train.ddp import DistInfo
from pipeline.train.loop import resolve_runtime, run_epoch

TARGETS = {"I20": {"train": 180.0, "infer": 600.0}}  # images/s on the 2-core CPU, bf16


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of the best of ``repeats`` (n x n) @ (n x n) products in ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def counted_flops(name: str) -> int:
    """Forward FLOPs of one image by torch's flop counter (conv + matmul)."""
    m = create_model(name).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(torch.zeros(1, 1, *m.spec.image_hw))
    return int(fc.get_total_flops())


def bench_model(name: str, precision: str, seconds: float) -> dict:
    spec = model_spec(name)
    t = TrainConfig(precision=precision)
    rt = resolve_runtime(t, torch.device("cpu"))
    torch.manual_seed(0)
    model = create_model(name)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    batch = 128 if name != "I60" else 32  # I60 steps are ~10x I20's; keep the run short
    rng = np.random.default_rng(0)
    imgs = np.where(rng.random((batch, *spec.image_hw)) < 0.1, 255, 0).astype(np.uint8)
    x = normalise(imgs, 0.1, 0.3)
    y = torch.from_numpy(rng.integers(0, 2, batch))
    info = DistInfo()
    run_epoch(model, [(x, y)], rt, info, opt)  # warm-up (oneDNN primitive creation)
    train_best, spent = 0.0, 0.0
    while spent < seconds or train_best == 0.0:
        r = run_epoch(model, [(x, y)] * 2, rt, info, opt)
        train_best = max(train_best, r["n"] / r["seconds"])
        spent += r["seconds"]
    n_inf = 1024 if name != "I60" else 256
    inf_imgs = np.where(rng.random((n_inf, *spec.image_hw)) < 0.1, 255, 0).astype(np.uint8)
    predict_proba([model], inf_imgs[:256], 0.1, 0.3, rt, batch_size=256)  # warm-up
    inf_best, spent = 0.0, 0.0
    while spent < seconds or inf_best == 0.0:
        t0 = time.perf_counter()
        predict_proba([model], inf_imgs, 0.1, 0.3, rt, batch_size=1024)
        dt = time.perf_counter() - t0
        inf_best, spent = max(inf_best, n_inf / dt), spent + dt
    flops = 2 * macs_per_image(spec)
    return {"model": name, "precision": rt.precision, "train_batch": batch, "flops_fwd": flops,
            "flops_counted": counted_flops(name), "train_img_s": train_best, "infer_img_s": inf_best,
            "train_gflops": train_best * 3 * flops / 1e9, "infer_gflops": inf_best * flops / 1e9}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["I5", "I20", "I60"])
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--seconds", type=float, default=6.0, help="timed seconds per measurement")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    a = p.parse_args(argv)
    threads = a.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    peak = {"bf16": matmul_peak(torch.bfloat16), "fp32": matmul_peak(torch.float32)}
    rows = [bench_model(m, a.precision, a.seconds) for m in a.models]
    load = os.getloadavg()[0]
    print(f"\nthreads {threads}; load average {load:.1f} (other processes share the cores: figures are "
          f"best-of-repeats wall clock); measured matmul peak: bf16 {peak['bf16']:.0f} GFLOP/s, "
          f"fp32 {peak['fp32']:.0f} GFLOP/s (2048^3, best of 10)")
    hdr = (f"{'model':6} {'prec':5} {'GFLOP/img':>9} {'train img/s':>11} {'train GF/s':>10} {'%peak':>6} "
           f"{'infer img/s':>11} {'infer GF/s':>10} {'%peak':>6}  target (train/infer)")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        pk = peak[r["precision"]]
        tgt = TARGETS.get(r["model"])
        ok = ""
        if tgt and r["precision"] == "bf16":
            ok = (f"{tgt['train']:.0f} {'ok' if r['train_img_s'] >= tgt['train'] else 'MISSED'} / "
                  f"{tgt['infer']:.0f} {'ok' if r['infer_img_s'] >= tgt['infer'] else 'MISSED'}")
        print(f"{r['model']:6} {r['precision']:5} {r['flops_fwd'] / 1e9:9.3f} {r['train_img_s']:11.1f} "
              f"{r['train_gflops']:10.1f} {100 * r['train_gflops'] / pk:5.1f}% {r['infer_img_s']:11.1f} "
              f"{r['infer_gflops']:10.1f} {100 * r['infer_gflops'] / pk:5.1f}%  {ok}")
        r["peak_gflops"] = pk
    print("FLOPs: forward, conv+linear (analytic; torch flop_counter agrees: "
          + ", ".join(f"{r['model']} {r['flops_counted'] == r['flops_fwd']}" for r in rows)
          + "); training counted as 3x forward.")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"peak": peak, "threads": threads, "rows": rows}, fh, indent=2)
    return rows


if __name__ == "__main__":
    main()
