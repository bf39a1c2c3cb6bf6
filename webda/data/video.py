"""Video files with PyAV: probing, decoding frames as uint8 (T, H, W, 3) RGB, writing H.264 MP4."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Sequence

import av
from av.video.reformatter import VideoReformatter
import numpy as np

from webda.data.skips import CorruptFileError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov")


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
    try:
        with av.open(str(path)) as container:
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
    except (av.FFmpegError, OSError, StopIteration) as err:
        raise CorruptFileError(f"{path}: not a readable video ({err})") from err


def _output_size(width: int, height: int, short_side: Optional[int]):
    if short_side is None:
        return width, height
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def iter_frames(path, short_side: Optional[int] = None) -> Iterator[np.ndarray]:
    """Yield every frame of ``path`` in order as uint8 (H, W, 3) RGB.

    ``short_side`` resizes while decoding (swscale, area filter) so the shorter side has that
    many pixels. Raises :class:`CorruptFileError` when decoding fails.
    """
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            reformatter = VideoReformatter()  # one per video: it keeps its swscale context
            for frame in container.decode(stream):
                width, height = _output_size(frame.width, frame.height, short_side)
                rgb = reformatter.reformat(frame, format="rgb24", width=width, height=height, interpolation="AREA")
                yield rgb.to_ndarray()
    except (av.FFmpegError, OSError, IndexError) as err:
        raise CorruptFileError(f"{path}: decoding failed ({err})") from err


def read_frames(path, indices: Optional[Sequence[int]] = None, short_side: Optional[int] = None) -> np.ndarray:
    """Decode the frames at ``indices`` (any order, repeats allowed; None = all) of ``path``.

    Returns uint8 (len(indices), H, W, 3). Decoding runs from the start and stops after the
    last index needed. Raises :class:`CorruptFileError` if the video ends before an index.
    """
    if indices is None:
        frames = list(iter_frames(path, short_side))
        if not frames:
            raise CorruptFileError(f"{path}: video has no frames")
        return np.stack(frames)
    wanted = set(int(i) for i in indices)
    if not wanted:
        raise ValueError(f"indices is empty for {path}")
    if min(wanted) < 0:
        raise ValueError(f"indices must be >= 0, got {min(wanted)} for {path}")
    last = max(wanted)
    found = {}
    for index, frame in enumerate(iter_frames(path, short_side)):
        if index in wanted:
            found[index] = frame
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
