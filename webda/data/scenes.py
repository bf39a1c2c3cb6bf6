"""Procedural scenes for the generated dataset: class objects, their motions, two visual styles.

Coordinates are fractions of the frame side, so one scene renders at any size. A class is an
object (shape + colour) and a motion. Motion-pair classes share the object and differ only in
the direction of the motion (left/right, clockwise/anticlockwise, grow/shrink), and every
per-video parameter is drawn so that the object's position, angle and size have the same
distribution in both classes: a single frame cannot tell them apart, a clip can. Appearance
classes have their own object and a random motion, so motion says nothing about them.

Styles: ``target`` is clean and consistent (light grey-blue gradient background, no blur); ``web``
has a cluttered background of random muted rectangles and lines (or, for some items, a plain
light gradient of a random tint), a colour cast and blur.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SUPERSAMPLE = 2  # shapes are drawn at twice the size and box-filtered down (anti-aliasing)
BASE_RADIUS = 0.17  # object radius as a fraction of the frame side


def _star(points: int, inner: float) -> List[Tuple[float, float]]:
    return [
        ((1.0 if k % 2 == 0 else inner) * math.sin(math.pi * k / points),
         -(1.0 if k % 2 == 0 else inner) * math.cos(math.pi * k / points))
        for k in range(2 * points)
    ]


# Unit-radius outlines (x right, y down); "disc" and "ring" are drawn as ellipses.
SHAPES = {
    "disc": None,
    "ring": None,
    "arrow": [(-0.3, 0.95), (0.3, 0.95), (0.3, -0.1), (0.72, -0.1), (0.0, -1.0), (-0.72, -0.1), (-0.3, -0.1)],
    "square": [(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)],
    "star": _star(5, 0.45),
    "triangle": [(0.0, -1.0), (0.87, 0.5), (-0.87, 0.5)],
    "cross": [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1), (-0.3, 1),
              (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)],
}


@dataclass(frozen=True)
class ClassSpec:
    """A generated class: ``shape`` in ``colour`` doing ``motion``.

    ``motion`` is one of left, right, cw, ccw, grow, shrink (motion pairs) or ``random``
    (appearance classes: a random one of the motions, any direction). ``pair`` names the
    class that differs only by motion, if any.
    """

    name: str
    shape: str
    colour: Tuple[int, int, int]
    motion: str
    pair: Optional[str] = None


MOTION_PAIRS = [
    (ClassSpec("red_ball_left", "disc", (225, 35, 35), "left", "red_ball_right"),
     ClassSpec("red_ball_right", "disc", (225, 35, 35), "right", "red_ball_left")),
    (ClassSpec("blue_arrow_cw", "arrow", (35, 75, 225), "cw", "blue_arrow_ccw"),
     ClassSpec("blue_arrow_ccw", "arrow", (35, 75, 225), "ccw", "blue_arrow_cw")),
    (ClassSpec("green_square_grow", "square", (35, 170, 55), "grow", "green_square_shrink"),
     ClassSpec("green_square_shrink", "square", (35, 170, 55), "shrink", "green_square_grow")),
]
# The first four each have a shape and a colour of their own; the last four share their colour with one
# class and their shape with another (as real classes share objects and colours), so that from 11 classes
# on neither colour nor shape alone names an appearance class.
APPEARANCE_CLASSES = [
    ClassSpec("yellow_star", "star", (245, 205, 20), "random"),
    ClassSpec("magenta_triangle", "triangle", (205, 35, 205), "random"),
    ClassSpec("cyan_cross", "cross", (20, 195, 215), "random"),
    ClassSpec("orange_ring", "ring", (250, 125, 15), "random"),
    ClassSpec("red_star", "star", (225, 35, 35), "random"),
    ClassSpec("blue_triangle", "triangle", (35, 75, 225), "random"),
    ClassSpec("green_cross", "cross", (35, 170, 55), "random"),
    ClassSpec("yellow_ring", "ring", (245, 205, 20), "random"),
]
MAX_CLASSES = 2 * len(MOTION_PAIRS) + len(APPEARANCE_CLASSES)


def class_catalogue(num_classes: int) -> List[ClassSpec]:
    """``num_classes`` classes: ``min(2 * ceil(K / 4), 6)`` in the motion pairs (at least half of
    up to 12 classes), the rest by appearance."""
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be between 2 and {MAX_CLASSES}, got {num_classes}")
    num_pair_classes = min(2 * math.ceil(num_classes / 4), 2 * len(MOTION_PAIRS))
    num_appearance = num_classes - num_pair_classes
    pairs = [spec for pair in MOTION_PAIRS[: num_pair_classes // 2] for spec in pair]
    return pairs + APPEARANCE_CLASSES[:num_appearance]


@dataclass(frozen=True)
class Trajectory:
    """Per-frame object pose: centre (x, y), angle (degrees) and radius, fractions of the side."""

    x: np.ndarray
    y: np.ndarray
    angle: np.ndarray
    radius: np.ndarray


def trajectory(spec: ClassSpec, num_frames: int, rng: np.random.Generator) -> Trajectory:
    """Poses of ``spec``'s object over ``num_frames`` frames.

    left/right: constant speed, wrapping around the frame (uniform position whatever the
    direction); cw/ccw: constant angular speed from a uniform angle; grow/shrink: a sawtooth
    between 0.55 and 1.3 of the base radius with a uniform phase.
    """
    motion = spec.motion
    if motion == "random":
        kind = rng.choice(["translate", "rotate", "scale", "still"])
        motion = {"translate": "any", "rotate": rng.choice(["cw", "ccw"]),
                  "scale": rng.choice(["grow", "shrink"]), "still": "still"}[kind]
    t = np.arange(num_frames, dtype=np.float64)
    x = np.full(num_frames, rng.uniform(0.3, 0.7))
    y = np.full(num_frames, rng.uniform(0.3, 0.7))
    angle = np.full(num_frames, rng.uniform(0.0, 360.0))
    radius = np.full(num_frames, BASE_RADIUS * rng.uniform(0.9, 1.1))
    if motion in ("left", "right", "any"):
        speed = rng.uniform(0.016, 0.03)
        heading = {"left": math.pi, "right": 0.0}.get(motion, rng.uniform(0, 2 * math.pi))
        x = (rng.uniform(0, 1) + speed * math.cos(heading) * t) % 1.0
        y = (y + speed * math.sin(heading) * t) % 1.0 if motion == "any" else y
    elif motion in ("cw", "ccw"):
        angle = angle + (1 if motion == "cw" else -1) * rng.uniform(6.0, 10.0) * t
    elif motion in ("grow", "shrink"):
        phase = (rng.uniform(0, 1) + t / rng.uniform(20, 30)) % 1.0
        phase = phase if motion == "grow" else 1.0 - phase
        radius = radius * (0.55 + 0.75 * phase)
    else:  # still: a small jitter
        x = x + rng.normal(0, 0.004, num_frames)
        y = y + rng.normal(0, 0.004, num_frames)
    return Trajectory(x, y, angle % 360.0, radius)


def target_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """The clean target style: a light vertical grey-blue gradient, uint8 (size, size, 3)."""
    top = np.array([212, 216, 222]) + rng.uniform(-6, 6)
    bottom = np.array([178, 182, 190]) + rng.uniform(-6, 6)
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    return np.broadcast_to(top + (bottom - top) * ramp, (size, size, 3)).round().astype(np.uint8)


def _muted_colour(rng: np.random.Generator) -> Tuple[int, int, int]:
    grey = rng.uniform(60, 200)
    return tuple(int(0.45 * c + 0.55 * grey) for c in rng.uniform(0, 255, 3))


def clutter_background(size: int, rng: np.random.Generator, pieces: int = 14) -> np.ndarray:
    """A web-style background: random muted rectangles and lines on a random base colour."""
    img = Image.new("RGB", (size, size), _muted_colour(rng))
    draw = ImageDraw.Draw(img)
    for _ in range(pieces):
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
        w, h = rng.uniform(0.05, 0.5, 2) * size
        if rng.random() < 0.6:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=_muted_colour(rng))
        else:
            draw.line([x0, y0, x0 + w, y0 + h], fill=_muted_colour(rng), width=int(rng.integers(1, 4)))
    return np.asarray(img)


def plain_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A web "studio shot" background: a vertical gradient between two light tints, uint8 (size, size, 3)."""
    top = 0.6 * rng.uniform(170, 240) + 0.4 * rng.uniform(140, 255, 3)
    bottom = top * rng.uniform(0.75, 1.0)
    ramp = np.linspace(0.0, 1.0, size)[:, None, None]
    return np.broadcast_to(top + (bottom - top) * ramp, (size, size, 3)).round().astype(np.uint8)


