"""Curation's per-clip pieces without Ray and without the corpus: fast checks on real inputs."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from kiss_core.curation import manifest
from kiss_core.curation.config import CurateConfig
from kiss_core.curation.decode import Sample, decode_sampled, iter_frames, probe
from kiss_core.curation.export import _fill_between, _frames_at
from kiss_core.curation.faces import count_faces, detection_frames
from kiss_core.curation.kiss import caption_for, mouth_distances, odd_frames
from kiss_core.curation.quality import blockiness, detail_sharpness, exposure
from kiss_core.curation.reasons import DESCRIPTIONS, Reason, Rejected
from kiss_core.curation.sidecar import check_sidecar, parse_sidecar, sidecar_name
from kiss_core.curation.sources import Entry, Location, list_local, open_local, read_local_sidecar
from kiss_core.faces.analysis import DlibFaceAnalyzer
from kiss_core.media.video import decode_mp4, encode_jpeg, encode_mp4
from kiss_core.safety.prompt import STYLE_PROMPTS

VIDEO = (".mp4", ".mov", ".webm", ".mkv")
GOOD = {"licence": "CC-BY-4.0", "consent_refs": ["c/1", "c/2"], "origin": "https://example.org/1"}


def reasons_of(exc: pytest.ExceptionInfo[Rejected]) -> list[str]:
    return [str(r) for r in exc.value.reasons]


def test_every_reason_is_described() -> None:
    assert set(DESCRIPTIONS) == set(Reason)


@pytest.mark.parametrize(
    ("data", "reasons"),
    [
        (None, ["no_sidecar"]),
        (b"\xff\xfe not utf-8", ["bad_sidecar"]),
        (b"[1, 2]", ["bad_sidecar"]),
        (json.dumps({**GOOD, "consent_refs": "c/1"}).encode(), ["bad_sidecar"]),
        (json.dumps({**GOOD, "licence": "All-Rights-Reserved"}).encode(), ["licence_not_allowed"]),
        (json.dumps({**GOOD, "consent_refs": ["c/1", " "]}).encode(), ["consent_missing"]),
        (
            json.dumps({"consent_refs": []}).encode(),
            ["licence_not_allowed", "consent_missing", "origin_missing"],
        ),
    ],
)
def test_sidecar_refusals_name_every_reason(data: bytes | None, reasons: list[str]) -> None:
    with pytest.raises(Rejected) as exc:
        _, sidecar = parse_sidecar(data)
        assert sidecar is not None
        check_sidecar(sidecar, CurateConfig())
    assert reasons_of(exc) == reasons


def test_a_good_sidecar_passes_and_source_id_is_an_origin() -> None:
    raw, sidecar = parse_sidecar(json.dumps({**GOOD, "origin": None, "source_id": "vendor/17"}).encode())
    assert sidecar is not None and sidecar.origin == "vendor/17" and raw["licence"] == "CC-BY-4.0"
    check_sidecar(sidecar, CurateConfig())
    assert sidecar_name("dir/clip.final.mp4") == "dir/clip.final.json"


def test_config_rejects_frame_counts_that_are_not_4k_plus_1(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 4 plus 1"):
        CurateConfig(max_frames=80)
    path = tmp_path / "curate.yaml"
    path.write_text("sample_fps: 2\nlicences: [CC0-1.0]\n")
    config = CurateConfig.from_yaml(path)
    assert config.sample_fps == 2 and config.licences == ("CC0-1.0",)
    path.write_text("sample_fsp: 2\n")
    with pytest.raises(ValueError, match="sample_fsp"):
        CurateConfig.from_yaml(path)
    assert all(field.description for field in CurateConfig.model_fields.values())


def test_config_refuses_odd_output_sides_and_unknown_presets() -> None:
    with pytest.raises(ValueError, match="`out_short_side` has to be even"):
        CurateConfig(out_short_side=481)
    with pytest.raises(ValueError, match="preset"):
        CurateConfig(preset="warp")  # type: ignore[arg-type]


def test_hog_runs_on_every_nth_sampled_frame_and_the_last() -> None:
    assert detection_frames(20, 2) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 19]
    assert detection_frames(5, 2) == [0, 2, 4]
    assert detection_frames(4, 1) == [0, 1, 2, 3]
    assert detection_frames(1, 3) == [0] and detection_frames(0, 2) == []


class _CountingAnalyzer:
    """Stands in for the dlib analyzer: frame i shows `faces[i]` faces; records the frames HOG ran on."""

    def __init__(self, faces: list[int]) -> None:
        self.faces, self.ran = faces, []

    def detect(self, image: np.ndarray, upsample: int | None = None) -> list[int]:
        index = int(image[0, 0, 0])
        self.ran.append(index)
        return [0] * self.faces[index]

    def detect_many(self, images: list[np.ndarray], upsample: int | None = None) -> list[list[int]]:
        return [self.detect(image, upsample) for image in images]


def test_hog_also_runs_where_the_face_count_changes_between_two_checked_frames() -> None:
    # Two faces, the back one lost during the contact (samples 7..13), a third face once on sample 17.
    faces = [2] * 7 + [1] * 7 + [2] * 3 + [3] + [2] * 2
    samples = [Sample(i, i / 4, np.full((2, 2, 3), i, np.uint8), 0.0) for i in range(len(faces))]
    analyzer = _CountingAnalyzer(faces)
    found = count_faces(samples, 2, analyzer, 0)  # type: ignore[arg-type]
    assert list(found) == sorted(set(analyzer.ran)) and len(analyzer.ran) == len(found)
    # Every other frame, the last, and each change of count pinned down to neighbouring frames; the one
    # frame with a third face lies between two checked frames with two: not looked at (a share decides).
    assert list(found) == [0, 2, 4, 6, 7, 8, 10, 12, 13, 14, 16, 18, 19]
    assert all(len(found[i]) == faces[i] for i in found)
    assert list(count_faces(samples, 1, _CountingAnalyzer(faces), 0)) == list(range(len(faces)))  # type: ignore[arg-type]


def test_detect_many_finds_what_detect_finds_image_by_image(analyzer: DlibFaceAnalyzer) -> None:
    from tests.support.photos import astronaut_path, t1_path

    t1 = cv2.cvtColor(cv2.imread(str(t1_path())), cv2.COLOR_BGR2RGB)  # 1280 wide: HOG on a downscaled copy
    astronaut = cv2.cvtColor(cv2.imread(str(astronaut_path())), cv2.COLOR_BGR2RGB)  # 512: as it is
    images = [t1, astronaut, np.ascontiguousarray(t1[:, ::-1])]
    for upsample in (0, 1):
        many = analyzer.detect_many(images, upsample)
        one = [analyzer.detect(image, upsample) for image in images]
        assert [len(faces) for faces in many] == [len(faces) for faces in one] and len(many[0]) >= 4
        for a, b in zip(
            (f for faces in many for f in faces), (f for faces in one for f in faces), strict=True
        ):
            assert a.box == b.box and a.score == b.score and np.array_equal(a.landmarks, b.landmarks)


def test_track_frames_between_predictions_are_interpolated() -> None:
    landmarks = np.zeros((6, 68, 2), np.float32)
    landmarks[1] = 10.0
    landmarks[3] = 30.0
    predicted = np.array([False, True, False, True, False, False])
    _fill_between(landmarks, predicted)
    assert landmarks[:, 0, 0].tolist() == [10.0, 10.0, 20.0, 30.0, 30.0, 30.0]
    untouched = np.ones((3, 68, 2), np.float32)
    _fill_between(untouched, np.zeros(3, bool))  # nothing predicted: left as it is
    assert (untouched == 1).all()


def test_segment_encoding_keeps_frames_size_and_colours(tmp_path: Path) -> None:
    path = _clip(tmp_path, frames=24, fps=24)
    times = np.arange(16) / 16  # 1 s at 16 fps out of 24 fps
    source = [f.to_ndarray(format="rgb24") for f in iter_frames(path)]
    shown = list(_frames_at(path, times))
    assert len(shown) == 16 and all(
        np.array_equal(a, source[int(t * 24 + 1e-6)]) for a, t in zip(shown, times, strict=True)
    )
    data = encode_mp4(shown, 16, crf=18, preset="veryfast")
    decoded = decode_mp4(data)
    assert decoded[0].shape == (16, 240, 320, 3) and decoded[1] == 16
    assert cv2.PSNR(decoded[0][8], shown[8]) > 35  # colours as swscale would convert them


def test_odd_frames_and_captions_follow_the_training_format() -> None:
    assert [odd_frames(n) for n in (0, 1, 4, 5, 80, 81, 100)] == [0, 1, 1, 5, 77, 81, 97]
    for style, action in STYLE_PROMPTS.items():
        assert action in caption_for(style) and "adults" in caption_for(style)


def test_quality_numbers_see_blur_blocks_and_clipping() -> None:
    rng = np.random.default_rng(0)
    scene = cv2.GaussianBlur(rng.integers(0, 255, (240, 416), dtype=np.uint8), (0, 0), 1.0)
    scene = cv2.cvtColor(scene, cv2.COLOR_GRAY2RGB)
    gray = cv2.cvtColor(scene, cv2.COLOR_RGB2GRAY)
    blurred = cv2.GaussianBlur(gray, (0, 0), 5)
    assert detail_sharpness(blurred) < detail_sharpness(gray) / 5
    jpeg = cv2.imdecode(np.frombuffer(encode_jpeg(scene, 3), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert blockiness(gray) < 1.3 < 1.6 < blockiness(jpeg)
    assert exposure(np.full((8, 8), 255, np.uint8)) == (1.0, 0.0)
    assert exposure(np.zeros((8, 8), np.uint8)) == (0.0, 1.0)


def test_mouth_distance_is_in_face_widths() -> None:
    face = np.zeros((68, 2))
    face[:17, 0] = np.linspace(0, 100, 17)  # jaw 100 px wide
    face[48:68] = (50, 80)
    other = face + np.array([150.0, 0.0])  # mouths 150 px apart: 1.5 face widths
    lips, _ = mouth_distances(np.stack([face, other])[None])
    assert lips[0] == pytest.approx(1.5)


def _clip(tmp_path: Path, frames: int = 40, fps: int = 16, size: tuple[int, int] = (320, 240)) -> Path:
    rng = np.random.default_rng(1)
    base = cv2.resize(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), size, interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "clip.mp4"
    path.write_bytes(encode_mp4([np.roll(base, t, axis=1) for t in range(frames)], fps))
    return path


def test_decode_samples_at_the_configured_rate_and_keeps_only_samples(tmp_path: Path) -> None:
    path = _clip(tmp_path)
    config = CurateConfig(min_duration_s=1.0)
    decoded = decode_sampled(path, probe(path, config), config)
    assert decoded.frame_count == 40 and decoded.fps == pytest.approx(16)
    assert [s.index for s in decoded.samples] == list(range(0, 40, 4))  # 4 fps of 16
    assert decoded.cut_distance.max() < config.cut_threshold
    # The scene moves 1 px a frame at 320 wide: 2.6 px at the 832-wide reference.
    assert np.median(decoded.shift_px[1:]) == pytest.approx(832 / 320, abs=0.5)


def test_decode_keeps_the_frames_for_the_export_within_its_budget(tmp_path: Path) -> None:
    path = _clip(tmp_path)
    config = CurateConfig(min_duration_s=1.0)
    decoded = decode_sampled(path, probe(path, config), config)
    assert decoded.frames is not None and len(decoded.frames) == decoded.frame_count
    times = 0.3 + np.arange(20) / 16
    kept, again = list(_frames_at(decoded.frames, times)), list(_frames_at(path, times))
    assert len(kept) == 20 and all(np.array_equal(a, b) for a, b in zip(kept, again, strict=True))
    # Frames already converted (the analysis's samples) are shown as they are where they are full size.
    marked = np.zeros_like(kept[0])
    with_samples = list(_frames_at(decoded.frames, times, {5: marked, 6: marked[:10]}))
    reused = [k for k, frame in enumerate(with_samples) if frame is marked]
    assert reused and all(int((times[k] + 1e-6) * 16) == 5 for k in reused)  # frame 6: wrong size, converted
    assert all(
        np.array_equal(a, b)
        for k, (a, b) in enumerate(zip(with_samples, again, strict=True))
        if k not in reused
    )
    # 40 frames of 320x240 YUV 4:2:0 are ~4.5 MiB: over a 1 MiB budget they are not kept (nor with 0).
    for budget in (1.0, 0.0):
        small = CurateConfig(min_duration_s=1.0, keep_decoded_mib=budget)
        assert decode_sampled(path, probe(path, small), small).frames is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"min_short_side": 480}, "too_small"),
        ({"min_duration_s": 5.0}, "too_short"),
        ({"max_duration_s": 1.0}, "too_long"),
        ({"min_fps": 20.0}, "bad_fps"),
        ({"max_frame_pixels": 320 * 239}, "frame_too_large"),
    ],
)
def test_probe_refuses_from_the_header(tmp_path: Path, change: dict[str, float], reason: str) -> None:
    path = _clip(tmp_path)
    with pytest.raises(Rejected) as exc:
        probe(path, CurateConfig(**change))  # type: ignore[arg-type]
    assert reasons_of(exc) == [reason]


def test_probe_refuses_empty_and_garbage_files(tmp_path: Path) -> None:
    empty, garbage = tmp_path / "a.mp4", tmp_path / "b.mp4"
    empty.write_bytes(b"")
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    for path, reason in ((empty, "empty_file"), (garbage, "unreadable")):
        with pytest.raises(Rejected) as exc:
            probe(path, CurateConfig())
        assert reasons_of(exc) == [reason]


def test_listing_refuses_symlinks_and_undecodable_names(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok.mp4").write_bytes(b"x")
    (root / "notes.txt").write_bytes(b"x")
    os.symlink("loop.mp4", root / "loop.mp4")
    (tmp_path / "secret.mp4").write_bytes(b"x")
    os.symlink("../secret.mp4", root / "escape.mp4")
    os.symlink(str(tmp_path), root / "dir_link")  # a directory symlink is not followed either
    with open(os.fsencode(root) + b"/caf\xe9.mp4", "wb") as f:
        f.write(b"x")
    entries = {e.name: e.refused for e in list_local(root, VIDEO)}
    assert entries == {
        "caf\\xe9.mp4": Reason.BAD_FILENAME,
        "escape.mp4": Reason.UNSAFE_PATH,
        "loop.mp4": Reason.UNSAFE_PATH,
        "sub/ok.mp4": None,
    }
    assert open_local(root, "sub/ok.mp4") == root / "sub" / "ok.mp4"
    with pytest.raises(PermissionError):
        open_local(root, "escape.mp4")
    (tmp_path / "secret.json").write_text("{}")
    os.symlink("../secret.json", root / "escape.json")
    assert read_local_sidecar(root, "escape.mp4") is None  # a symlinked sidecar is not read
    assert len(Entry("x").name_id) == 64


def test_locations_parse_directories_and_s3_prefixes() -> None:
    s3 = Location.parse("s3://bucket/some/prefix/")
    assert (s3.bucket, s3.prefix, s3.is_local) == ("bucket", "some/prefix/", False)
    assert Location.parse("s3://bucket").prefix == ""
    assert Location.parse("relative/dir").root == Path("relative/dir").absolute()
    with pytest.raises(ValueError, match="no bucket"):
        Location.parse("s3:///prefix")


def test_manifest_round_trip_and_segments_for_training(tmp_path: Path) -> None:
    kept = manifest.empty_row(
        kind="segment", source_id="s" * 64, source_path="a.mp4", segment_id="f" * 64, decision="kept",
        clip=f"clips/{'f' * 64}.mp4", tracks=f"tracks/{'f' * 64}.npz", caption="c", style="peck",
        fps=16.0, width=832, height=480, num_frames=81, contact_frame=40, score_flicker=0.1,
    )  # fmt: skip
    source = manifest.empty_row(kind="source", source_id="s" * 64, source_path="a.mp4", decision="kept")
    rejected = {"kind": "source", "source_id": "t" * 64, "source_path": "b.mp4", "decision": "rejected",
                "reasons": ["blurred"]}  # fmt: skip
    manifest.write_manifest(tmp_path, [source, kept, rejected])
    rows = manifest.read_rows(tmp_path)
    assert [r["reasons"] for r in rows] == [[], [], ["blurred"]]
    (segment,) = manifest.read_segments(tmp_path)
    assert segment.clip_path(tmp_path) == tmp_path / "clips" / f"{'f' * 64}.mp4"
    assert (segment.num_frames, segment.contact_frame, segment.scores["score_flicker"]) == (81, 40, 0.1)
    with pytest.raises(ValueError, match="unknown manifest columns"):
        manifest.empty_row(colour="red")


def _face(x: float) -> np.ndarray:
    """A frontal 68-point face 100 px wide centred at (x, 200): jaw, brows, nose, eyes, mouth."""
    points = np.zeros((68, 2))
    angles = np.linspace(np.pi, 0, 17)
    points[:17] = np.stack([x + 50 * np.cos(angles), 200 + 60 * np.sin(angles) * 0.9 + 10], axis=1)
    points[17:27] = np.stack([x + np.linspace(-40, 40, 10), np.full(10, 160.0)], axis=1)
    points[27:36] = np.stack([np.full(9, x), np.linspace(170, 215, 9)], axis=1)
    points[36:42] = np.stack(
        [x - 22 + np.array([-10, -5, 5, 10, 5, -5]), 180 + np.array([0, -3, -3, 0, 3, 3])], 1
    )
    points[42:48] = np.stack(
        [x + 22 + np.array([-10, -5, 5, 10, 5, -5]), 180 + np.array([0, -3, -3, 0, 3, 3])], 1
    )
    mouth = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    points[48:68] = np.stack([x + 18 * np.cos(mouth), 235 + 6 * np.sin(mouth)], axis=1)
    return points


def _kiss_tracks(gaps: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two faces whose mouths are `gaps[i]` face widths apart at sample i (4 fps)."""
    landmarks = np.stack([np.stack([_face(300 - 50 * g), _face(300 + 50 * g)]) for g in gaps])
    return np.arange(len(gaps)) / 4.0, landmarks, np.ones((len(gaps), 2), dtype=bool)


