"""Video files with PyAV: probing, decoding frames as uint8 (T, H, W, 3) RGB, writing H.264 MP4.

Any container FFmpeg demuxes is read; :data:`VIDEO_EXTENSIONS` are the extensions looked for
(MP4/M4V/MOV, AVI, MKV, WebM, FLV/F4V, 3GP, MPEG program and transport streams, WMV/ASF, OGV,
VOB), in any case. Decoding uses FFmpeg's frame and slice threads (``threads``; 0 = one per
core); frames are converted to RGB only when they are wanted. :func:`read_frames` starts at the
last keyframe before the first frame it needs (the probe's ``seek_points``), so a chunk late in
a long web video costs what one near its start does; the frames are those of a decode from the
start (checked on every format above), and where the seek does not land on the keyframe it
decodes from the start instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple

import av
from av.video.reformatter import VideoReformatter
import numpy as np

from webda.data.skips import CorruptFileError, reading

VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".flv", ".f4v", ".3gp", ".3g2", ".mpg", ".mpeg", ".ts", ".mts",
    ".m2ts", ".wmv", ".asf", ".ogv", ".vob",
)


def _image_demuxer(name: str) -> bool:
    """Whether FFmpeg's demuxer ``name`` reads still images (``jpeg_pipe``, ``png_pipe``, ``image2``, ...)
    or GIFs: such a file is an image whatever its extension, never a video."""
    return name in ("image2", "image2pipe", "gif", "apng") or name.endswith("_pipe")


# FFmpeg's flag of formats whose timestamps may jump (MPEG program and transport streams): after a
# seek there, frames can come with their neighbours' timestamps, so they are decoded from the start.
_AVFMT_TS_DISCONT = 0x0200


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learns about a video without decoding it all."""

    num_frames: int
    fps: float
    width: int
    height: int
    # (frame index, pts) of every keyframe but the first, when frame i has pts = pts_0 + i * step
    seek_points: Tuple[Tuple[int, int], ...] = ()
    pts_step: int = 0

    def as_record(self) -> list:
        """The fields as a JSON-able list (the cache's files journal)."""
        return [self.num_frames, self.fps, self.width, self.height, [list(p) for p in self.seek_points], self.pts_step]

    @classmethod
    def from_record(cls, record) -> "VideoInfo":
        """The inverse of :meth:`as_record`; TypeError/ValueError on a malformed record."""
        num_frames, fps, width, height, points, step = record
        return cls(int(num_frames), float(fps), int(width), int(height),
                   tuple((int(i), int(pts)) for i, pts in points), int(step))


def _seek_points(packets) -> Tuple[Tuple[Tuple[int, int], ...], int]:
    """(seek points, pts step) from (pts, is_keyframe) of every packet in decoding order; none
    unless the timestamps, in presentation order, are evenly spaced."""
    stamps = sorted(pts for pts, _ in packets) if all(pts is not None for pts, _ in packets) else []
    step = stamps[1] - stamps[0] if len(stamps) > 1 else 0
    if step <= 0 or any(b - a != step for a, b in zip(stamps[:-1], stamps[1:])):  # e.g. a variable frame rate
        return (), 0
    points = sorted(((pts - stamps[0]) // step, pts) for pts, key in packets if key and pts > stamps[0])
    return tuple(points), step


def probe_video(path) -> VideoInfo:
    """Open ``path``, count its video packets (demuxing only) and decode its first frame.

    Raises :class:`CorruptFileError` when the container, the stream or the first frame is
    unreadable, the video has no frames, or the file is an image (a JPEG renamed ``.mp4``).
    """
    with reading(path, "not a readable video"), av.open(str(path)) as container:
        if _image_demuxer(container.format.name):
            raise CorruptFileError(f"{path}: not a video (an image: FFmpeg reads it as {container.format.name})")
        if not container.streams.video:
            raise CorruptFileError(f"{path}: no video stream")
        stream = container.streams.video[0]
        packets = [(packet.pts, packet.is_keyframe) for packet in container.demux(stream) if packet.size > 0]
        num_frames = len(packets)
        if num_frames == 0:
            raise CorruptFileError(f"{path}: video has no frames")
        container.seek(0)
        first = next(container.decode(stream), None)
        if first is None:
            raise CorruptFileError(f"{path}: first frame cannot be decoded")
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        seekable = not container.format.flags & _AVFMT_TS_DISCONT
        return VideoInfo(num_frames, fps, first.width, first.height, *_seek_points(packets if seekable else []))


def decode(path, threads: int = 0) -> Iterator[av.VideoFrame]:
    """Yield the decoded frames of ``path`` in order (FFmpeg frame and slice threads: ``threads``,
    0 = one per core). Raises :class:`CorruptFileError` when decoding fails."""
    for _, frame in _decode_from(path, threads, None):
        yield frame


class _SeekMissed(Exception):
    """After a seek, the frames' timestamps are not the ones expected."""


def _decode_from(path, threads: int, start: Optional[Tuple[int, int, int]]) -> Iterator[Tuple[int, av.VideoFrame]]:
    """(index, frame) from the first frame, or from the keyframe ``start`` = (index, pts, pts
    step) on: after the seek a frame's index is its timestamp's (frames before the keyframe, an
    open GOP's leading ones, are dropped); raises :class:`_SeekMissed` when one is not the next
    or the frame at ``index`` is not a keyframe."""
    with reading(path, "decoding failed"), av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        if start is None:
            yield from enumerate(container.decode(stream))
            return
        first, pts_first, step = start
        container.seek(pts_first, stream=stream, backward=True, any_frame=False)
        expected = first
        for frame in container.decode(stream):
            if frame.pts is None or (frame.pts - pts_first) % step:
                raise _SeekMissed
            index = first + (frame.pts - pts_first) // step
            if index < first:
                continue
            if index != expected or (index == first and not frame.key_frame):
                raise _SeekMissed
            yield index, frame
            expected += 1


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
                threads: int = 0, info: Optional[VideoInfo] = None) -> np.ndarray:
    """Decode the frames at ``indices`` (any order, repeats allowed; None = all) of ``path``.

    Returns uint8 (len(indices), H, W, 3). With the video's ``info``, decoding starts at the
    last of its ``seek_points`` before the first index (from the first frame if the seek goes
    wrong), else at the first frame; it stops after the last index needed, and only the wanted
    frames are converted. Raises :class:`CorruptFileError` if the video ends before an index.
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
    points = [point for point in (info.seek_points if info is not None else ()) if point[0] <= min(wanted)]
    found = None
    if points:
        try:
            found = _convert_wanted(path, wanted, short_side, threads, (*points[-1], info.pts_step))
        except _SeekMissed:
            pass
    if found is None:
        found = _convert_wanted(path, wanted, short_side, threads, None)
    if max(wanted) not in found:
        raise CorruptFileError(f"{path}: video ended before frame {max(wanted)}")
    return np.stack([found[int(i)] for i in indices])


def _convert_wanted(path, wanted: set, short_side: Optional[int], threads: int, start) -> dict:
    """{index: converted frame} of the ``wanted`` indices decoded from ``start`` (see _decode_from)."""
    convert, found, last = FrameConverter(short_side), {}, max(wanted)
    for index, frame in _decode_from(path, threads, start):
        if index in wanted:
            with reading(path, "frame conversion failed"):
                found[index] = convert(frame)
        if index == last:
            return found
    if start is not None:  # the stream ended early after the seek: decode from the start to know
        raise _SeekMissed
    return found


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
