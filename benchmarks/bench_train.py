"""Training throughput, data-wait share and resume-after-SIGKILL on the demo cohort.

    python benchmarks/bench_train.py            # the demo cohort: 300 patients, 32^3 images
    python benchmarks/bench_train.py --quick    # 60 patients, 16^3 images, 2 epochs

Figures (printed beside the reference or the target):

* throughput of the demo model (default ModelConfig and TrainConfig) in training samples/s,
  beside a plain PyTorch loop over the same batches collated in advance (the ceiling: no data
  loading at all), for two data paths: every record preprocessed in memory, and images read by
  DataLoader workers through the on-disk image cache (``preprocess.cache_dir``), cache warm;
* share of step time spent waiting for data, for both paths (target: under 10%);
* resume after SIGKILL: a training process is killed mid-epoch, resumed from its last
  checkpoint, and its final weights and validation metrics compared with an uninterrupted
  run of the same seed (target: identical on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_KILL = """
import os, pickle, signal, sys
import torch
from medmm.models.multimodal import MultimodalModel
from medmm.train.trainer import TrainConfig, seed_everything, train
with open(sys.argv[1], "rb") as fh:
    d = pickle.load(fh)
seed_everything(d["seed"])
model = MultimodalModel(d["model_config"], d["shapes"], None)

class Kill:
    def on_step_end(self, epoch, batch, loss):
        if epoch == d["kill_epoch"] and batch == d["kill_batch"]:
            os.kill(os.getpid(), signal.SIGKILL)