KISS = [2.0, 1.6, 1.2, 0.8, 0.4, 0.1, 0.0, 0.05, 0.0, 0.1, 0.5, 0.9, 1.3, 1.6]  # approach, contact, apart


def test_find_kiss_keeps_approach_contact_and_separation() -> None:
    from kiss_core.curation.kiss import find_kiss

    times, landmarks, valid = _kiss_tracks(KISS)
    scores: dict[str, float] = {}
    kiss = find_kiss(times, landmarks, valid, (0.0, 3.5), (False, False), (832, 480), CurateConfig(), scores)
    assert kiss.contact_s == 1.25 and kiss.contact_duration_s == 1.25  # samples 5..9 touch
    assert kiss.start_s <= 0.75 and kiss.end_s >= 2.5  # from the last apart sample to the first after
    assert kiss.num_frames % 4 == 1 and kiss.num_frames == round((kiss.end_s - kiss.start_s) * 16) + 1
    assert kiss.style == "romantic" and scores["score_min_mouth_distance"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("gaps", "cuts", "reason"),
    [
        (KISS[:8], (False, True), "jump_cut"),  # the shot ends in the contact, at a cut
        (KISS[:8], (False, False), "kiss_incomplete"),  # ... at the clip's end
        (KISS[5:], (True, False), "jump_cut"),  # starts in the contact after a cut
        ([2.0, 1.5, 1.0, 0.8, 0.8, 1.0, 1.5, 2.0], (False, False), "no_contact"),
        ([2.0, 1.6, 1.2, 0.8, 0.6, 0.45, 0.4], (False, True), "jump_cut"),  # still closing in at the cut
    ],
)
def test_find_kiss_names_what_is_missing(gaps: list[float], cuts: tuple[bool, bool], reason: str) -> None:
    from kiss_core.curation.kiss import find_kiss

    times, landmarks, valid = _kiss_tracks(gaps)
    with pytest.raises(Rejected) as exc:
        find_kiss(times, landmarks, valid, (0.0, len(gaps) / 4), cuts, (832, 480), CurateConfig(), {})
    assert reasons_of(exc) == [reason]


