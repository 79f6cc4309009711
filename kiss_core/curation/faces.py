"""Two-face tracks through a shot: who is where on every sampled frame, their 68 landmarks, whether each
track stays one person, and how steady the landmarks are.

Faces are found with the service's dlib analyzer on every `detect_every`-th sampled frame (and the
last, and between two where the number of faces changes), tracked left/right from the first frame with
two faces (`generation.quality.faces.track_faces`, the quality report's tracker), boxes interpolated
between detections, and landmarks predicted on every box, so the frames between detections and the
half-hidden back face at the contact (which HOG misses) still have landmarks. A detected face keeps
the landmarks the analyzer predicted on its HOG box.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from kiss_core.curation.config import CurateConfig
from kiss_core.curation.decode import Sample
from kiss_core.curation.reasons import Reason, Rejected
from kiss_core.faces.analysis import DetectedFace, DlibFaceAnalyzer
from kiss_core.faces.embedding import FaceEmbedder, cosine_similarity
from kiss_core.generation.quality.faces import Box, boxes_per_frame, predict_landmarks, track_faces
from kiss_core.media.geometry import face_width

PERSONS = ("a", "b")  # track names; "a" is the person on the left at the first two-face frame
MERGED_WIDTH = 1.3  # wider than its track's median (HOG sizes step by 1.2) this box covers both faces


@dataclass
class ShotFaces:
    """Per sampled frame of one shot: landmarks (S, 2, 68, 2) at analysis size, valid (S, 2)."""

    landmarks: np.ndarray
    valid: np.ndarray
    boxes: np.ndarray  # (2, S, 4)
    detected: np.ndarray  # (S, 2) a detection was matched (not only interpolated)
    face_width_px: float  # the smaller track's median face width, source pixels
    face_frac: float  # the same over the frame width
    identity_min: float
    jitter: float  # median landmark jitter, face widths
    landmark_share: float
    face_sharpness: float


def detection_frames(count: int, every: int) -> list[int]:
    """Indices of the sampled frames HOG runs on: every `every`-th one and the last (tracks reach the end)."""
    picked = list(range(0, count, max(1, every)))
    if count and picked[-1] != count - 1:
        picked.append(count - 1)
    return picked


def count_faces(
    samples: Sequence[Sample], every: int, analyzer: DlibFaceAnalyzer, upsample: int
) -> dict[int, list[DetectedFace]]:
    """HOG's faces (with their landmarks) by sample index, in frame order: on every `every`-th sampled
    frame and the last, and where the number of faces changes between two of those, on the frames
    between too (halving the gap until the change is between neighbours).

    So the detections around a gap (the contact, where HOG loses the back face) are those HOG on every
    frame would give: the boxes interpolated across the gap start and end where the faces were last
    and first seen, and the mouth distances read in it stay as they were.
    """
    first = detection_frames(len(samples), every)
    # HOG on all of them, then the landmarks: the same faces as frame by frame, with less CPU.
    found = dict(zip(first, analyzer.detect_many([samples[i].frame for i in first], upsample), strict=True))
    spans = list(itertools.pairwise(sorted(found)))
    while spans:
        i, j = spans.pop()
        if j - i > 1 and len(found[i]) != len(found[j]):
            middle = (i + j) // 2
            found[middle] = analyzer.detect(samples[middle].frame, upsample)
            spans += [(i, middle), (middle, j)]
    return dict(sorted(found.items()))


def check_face_count(found: Mapping[int, Sequence[DetectedFace]], config: CurateConfig) -> Reason | None:
    """The face-count reason for these detections (shares over the frames HOG ran on), or None when two
    faces are there."""
    counts = np.array([len(f) for f in found.values()])
    if counts.size == 0:
        return Reason.NO_FACE
    if np.mean(counts >= 3) >= config.third_face_share:
        return Reason.THIRD_FACE
    if np.mean(counts >= 2) < config.min_two_face_share:
        return Reason.ONE_FACE if np.mean(counts >= 1) >= config.min_two_face_share else Reason.NO_FACE
    return None


def _pick_frames(candidates: list[int], count: int) -> list[int]:
    """`count` frames evenly spread over the candidates, the first and the last included."""
    if len(candidates) <= count:
        return candidates
    return [candidates[round(k)] for k in np.linspace(0, len(candidates) - 1, count)]


def jitter_per_frame(track: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(S,) landmark residual after a similarity fit onto the mean of the two neighbours, in face widths.

    Rigid motion (the head moving, the camera) is aligned away; what stays is landmarks jumping
    around on the face. NaN where a neighbour is missing.
    """
    out = np.full(len(track), np.nan)
    for t in range(1, len(track) - 1):
        if not (valid[t - 1] and valid[t] and valid[t + 1]):
            continue
        target = (track[t - 1] + track[t + 1]) / 2
        m, _ = cv2.estimateAffinePartial2D(track[t].astype(np.float32), target.astype(np.float32))
        if m is None:
            continue
        moved = track[t] @ m[:, :2].T + m[:, 2]
        out[t] = float(np.linalg.norm(moved - target, axis=1).mean()) / max(face_width(track[t]), 1.0)
    return out


