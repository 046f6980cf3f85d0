"""Configuration of the synthetic IR theatre (owned by pipeline/synthetic).

Light module (dataclasses only): configs/schema.py imports it.
`scale` picks one of two theatre geometries (`full` or `small`); each is a
nested section so a single knob can be overridden, e.g.
`synthetic.small.rows=3`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class TheatreGeometry:
    """What one camera sees: frame size, seat rows in perspective, face sizes."""
    width_px: int = 2750                           # frame width
    height_px: int = 2200                          # frame height
    rows: int = 8                                  # seat rows seen by one camera (row 0 = front)
    seats_front: int = 12                          # seats in the front row
    seats_back: int = 16                           # seats in the back row (rows between interpolate)
    face_front_px: tuple[float, float] = (40.0, 55.0)  # (width, height) of a front-row face box
    face_back_px: tuple[float, float] = (15.0, 25.0)   # (width, height) of a back-row face box
    audience_top_frac: float = 0.16                # back-row faces sit this far down the frame
    audience_bottom_frac: float = 0.86             # front-row faces sit this far down the frame
    seat_pitch_faces: float = 3.4                  # seat-to-seat distance in face widths

    def __post_init__(self):
        if self.width_px < 64 or self.height_px < 64 or self.width_px % 2 or self.height_px % 2:
            raise ValueError(f"frame must be at least 64×64 px with even sides, got "
                             f"{self.width_px}×{self.height_px}; use even width_px/height_px")
        if self.rows < 1 or self.seats_front < 1 or self.seats_back < 1:
            raise ValueError("rows, seats_front and seats_back must all be >= 1")
        if not 0.0 < self.audience_top_frac < self.audience_bottom_frac < 1.0:
            raise ValueError("need 0 < audience_top_frac < audience_bottom_frac < 1")
        if min(self.face_front_px + self.face_back_px) <= 4:
            raise ValueError("face sizes must be larger than 4 px")


FULL = TheatreGeometry()
SMALL = TheatreGeometry(width_px=688, height_px=550, rows=4, seats_front=5, seats_back=7,
                        face_front_px=(36.0, 48.0), face_back_px=(20.0, 28.0),
                        audience_top_frac=0.2, audience_bottom_frac=0.84, seat_pitch_faces=3.2)


@dataclass(frozen=True)
class SyntheticConfig:
    movie: str = "synthmovie"      # movie name used for generated screenings
    sessions: int = 2              # screenings (audiences) per movie
    duration_s: float = 60.0       # length of each recording, seconds
    seed: int = 0                  # every random choice derives from this
    scale: Literal["full", "small"] = "full"   # which geometry below is used
    full: TheatreGeometry = field(default_factory=lambda: FULL)    # paper-like 2750×2200 camera
    small: TheatreGeometry = field(default_factory=lambda: SMALL)  # quarter-size frame for tests
    fps: float = 12.0              # frames per second of the recording
    cameras: int = 1               # cameras per session; each films its own block of seats
    max_offset_s: float = 4.0      # each session starts recording 0..max_offset_s after the movie
    occupancy: float = 0.85        # fraction of seats with a viewer
    absence_fraction: float = 0.13 # expected fraction of viewer-time not visible (turned, occluded, left)
    absence_shares: tuple[float, float, float] = (0.45, 0.25, 0.30)  # time shares: turned away, occluded, left
    k_true: int = 4                # true latent factors: smile, laugh, brow raise, frown (first k_true used)
    groups: int = 3                # viewer groups (U prototypes); labels stored as ground truth
    funny_per_min: float = 4.0     # shared "funny moments" per minute of movie
    blink_rate_hz: float = 0.25    # blinks per second per viewer
    pose_std_deg: tuple[float, float, float] = (5.0, 4.0, 2.5)  # slow head-pose wobble: yaw, pitch, roll
    expression_gain: float = 1.0   # scales every expression displacement (0 = neutral faces)
    noise_std: float = 3.0         # IR sensor noise, grey levels (0-255)
    codec: str = "mp4v"            # OpenCV FourCC of the written video

    def __post_init__(self):
        if self.sessions < 1 or self.cameras < 1:
            raise ValueError(f"sessions and cameras must be >= 1, got {self.sessions}, {self.cameras}")
        if self.duration_s <= 0 or self.fps <= 0:
            raise ValueError(f"duration_s and fps must be positive, got {self.duration_s}, {self.fps}")
        if not 0.0 <= self.absence_fraction < 0.9:
            raise ValueError(f"absence_fraction must be in [0, 0.9), got {self.absence_fraction}")
        if not 0.0 < self.occupancy <= 1.0:
            raise ValueError(f"occupancy must be in (0, 1], got {self.occupancy}")
        if not 1 <= self.k_true <= 4:
            raise ValueError(f"k_true must be 1..4 (smile, laugh, brow raise, frown), got {self.k_true}")
        if self.groups < 1 or min(self.absence_shares) < 0 or sum(self.absence_shares) <= 0:
            raise ValueError("groups must be >= 1 and absence_shares non-negative with a positive sum")
        if len(self.codec) != 4:
            raise ValueError(f"codec must be a 4-letter FourCC such as 'mp4v', got {self.codec!r}")

    @property
    def geometry(self) -> TheatreGeometry:
        return self.full if self.scale == "full" else self.small
