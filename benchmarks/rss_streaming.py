"""Peak resident memory of a training run on a folder of images: 2,000 vs 20,000 files.

``folder:PATH`` data is read lazily (``recipes.sources.FileImages``): files are decoded as
the pipeline asks for them and the preprocessing statistics are streamed, so the run's peak
RSS should not grow with the number of images. This writes two folders of PNGs (Fashion-MNIST
from ``/usr/share/datasets/fashion-mnist`` if present, else scikit-learn's digits, each image
upsampled to ``--size`` x ``--size`` with ``tf.image.resize`` and saved as RGB, so that the
20,000 images would take 20000 * size^2 * 3 bytes in memory: 246 MB at 64 px, 4x that as
float32), trains one epoch of a small MLP on each with ``python -m recipes.train`` in a child
process, and reads each child's peak RSS (``ru_maxrss`` of ``os.wait4``). A control run
trains on the same 20,000 images given as arrays (``npz:``), which are held in memory, to
show what the measurement sees when data is materialised. Target: the 20,000-image folder
run within 25 % of the 2,000-image one.

Command: ``python benchmarks/rss_streaming.py [--size=64] [--out=FILE.json]``
(``--quick``: 200 and 2,000 images at 16 px, no control run). About 3 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
FASHION_LABELS = "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz"
OVERRIDES = ("--config.train.epochs=1", "--config.train.batch_size=128",
             "--config.model.hidden=(128,)", "--config.monitor.tensorboard=False",
             "--config.train.verbose=0")


def source_images(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` 8-bit gray images (N, H, W, 1), their labels and where they come from."""
    from recipes import data

    if os.path.exists(FASHION):
        x = data.read_idx(FASHION, data.IDX_IMAGES)[:, :, :, None]
        y = data.read_idx(FASHION_LABELS, data.IDX_LABELS)
        where = "Fashion-MNIST (/usr/share/datasets/fashion-mnist), train images"
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = (digits.images * 255 / 16).round().astype(np.uint8)[..., None]
        y = digits.target
        where = "scikit-learn digits (Fashion-MNIST not installed), repeated"
    reps = -(-n // len(x))
    return np.tile(x, (reps, 1, 1, 1))[:n], np.tile(y, reps)[:n], where


def write_folder(root: str, x: np.ndarray, y: np.ndarray, size: int) -> None:
    """Writes ``root/CLASS/NNNNN.png``: each image resized to size x size, as RGB."""
    import tensorflow as tf

    for c in np.unique(y):
        os.makedirs(os.path.join(root, f"class_{c}"), exist_ok=True)
    for start in range(0, len(x), 1000):
        batch = tf.image.resize(x[start:start + 1000], (size, size), method="bilinear")
        batch = tf.cast(tf.clip_by_value(tf.round(batch), 0, 255), tf.uint8)
        batch = tf.image.grayscale_to_rgb(batch)
        for i, image in enumerate(batch):
            path = os.path.join(root, f"class_{y[start + i]}", f"{start + i:05d}.png")
            with open(path, "wb") as f:
                f.write(tf.io.encode_png(image).numpy())


def peak_rss(cmd: list[str]) -> tuple[float, float]:
    """Runs ``cmd`` in a child process; returns (its peak RSS in MiB, wall seconds)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not all children's
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {' '.join(cmd)}\n{err[-3000:]}")
    return usage.ru_maxrss / 1024, time.time() - start  # Linux: ru_maxrss in KiB


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (else platform.processor())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def train_cmd(name: str, workdir: str) -> list[str]:
    return [sys.executable, "-m", "recipes.train", "--config=digits_mlp", f"--workdir={workdir}",
            f"--config.dataset.name={name}", *OVERRIDES]


def main() -> None:
    """Writes the folders, runs the trainings, writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image height and width (px)")
    parser.add_argument("--counts", default="2000,20000", help="small,large image counts")
    parser.add_argument("--quick", action="store_true", help="200 and 2,000 images at 16 px")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "results",
                                                      "rss_streaming.json"))
    args = parser.parse_args()
    small, large = (200, 2000) if args.quick else map(int, args.counts.split(","))
    size = 16 if args.quick else args.size

    from recipes import io

    x, y, where = source_images(large)
    out: dict = {
        "command": " ".join(["python", "benchmarks/rss_streaming.py", *sys.argv[1:]]),
        "date": datetime.date.today().isoformat(), "cpu": cpu_model(),
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "images": f"{where}, resized to {size}x{size} RGB PNGs",
        "train_command": " ".join(["python", *train_cmd("folder:DIR", "WORKDIR")[1:]]),
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for n in (small, large):
            folder = os.path.join(tmp, f"images_{n}")
            write_folder(folder, x[:n], y[:n], size)
            mb, seconds = peak_rss(train_cmd(f"folder:{folder}", os.path.join(tmp, f"run{n}")))
            out["runs"][f"folder_{n}"] = {"images": n, "peak_rss_mib": round(mb, 1),
                                          "seconds": round(seconds, 1),
                                          "in_memory_mib": round(n * size * size * 3 / 2**20, 1)}
            print(f"folder:{n} images: peak RSS {mb:.0f} MiB ({seconds:.0f} s)", flush=True)
        if not args.quick:  # control: the same large set as in-memory arrays
            import tensorflow as tf

            arrays = tf.image.grayscale_to_rgb(tf.cast(tf.clip_by_value(tf.round(
                tf.image.resize(x, (size, size))), 0, 255), tf.uint8)).numpy()
            path = os.path.join(tmp, "arrays.npz")
            np.savez(path, x_train=arrays[:-large // 10], y_train=y[:-large // 10],
                     x_test=arrays[-large // 10:], y_test=y[-large // 10:])
            del arrays
            mb, seconds = peak_rss(train_cmd(f"npz:{path}", os.path.join(tmp, "run_npz")))
            out["runs"][f"npz_{large}"] = {"images": large, "peak_rss_mib": round(mb, 1),
                                           "seconds": round(seconds, 1)}
            print(f"npz:{large} arrays (control): peak RSS {mb:.0f} MiB", flush=True)
    a, b = out["runs"][f"folder_{small}"], out["runs"][f"folder_{large}"]
    out["ratio_large_to_small"] = round(b["peak_rss_mib"] / a["peak_rss_mib"], 3)
    out["target"] = "ratio <= 1.25"
    out["met"] = out["ratio_large_to_small"] <= 1.25
    io.write_json(args.out, out)
    print(f"ratio {out['ratio_large_to_small']} (target <= 1.25): "
          f"{'met' if out['met'] else 'NOT met'}; wrote {args.out}")


if __name__ == "__main__":
    main()