def shot_faces(
    samples: Sequence[Sample],
    analyzer: DlibFaceAnalyzer,
    embedder: FaceEmbedder,
    config: CurateConfig,
    scale: float,
    scores: dict[str, float],
) -> ShotFaces:
    """Tracks, landmarks and identity/landmark scores of one shot, or Rejected with the face reason.

    `scores` receives each score_* as soon as it is known, so a rejected shot still reports them.
    """
    n = len(samples)
    found = count_faces(samples, config.detect_every, analyzer, config.upsample)
    checked = list(found)
    reason = check_face_count(found, config)
    if reason in (Reason.NO_FACE, Reason.ONE_FACE) and config.upsample == 0:
        # Small faces escape HOG's 80-px window: look again, upsampled, to say "too small" instead.
        found_up = count_faces(samples, config.detect_every, analyzer, 1)
        if check_face_count(found_up, config) is None:
            widths = sorted(f.width for faces in found_up.values() for f in faces)
            raise Rejected(
                Reason.FACES_TOO_SMALL,
                detail=f"faces only found upsampled, median {np.median(widths) / scale:.0f} px",
            )
    if reason is not None:
        raise Rejected(reason)

    tracked = track_faces(
        {i: [(f, np.empty(0)) for f in faces] for i, faces in found.items()}, checked, list(PERSONS)
    )
    # At the contact HOG often finds one wide box over both faces, and the tracker hands it to one
    # person: a detection much wider than its track's median is not that person's face.
    for s in PERSONS:
        median = float(np.median([found[i][f].width for i, f in tracked[s].items()]))
        tracked[s] = {
            i: f for i, f in tracked[s].items() if found[i][f].width <= MERGED_WIDTH * median
        } or tracked[s]
    detected_boxes: dict[str, dict[int, Box]] = {
        s: {i: found[i][f].box for i, f in tracked[s].items()} for s in PERSONS
    }
    boxes = boxes_per_frame(detected_boxes, {}, {}, n)
    if any(boxes[s] is None for s in PERSONS):
        raise Rejected(Reason.ONE_FACE, detail="a second face was never tracked")

    width = samples[0].frame.shape[1]
    widths = [float(np.median([b[2] - b[0] for b in detected_boxes[s].values()])) for s in PERSONS]
    face_px = min(widths) / scale
    face_frac = min(widths) / width
    scores["score_face_width"] = face_frac
    if face_px < config.min_face_px or face_frac < config.min_face_frac:
        raise Rejected(Reason.FACES_TOO_SMALL, detail=f"{face_px:.0f} px, {face_frac:.3f} of the width")

    landmarks = np.zeros((n, 2, 68, 2), dtype=np.float64)
    valid = np.zeros((n, 2), dtype=bool)
    detected = np.zeros((n, 2), dtype=bool)
    box_array = np.zeros((2, n, 4))
    for p, s in enumerate(PERSONS):
        track_boxes = boxes[s]
        assert track_boxes is not None
        box_array[p] = track_boxes
        first, last = min(tracked[s]), max(tracked[s])
        for i in range(n):
            if i in tracked[s]:
                # The analyzer predicted these on the HOG box, what the predictor was trained on.
                landmarks[i, p] = found[i][tracked[s][i]].landmarks
            else:  # an interpolated box (between detections, or a face HOG missed) is refined once
                landmarks[i, p] = predict_landmarks(samples[i].frame, track_boxes[i], refine=1)
            valid[i, p] = first <= i <= last
            detected[i, p] = i in tracked[s]

    # Identity: every pair of embedded faces of a track must be one person (a swap fails the pair across it).
    identity_min = 1.0
    sharp: list[float] = []
    # Only frames where both people were detected apart: with one face in view (the contact, where the
    # back face hides) the tracker may hand that face to the wrong track, and a face half covered by
    # the other one is not recognised as itself (dlib similarity drops to that of strangers).
    both = sorted(set(tracked["a"]) & set(tracked["b"]))
    apart = [i for i in both if _apart(found[i][tracked["a"][i]].box, found[i][tracked["b"][i]].box)]
    both = apart if len(apart) >= 2 else both
    picks = _pick_frames(both, config.embed_frames)
    faces = [
        (samples[i].frame, landmarks[i, p].astype(np.float32)) for p in range(len(PERSONS)) for i in picks
    ]
    vectors = embed_all(embedder, faces)
    for p in range(len(PERSONS)):
        track = vectors[p * len(picks) : (p + 1) * len(picks)]
        for u, v in itertools.combinations(track, 2):
            identity_min = min(identity_min, cosine_similarity(u, v))
        for i in picks:
            sharp.append(_face_sharpness(samples[i].frame, box_array[p, i]))
    scores["score_identity_min"] = identity_min
    scores["score_face_sharpness"] = float(np.median(sharp)) if sharp else 0.0
    if identity_min < config.identity_threshold:
        raise Rejected(Reason.IDENTITY_INCONSISTENT, detail=f"lowest pair similarity {identity_min:.3f}")

    jitter = np.stack([jitter_per_frame(landmarks[:, p], valid[:, p]) for p in range(2)], axis=1)
    steady = np.where(np.isnan(jitter), True, jitter <= config.max_landmark_jitter)
    usable = valid & steady
    share = float(np.mean(usable.all(axis=1)))
    jitter_median = float(np.nanmedian(jitter)) if np.isfinite(jitter).any() else 0.0
    scores["score_landmark_jitter"] = jitter_median
    scores["score_landmark_share"] = share
    result = ShotFaces(
        landmarks=landmarks,
        valid=valid,
        boxes=box_array,
        detected=detected,
        face_width_px=face_px,
        face_frac=face_frac,
        identity_min=identity_min,
        jitter=jitter_median,
        landmark_share=share,
        face_sharpness=float(np.median(sharp)) if sharp else 0.0,
    )
    if share < config.min_landmark_share:
        raise Rejected(Reason.LANDMARKS_UNSTABLE, detail=f"usable on {share:.2f} of the frames")
    return result


def embed_all(embedder: FaceEmbedder, faces: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Each (frame, 68 landmarks) face's embedding: one batch where the embedder runs batches (dlib's
    descriptor on onnxruntime: 5.5 ms a face batched, 6.6 one at a time), else one face at a time."""
    many = getattr(embedder, "embed_many", None)
    if many is not None and faces:
        return list(many(faces))
    return [embedder.embed(frame, points) for frame, points in faces]


def _apart(one: Box, other: Box) -> bool:
    """The two boxes do not overlap."""
    return one[2] <= other[0] or other[2] <= one[0] or one[3] <= other[1] or other[3] <= one[1]


def _face_sharpness(frame: np.ndarray, box: np.ndarray) -> float:
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    h, w = frame.shape[:2]
    crop = frame[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
    if crop.size == 0:
        return 0.0
    return float(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())
