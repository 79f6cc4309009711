"""Synthetic subjects: landmark-aligned composites of several real faces, "a face of nobody".

Everything this project *generates* in tests, benchmarks and demos uses these, never a real person.
Each subject averages three source faces (from the photos shipped in the insightface and
scikit-image wheels) after warping each one onto their mean landmark shape, so the detector finds
a plausible face whose dlib descriptor is far from every source face.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from kiss_core.faces.analysis import DetectedFace, DlibFaceAnalyzer, largest_face
from kiss_core.media.geometry import apply_affine, eye_centers, similarity_from_points
from kiss_core.media.images import encode_png
from kiss_core.settings import FaceSettings

# (package, path inside it). Located with find_spec so neither package is imported.
_SOURCE_FILES: dict[str, tuple[str, str]] = {
    "t1": ("insightface", "data/images/t1.jpg"),
    "astronaut": ("skimage", "data/astronaut.png"),
}


@dataclass(frozen=True)
class Morph:
    """Relative changes of the mean shape's proportions (0 = unchanged; 0.1 = 10% of that measure)."""

    face_width: float = 0.0
    eye_spacing: float = 0.0
    nose_length: float = 0.0  # in eye distances, downwards
    mouth_width: float = 0.0
    chin_length: float = 0.0  # in eye distances, downwards


@dataclass(frozen=True)
class Recipe:
    """Which source faces a subject averages and how its proportions are changed."""

    sources: tuple[int, int, int]
    morph: Morph
    background: tuple[int, int, int]


# iBUG-68 index of each landmark's mirror image (jaw, brows, nose, eyes and mouth swap sides).
MIRROR_68 = np.array(
    [
        *range(16, -1, -1),  # jaw
        *range(26, 16, -1),  # brows
        *(27, 28, 29, 30, 35, 34, 33, 32, 31),  # nose
        *(45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40),  # eyes
        *(54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65),  # mouth
    ]
)

# Source faces are numbered 0..5 for t1.jpg from left to right, 6 for the astronaut. The recipes were
# chosen by measuring every triple with a few morphs (mirrored composites): each subject's descriptor
# is below 0.91 cosine to every source face and to the other subjects, under the 0.92 threshold
# (tests/unit/test_synthetic.py checks both).
RECIPES: tuple[Recipe, ...] = (
    Recipe((1, 2, 4), Morph(-0.08, -0.08, 0.10, -0.10, 0.15), (150, 160, 170)),
    Recipe((1, 3, 6), Morph(nose_length=0.12), (170, 160, 145)),
    Recipe((2, 3, 5), Morph(0.08, 0.10, -0.10, 0.10, -0.15), (145, 165, 150)),
    Recipe((4, 5, 6), Morph(nose_length=-0.12), (165, 150, 165)),
)
SUBJECT_COUNT = len(RECIPES)


def source_photos() -> dict[str, Path]:
    """Paths of the real photos the composites are made from, inside the installed wheels."""
    paths = {}
    for name, (package, relative) in _SOURCE_FILES.items():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"package {package!r} is not installed; it ships {relative}, a source photo of the synthetic "
                "subjects (pip install 'kissgen[dev]')"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / relative
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the installed {package!r} package")
        paths[name] = path
    return paths


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image.convert("RGB"), dtype=np.uint8)


@functools.lru_cache(maxsize=1)
def _analyzer() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer(FaceSettings())


@functools.lru_cache(maxsize=1)
def source_faces() -> tuple[tuple[np.ndarray, DetectedFace], ...]:
    """(photo, face) for each source face, in the fixed order the triples refer to."""
    photos = {name: load_rgb(path) for name, path in source_photos().items()}
    analyzer = _analyzer()
    t1_faces = sorted(analyzer.detect(photos["t1"]), key=lambda f: f.box[0])
    if len(t1_faces) != 6:
        raise RuntimeError(f"expected 6 faces in t1.jpg but the detector found {len(t1_faces)}")
    astronaut = largest_face(analyzer.detect(photos["astronaut"]))
    return (*((photos["t1"], f) for f in t1_faces), (photos["astronaut"], astronaut))


def _extra_points(shape: np.ndarray) -> np.ndarray:
    """Forehead, hairline and side-of-head points, extrapolated from the face's own geometry."""
    brow_top = shape[17:27, 1].min()
    height = shape[8, 1] - brow_top
    width = shape[16, 0] - shape[0, 0]
    centre_x = (shape[0, 0] + shape[16, 0]) / 2
    forehead = shape[[17, 19, 21, 22, 24, 26]] - [0.0, 0.3 * height]
    hair = np.array(
        [
            (shape[0, 0] - 0.08 * width, shape[0, 1] - 0.35 * height),
            (centre_x - 0.35 * width, brow_top - 0.6 * height),
            (centre_x, brow_top - 0.7 * height),
            (centre_x + 0.35 * width, brow_top - 0.6 * height),
            (shape[16, 0] + 0.08 * width, shape[16, 1] - 0.35 * height),
            (shape[4, 0] - 0.12 * width, shape[4, 1]),
            (shape[12, 0] + 0.12 * width, shape[12, 1]),
            (shape[8, 0], shape[8, 1] + 0.25 * height),
        ]
    )
    return np.vstack([forehead, hair])


