"""ArcFace embeddings from a mounted model pack: loading, alignment and wiring, with tiny random weights.

Random weights make identity semantics meaningless, so these check the mechanics: which file is
loaded, the errors at start, the 112x112 alignment on real faces (photos shipped in the insightface and
scikit-image wheels; analysis only), colour order and normalisation, and that the identity encoder and
the quality report use the same embedder and threshold. Kisses are rendered only of synthetic subjects.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
from insightface.utils.face_align import arcface_dst, estimate_norm

from kiss_core.errors import GenerationError, ModelDirectoryError
from kiss_core.faces.analysis import DlibFaceAnalyzer
from kiss_core.faces.arcface import ArcFaceEmbedder, execution_providers, find_recognition_model, five_points
from kiss_core.faces.embedding import cosine_similarity, identity_model, normalize
from kiss_core.generation.conditioning import IdentityEncoder
from kiss_core.generation.quality import detector_box, identity_report, predict_landmarks
from kiss_core.media.geometry import apply_affine, eye_centers
from kiss_core.schemas import SubjectAnalysis, VideoParams
from kiss_core.settings import FaceSettings, Settings
from tests.support.photos import astronaut_rgb, t1_rgb
from tests.support.studio import SyntheticStudio
from tests.support.tiny_arcface import DECOY_FILE, RECOGNITION_FILE, tiny_arcface_model, write_pack


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pack(tmp_path_factory.mktemp("models") / "buffalo_l")


@pytest.fixture(scope="module")
def embedder(pack: Path) -> ArcFaceEmbedder:
    return ArcFaceEmbedder(pack)


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer(FaceSettings())


@pytest.fixture(scope="module")
def astronaut(analyzer: DlibFaceAnalyzer) -> tuple[np.ndarray, SubjectAnalysis]:
    photo = astronaut_rgb()
    return photo, analyzer.analyze(photo, "a")


def _landmarks(analysis: SubjectAnalysis) -> np.ndarray:
    return np.asarray(analysis.landmarks, dtype=np.float32)


# --- loading -------------------------------------------------------------------------------------


def test_the_recognition_model_is_picked_from_the_pack(pack: Path, embedder: ArcFaceEmbedder) -> None:
    assert sorted(p.name for p in pack.iterdir()) == [DECOY_FILE, RECOGNITION_FILE]
    assert find_recognition_model(pack) == pack / RECOGNITION_FILE
    assert embedder.model_file == pack / RECOGNITION_FILE
    assert embedder.dimension == 512 and "ArcFace 512-D" in embedder.description
    assert embedder.providers == execution_providers()  # CPU here; no GPU in the unit tests


def test_cuda_is_preferred_when_onnxruntime_offers_it() -> None:
    assert execution_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert execution_providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def _corrupt(root: Path) -> None:
    write_pack(root)
    data = (root / RECOGNITION_FILE).read_bytes()
    (root / RECOGNITION_FILE).write_bytes(data[: len(data) // 3])  # a truncated copy


def _two_models(root: Path) -> None:
    write_pack(root)
    (root / "glintr100.onnx").write_bytes((root / RECOGNITION_FILE).read_bytes())


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda root: None, "is not a directory"),
        (lambda root: root.mkdir(), "no recognition model .* found no .onnx files"),
        (
            lambda root: (write_pack(root), (root / RECOGNITION_FILE).unlink()),
            r"no recognition model .* found det_10g.onnx \(Nonex3x64x64\)",
        ),
        (_corrupt, f"{RECOGNITION_FILE} is not a loadable ONNX model"),
        (_two_models, "more than one recognition model"),
    ],
    ids=["missing", "empty", "only-a-detector", "truncated", "two-recognition-models"],
)
def test_a_bad_pack_stops_the_start_with_a_clear_error(tmp_path: Path, prepare, message: str) -> None:
    root = tmp_path / "buffalo_l"
    prepare(root)
    for start in (lambda: ArcFaceEmbedder(root), lambda: IdentityEncoder(FaceSettings(arcface_pack=root))):
        with pytest.raises(ModelDirectoryError, match=message) as caught:
            start()
        assert str(caught.value).startswith(f"model directory {root}: ")
        assert not caught.value.recoverable


def test_a_model_onnxruntime_cannot_run_is_refused(tmp_path: Path) -> None:
    model = tiny_arcface_model()
    model.graph.node[3].op_type = "NoSuchOperator"  # parses as ONNX, has the input, cannot run
    root = tmp_path / "pack"
    root.mkdir()
    (root / RECOGNITION_FILE).write_bytes(model.SerializeToString())
    with pytest.raises(ModelDirectoryError, match=f"{RECOGNITION_FILE} cannot be run by onnxruntime"):
        ArcFaceEmbedder(root)


# --- alignment -----------------------------------------------------------------------------------


def test_five_points_are_insightfaces_keypoints_in_image_order(astronaut) -> None:
    _, analysis = astronaut
    landmarks = _landmarks(analysis)
    points = five_points(landmarks)
    assert points.shape == (5, 2) and points.dtype == np.float32
    left_eye, right_eye, nose, mouth_left, mouth_right = points
    assert np.allclose([left_eye, right_eye], eye_centers(landmarks), atol=1e-4)
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < nose[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        five_points(landmarks[:5])


@pytest.mark.parametrize("roll", [0, 25, -20])
def test_the_crop_puts_the_eyes_on_arcfaces_template(
    embedder: ArcFaceEmbedder, analyzer: DlibFaceAnalyzer, roll: int
) -> None:
    """The eyes found again in the 112x112 crop (dlib's predictor on its pixels) sit where ArcFace expects."""
    photo = astronaut_rgb()
    height, width = photo.shape[:2]
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), roll, 1.0)
    photo = cv2.warpAffine(photo, turn, (width, height), borderMode=cv2.BORDER_REPLICATE)
    landmarks = _landmarks(analyzer.analyze(photo, "a"))
    crop = embedder.align(photo, landmarks)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    to_crop = estimate_norm(five_points(landmarks), 112)
    again = predict_landmarks(crop, detector_box(apply_affine(to_crop, landmarks)))
    left, right = eye_centers(again)
    assert np.linalg.norm(left - arcface_dst[0]) < 4.0 and np.linalg.norm(right - arcface_dst[1]) < 4.0
    assert abs(left[1] - right[1]) < 2.0  # level whatever the head's roll in the photo
    assert np.all(np.abs(apply_affine(to_crop, five_points(landmarks)) - arcface_dst) < 6.0)


