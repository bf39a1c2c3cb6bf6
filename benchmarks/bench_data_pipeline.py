"""``webda prepare-data`` and the training loader at real resolution, against what training consumes.

    python benchmarks/bench_data_pipeline.py --out benchmarks/results/<device>

Writes ``data_pipeline.json`` and ``data_pipeline.md`` to ``--out``. Measures, on generated
files of real size:

1. Preparation: ``prepare()`` (checking files, shots and keyframes, embeddings, overlap
   removal) on a dataset of 320 x 240 MPEG-4 Part 2 ``.avi`` clips like UCF-101's (about 186
   frames, ~500 kbit/s, textured panning shots with cuts, sensor noise), with a fresh cache:
   frames/s with 1 worker on 1 core and ``N`` workers on ``N`` cores (the process is pinned to
   that many cores, so FFmpeg threads do not borrow the others), best of alternating rounds.
   Then the speed-up of a rerun after adding 10 % new clips (on the cache of the full run) over
   a fresh run, at ``N`` workers, and the time of a rerun with nothing new.
   From the 1-core rate and the measured scaling it projects the time of a UCF-101-size set
   (13,320 clips, 2.5 M frames) on a 16-core machine.
2. The loader, one worker (one process, one core): images/s of ``ImageDataset`` with the
   training transform at the small preset's size (48) and the paper's (224), for JPEGs of
   64 x 64 (the generated dataset's), 640 x 480 and 4000 x 3000 (decoded in full, in draft
   mode, and from the 512 px copy ``prepare`` caches), and clips/s of ``ClipDataset``
   (12-frame chunks of 24) on the 320 x 240 clips and on a 1500-frame H.264 web video
   (seeking to the keyframe before the chunk, and decoding from the start as before).
3. The training step's consumption (``benchmarks/bench_train_step.py``'s step: the small preset
   on CPU, the paper's on CUDA): images/s and clips/s one step eats, hence the loader workers
   it needs (consumption / per-worker rate).

On a shared machine the ratios are noisy; the multi-core scaling above all.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Optional

import av
import numpy as np
from PIL import Image

UCF101_CLIPS, UCF101_FRAMES = 13_320, 2_500_000
PROJECTED_CORES = 16


def textured(rng, height: int, width: int) -> np.ndarray:
    """A smooth random picture with some detail (what a camera sees, roughly)."""
    small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))


def ucf_like_clip(path: Path, num_frames: int, rng, width: int = 320, height: int = 240, fps: int = 25) -> None:
    """A 320 x 240 MPEG-4 Part 2 AVI: panning shots of 50-150 frames over textures, sensor noise."""
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 500_000
        cut = 0
        for i in range(num_frames):
            if i == cut:
                texture, (dx, dy) = textured(rng, 2 * height, 2 * width), rng.integers(-3, 4, 2)
                start, cut = i, i + int(rng.integers(50, 151))
            k = i - start
            y0, x0 = (height // 2 + dy * k) % height, (width // 2 + dx * k) % width
            picture = texture[y0:y0 + height, x0:x0 + width].astype(np.int16) + rng.integers(-10, 11, (height, width, 1))
            frame = av.VideoFrame.from_ndarray(np.clip(picture, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def photo(path: Path, width: int, height: int, rng) -> None:
    """A photo-like JPEG (quality 90) of ``width`` x ``height``."""
    picture = textured(rng, height, width).astype(np.int16) + rng.integers(-8, 9, (height, width, 1))
    noisy = np.clip(picture, 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(path, quality=90)


def make_dataset(root: Path, clips: int, seed: int = 0) -> int:
    """Two classes; 40 % of the clips web videos, 40 % unlabeled target/train, 20 % target/test.
    Returns the number of frames written."""
    rng = np.random.default_rng(seed)
    frames = 0
    for i in range(clips):
        part = i % 5
        folder = ("web_videos/c{}" if part < 2 else "target/train" if part < 4 else "target/test/c{}").format(i % 2)
        (root / folder).mkdir(parents=True, exist_ok=True)
        length = int(rng.integers(120, 253))  # UCF-101: 186 frames on average
        ucf_like_clip(root / folder / f"clip_{seed}_{i:04d}.avi", length, rng)
        frames += length
    for c in range(2):
        (root / f"web_images/c{c}").mkdir(parents=True, exist_ok=True)
        for k in range(4):
            photo(root / f"web_images/c{c}/photo_{seed}_{k}.jpg", 640, 480, rng)
    return frames


@contextmanager
def on_cores(n: int):
    """Run the block (and the processes it starts) on the first ``n`` cores allowed, with torch's
    threads matched to them: more OpenMP threads than cores make the in-process (one worker)
    embedding wait on its own threads and would count against one worker."""
    import torch

    allowed, threads = sorted(os.sched_getaffinity(0)), torch.get_num_threads()
    os.sched_setaffinity(0, allowed[:n])
    torch.set_num_threads(n)
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)
        torch.set_num_threads(threads)


def time_prepare(root: Path, workers: int, cache: Path, start_from: Optional[Path] = None):
    """(seconds, PreparedData) of ``prepare`` on ``workers`` cores, the cache a copy of
    ``start_from`` (None: empty; ``cache`` itself: as it is)."""
    from webda.data.prepare import prepare

    if start_from != cache:
        shutil.rmtree(cache, ignore_errors=True)
        if start_from is not None:
            shutil.copytree(start_from, cache)
    with on_cores(workers):
        start = time.perf_counter()
        data = prepare(root, cache, workers=workers, show_progress=False)
        return time.perf_counter() - start, data


def bench_prepare(work: Path, clips: int, workers: int, rounds: int) -> dict:
    """Every timing is the best of ``rounds`` alternating rounds: the one least slowed by other jobs."""
    root = work / "prep"
    frames = make_dataset(root, clips)
    times = {1: [], workers: []}
    for _ in range(rounds):
        for w in times:
            times[w].append(time_prepare(root, w, work / "cache")[0])
    seconds = {w: min(t) for w, t in times.items()}
    shutil.copytree(work / "cache", work / "before")  # the cache of a full run, before 10 % new clips

    new_clips = max(1, clips // 10)
    new_frames = make_dataset(root, new_clips, seed=1)  # (and 8 more photos)
    fresh, rerun = [], []
    for _ in range(rounds):
        fresh.append(time_prepare(root, workers, work / "cache")[0])
        elapsed, data = time_prepare(root, workers, work / "cache", start_from=work / "before")
        rerun.append(elapsed)
    unchanged = min(time_prepare(root, workers, work / "cache", start_from=work / "cache")[0] for _ in range(rounds))
    per_worker = frames / seconds[1]
    scaling = seconds[1] / seconds[workers]
    efficiency = min(1.0, scaling / workers)  # above 1 only when the 1-core rounds were slowed more
    return {
        "clips": clips, "frames": frames, "workers": workers, "rounds": rounds,
        "seconds": {str(w): seconds[w] for w in seconds}, "all_seconds": {str(w): t for w, t in times.items()},
        "frames_per_s": {str(w): frames / seconds[w] for w in seconds},
        "speedup": scaling, "efficiency": efficiency,
        "rerun": {"new_clips": new_clips, "new_frames": new_frames, "seconds": min(rerun), "all_seconds": rerun,
                  "fresh_seconds": min(fresh), "all_fresh_seconds": fresh, "speedup": min(fresh) / min(rerun),
                  "unchanged_seconds": unchanged, "keyframe_counts": data.keyframes.counts,
                  "files_reused": data.layout.files_reused, "cache_counts": data.cache_counts},
        "projection": {
            "clips": UCF101_CLIPS, "frames": UCF101_FRAMES, "cores": PROJECTED_CORES,
            "hours_one_core": UCF101_FRAMES / per_worker / 3600,
            "minutes_perfect_scaling": UCF101_FRAMES / (per_worker * PROJECTED_CORES) / 60,
            "minutes_measured_efficiency": UCF101_FRAMES / (per_worker * PROJECTED_CORES * efficiency) / 60,
        },
    }


def rate(fn, count: int, min_seconds: float = 1.5) -> float:
    """Items/s of ``fn`` (which handles ``count`` items) in its best round of those filling ``min_seconds``."""
    fn()  # warm up
    rounds, start = [], time.perf_counter()
    while time.perf_counter() - start < min_seconds or len(rounds) < 3:
        t = time.perf_counter()
        fn()
        rounds.append(time.perf_counter() - t)
    return count / min(rounds)


class _FullDecode:
    """A transform without ``source_side``: the dataset decodes images in full."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image):
        return self.transform(image)