@pytest.mark.parametrize(("cuts", "reason"), [((False, True), "jump_cut"), ((False, False), "no_contact")])
def test_a_kiss_cut_off_where_the_back_face_is_lost_is_still_at_the_cut(
    cuts: tuple[bool, bool], reason: str
) -> None:
    """Closing in up to a cut, the last sample before it without the back face (HOG lost it): the closest
    sample with both faces is the last one that has them, so the kiss was cut, whatever the distance
    there; without a cut the same shot never reached contact."""
    from kiss_core.curation.kiss import find_kiss

    times, landmarks, valid = _kiss_tracks([2.0, 1.9, 1.7, 1.5, 1.3, 1.1, 0.8, 0.1])
    valid[-1, 1] = False
    with pytest.raises(Rejected) as exc:
        find_kiss(times, landmarks, valid, (0.0, 2.0), cuts, (832, 480), CurateConfig(), {})
    assert reasons_of(exc) == [reason]


def test_decode_refuses_variable_frame_rate(tmp_path: Path) -> None:
    import av

    path = tmp_path / "vfr.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        t = 0
        for k in range(40):
            frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 6 * k, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            t += 40 if k % 2 else 90  # 40 ms and 90 ms intervals alternate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    config = CurateConfig(min_duration_s=1.0)
    with pytest.raises(Rejected) as exc:
        decode_sampled(path, probe(path, config), config)
    assert reasons_of(exc) == ["variable_fps"]


def test_cli_refuses_a_missing_source_and_a_bad_config_before_starting_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from workflows.cli import main

    assert main(["curate", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    config = tmp_path / "curate.yaml"
    config.write_text("max_frames: 80\n")
    assert main(["curate", str(tmp_path), str(tmp_path / "out"), "--config", str(config)]) == 2
    assert "multiple of 4 plus 1" in capsys.readouterr().err
    assert main(["curate", "s3:///x", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
