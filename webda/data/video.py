"""Video files with PyAV: probing, decoding frames as uint8 (T, H, W, 3) RGB, writing H.264 MP4.

Any container FFmpeg demuxes is read; :data:`VIDEO_EXTENSIONS` are the extensions looked for
(MP4/M4V/MOV, AVI, MKV, WebM, FLV/F4V, 3GP, MPEG program and transport streams, WMV/ASF, OGV,
VOB), in any case. Decoding uses FFmpeg's frame and slice threads (``threads``; 0 = one per
core); frames are converted to RGB only when they are wanted.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Sequence

import av
from av.video.reformatter import VideoReformatter
import numpy as np

from webda.data.skips import CorruptFileError, reading

VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".flv", ".f4v", ".3gp", ".3g2", ".mpg", ".mpeg", ".ts", ".mts",
    ".m2ts", ".wmv", ".asf", ".ogv", ".vob",
)


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learns about a video without decoding it all."""

    num_frames: int
    fps: float
    width: int
    height: int


def probe_video(path) -> VideoInfo:
    """Open ``path``, count its video packets (demuxing only) and decode its first frame.

    Raises :class:`CorruptFileError` when the container, the stream or the first frame is
    unreadable, or the video has no frames.
    """
    with reading(path, "not a readable video"), av.open(str(path)) as container:
        if not container.streams.video:
            raise CorruptFileError(f"{path}: no video stream")
        stream = container.streams.video[0]
        num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
        if num_frames == 0:
            raise CorruptFileError(f"{path}: video has no frames")
        container.seek(0)
        first = next(container.decode(stream), None)
        if first is None:
            raise CorruptFileError(f"{path}: first frame cannot be decoded")
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        return VideoInfo(num_frames=num_frames, fps=fps, width=first.width, height=first.height)


def decode(path, threads: int = 0) -> Iterator[av.VideoFrame]:
    """Yield the decoded frames of ``path`` in order (FFmpeg frame and slice threads: ``threads``,
    0 = one per core). Raises :class:`CorruptFileError` when decoding fails."""
    with reading(path, "decoding failed"), av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        yield from container.decode(stream)


class FrameConverter:
    """Decoded frames -> uint8 (H, W, 3) arrays in ``pixel_format`` (``rgb24`` or ``bgr24``).

    ``short_side`` resizes (swscale, area filter) so the shorter side has that many pixels;
    None keeps the size. One converter per video: it keeps its swscale context.
    """

    def __init__(self, short_side: Optional[int] = None, pixel_format: str = "rgb24"):
        self.short_side, self.pixel_format = short_side, pixel_format
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        width, height = frame.width, frame.height
        if self.short_side is not None:
            scale = self.short_side / min(width, height)
            width, height = max(1, round(width * scale)), max(1, round(height * scale))
        out = self._reformatter.reformat(frame, format=self.pixel_format, width=width, height=height,
                                         interpolation="AREA")
        return out.to_ndarray()


def iter_frames(path, short_side: Optional[int] = None, threads: int = 0) -> Iterator[np.ndarray]:
    """Yield every frame of ``path`` in order as uint8 (H, W, 3) RGB (resized as :class:`FrameConverter`).

    Raises :class:`CorruptFileError` when decoding fails.
    """
    convert = FrameConverter(short_side)
    for frame in decode(path, threads):
        with reading(path, "frame conversion failed"):
            yield convert(frame)


def read_frames(path, indices: Optional[Sequence[int]] = None, short_side: Optional[int] = None,
                threads: int = 0) -> np.ndarray:
    """Decode the frames at ``indices`` (any order, repeats allowed; None = all) of ``path``.

    Returns uint8 (len(indices), H, W, 3). Decoding runs from the start and stops after the
    last index needed; only the wanted frames are converted. Raises :class:`CorruptFileError`
    if the video ends before an index.
    """
    if indices is None:
        frames = list(iter_frames(path, short_side, threads))
        if not frames:
            raise CorruptFileError(f"{path}: video has no frames")
        return np.stack(frames)
    wanted = set(int(i) for i in indices)
    if not wanted:
        raise ValueError(f"indices is empty for {path}")
    if min(wanted) < 0:
        raise ValueError(f"indices must be >= 0, got {min(wanted)} for {path}")
    last = max(wanted)
    convert, found = FrameConverter(short_side), {}
    for index, frame in enumerate(decode(path, threads)):
        if index in wanted:
            with reading(path, "frame conversion failed"):
                found[index] = convert(frame)
        if index == last:
            break
    if last not in found:
        raise CorruptFileError(f"{path}: video ended before frame {last}")
    return np.stack([found[int(i)] for i in indices])


def write_mp4(frames: np.ndarray, path, fps: int = 24, crf: int = 23) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames (H, W even) as an H.264 MP4 with libx264.

    Single-threaded plain-C x264 with fixed options and bit-exact muxing, so equal frames give
    equal bytes (for the same PyAV/FFmpeg build).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"frame height and width must be even for yuv420p, got {frames.shape[1:3]}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Encoder threads (FFmpeg's or x264's) make the bytes depend on timing, and some of x264's
    # assembly routines on what was in memory before: single thread, plain C.
    x264_params = "threads=1:lookahead-threads=1:sliced-threads=0:sync-lookahead=0:asm=0"
    options = {"preset": "veryfast", "crf": str(crf), "x264-params": x264_params}
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.thread_type = "NONE"
        for index, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts, video_frame.time_base = index, Fraction(1, fps)
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