# --- embeddings ----------------------------------------------------------------------------------


def test_embeddings_are_unit_length_and_deterministic(
    embedder: ArcFaceEmbedder, pack: Path, astronaut
) -> None:
    photo, analysis = astronaut
    first = embedder.embed(photo, _landmarks(analysis))
    assert first.shape == (512,) and first.dtype == np.float32
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(first, embedder.embed(photo, _landmarks(analysis)))
    assert np.allclose(first, ArcFaceEmbedder(pack).embed(photo, _landmarks(analysis)), atol=1e-6)
    assert cosine_similarity(first, first) == pytest.approx(1.0)


def test_the_network_sees_the_rgb_crop_normalised_like_w600k(embedder: ArcFaceEmbedder, astronaut) -> None:
    """insightface takes BGR and swaps it back: the model must get RGB, (x - 127.5) / 127.5."""
    photo, analysis = astronaut
    crop = embedder.align(photo, _landmarks(analysis))
    blob = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
    session = embedder._model.session
    expected = session.run(None, {"input.1": blob})[0][0]
    assert np.allclose(embedder.embed(photo, _landmarks(analysis)), normalize(expected), atol=1e-5)
    swapped = session.run(None, {"input.1": np.ascontiguousarray(blob[:, ::-1])})[0][0]
    assert not np.allclose(normalize(swapped), normalize(expected), atol=1e-3)


