"""Configuration sections of the vision stages (owned by the vision stages)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class SourcesConfig:
    sample_every_s: float = 0.5    # analyse one frame every this many seconds
    chunk_s: float = 60.0          # recordings are processed in chunks of this length
    replay_speed: float = 1.0      # paced replay (live mode): 1.0 = the recording's own rate
    segment_s: float = 60.0        # live capture writes the recording in segments this long
    queue_size: int = 8            # live mode: frames allowed to wait between two workers

    def __post_init__(self):
        for name in ("sample_every_s", "chunk_s", "replay_speed", "segment_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sources.{name} must be > 0, got {getattr(self, name)}")
        if self.queue_size < 1:
            raise ValueError(f"sources.queue_size must be >= 1, got {self.queue_size}")


@dataclass(frozen=True)
class DetectConfig:
    front_detector: str = "default"   # "default" (shipped .svm), "dlib_frontal", "cnn" or a .svm path
    back_detector: str = "default"    # same choices, for the back three rows
    back_max_face_px: float = 28.0    # rows whose face boxes are at most this many px go to the back-rows detector
    survey_frames: int = 4            # frames (spread over the recording) the survey scans over the whole frame height
    survey_face_px: tuple[float, float] = (14.0, 120.0)  # smallest and largest face-box side the survey looks for, px
    survey_step: float = 1.6          # ratio between consecutive face sizes the survey scans at
    survey_min_faces: int = 2         # faces (over all survey frames) that make a row
    band_margin_faces: float = 0.6    # context added above and below each band, in expected faces
    target_face_px: float = 44.0      # each strip is resized so its faces are about this big (HOG window 40 px)
    strip_faces: float = 2.3          # strip height, in expected faces (short strips cap the HOG pyramid)
    step_faces: float = 1.15          # strip-to-strip step, in expected faces (overlap = strip - step)
    threshold: float = 0.5            # keep detections with HOG score above this (lower = more recall)
    merge_iou: float = 0.3            # detections overlapping more than this are one face
    refine_boxes: bool = True         # re-place each box by 4 more looks of its detector (half-cell shifts, 2 scales)
    use_known_rows: bool = True       # use session.yaml's seat map (rows) or row bands when it has them (false: the survey's)
    rescan_s: float = 10.0            # no seat map: full scan of the bands at least this often (recording seconds)
    row_gap_faces: float = 1.0        # face centres further apart in y than this many faces are other rows
    row_margin_faces: float = 0.5     # a row strip extends this many face heights above and below its faces
    row_min_face_frac: float = 0.85   # row strips are scaled to catch faces down to this × the row's size

    def __post_init__(self):
        lo, hi = self.survey_face_px
        if not 0 < lo < hi or self.target_face_px <= 0 or self.back_max_face_px <= 0:
            raise ValueError("detect: need 0 < survey_face_px[0] < survey_face_px[1], target_face_px > 0, "
                             "back_max_face_px > 0")
        if not 1.05 <= self.survey_step <= 2.5 or self.survey_frames < 1 or self.survey_min_faces < 1:
            raise ValueError("detect: survey_step in [1.05, 2.5] (a larger step leaves face sizes unsearched), "
                             "survey_frames >= 1, survey_min_faces >= 1")
        if not -3 <= self.threshold <= 3:
            raise ValueError(f"detect.threshold must be in [-3, 3] (HOG SVM margin; 0.5 is the default, lower finds "
                             f"more faces and more false ones), got {self.threshold}")
        if not 0 < self.step_faces < self.strip_faces or self.band_margin_faces < 0:
            raise ValueError("detect: need 0 < step_faces < strip_faces and band_margin_faces >= 0")
        if not 0 < self.merge_iou <= 1:
            raise ValueError("detect: merge_iou must be in (0, 1]")
        if self.rescan_s <= 0 or self.row_gap_faces <= 0 or self.row_margin_faces < 0 or not 0 < self.row_min_face_frac <= 1:
            raise ValueError("detect: rescan_s > 0, row_gap_faces > 0, row_margin_faces >= 0, 0 < row_min_face_frac <= 1")


def _check_positive(section: str, **values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{section}.{name} must be > 0, got {value}")


@dataclass(frozen=True)
class LandmarksConfig:
    model_path: str = ""           # 68-point ERT: "" or "stock" (iBUG), "theatre" (shipped, for small dim faces), or a .dat path
    engine: Literal["numpy", "dlib"] = "numpy"  # numpy: batched cascade on the frame; dlib: dlib's predictor on crops
    box_scale: float | None = None  # first-pass ERT box side = box_scale × detector box width; None: the detector's
                                    # calibration (<detector>.calib.json beside its .svm), else 1.0 (see default.yaml)
    box_dx: float | None = None     # ERT box centre shift right, in detector box widths (None: as box_scale)
    box_dy: float | None = None     # ERT box centre shift down, in detector box heights (None: as box_scale)
    target_face_px: float = 96.0   # dlib engine: crops are upsampled so the ERT box is about this many px wide
    max_upsample: float = 8.0      # dlib engine: never upsample a crop more than this factor
    crop_margin: float = 0.6       # dlib engine: crop this many ERT-box sides of context around the box, each side
    refine_passes: int = 1         # refits with the box re-derived from the previous fit (0 = none)
    start_model_path: str | None = "theatre"  # model of the passes before the last, which find each face's box
                                   # (robust on dim, noisy faces); the last pass runs model_path. null: model_path
    mirror_choice: bool = True     # the last pass fits with model_path AND start_model_path, each also on the mirrored
                                   # face, and keeps per face the model whose two fits agree better (4 cascades, not 1)
    track_window_s: float = 1.0    # the final fit starts from the median box of the face's track within ± this (0 = own box)
    upright: bool = True           # numpy engine: refits run in the face's own frame, turned by the eye line's roll
    coarse_levels: int = 5         # numpy engine: cascade levels of the passes before the last (0 = all)
    leaf_rank: int = 48            # numpy engine: rank each level's leaf table is factored to (0 = exact)

    def __post_init__(self):
        _check_positive("landmarks", target_face_px=self.target_face_px, max_upsample=self.max_upsample)
        if self.box_scale is not None and not 0.2 <= self.box_scale <= 5:
            raise ValueError(f"landmarks.box_scale must be in [0.2, 5] or null (the detector's calibration), "
                             f"got {self.box_scale}")
        if self.max_upsample < 1 or self.crop_margin < 0 or self.refine_passes < 0 or self.coarse_levels < 0 \
                or self.leaf_rank < 0 or not 0 <= self.track_window_s <= 30:
            raise ValueError("landmarks: max_upsample must be >= 1, crop_margin >= 0, refine_passes >= 0, "
                             "coarse_levels >= 0, leaf_rank >= 0, track_window_s in [0, 30] seconds")
        if self.engine not in ("numpy", "dlib"):
            raise ValueError(f"landmarks.engine must be 'numpy' or 'dlib', got {self.engine!r}")


@dataclass(frozen=True)
class FrontalizeConfig:
    jaw_weight: float = 0.0        # weight of the 17 jaw points in the pose fit (eyes, nose 1)
    brow_weight: float = 0.5       # weight of the 10 brow points in the pose fit (eyes, nose 1)
    mouth_weight: float = 0.0      # weight of the 20 mouth points in the pose fit (0: a laugh does not move the pose)
    iterations: int = 12           # scaled-orthographic pose refinement iterations
    max_abs_yaw_deg: float = 75.0  # faces with a larger fitted |yaw| are marked not ok

    def __post_init__(self):
        if self.jaw_weight < 0 or min(self.brow_weight, self.mouth_weight) < 0 or self.iterations < 1 or not 0 < self.max_abs_yaw_deg <= 90:
            raise ValueError("frontalize: jaw_weight >= 0, brow_weight, mouth_weight >= 0, iterations >= 1, 0 < max_abs_yaw_deg <= 90")


@dataclass(frozen=True)
class MembersConfig:
    seat_source: Literal["discover", "session"] = "discover"  # discover seats, or use session.yaml `seats_px`
    seat_radius: float = 0.6       # a face belongs to a seat within this many face widths of its centre
    seat_spacing: float = 1.0      # two discovered seats are at least this many face widths apart
    min_observed_fraction: float = 0.2  # drop seats seen in fewer than this fraction of sampled frames
    max_discovery_faces: int = 20000    # seats are discovered from at most this many faces (random subset)
    row_gap: float = 0.6           # seats whose y differs by more than this many face heights are other rows
    seed: int = 0                  # seed of the discovery subset

    def __post_init__(self):
        _check_positive("members", seat_radius=self.seat_radius, seat_spacing=self.seat_spacing,
                        row_gap=self.row_gap)
        if not 0 <= self.min_observed_fraction <= 1 or self.max_discovery_faces < 100:
            raise ValueError("members: min_observed_fraction in [0, 1], max_discovery_faces >= 100")


@dataclass(frozen=True)
class BinningConfig:
    bin_seconds: float = 1.0       # length of one tensor time bin
    combine: Literal["mean", "median"] = "mean"  # how the frontal faces inside one bin are combined
    max_fit_score: float = 0.05    # drop faces whose fit score (members: nose/eye-corner distance from the member's
                                   # median face, canonical units) is above this: gross misfits (0 = keep all)

    def __post_init__(self):
        _check_positive("binning", bin_seconds=self.bin_seconds)
        if self.max_fit_score < 0:
            raise ValueError(f"binning.max_fit_score must be >= 0 (0 keeps every face), got {self.max_fit_score}")
