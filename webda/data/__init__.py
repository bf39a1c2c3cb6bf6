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

from webda.data.clips import ChunkSpec
from webda.data.datasets import ClipDataset, ImageDataset
from webda.data.images import load_image
from webda.data.layout import UNLABELED, DatasetLayout, Item, VideoItem, discover
from webda.data.overlap import default_embedding, default_transform, embed_images, remove_overlap
from webda.data.prepare import PreparedData, prepare
from webda.data.shots import Keyframe, KeyframeIndex, Shot, detect_shots, extract_keyframes
from webda.data.skips import CorruptFileError, CorruptFileWarning, SkipLog
from webda.data.synthetic import PRESETS, Preset, generate
from webda.data.transforms import EvalTransform, TrainTransform
from webda.data.video import VideoInfo, probe_video, read_frames, write_mp4

__all__ = [
    "ChunkSpec", "ClipDataset", "CorruptFileError", "CorruptFileWarning", "DatasetLayout", "EvalTransform",
    "ImageDataset", "Item", "Keyframe", "KeyframeIndex", "PRESETS", "Preset", "PreparedData", "Shot", "SkipLog",
    "TrainTransform", "UNLABELED", "VideoInfo", "VideoItem", "default_embedding", "default_transform",
    "detect_shots", "discover", "embed_images", "extract_keyframes", "generate", "load_image", "prepare",
    "probe_video", "read_frames", "remove_overlap", "write_mp4",
]
