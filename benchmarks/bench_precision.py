"""bf16 vs fp32 training on the same data: does bf16 reach the same validation loss?

``make bench-precision`` (``python -m benchmarks.bench_precision --config stooq_i20r20``) trains
``--members`` ensemble members in fp32 with exactly the seeds (hence the same 70/30 split and the
same initial weights) as members of the experiment's main run, which must already be trained (in
bf16, the CPU default where supported: ``make train``). It then prints, member by member, the best
validation loss and accuracy under both precisions, the seconds per epoch, and the spread of the
bf16 members' best validation losses across seeds (the run-to-run noise that a precision effect
must be compared with). The fp32 runs live in ``data/<name>/precision_fp32/`` and are resumable.
"""

from __future__ import annotations

import argparse
import statistics

import pandas as pd
import torch

from pipeline import paths
from pipeline.cli import parse_args
from pipeline.config import derive
from pipeline.io import read_json
from pipeline.train.loop import resolve_runtime, train_run


def member_rows(run_dir, precision: str, members: int) -> list[dict]:
    rows = []
    for i in range(members):
        d = run_dir / f"member_{i}"
        if not (d / "summary.json").exists():
            raise FileNotFoundError(f"{d} has not finished training (run `make train` first)")
        s = read_json(d / "summary.json")
        log = pd.read_csv(d / "log.csv")
        rows.append({"member": i, "precision": precision, "best_epoch": s["best_epoch"],
                     "epochs_run": len(log), "best_val_loss": s["best_val_loss"],
                     "best_val_acc": s["best_val_acc"], "s_per_epoch": float(log["seconds"].mean()),
                     "train_img_s": float(log["images_per_s"].mean())})
    return rows


def main() -> None:
    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--members", type=int, default=1, help="fp32 members to train (default 1)")

    cfg, args = parse_args(__doc__.splitlines()[0], extra=extra)
    main_run = paths.run_dir(cfg)
    # Members finished so far (the whole run need not be done: members train one after another).
    n_bf16 = 0
    while (main_run / f"member_{n_bf16}" / "summary.json").exists():
        n_bf16 += 1
    if n_bf16 == 0:
        raise SystemExit(f"no trained member in {main_run}: run `make train CONFIG=...` first")
    summary = main_run / "summary.json"
    precision = (read_json(summary)["precision"] if summary.exists()
                 else resolve_runtime(cfg.train, torch.device(cfg.train.device.replace("auto", "cpu"))).precision)
    if precision != "bf16":
        raise SystemExit(f"{main_run} was trained in {precision}, not bf16")
    if args.members > n_bf16:
        raise SystemExit(f"--members {args.members} exceeds the {n_bf16} finished members of {main_run}")

    bench_dir = cfg.experiment_dir / "precision_fp32"
    fp32 = derive(cfg, {"data_dir": str(bench_dir.parent), "name": bench_dir.name,
                        "inputs_dir": str(cfg.inputs_root),  # the main run's panel and images
                        "train.precision": "fp32", "train.ensemble": args.members})
    fp32_run = train_run(fp32)

    rows = member_rows(main_run, "bf16", n_bf16) + member_rows(fp32_run, "fp32", args.members)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    bf16_losses = [r["best_val_loss"] for r in rows if r["precision"] == "bf16"]
    spread = statistics.stdev(bf16_losses) if len(bf16_losses) > 1 else float("nan")
    print(f"\nbf16 best validation loss across {n_bf16} seeds: mean {statistics.mean(bf16_losses):.4f}, "
          f"sd {spread:.4f} (run-to-run noise)")
    for r in rows:
        if r["precision"] == "fp32":
            b = rows[r["member"]]
            print(f"member {r['member']}: fp32 - bf16 best validation loss = "
                  f"{r['best_val_loss'] - b['best_val_loss']:+.4f} "
                  f"({(r['best_val_loss'] - b['best_val_loss']) / spread:+.2f} sd of seed noise); "
                  f"epoch time fp32/bf16 = {r['s_per_epoch'] / b['s_per_epoch']:.2f}x")


if __name__ == "__main__":
    main()