def _border_points(width: int, height: int) -> np.ndarray:
    xs, ys = (0.0, (width - 1) / 2, width - 1.0), (0.0, (height - 1) / 2, height - 1.0)
    return np.array([(x, y) for x in xs for y in ys if not (x == xs[1] and y == ys[1])])


def _triangulate(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Delaunay triangles (indices into `points`), via OpenCV's Subdiv2D."""
    subdiv = cv2.Subdiv2D((-1, -1, width + 2, height + 2))
    clipped = np.clip(points, [0, 0], [width - 1, height - 1])
    for x, y in clipped:
        subdiv.insert((float(x), float(y)))
    triangles = []
    for tri in np.asarray(subdiv.getTriangleList()).reshape(-1, 3, 2):
        distances = np.linalg.norm(clipped[None, :, :] - tri[:, None, :], axis=2)
        index = distances.argmin(axis=1)
        if distances[np.arange(3), index].max() < 0.5 and len(set(index)) == 3:
            triangles.append(index)
    return np.array(triangles, dtype=np.int32)


def _piecewise_affine_maps(
    dst_points: np.ndarray, src_points: np.ndarray, triangles: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps that move each destination triangle's pixels from the matching source triangle."""
    label = np.full((height, width), -1, dtype=np.int32)
    inverse = np.zeros((len(triangles), 2, 3), dtype=np.float64)
    for t, tri in enumerate(triangles):
        inverse[t] = cv2.getAffineTransform(
            dst_points[tri].astype(np.float32), src_points[tri].astype(np.float32)
        )
        cv2.fillConvexPoly(label, np.round(dst_points[tri]).astype(np.int32), t)
    # Pixels a rounding gap left unlabelled take their nearest labelled neighbour's triangle.
    if (label < 0).any():
        grown = cv2.dilate((label + 1).astype(np.float32), np.ones((3, 3), np.uint8))
        label = np.where(label < 0, grown.astype(np.int32) - 1, label)
        label[label < 0] = 0
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    a = inverse[label]
    map_x = a[..., 0, 0] * xs + a[..., 0, 1] * ys + a[..., 0, 2]
    map_y = a[..., 1, 0] * xs + a[..., 1, 1] * ys + a[..., 1, 2]
    return map_x.astype(np.float32), map_y.astype(np.float32)


def _head_mask(shape: np.ndarray, width: int, height: int) -> np.ndarray:
    """A feathered ellipse over face, hair and chin of the mean shape: what is kept of the average."""
    brow_top = shape[17:27, 1].min()
    face_height = shape[8, 1] - brow_top
    face_width = shape[16, 0] - shape[0, 0]
    top, bottom = brow_top - 0.65 * face_height, shape[8, 1] + 0.08 * face_height
    centre = ((shape[0, 0] + shape[16, 0]) / 2, (top + bottom) / 2)
    axes = (0.62 * face_width, (bottom - top) / 2)
    mask = np.zeros((height, width), dtype=np.float32)
    cv2.ellipse(
        mask, (round(centre[0]), round(centre[1])), (round(axes[0]), round(axes[1])), 0, 0, 360, 1.0, -1
    )
    return _soft_blur(mask, 0.06 * face_width)[:, :, None]


def _soft_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """A wide Gaussian blur done at 1/4 resolution (a full-size wide kernel costs ~0.2 s)."""
    height, width = image.shape[:2]
    small = cv2.resize(image, (max(1, width // 4), max(1, height // 4)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=max(sigma / 4, 0.5))
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float64)


def morph_shape(shape: np.ndarray, morph: Morph) -> np.ndarray:
    """Change the proportions identity depends on, moving the composite further from its sources."""
    face_width, eye_spacing, nose_length, mouth, chin = (
        morph.face_width,
        morph.eye_spacing,
        morph.nose_length,
        morph.mouth_width,
        morph.chin_length,
    )
    out = np.array(shape, dtype=np.float64)
    left, right = eye_centers(out)
    centre_x = (left[0] + right[0]) / 2
    iod = right[0] - left[0]
    jaw = slice(0, 17)
    out[jaw, 0] = centre_x + (out[jaw, 0] - centre_x) * (1 + face_width)
    for eye in (slice(36, 42), slice(42, 48)):
        shift = (out[eye, 0].mean() - centre_x) * eye_spacing
        out[eye, 0] += shift
    out[31:36, 1] += nose_length * iod
    out[30, 1] += nose_length * iod
    out[29, 1] += 0.5 * nose_length * iod
    mouth_centre = out[48:68].mean(axis=0)
    out[48:68, 0] = mouth_centre[0] + (out[48:68, 0] - mouth_centre[0]) * (1 + mouth)
    out[48:68, 1] += 0.5 * nose_length * iod
    out[5:12, 1] += chin * iod * np.array([0.3, 0.6, 0.9, 1.0, 0.9, 0.6, 0.3])
    out[48:68, 1] += 0.3 * chin * iod
    return out


def mirror_face(photo: np.ndarray, face: DetectedFace) -> tuple[np.ndarray, DetectedFace]:
    """The photo flipped left-right, with the face's box and landmarks (renumbered) to match."""
    width = photo.shape[1]
    landmarks = face.landmarks.copy()
    landmarks[:, 0] = width - 1 - landmarks[:, 0]  # pixel i lands on pixel width-1-i
    x0, y0, x1, y1 = face.box
    flipped = DetectedFace(
        box=(width - x1, y0, width - x0, y1), landmarks=landmarks[MIRROR_68], score=face.score
    )
    return np.ascontiguousarray(photo[:, ::-1]), flipped


def composite(
    faces: list[tuple[np.ndarray, DetectedFace]],
    size: tuple[int, int] = (480, 600),
    background: tuple[int, int, int] = (150, 160, 170),
    morph: Morph | None = None,
    symmetric: bool = True,
) -> np.ndarray:
    """Warp every face onto the mean landmark shape and average them, over a soft neutral background.

    `size` is (width, height); the face is centred with its box about 40% of the width. With
    `symmetric`, each face is also used mirrored: the mean shape becomes frontal and the texture
    symmetric, which also moves the result further from every source.
    """
    if symmetric:
        faces = [*faces, *(mirror_face(photo, face) for photo, face in faces)]
    width, height = size
    interocular = 0.4 * width / 2.5  # dlib's box is ~2.5 eye distances wide on these composites
    eye_y = height / 2 - 0.45 * interocular
    targets = (np.array([width / 2 - interocular / 2, eye_y]), np.array([width / 2 + interocular / 2, eye_y]))

    to_canvas = [similarity_from_points(eye_centers(face.landmarks), targets) for _, face in faces]
    shapes = [apply_affine(m, face.landmarks) for m, (_, face) in zip(to_canvas, faces, strict=True)]
    mean_shape = np.mean(shapes, axis=0)
    if morph is not None:
        mean_shape = morph_shape(mean_shape, morph)
    border = _border_points(width, height)
    dst = np.vstack([mean_shape, _extra_points(mean_shape), border])
    triangles = _triangulate(dst, width, height)

    total = np.zeros((height, width, 3), dtype=np.float64)
    for (photo, _), m, shape in zip(faces, to_canvas, shapes, strict=True):
        src_canvas = np.vstack([shape, _extra_points(shape), border])
        map_x, map_y = _piecewise_affine_maps(dst, src_canvas, triangles, width, height)
        # The maps point into the canvas frame of this source; take them back into its photo.
        back = cv2.invertAffineTransform(m)
        photo_x = back[0, 0] * map_x + back[0, 1] * map_y + back[0, 2]
        photo_y = back[1, 0] * map_x + back[1, 1] * map_y + back[1, 2]
        total += cv2.remap(
            photo,
            photo_x.astype(np.float32),
            photo_y.astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT101,
        )
    average = total / len(faces)

    face_width = mean_shape[16, 0] - mean_shape[0, 0]
    blurred = _soft_blur(average.astype(np.float32), 0.3 * face_width)
    backdrop = 0.5 * blurred + 0.5 * np.array(background, dtype=np.float64)
    mask = _head_mask(mean_shape, width, height)
    out = mask * average + (1 - mask) * backdrop
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=16)
def _subject(index: int, size: tuple[int, int]) -> np.ndarray:
    faces = source_faces()
    recipe = RECIPES[index]
    image = composite([faces[i] for i in recipe.sources], size, recipe.background, recipe.morph)
    image.setflags(write=False)
    return image


def synthetic_subject(index: int, size: tuple[int, int] = (480, 600)) -> np.ndarray:
    """Portrait (height, width, 3) of synthetic subject `index` (0..3): deterministic, nobody real.

    `size` is (width, height). Returns a fresh writable copy.
    """
    if not 0 <= index < SUBJECT_COUNT:
        raise ValueError(f"`index` has to be in 0..{SUBJECT_COUNT - 1} but is {index}")
    return _subject(index, (int(size[0]), int(size[1]))).copy()


def synthetic_subject_png(index: int, size: tuple[int, int] = (480, 600)) -> bytes:
    """The synthetic subject as PNG bytes, ready to upload as a subject's photo."""
    return encode_png(synthetic_subject(index, size))