def web_video(path: Path, num_frames: int, rng, fps: int = 25) -> None:
    """A long 320 x 240 H.264 MP4 with a keyframe every 250 frames (x264's default), like a web video."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        texture = textured(rng, 480, 640)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(texture[i % 240:i % 240 + 240, :320]),
                                               format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def bench_loader(work: Path) -> dict:
    """Items/s of one worker (this process, one core, one torch thread)."""
    import torch

    from webda.data.clips import ChunkSpec
    from webda.data.datasets import ClipDataset, ImageDataset
    from webda.data.image_copies import copy_task
    from webda.data.layout import Item, VideoItem, discover
    from webda.data.prepare import DEFAULT_IMAGE_SIDE
    from webda.data.transforms import EvalTransform, TrainTransform
    from webda.data.video import probe_video, read_frames

    rng = np.random.default_rng(2)
    folder = work / "images"
    folder.mkdir()
    kinds = {}
    for name, (w, h, n) in {"64x64": (64, 64, 64), "640x480": (640, 480, 24), "4000x3000": (4000, 3000, 4)}.items():
        kinds[name] = [Item(folder / f"{name}_{k}.jpg", 0) for k in range(n)]
        for item in kinds[name]:
            photo(item.path, w, h, rng)
    copies = {item.path: folder / f"copy_{item.path.name}" for item in kinds["4000x3000"]}
    for path, copy in copies.items():  # what prepare() makes and the training ImageDataset reads
        copy_task((path, copy.name, DEFAULT_IMAGE_SIDE, folder))
    ucf = discover(work / "prep", workers=1).target_videos("train")[:8]
    web_video(work / "web.mp4", 1500, rng)
    web = [VideoItem(work / "web.mp4", 0, probe_video(work / "web.mp4"))]
    out = {"images_per_s": {}, "clips_per_s": {}}
    torch.set_num_threads(1)
    with on_cores(1):
        for size in (48, 224):
            transform = TrainTransform(size)
            datasets = {
                "64x64 JPEG (the generated dataset's)": ImageDataset(kinds["64x64"], transform),
                "640x480 JPEG": ImageDataset(kinds["640x480"], transform),
                "4000x3000 JPEG, full decode": ImageDataset(kinds["4000x3000"], _FullDecode(transform)),
                "4000x3000 JPEG, draft decode": ImageDataset(kinds["4000x3000"], transform),
                "4000x3000 JPEG, its cached 512 px copy": ImageDataset(kinds["4000x3000"], transform, sources=copies),
            }
            for name, dataset in datasets.items():
                out["images_per_s"][f"{name} @ {size}"] = rate(lambda: [dataset[i] for i in range(len(dataset))],
                                                              len(dataset))
            chunk, side = ChunkSpec(24, 2), EvalTransform(size).resize
            for name, videos in (("320x240 MPEG-4 .avi of 120-252 frames", ucf), ("320x240 H.264 .mp4 of 1500 frames", web)):
                clips = ClipDataset(videos * (8 // len(videos)), TrainTransform(size, flip=False), chunk, train=True,
                                    short_side=side)
                out["clips_per_s"][f"{name} @ {size}"] = rate(lambda: [clips[i] for i in range(len(clips))], len(clips))
            starts = np.random.default_rng(0).integers(0, 1500 - 24, 8)
            out["clips_per_s"][f"320x240 H.264 .mp4 of 1500 frames, decoded from the start @ {size}"] = rate(
                lambda: [TrainTransform(size, flip=False)(read_frames(web[0].path, chunk.indices(int(t), 1500), side,
                                                                      threads=1)) for t in starts], len(starts))
    return out


def bench_step() -> dict:
    """Best step time of bench_train_step.py's setup (of 6 after 2 warm-up steps), and what one step consumes."""
    import torch

    spec = importlib.util.spec_from_file_location("bench_train_step", Path(__file__).with_name("bench_train_step.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = {"device": str(module.DEVICE), "preset": module.PRESET}
    for stage in ("image", "video"):
        cfg, step = module._setup(stage)
        items = cfg.batch_image + cfg.batch_frame + cfg.batch_target if stage == "image" else cfg.batch_video + cfg.batch_target
        sync = torch.cuda.synchronize if module.DEVICE.type == "cuda" else (lambda: None)
        times = []
        for i in range(8):
            sync()
            t = time.perf_counter()
            step()
            sync()
            if i >= 2:
                times.append(time.perf_counter() - t)
        seconds = min(times)
        out[stage] = {"size": cfg.size, "items_per_step": items, "step_s": seconds, "items_per_s": items / seconds}
    return out


def device_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.machine()
    return f"{model} ({len(os.sched_getaffinity(0))} cores)"


def markdown(result: dict) -> str:
    prep, loader, step = result["prepare"], result["loader"], result["step"]
    w = prep["workers"]
    proj = prep["projection"]
    lines = [
        f"# Data pipeline: {result['device']}",
        "",
        f"Commit `{result['commit'][:10]}`; `python benchmarks/bench_data_pipeline.py --out ...`. "
        "Shared machine: every number is the best of several rounds; ratios are noisy, the multi-core "
        "scaling above all.",
        "",
        f"## prepare-data on {prep['clips']} UCF-101-like clips (320x240 MPEG-4 .avi, {prep['frames']} frames)",
        "",
        "| workers (cores) | best s | frames/s |",
        "|---|---:|---:|",
        *[f"| {k} | {prep['seconds'][k]:.2f} | {prep['frames_per_s'][k]:.0f} |" for k in prep["seconds"]],
        "",
        f"{w} workers vs 1: {prep['speedup']:.2f}x (efficiency {prep['efficiency']:.2f}, capped at 1); every time "
        f"is the best of {prep['rounds']} alternating rounds (the least slowed by other jobs).",
        f"Rerun after adding {prep['rerun']['new_clips']} clips (10 %): {prep['rerun']['seconds']:.2f} s vs "
        f"{prep['rerun']['fresh_seconds']:.2f} s fresh at {w} workers: {prep['rerun']['speedup']:.1f}x "
        f"(keyframes {prep['rerun']['keyframe_counts']}); a rerun with nothing new: "
        f"{prep['rerun']['unchanged_seconds']:.2f} s.",
        "",
        f"Projection for UCF-101 ({proj['clips']} clips, {proj['frames'] / 1e6:.1f} M frames): "
        f"{proj['hours_one_core']:.2f} h on one core; on {proj['cores']} cores "
        f"{proj['minutes_perfect_scaling']:.0f} min with perfect scaling, "
        f"{proj['minutes_measured_efficiency']:.0f} min at the efficiency measured here.",
        "",
        f"## Loader, one worker (one core), against the training step ({step['preset']} preset on {step['device']})",
        "",
        "| stage | crop | items/step | step | consumes |",
        "|---|---:|---:|---:|---:|",
        *[f"| {stage} | {step[stage]['size']} | {step[stage]['items_per_step']} | {step[stage]['step_s'] * 1e3:.0f} ms "
          f"| {step[stage]['items_per_s']:.0f} {unit}/s |" for stage, unit in (("image", "images"), ("video", "clips"))],
        "",
        f"| input @ crop | per worker | workers to feed the {step['preset']} step |",
        "|---|---:|---:|",
    ]
    for stage, unit, key in (("image", "images", "images_per_s"), ("video", "clips", "clips_per_s")):
        for name, per_worker in loader[key].items():
            feeds = step[stage]["items_per_s"] / per_worker if name.endswith(f"@ {step[stage]['size']}") else None
            lines.append(f"| {unit}: {name} | {per_worker:.1f} {unit}/s | {'-' if feeds is None else f'{feeds:.1f}'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for data_pipeline.json and data_pipeline.md")
    parser.add_argument("--clips", type=int, default=40, help="clips of the preparation set (default: 40)")
    parser.add_argument("--workers", type=int, default=min(2, len(os.sched_getaffinity(0))),
                        help="workers (and cores) to compare with 1 (default: 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per timing (default: 3)")
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or "unknown"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result = {"device": device_name(), "commit": commit, "prepare": bench_prepare(work, args.clips, args.workers,
                                                                                         args.rounds)}
        result["loader"] = bench_loader(work)
    result["step"] = bench_step()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_pipeline.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "data_pipeline.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
