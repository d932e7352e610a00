"""The real train and predict stages against the bare kernels, in one run (``make bench-stage``).

On a fixed slice of real chart images (the embedded synthetic market's I20/month set, built by the
panel and image stages into a temporary folder), times ``train_run`` (one member, one epoch: the
training loop's images/s from the member's log, and the whole stage's wall time) and
``predict_run`` (every test image, the whole stage's wall time), then the kernels of
``make bench-train`` (``run_epoch`` and ``predict_proba`` on one in-memory batch, best of repeats)
with the same threads, and prints each stage rate beside its kernel rate and their ratio. The
cores already busy when it starts (from /proc/stat) and the load average at its end are printed: a
ratio measured beside other jobs is shown as such. With ``--members 2`` the same member count also trains in parallel processes
(``train.parallel_members``) and one after another, to show what the processes buy.

    python -m benchmarks.bench_stage [--model I20] [--images 8000] [--members 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from pipeline.config import Config, load_config
from pipeline.images.build import make_training_inputs
from pipeline.io import read_json
from pipeline.procs import usable_cores

TARGET_RATIO = 0.85
_SETS = {"I5": ("I5/week", 5), "I20": ("I20/month", 20), "I60": ("I60/quarter", 60)}


def busy_cores(seconds: float = 2.0) -> float:
    """Cores kept busy by all processes over the next ``seconds`` (from /proc/stat; NaN elsewhere).
    Unlike the load average, which trails by a minute, this is the state the run starts in."""
    def sample() -> tuple[int, int]:
        f = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = f[3] + f[4]  # idle + iowait
        return sum(f[:8]) - idle, sum(f[:8])

    try:
        b0, t0 = sample()
        time.sleep(seconds)
        b1, t1 = sample()
    except OSError:
        return float("nan")
    return usable_cores() * (b1 - b0) / max(1, t1 - t0)


def stage_config(root: Path, model: str, images: int, members: int, parallel: int | None,
                 threads: int | None, tag: str, stocks: int = 300) -> Config:
    """The benchmark's experiment: the synthetic market (``stocks`` stocks, 1993-2000), one image
    set, ``images`` in-sample images (70% trained, one epoch), test years 1999-2000."""
    image_set, horizon = _SETS[model]
    over = [f"data_dir={root}", "name=bench_stage", f"synthetic.n_stocks={stocks}",
            "synthetic.end='2000-12-31'",
            f"images.sets=[{image_set}]", "images.end_year=2000", f"train.image_set={image_set}",
            f"train.model={model}", f"train.horizon={horizon}", "train.split=custom",
            "train.insample_years=[1993,1998]", "train.test_years=[1999,2000]", "train.epochs=1",
            f"train.ensemble={members}", f"train.max_train_images={images}", f"train.run_tag={tag}"]
    if parallel is not None:
        over.append(f"train.parallel_members={parallel}")
    if threads is not None:
        over.append(f"train.threads={threads}")
    return load_config(None, over)


def time_stages(cfg: Config) -> dict:
    """Train then predict with the real stage functions; images/s of each."""
    from pipeline import paths
    from pipeline.predict.core import predict_run
    from pipeline.train.loop import train_run

    t0 = time.perf_counter()
    run = train_run(cfg)
    train_s = time.perf_counter() - t0
    summary = read_json(run / "summary.json")
    n_train = summary["n_train"] * cfg.train.ensemble
    loop_rate = sum(_log_rate(run / f"member_{i}" / "log.csv") for i in range(cfg.train.ensemble))
    t0 = time.perf_counter()
    predict_run(cfg)
    predict_s = time.perf_counter() - t0
    n_test = read_json(paths.run_dir(cfg) / "_PREDICT_DONE.json")["rows"]
    return {"n_train": n_train, "train_s": train_s, "train_loop_img_s": loop_rate,
            "train_stage_img_s": n_train / train_s, "n_test": n_test, "predict_s": predict_s,
            "predict_stage_img_s": n_test * cfg.train.ensemble / predict_s,
            "processes": summary.get("processes", 1), "threads": summary.get("threads")}


def _log_rate(log_csv: Path) -> float:
    """The training loop's images/s of a member's (single) epoch, from its log.csv."""
    import pandas as pd

    return float(pd.read_csv(log_csv)["images_per_s"].iloc[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="I20", choices=sorted(_SETS))
    p.add_argument("--images", type=int, default=8000, help="in-sample images (70%% are trained)")
    p.add_argument("--members", type=int, default=2, help="also train this many members in "
                   "parallel processes and one after another (1: skip that comparison)")
    p.add_argument("--stocks", type=int, default=300, help="stocks of the synthetic market "
                   "(sets the test images: about 15 per stock)")
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per kernel figure")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = p.parse_args(argv)
    from benchmarks.bench_train import bench_model
    from pipeline.cli import setup_logging

    setup_logging()
    cores = usable_cores()
    busy_before = busy_cores()
    with tempfile.TemporaryDirectory(prefix="bench_stage_") as tmp:
        root = Path(tmp)
        base = stage_config(root, a.model, a.images, 1, 1, None, "one", a.stocks)
        t0 = time.perf_counter()
        make_training_inputs(base)  # the panel and image stages' real code
        build_s = time.perf_counter() - t0
        one = time_stages(base)
        import torch

        torch.set_num_threads(cores)
        kernel = bench_model(a.model, base.train.precision, a.seconds)
        multi = {}
        if a.members > 1:
            for mode, par in (("parallel", None), ("serial", 1)):
                multi[mode] = time_stages(stage_config(root, a.model, a.images, a.members, par,
                                                       1 if par is None else None, mode, a.stocks))
    load = os.getloadavg()
    out = {"model": a.model, "cores": cores, "busy_cores_before": busy_before, "load_average": load,
           "build_s": build_s, "one_member": one, "kernel": kernel, "members": multi}
    ratio_train = one["train_loop_img_s"] / kernel["train_img_s"]
    ratio_pred = one["predict_stage_img_s"] / kernel["infer_img_s"]
    print(f"\n{a.model}, {cores} cores, {kernel['precision']}; {busy_before:.2f} cores busy before the "
          f"run (other work: above ~0.1 the figures are contended); load average over the run's last "
          f"1/5 minutes {load[0]:.1f}/{load[1]:.1f} (this run alone keeps it near {cores})")
    print(f"inputs: panel + images stages in {build_s:.1f} s; {one['n_train']:,} training and "
          f"{one['n_test']:,} test images")
    hdr = f"{'phase':34} {'stage img/s':>11} {'kernel img/s':>12} {'ratio':>6}  target {TARGET_RATIO}"
    print(hdr + "\n" + "-" * len(hdr))
    for name, st, kr in (("train loop (train_run, log.csv)", one["train_loop_img_s"], kernel["train_img_s"]),
                         ("predict (predict_run, wall)", one["predict_stage_img_s"], kernel["infer_img_s"])):
        r = st / kr
        print(f"{name:34} {st:11.1f} {kr:12.1f} {r:6.2f}  {'ok' if r >= TARGET_RATIO else 'MISSED'}")
    print(f"{'train stage (train_run, wall)':34} {one['train_stage_img_s']:11.1f} {'':>12} "
          f"{one['train_stage_img_s'] / kernel['train_img_s']:6.2f}  (includes validation, set-up, checkpoints)")
    out["ratio_train"], out["ratio_predict"] = ratio_train, ratio_pred
    if multi:
        print(f"\n{a.members} members, training images/s of the whole stage (wall):")
        for mode, r in multi.items():
            print(f"  {mode:9} {r['processes']} process(es) x {r['threads']} thread(s): train "
                  f"{r['train_stage_img_s']:7.1f}, predict {r['predict_stage_img_s']:7.1f} img/s")
        s, q = multi["serial"], multi["parallel"]
        print(f"  parallel / serial: train {q['train_stage_img_s'] / s['train_stage_img_s']:.2f}x, "
              f"predict {q['predict_stage_img_s'] / s['predict_stage_img_s']:.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    main()