def test_mirrored_and_resized_photos_embed_alike(
    embedder: ArcFaceEmbedder, analyzer: DlibFaceAnalyzer, astronaut
) -> None:
    photo, analysis = astronaut
    reference = embedder.embed(photo, _landmarks(analysis))
    mirrored = np.ascontiguousarray(photo[:, ::-1])
    resized = cv2.resize(photo, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    for copy in (mirrored, resized):
        vector = embedder.embed(copy, _landmarks(analyzer.analyze(copy, "a")))
        assert vector.shape == reference.shape and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
        assert -1.0 <= cosine_similarity(vector, reference) <= 1.0


def test_different_people_get_different_embeddings(
    embedder: ArcFaceEmbedder, analyzer: DlibFaceAnalyzer, astronaut
) -> None:
    photo = t1_rgb()
    faces = analyzer.detect(photo)
    assert len(faces) == 6
    vectors = [embedder.embed(photo, face.landmarks) for face in faces]
    vectors.append(embedder.embed(astronaut[0], _landmarks(astronaut[1])))
    for a, b in itertools.combinations(vectors, 2):
        assert cosine_similarity(a, b) < 0.99


# --- wiring --------------------------------------------------------------------------------------


def test_the_identity_encoder_uses_arcface_when_a_pack_is_mounted(
    pack: Path, embedder: ArcFaceEmbedder, astronaut
) -> None:
    photo, analysis = astronaut
    photos, analyses = {"a": photo}, {"a": analysis}
    encoder = IdentityEncoder(FaceSettings(arcface_pack=pack))
    arcface = encoder.encode(photos, analyses).subjects["a"].embedding
    assert arcface.shape == (embedder.dimension,)
    assert np.allclose(arcface, embedder.embed(photo, _landmarks(analysis)), atol=1e-6)
    assert encoder.same_person(arcface, arcface) and encoder.identity.threshold == 0.4

    dlib = IdentityEncoder(FaceSettings()).encode(photos, analyses).subjects["a"].embedding
    assert dlib.shape == (128,) and np.allclose(dlib, normalize(np.asarray(analysis.embedding)))


def test_identity_model_follows_the_settings(pack: Path) -> None:
    dlib = identity_model(FaceSettings())
    assert dlib.embedder is None and dlib.threshold == FaceSettings().same_person_threshold == 0.92
    arcface = identity_model(FaceSettings(arcface_pack=pack, arcface_same_person_threshold=0.35))
    assert isinstance(arcface.embedder, ArcFaceEmbedder) and arcface.threshold == 0.35


def test_identity_report_with_arcface_finds_the_person(
    embedder: ArcFaceEmbedder, analyzer: DlibFaceAnalyzer, astronaut
) -> None:
    photo, analysis = astronaut
    centre = np.array([[(analysis.box[0] + analysis.box[2]) / 2, (analysis.box[1] + analysis.box[3]) / 2]])
    reference = {"a": embedder.embed(photo, _landmarks(analysis))}
    report = identity_report([photo], {"a": centre}, reference, analyzer, 0.4, embedder=embedder)
    (subject,) = report.subjects
    assert subject.frames_found == 1 and subject.similarity_min is not None
    assert subject.similarity_min > 0.99 and subject.similarity_min >= report.threshold == 0.4
    assert report.similarity == embedder.description

    dlib_reference = {"a": np.asarray(analysis.embedding)}
    default = identity_report([photo], {"a": centre}, dlib_reference, analyzer, 0.92)
    assert default.similarity == "cosine of dlib 128-D descriptors"
    assert default.subjects[0].similarity_min == pytest.approx(1.0, abs=1e-4)


def test_a_preview_job_is_checked_with_arcface_end_to_end(pack: Path, tmp_path: Path) -> None:
    """Synthetic subjects: the IdentityEncoder and the producer's report share embedder and threshold."""
    settings = Settings(faces={"arcface_pack": pack})
    studio = SyntheticStudio(settings, str(tmp_path))
    pair = studio.pair(0, 1)
    assert {c.embedding.shape for c in pair.conditioning.subjects.values()} == {(512,)}
    report = studio.produce(pair, VideoParams(style="peck", seconds=1, fps=12)).quality
    assert report.similarity.startswith("cosine of ArcFace 512-D") and report.threshold == 0.4
    for subject in report.subjects:
        assert subject.frames_found > 0 and subject.similarity_min is not None
        assert -1.0 <= subject.similarity_min <= subject.similarity_mean <= 1.0  # type: ignore[operator]


def test_a_generator_configured_unlike_the_encoder_fails_before_rendering(pack: Path, tmp_path: Path) -> None:
    """ArcFace on the encoder, dlib on the generator: refused up front, not after the render."""
    arcface = SyntheticStudio(Settings(faces={"arcface_pack": pack}), str(tmp_path))
    dlib = SyntheticStudio(Settings(), str(tmp_path))
    with pytest.raises(GenerationError, match="512 values but this stage measures identity with 128"):
        dlib.produce(arcface.pair(0, 1), VideoParams(style="peck", seconds=1, fps=12))
    with pytest.raises(GenerationError, match=r"same `faces\.arcface_pack`"):
        arcface.produce(dlib.pair(0, 1), VideoParams(style="peck", seconds=1, fps=12))