def web_background(size: int, rng: np.random.Generator, plain_rate: float = 0.3) -> np.ndarray:
    """The background of a relevant web item: clutter, or with probability ``plain_rate`` a plain
    light one (web photos of an object are often studio shots; the target's clean background
    is then not wholly new to a model trained on the web)."""
    return plain_background(size, rng) if rng.random() < plain_rate else clutter_background(size, rng)


def banner_clip(size: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """An irrelevant "advert" shot, uint8 (T, S, S, 3): still stripes of a random saturated hue.

    Still, because a content-based shot detector reads fast high-contrast motion as cuts.
    """
    hue = rng.uniform(0, 1)

    def rgb(h: float, s: int, v: int) -> np.ndarray:
        return np.array(Image.new("HSV", (1, 1), (int(h % 1 * 255), s, v)).convert("RGB").getpixel((0, 0)))

    base, stripe = rgb(hue, 230, 235), rgb(hue + 0.5, 200, 90)
    rows = np.arange(size) // max(2, size // 10) % 2
    frame = np.where(rows[:, None, None] == 1, stripe, base).astype(np.uint8)
    return np.broadcast_to(frame, (num_frames, size, size, 3)).copy()


def draw_object(background: np.ndarray, spec: ClassSpec, x: float, y: float, angle: float, radius: float) -> np.ndarray:
    """``background`` uint8 (S, S, 3) with ``spec``'s object at pose (x, y, angle, radius).

    The object wraps around the frame edges (it leaves on one side and enters on the other).
    """
    size = background.shape[0]
    big = size * SUPERSAMPLE
    canvas = Image.fromarray(background).resize((big, big), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    r = radius * big
    outline = tuple(int(c * 0.45) for c in spec.colour)
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            cx, cy = (x + dx) * big, (y + dy) * big
            if not (-r <= cx <= big + r and -r <= cy <= big + r):
                continue
            if spec.shape == "disc":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=spec.colour, outline=outline, width=SUPERSAMPLE)
            elif spec.shape == "ring":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=spec.colour, width=max(2, int(r * 0.4)))
            else:
                points = [(cx + r * (px * cos - py * sin), cy + r * (px * sin + py * cos)) for px, py in SHAPES[spec.shape]]
                draw.polygon(points, fill=spec.colour, outline=outline, width=SUPERSAMPLE)
    return np.asarray(canvas.resize((size, size), Image.BOX))


def render_clip(spec: ClassSpec, traj: Trajectory, background: np.ndarray) -> np.ndarray:
    """Frames uint8 (T, S, S, 3) of the object following ``traj`` over a static ``background``."""
    return np.stack([
        draw_object(background, spec, traj.x[i], traj.y[i], traj.angle[i], traj.radius[i])
        for i in range(len(traj.x))
    ])


@dataclass(frozen=True)
class WebLook:
    """A web item's degradation: per-channel colour gains and Gaussian blur radius (pixels)."""

    gains: Tuple[float, float, float]
    blur: float

    @staticmethod
    def sample(rng: np.random.Generator) -> "WebLook":
        return WebLook(tuple(float(g) for g in rng.uniform(0.7, 1.3, 3)), float(rng.uniform(0.3, 1.0)))

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """Colour cast then blur, on uint8 (..., S, S, 3) frames."""
        cast = np.clip(frames.astype(np.float32) * np.array(self.gains, dtype=np.float32), 0, 255).astype(np.uint8)
        flat = cast.reshape(-1, *cast.shape[-3:])
        blurred = [np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(self.blur))) for f in flat]
        return np.stack(blurred).reshape(cast.shape)
