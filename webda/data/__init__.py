"""Data for webda: folder layout, decoding (PyAV, Pillow), chunk sampling, transforms, datasets,
shot keyframes, web/target overlap removal and the generated webly-supervised dataset.

Typical use::

    from webda.data import prepare, ClipDataset, ImageDataset, TrainTransform, EvalTransform

    data = prepare("ROOT")                       # discover, cache keyframes, drop overlap
    images = ImageDataset(data.web_images, TrainTransform(56))
    frames = ImageDataset(data.web_frames(), TrainTransform(56))
    target = ImageDataset(data.target_frames(), TrainTransform(56))
    clips = ClipDataset(data.web_videos, TrainTransform(56, flip=False), shots=data.keyframes)
    test = ClipDataset(data.eval_videos(), EvalTransform(56), train=False)
"""

import importlib

# Public names -> the module defining them; imported on first use, so that e.g.
# ``webda make-dataset`` does not pay for torch and webda_kernels.
_EXPORTS = {
    "ChunkSpec": "clips",
    "ClipDataset": "datasets", "ImageDataset": "datasets",
    "load_image": "images",
    "UNLABELED": "layout", "DatasetLayout": "layout", "Item": "layout", "VideoItem": "layout", "discover": "layout",
    "default_embedding": "overlap", "default_transform": "overlap", "embed_images": "overlap",
    "remove_overlap": "overlap",
    "PreparedData": "prepare", "prepare": "prepare",
    "Keyframe": "shots", "KeyframeIndex": "shots", "Shot": "shots", "detect_shots": "shots",
    "extract_keyframes": "shots",
    "CorruptFileError": "skips", "CorruptFileWarning": "skips", "SkipLog": "skips",
    "DATASET_PRESETS": "synthetic", "DatasetPreset": "synthetic", "generate": "synthetic",
    "EvalTransform": "transforms", "TrainTransform": "transforms",
    "VideoInfo": "video", "probe_video": "video", "read_frames": "video", "write_mp4": "video",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'webda.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"webda.data.{_EXPORTS[name]}"), name)
