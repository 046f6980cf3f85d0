"""Ground truth drawn over a frame of a synthetic screening (a PNG a person can check)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.store import DataError, atomic_path, read_synthetic_truth, require_file

ZOOM = 4


def read_frame(video: Path, index: int) -> np.ndarray:
    """Frame `index` (BGR) by decoding sequentially: seeking in mp4 is unreliable."""
    require_file(video, "video", "Generate it with scripts/synthesize.py.")
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise DataError(f"{video}: OpenCV cannot open this video; is it complete?")
    try:
        for _ in range(index + 1):
            ok, frame = cap.read()
            if not ok:
                raise DataError(f"{video}: has no frame {index}; choose an earlier time.")
    finally:
        cap.release()
    return frame


def draw_truth(frame: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Boxes (V, 4) and landmarks (V, 68, 2) of visible faces drawn on a BGR copy."""
    out = frame.copy()
    for box, pts in zip(boxes, landmarks):
        if not np.isfinite(box).all():
            continue
        l, t, r, b = np.rint(box * 16).astype(int)
        cv2.rectangle(out, (l, t), (r, b), (0, 220, 0), 1, cv2.LINE_AA, 4)
        for x, y in np.rint(pts * 16).astype(int):
            cv2.circle(out, (x, y), 8, (0, 0, 255), -1, cv2.LINE_AA, 4)
    return out


def zoom_on(frame: np.ndarray, overlay: np.ndarray, box: np.ndarray, height_px: int) -> np.ndarray:
    """Side by side: the raw face crop and its overlay, both zoomed to `height_px`."""
    l, t, r, b = box
    pad = 0.4 * (b - t)
    y0, y1 = int(max(t - pad, 0)), int(min(b + pad, frame.shape[0]))
    x0, x1 = int(max(l - pad, 0)), int(min(r + pad, frame.shape[1]))
    crops = []
    for img in (frame, overlay):
        crop = img[y0:y1, x0:x1]
        f = height_px / crop.shape[0]
        crops.append(cv2.resize(crop, None, fx=f, fy=f, interpolation=cv2.INTER_NEAREST))
    return np.hstack(crops)


def write_overlay(video: Path, truth: Path, out: Path, time_s: float = 0.0) -> Path:
    """Frame at `time_s` with every visible face's box and landmarks, plus zooms of a
    front-row and a back-row face, written as a PNG."""
    arrays, attrs = read_synthetic_truth(truth, ("face_box", "landmarks_image", "seat_row", "visible"))
    index = int(round(time_s * float(attrs["fps"])))
    if not 0 <= index < len(arrays["visible"]):
        raise DataError(f"time {time_s} s is outside the recording (0..{len(arrays['visible']) / attrs['fps']:.1f} s)")
    frame = read_frame(Path(video), index)
    boxes, lms, visible = arrays["face_box"][index], arrays["landmarks_image"][index], arrays["visible"][index]
    over = draw_truth(frame, boxes, lms)
    rows = arrays["seat_row"]
    zooms = []
    for want in (rows.min(), rows.max()):
        cand = np.flatnonzero(visible & (rows == want))
        if cand.size:
            zooms.append(zoom_on(frame, over, boxes[cand[0]], 55 * ZOOM))
    panel = over
    if zooms:
        strip = np.hstack(zooms)
        width = max(strip.shape[1], over.shape[1])
        pad = lambda img: cv2.copyMakeBorder(img, 0, 0, 0, width - img.shape[1], cv2.BORDER_CONSTANT)
        panel = np.vstack([pad(over), pad(strip)])
    with atomic_path(Path(out)) as tmp:
        if not cv2.imwrite(str(tmp), panel):
            raise DataError(f"cannot write PNG {out}")
    return Path(out)
