"""dlib's face-recognition ResNet on onnxruntime gives dlib's descriptors (real photos: face analysis)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import dlib
import face_recognition_models
import numpy as np
import onnx
import pytest

from kiss_core.faces.analysis import DetectedFace, DlibFaceAnalyzer, dlib_shape
from kiss_core.faces.dlib_resnet import DlibDescriptor, build_onnx_model, dlib_descriptor
from kiss_core.faces.dlib_resnet_format import DlibFormatError, read_dlib_network
from kiss_core.faces.synthetic import source_faces, synthetic_subject
from kiss_core.settings import FaceSettings

MODEL = Path(face_recognition_models.face_recognition_model_location())


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer(FaceSettings())


@pytest.fixture(scope="module")
def faces(analyzer: DlibFaceAnalyzer) -> list[tuple[np.ndarray, DetectedFace]]:
    """The seven real faces (six in t1.jpg, the astronaut) and two synthetic subjects."""
    found = list(source_faces())
    for index in (0, 1):
        image = synthetic_subject(index)
        found.append((image, analyzer.detect(image)[0]))
    return found


def test_the_reader_finds_dlibs_architecture_in_the_file() -> None:
    network = read_dlib_network(MODEL)
    kinds = Counter(layer.kind for layer in network.layers)
    # 29 convolutions (the stem + 2 in each of 14 residual blocks), each followed by an affine layer.
    assert kinds == {
        "con": 29,
        "affine": 29,
        "relu": 29,
        "add_prev": 14,
        "tag": 18,  # tag1 in each block, tag2 in the 4 down blocks
        "skip": 4,
        "avg_pool": 5,  # 4 on the down blocks' shortcut + avg_pool_everything
        "max_pool": 1,
        "fc": 1,
    }
    np.testing.assert_allclose(network.mean_rgb, (122.782, 117.001, 104.298), atol=1e-4)
    assert network.layers[0].arrays["weight"].shape == (32, 3, 7, 7)
    assert network.layers[-1].arrays["weight"].shape == (256, 128)  # dlib's (in, out), as MatMul takes it
    weights = sum(a.size for layer in network.layers for a in layer.arrays.values())
    assert 5_500_000 < weights < 5_700_000  # the 22 MB file is almost all float32 weights


def test_a_file_that_is_not_the_network_is_refused(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(MODEL.read_bytes()[:100_000])
    with pytest.raises(DlibFormatError, match=r"truncated\.dat"):
        read_dlib_network(truncated)
    other_network = Path(face_recognition_models.cnn_face_detector_model_location())  # dlib's MMOD detector
    with pytest.raises(DlibFormatError, match="expected loss_metric_2"):
        read_dlib_network(other_network)


def test_the_onnx_graph_holds_dlibs_layers_with_each_affine_folded_into_its_convolution() -> None:
    model = build_onnx_model(read_dlib_network(MODEL))
    onnx.checker.check_model(model, full_check=True)  # types and shapes inferred through every node
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["Conv"] == 29 and ops["Mul"] == 0  # every affine layer sits on a convolution
    # Down blocks: 32->64 and 64->128 pad the shortcut's channels, 128->256 those and the 3x3 conv to 4x4,
    # the last the 1x1 conv to 2x2.
    assert ops["Add"] == 14 and ops["Pad"] == 5
    assert (ops["Relu"], ops["MaxPool"], ops["AveragePool"], ops["GlobalAveragePool"]) == (29, 1, 4, 1)
    assert ops["MatMul"] == 1


def test_get_face_chip_is_the_chip_compute_face_descriptor_cuts(
    faces: list[tuple[np.ndarray, DetectedFace]],
) -> None:
    encoder = dlib.face_recognition_model_v1(str(MODEL))
    for image, face in faces[:3]:
        shape = dlib_shape(face.landmarks)
        chip = dlib.get_face_chip(image, shape, size=150, padding=0.25)
        from_photo = np.asarray(encoder.compute_face_descriptor(image, shape))
        from_chip = np.asarray(encoder.compute_face_descriptor(chip))  # the aligned-image overload
        np.testing.assert_array_equal(from_photo, from_chip)


def test_onnxruntime_descriptor_equals_dlibs_on_real_and_synthetic_faces(
    analyzer: DlibFaceAnalyzer, faces: list[tuple[np.ndarray, DetectedFace]]
) -> None:
    encoder = dlib.face_recognition_model_v1(str(MODEL))
    worst_abs, worst_cos = 0.0, 1.0
    for image, face in faces:
        reference = np.asarray(encoder.compute_face_descriptor(image, dlib_shape(face.landmarks)), np.float32)
        reference /= np.linalg.norm(reference)
        ours = analyzer.embed(image, face.landmarks)
        worst_abs = max(worst_abs, float(np.abs(ours - reference).max()))
        worst_cos = min(worst_cos, float(ours @ reference))
    print(f"{len(faces)} faces: max abs difference {worst_abs:.2e}, min cosine {worst_cos:.8f}")
    assert worst_abs < 1e-5
    assert worst_cos > 1 - 1e-6


def test_one_batch_gives_what_one_call_per_face_gives(
    analyzer: DlibFaceAnalyzer, faces: list[tuple[np.ndarray, DetectedFace]]
) -> None:
    pairs = [(image, face.landmarks) for image, face in faces[:5]]
    batch = analyzer.embed_many(pairs)
    assert batch.shape == (5, 128)
    single = np.stack([analyzer.embed(image, landmarks) for image, landmarks in pairs])
    np.testing.assert_allclose(batch, single, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-6)
    assert analyzer.embed_many([]).shape == (0, 128)


def test_threads_embedding_at_once_get_the_same_descriptors(
    analyzer: DlibFaceAnalyzer, faces: list[tuple[np.ndarray, DetectedFace]]
) -> None:
    image, face = faces[0]
    expected = analyzer.embed(image, face.landmarks)
    results: list[np.ndarray] = []

    def work() -> None:
        for _ in range(2):
            results.append(analyzer.embed(image, face.landmarks))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6
    for result in results:
        np.testing.assert_allclose(result, expected, atol=1e-6)


def test_the_network_is_loaded_once_per_process() -> None:
    assert dlib_descriptor() is dlib_descriptor(MODEL)


def test_chips_of_the_wrong_shape_are_refused() -> None:
    descriptor: DlibDescriptor = dlib_descriptor()
    with pytest.raises(ValueError, match=r"`chips` have to be uint8 \(N, 150, 150, 3\) but are uint8"):
        descriptor(np.zeros((1, 112, 112, 3), np.uint8))
    assert descriptor(np.zeros((150, 150, 3), np.uint8)).shape == (1, 128)


def test_the_session_computes_on_the_callers_thread_alone() -> None:
    options = dlib_descriptor().session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert dlib_descriptor().session.get_providers() == ["CPUExecutionProvider"]


def test_embedding_does_not_import_torch() -> None:
    """The replicas that embed load onnxruntime already; torch would add ~180 MiB and seconds to a start."""
    script = (
        "import sys\n"
        "from kiss_core.faces.analysis import DlibFaceAnalyzer\n"
        "from kiss_core.faces.synthetic import synthetic_subject\n"
        "analyzer = DlibFaceAnalyzer()\n"
        "image = synthetic_subject(0)\n"
        "assert analyzer.embed(image, analyzer.detect(image)[0].landmarks).shape == (128,)\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'torch'))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