train(model, d["train"], d["val"], TrainConfig(**d["train_config"]), callbacks=[Kill()], progress=False)
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="60 patients, 16^3 images, 2 epochs (a smoke run)")
    ap.add_argument("--patients", type=int, default=None, help="cohort size (default 300, quick 60)")
    ap.add_argument("--image-size", type=int, default=None, help="image voxels per axis (default 32, quick 16)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs timed (default 5, quick 2)")
    ap.add_argument("--workers", type=int, default=2,
                    help="DataLoader workers reading images through the cache (default 2)")
    ap.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    n = args.patients or (60 if args.quick else 300)
    size = args.image_size or (16 if args.quick else 32)
    epochs = args.epochs or (2 if args.quick else 5)

    import torch

    from medmm.cohort import load_cohort
    from medmm.data import MultimodalDataset
    from medmm.models.multimodal import ModelConfig, MultimodalModel
    from medmm.preprocess import MultimodalPreprocessor
    from medmm.synth import TASKS, generate_cohort
    from medmm.train.trainer import TrainConfig, seed_everything, train, training_loss

    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    manifest = generate_cohort(tmp / "cohort", n_patients=n, seed=0, image_size=size, progress=False)
    cohort = load_cohort(manifest, progress=False)
    pre = MultimodalPreprocessor().fit(cohort.split("train"))
    ds = {s: MultimodalDataset(cohort.split(s), pre, TASKS) for s in ("train", "val")}
    mc = ModelConfig(tasks={t: "binary" for t in TASKS})
    base = TrainConfig()
    tc = TrainConfig(epochs=epochs, min_epochs=epochs, device="cpu")

    # ---- warm-up (first-call costs of the encoders and allocator are not part of any figure)
    seed_everything(0)
    train(MultimodalModel(mc, pre.output_shapes(), pre), ds["train"], None,
          TrainConfig(epochs=1, max_steps=2, device="cpu"), progress=False)

    # ---- medmm trainer, data preprocessed in memory
    seed_everything(0)
    model = MultimodalModel(mc, pre.output_shapes(), pre)
    res = train(model, ds["train"], None, tc, progress=False)
    ours = res.samples / res.step_s
    wait = res.data_wait_s / res.step_s

    # ---- medmm trainer, images read by DataLoader workers through the on-disk cache (warmed first)
    from medmm.preprocess.cache import VolumeCache
    from medmm.train.datasets import CachedImageDataset

    lazy = CachedImageDataset(cohort.split("train"), pre, TASKS, cache_dir=tmp / "image_cache", training=True)
    lazy.prefill()
    n_cached = len(VolumeCache(tmp / "image_cache"))
    seed_everything(0)
    model = MultimodalModel(mc, pre.output_shapes(), pre)
    res_c = train(model, lazy, None, TrainConfig(**{**tc.to_dict(), "num_workers": args.workers}), progress=False)
    ours_c = res_c.samples / res_c.step_s
    wait_c = res_c.data_wait_s / res_c.step_s

    # ---- reference: a plain loop over batches collated in advance (no loader, no trainer)
    seed_everything(0)
    ref_model = MultimodalModel(mc, pre.output_shapes(), pre)
    opt = torch.optim.AdamW(ref_model.parameters(), lr=base.lr, weight_decay=base.weight_decay)
    items = ds["train"].items
    batches = [ds["train"].collate(items[i:i + base.batch_size]) for i in range(0, len(items), base.batch_size)]
    batches = [b for b in batches if len(b) == base.batch_size] or batches
    ref_model.train()
    t0 = time.perf_counter()
    seen = 0
    for _ in range(epochs):
        for b in batches:
            loss = training_loss(ref_model, b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ref_model.parameters(), base.grad_clip)
            opt.step()
            seen += len(b)
    ref = seen / (time.perf_counter() - t0)

    # ---- resume after SIGKILL
    rc = TrainConfig(epochs=3, min_epochs=3, device="cpu", batch_size=8, checkpoint_dir=str(tmp / "ckpt"))
    seed_everything(0)
    full = MultimodalModel(mc, pre.output_shapes(), None)
    full_res = train(full, ds["train"], ds["val"], TrainConfig(**{**rc.to_dict(), "checkpoint_dir": str(tmp / "ref")}),
                     progress=False)
    blob = tmp / "job.pkl"
    with open(blob, "wb") as fh:
        pickle.dump({"seed": 0, "model_config": mc, "shapes": pre.output_shapes(), "train": ds["train"],
                     "val": ds["val"], "train_config": rc.to_dict(), "kill_epoch": 1, "kill_batch": 2}, fh)
    proc = subprocess.run([sys.executable, "-c", _KILL, str(blob)], capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1"})
    killed = proc.returncode == -signal.SIGKILL
    seed_everything(123)  # whatever the state before, the checkpoint decides
    resumed = MultimodalModel(mc, pre.output_shapes(), None)
    res2 = train(resumed, ds["train"], ds["val"], rc, resume=True, progress=False)
    same_w = all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
    same_m = res2.history == full_res.history
    identical = killed and same_w and same_m

    rows = [
        ("throughput, in memory (samples/s)", f"{ours:,.1f}", f"{ref:,.1f} (plain loop, batches collated in advance)"),
        (f"throughput, cache + {args.workers} workers (samples/s)", f"{ours_c:,.1f}", f"{ref:,.1f} (same)"),
        ("data wait share, in memory", f"{100 * wait:.2f}%", "< 10% (target)"),
        (f"data wait share, cache + {args.workers} workers", f"{100 * wait_c:.2f}% ({n_cached} cached volumes)",
         "< 10% (target)"),
        ("resume after SIGKILL (weights, metrics)",
         f"{'identical' if identical else 'DIFFERENT'} (killed at epoch 1 batch 2: {killed})",
         "identical (target)"),
    ]
    print(f"demo model, {n} patients ({len(ds['train'])} train), {size}^3 images, {epochs} epochs, batch "
          f"{tc.batch_size}, {torch.get_num_threads()} threads, CPU, load average {os.getloadavg()[0]:.1f}")
    w = max(len(r[0]) for r in rows)
    print(f"{'':<{w}}  {'medmm':<36}  reference")
    for a, b, c in rows:
        print(f"{a:<{w}}  {b:<36}  {c}")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "patients": n, "image_size": size, "epochs": epochs, "samples_per_s": ours, "reference_samples_per_s": ref,
            "data_wait_share": wait, "cached_workers": args.workers, "cached_samples_per_s": ours_c,
            "cached_data_wait_share": wait_c, "resume_identical": identical}, indent=2) + "\n")
    ok = wait < 0.10 and wait_c < 0.10 and identical
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
