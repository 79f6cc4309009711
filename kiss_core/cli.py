"""`kissgen`: a client of the HTTP API (create, status, download, delete) plus demo-subject export.

kissgen demo-subjects ./demo            # two synthetic faces of nobody, to try the service with
kissgen create demo/a.png demo/b.png --style romantic -o kiss.mp4
kissgen create --a a1.jpg --a a2.jpg --b b.jpg --consent   # up to 3 photos of each person, all of them
kissgen quality kiss.mp4 --ref-a demo/a.png --ref-b demo/b.png [--json]   # quality report of any MP4
kissgen keys new --tenant acme [--rate 120] [--max-jobs 4]   # a new API key and its keys-file entry
kissgen verify kiss.mp4 [--trust-anchors ca.pem]   # C2PA manifest + watermark job id, as JSON (local)
kissgen config-docs [--check]   # write docs/configuration.md from the settings (--check: exit 1 if stale)
kissgen reports [--since 2026-11-01] [--json] [--config serve_config.yaml]   # abuse reports (operators)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from kiss_core.schemas import TERMINAL_STATUSES, VideoParams
from kiss_core.settings import Settings

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(RuntimeError):
    def __init__(self, response: httpx.Response):
        try:
            body = response.json()
            text = f"{body.get('code', response.status_code)}: {body.get('detail', response.text)}"
            if body.get("subject"):
                text += f" (subject {body['subject']})"
        except ValueError:
            text = f"HTTP {response.status_code}: {response.text[:200]}"
        super().__init__(text)


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise ApiError(response)
    return response


def create(
    client: httpx.Client,
    photo_a: Path | Sequence[Path],
    photo_b: Path | Sequence[Path],
    params: VideoParams,
    consent: dict[str, str] | None = None,
) -> dict[str, Any]:
    """POST a job. Each person's photo, or several of the same person (sent as a repeated field).
    `consent` holds the consent_* form fields; the service refuses without them."""
    fields = {
        **(consent or {}),
        **{name: str(value) for name, value in params.model_dump(exclude_none=True).items()},
    }
    photos = {"a": photo_a, "b": photo_b}
    with contextlib.ExitStack() as stack:
        files = [
            (f"subject_{subject}", (path.name, stack.enter_context(path.open("rb"))))
            for subject, given in photos.items()
            for path in ([given] if isinstance(given, Path) else given)
        ]
        return _check(client.post("/v1/videos", data=fields, files=files)).json()


def wait(client: httpx.Client, video_id: str, timeout_s: float, show: bool = True) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = _check(client.get(f"/v1/videos/{video_id}")).json()
        if show:
            bar = "#" * (job["progress"] // 5)
            print(
                f"\r{job['status']:<11} {job['stage']:<10} [{bar:<20}] {job['progress']:3d}%",
                end="",
                flush=True,
            )
        if job["status"] in TERMINAL_STATUSES:
            break
        time.sleep(0.5)
    if show:
        print()
    return job


def download(client: httpx.Client, video_id: str, variant: str, out: Path) -> int:
    response = _check(
        client.get(f"/v1/videos/{video_id}/content", params={"variant": variant}, follow_redirects=True)
    )
    out.write_bytes(response.content)
    return len(response.content)


def _cmd_create(args: argparse.Namespace) -> int:
    params = VideoParams(
        style=args.style,
        intensity=args.intensity,
        seconds=args.seconds,
        size=args.size,
        fps=args.fps,
        seed=args.seed,
        output=args.output,
        prompt=args.prompt,
        backend=args.backend,
        quality=args.quality,
        lora=args.lora,
    )
    consent: dict[str, str] = {}
    if args.consent:
        consent = {"consent_a": "true", "consent_b": "true"}
        consent |= {
            f"consent_ref_{s}": ref
            for s, ref in (("a", args.consent_ref_a), ("b", args.consent_ref_b))
            if ref
        }
    photos = {s: [Path(p) for p in (first, *(extra or [])) if p] for s, first, extra in _photo_args(args)}
    missing = [s for s, paths in photos.items() if not paths]
    if missing:
        person = missing[0].upper()
        print(f"no photo of person {person}: give PHOTO_A PHOTO_B, or --a / --b PATH", file=sys.stderr)
        return 2
    with httpx.Client(base_url=args.url, timeout=60) as client:
        job = create(client, photos["a"], photos["b"], params, consent)
        print(f"created {job['id']}")
        job = wait(client, job["id"], args.timeout)
        if job["status"] != "completed":
            error = job.get("error") or {}
            print(f"{job['status']}: {error.get('code')}: {error.get('detail')}", file=sys.stderr)
            return 1
        variant = "video" if params.output == "video" else "image"
        out = Path(args.out or f"{job['id']}.{'mp4' if variant == 'video' else 'jpg'}")
        size = download(client, job["id"], variant, out)
        for subject in job["result"]["quality"]["subjects"]:
            print(
                f"subject {subject['subject']}: identity mean {subject['similarity_mean']}, "
                f"found in {subject['frames_found']}/{subject['frames_checked']} checked frames"
            )
        print(f"wrote {out} ({size} bytes)")
    return 0


def _photo_args(args: argparse.Namespace) -> list[tuple[str, str | None, list[str] | None]]:
    """Per person: the positional photo (if given) and the --a / --b ones, in that order."""
    return [("a", args.photo_a, args.a), ("b", args.photo_b, args.b)]


def _cmd_status(args: argparse.Namespace) -> int:
    with httpx.Client(base_url=args.url, timeout=30) as client:
        print(_check(client.get(f"/v1/videos/{args.id}")).text)
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    with httpx.Client(base_url=args.url, timeout=30) as client:
        print(_check(client.delete(f"/v1/videos/{args.id}")).text)
    return 0


def _cmd_demo_subjects(args: argparse.Namespace) -> int:
    from kiss_core.faces.synthetic import synthetic_subject_png

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, index in (("a", args.first), ("b", args.first + 1)):
        path = out / f"{name}.png"
        path.write_bytes(synthetic_subject_png(index))
        print(f"wrote {path} (synthetic subject {index}: a composite face of nobody)")
    return 0


def _cmd_quality(args: argparse.Namespace) -> int:
    """The quality report (identity, contact, flicker, lighting) of any MP4, against two photos.

    Runs locally (no service): the references are the dlib descriptors of the largest face in each
    photo; who is who in the video follows the faces' positions (a: left, b: right).
    """
    import numpy as np

    from kiss_core.errors import ClientError
    from kiss_core.faces.analysis import DlibFaceAnalyzer
    from kiss_core.generation.quality import photos_delta_e, video_quality_report
    from kiss_core.media.images import decode_image
    from kiss_core.media.video import decode_mp4
    from kiss_core.settings import FaceSettings, LimitSettings

    settings = FaceSettings()
    analyzer = DlibFaceAnalyzer(settings)
    try:
        photos = {
            s: decode_image(Path(path).read_bytes(), LimitSettings(), s)
            for s, path in (("a", args.ref_a), ("b", args.ref_b))
        }
        analyses = {s: analyzer.analyze(photo, s) for s, photo in photos.items()}
        frames, fps = decode_mp4(Path(args.video).read_bytes())
    except (ClientError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    references = {}
    for subject, analysis in analyses.items():
        embedding = np.asarray(analysis.embedding, dtype=np.float64)
        references[subject] = embedding / max(float(np.linalg.norm(embedding)), 1e-12)
    delta_e_input = photos_delta_e(
        photos["a"], np.asarray(analyses["a"].landmarks), photos["b"], np.asarray(analyses["b"].landmarks)
    )
    report = video_quality_report(
        list(frames),
        references,
        analyzer,
        settings.same_person_threshold,
        contact_index=args.contact_frame,
        max_checked=args.frames,
        delta_e_input=delta_e_input,
    )
    if args.json:
        print(report.model_dump_json(indent=2))
        return 0
    print(f"{args.video}: {len(frames)} frames, {frames.shape[2]}x{frames.shape[1]}, {fps:g} fps")
    print(f"identity ({report.similarity}; same person above {report.threshold:.2f}):")
    for q in report.subjects:
        verdict = (
            "not found"
            if q.similarity_min is None
            else ("ok" if q.similarity_min >= report.threshold else "DRIFT below threshold")
        )
        print(
            f"  subject {q.subject}: min {_fmt(q.similarity_min)}, mean {_fmt(q.similarity_mean)}, "
            f"visible in {q.frames_found}/{q.frames_checked} checked frames "
            f"({q.visible_share:.0%}) - {verdict}"
        )
    if report.both_found is not None:
        print(f"both people found in {report.both_found:.0%} of checked frames")
    if report.contact is not None:
        print(
            f"contact: frame {report.contact.frame}, mouth distance "
            f"{_fmt(report.contact.mouth_distance)} face widths"
        )
    else:
        print("contact: not measurable (both faces were never located)")
    if report.flicker is not None:
        print(
            f"flicker: mean {report.flicker.mean:.2f}, p95 {report.flicker.p95:.2f} "
            f"(luma 0..255 per frame, static regions, {report.flicker.frames} frames)"
        )
    if report.lighting is not None:
        print(
            f"lighting: skin delta E photos {_fmt(report.lighting.delta_e_input, 1)}, "
            f"video {_fmt(report.lighting.delta_e_output, 1)} (CIE76)"
        )
    return 0


def _cmd_keys_new(args: argparse.Namespace) -> int:
    """Print a new API key (shown once, never stored) and the record for the keys file (its hash)."""
    import yaml
    from pydantic import ValidationError

    from kiss_core.jobs.access import hash_key, new_key
    from kiss_core.jobs.webhooks import new_secret
    from kiss_core.settings import ApiKeyRecord

    key = new_key()
    try:
        record = ApiKeyRecord(
            tenant=args.tenant,
            key_sha256=hash_key(key),
            name=args.name or "",
            rate_per_minute=args.rate,
            burst=args.burst,
            max_concurrent_jobs=args.max_jobs,
            webhook_secret=new_secret() if args.webhook_secret else None,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"error: {problems}", file=sys.stderr)
        return 2
    fields = record.model_dump(exclude_none=True)
    if not fields["name"]:
        del fields["name"]
    entry = yaml.safe_dump([fields], sort_keys=False)
    print(f"API key (shown once; give it to {args.tenant}, it is not stored anywhere): {key}")
    print("Add this entry to the keys file (access.keys_file) or access.keys:")
    print(entry, end="")
    if record.webhook_secret:
        print("The webhook_secret above is what the tenant verifies webhook signatures with.")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    """Print the VerificationReport of an MP4 or JPEG as JSON (local, offline).

    Exit status 0 when a valid C2PA manifest or a watermarked job id was found, 1 when neither was
    (or the file could not be read): scripts can test the status, people read the JSON.
    """
    from kiss_core.generation.provenance.verify import verify_media
    from kiss_core.settings import load_settings

    trust_anchors = args.trust_anchors or load_settings().provenance.c2pa.trust_anchors
    try:
        report = verify_media(
            Path(args.file).read_bytes(),
            trust_anchors=Path(trust_anchors) if trust_anchors else None,
            max_frames=args.frames,
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.model_dump_json(indent=2))
    return 0 if report.found else 1


def _cmd_config_docs(args: argparse.Namespace) -> int:
    """Write docs/configuration.md from the settings classes, or with --check fail when it is stale."""
    from kiss_core.config_docs import DOCS_PATH, REGENERATE, render_config_docs

    path = Path(args.path) if args.path else DOCS_PATH
    text = render_config_docs()
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{path} is stale: run `{REGENERATE}` to regenerate it", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


def settings_from_config(path: Path | None) -> Settings:
    """The service's Settings as its replicas build them, for operator commands that read its store.

    Without `path`: the KISS_* environment and KISS_CONFIG_FILE, as every replica. With a Serve config
    (a YAML with `applications:`): the kissgen application's `args.settings` over its runtime_env's
    KISS_* variables over this environment, as graph.build_app sees them. With any other YAML: it is read
    as a settings file (what KISS_CONFIG_FILE would name).
    """
    import yaml

    if path is None:
        return Settings()
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    if "applications" not in data:
        return Settings(**data)
    apps = data["applications"] or []
    app = next((a for a in apps if a.get("import_path") == "graph:build_app"), apps[0] if apps else None)
    if app is None:
        raise ValueError(f"{path} has no application")
    env = (app.get("runtime_env") or {}).get("env_vars") or {}
    overrides = (app.get("args") or {}).get("settings") or {}
    with _environment({k: str(v) for k, v in env.items() if k.startswith("KISS_")}):
        return Settings(**overrides)


@contextlib.contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    """`variables` set in os.environ for the block (a Serve runtime_env sets them over the worker's)."""
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _cmd_reports(args: argparse.Namespace) -> int:
    """The abuse reports clients sent (POST /v1/reports), oldest first, read from the service's store."""
    from pydantic import ValidationError

    from kiss_core.errors import StorageError
    from kiss_core.jobs.reports import ReportLog
    from kiss_core.storage import open_store

    try:
        since = date.fromisoformat(args.since) if args.since else None
    except ValueError:
        print(f"error: --since must be a date like 2026-11-30, not {args.since!r}", file=sys.stderr)
        return 2
    try:
        settings = settings_from_config(Path(args.config) if args.config else None)
        reports = ReportLog(open_store(settings.storage)).list(since)
    except (OSError, ValueError, ValidationError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for report in reports:
        if args.json:
            print(report.model_dump_json())
            continue
        target = report.video_id or f"sha256:{report.file_sha256}"
        when = report.received_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        details = " ".join(report.details.split())  # one line per report
        print(f"{when}  {report.id}  {report.tenant}  {report.reason}  {target}  {details}".rstrip())
    if not args.json:
        print(f"{len(reports)} report(s)" + (f" since {since}" if since else ""), file=sys.stderr)
    return 0


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The `kissgen` parser and its subcommands; workflows.cli adds the Ray Data / Ray Train ones."""
    parser = argparse.ArgumentParser(prog="kissgen", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help=f"service base URL (default {DEFAULT_URL})")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("create", help="create a video from two photos and download it")
    p.add_argument("photo_a", nargs="?", help="person A's photo (or give --a)")
    p.add_argument("photo_b", nargs="?", help="person B's photo (or give --b)")
    p.add_argument(
        "--a",
        action="append",
        metavar="PATH",
        help="a photo of person A; repeat for up to 3 photos of the same person (after PHOTO_A, if given)",
    )
    p.add_argument("--b", action="append", metavar="PATH", help="a photo of person B; repeatable like --a")
    defaults = VideoParams()
    p.add_argument("--style", default=defaults.style, choices=["peck", "romantic", "french", "cheek"])
    p.add_argument("--intensity", type=float, default=defaults.intensity)
    p.add_argument("--seconds", type=float, default=defaults.seconds)
    p.add_argument("--size", default=defaults.size)
    p.add_argument("--fps", type=int, default=defaults.fps)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--output", default=defaults.output, choices=["video", "image"])
    p.add_argument("--prompt", default="", help="scene text for diffusion backends (checked by the policy)")
    p.add_argument("--backend", choices=["preview", "wan-i2v", "wan-vace"], help="default: the service's")
    p.add_argument("--quality", choices=["standard", "fast"], help="default: the service's")
    p.add_argument("--lora", help="an installed LoRA's name, or none")
    p.add_argument(
        "--consent",
        action="store_true",
        help="attest that both people are adults and consented to this video (required by the service)",
    )
    p.add_argument("--consent-ref-a", help="your reference to person A's consent record")
    p.add_argument("--consent-ref-b", help="your reference to person B's consent record")
    p.add_argument("-o", "--out", help="where to write the result")
    p.add_argument("--timeout", type=float, default=600.0)
    p.set_defaults(func=_cmd_create)

    p = sub.add_parser("status", help="print a job")
    p.add_argument("id")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("delete", help="cancel a job and erase its data")
    p.add_argument("id")
    p.set_defaults(func=_cmd_delete)

    p = sub.add_parser("demo-subjects", help="write two synthetic subjects (faces of nobody) to DIR")
    p.add_argument("dir")
    p.add_argument("--first", type=int, default=0, help="index of the first synthetic subject")
    p.set_defaults(func=_cmd_demo_subjects)

    p = sub.add_parser("quality", help="quality report of an MP4 against the two reference photos (local)")
    p.add_argument("video", help="the MP4 to check")
    p.add_argument("--ref-a", required=True, help="photo of person a (on the left in the video)")
    p.add_argument("--ref-b", required=True, help="photo of person b (on the right in the video)")
    p.add_argument("--json", action="store_true", help="print the QualityReport as JSON")
    p.add_argument("--frames", type=int, default=32, help="how many frames to check for faces (default 32)")
    p.add_argument("--contact-frame", type=int, help="measure the contact at this frame (default: closest)")
    p.set_defaults(func=_cmd_quality)

    p = sub.add_parser("keys", help="manage API keys (local: prints what to put in the keys file)")
    keys = p.add_subparsers(dest="keys_command", required=True)
    p = keys.add_parser("new", help="create an API key for a tenant")
    p.add_argument("--tenant", required=True, help="tenant the key belongs to (letters, digits, _ . -)")
    p.add_argument("--name", help="a label for the key (who holds it)")
    p.add_argument("--rate", type=float, help="requests per minute (default: access.rate_per_minute)")
    p.add_argument("--burst", type=int, help="requests at once (default: access.burst)")
    p.add_argument("--max-jobs", type=int, help="queued + running jobs (default: access.max_concurrent_jobs)")
    p.add_argument("--webhook-secret", action="store_true", help="also create a webhook signing secret")
    p.set_defaults(func=_cmd_keys_new)

    p = sub.add_parser(
        "verify",
        help="C2PA manifest and watermark job id of an MP4 or JPEG, as JSON (exit 1 if neither is found)",
    )
    p.add_argument("file", help="the MP4 or JPEG to check")
    p.add_argument(
        "--trust-anchors",
        help="PEM file of root certificates to trust (default: provenance.c2pa.trust_anchors).",
    )
    p.add_argument("--frames", type=int, default=48, help="video frames the watermark is read from")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("config-docs", help="write docs/configuration.md from the settings' descriptions")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when the file is stale")
    p.add_argument("--path", help="page to write or check (default: this checkout's docs/configuration.md)")
    p.set_defaults(func=_cmd_config_docs)

    p = sub.add_parser("reports", help="list abuse reports sent with POST /v1/reports (reads the store)")
    p.add_argument("--since", help="only reports received on this day (YYYY-MM-DD, UTC) or later")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--config",
        help="a Serve config (serve_config.yaml) or a settings YAML; default: the KISS_* environment and"
        " KISS_CONFIG_FILE, as the service reads them",
    )
    p.set_defaults(func=_cmd_reports)
    return parser, sub


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ApiError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """The service's commands only; the installed `kissgen` is workflows.cli:main, which adds the rest."""
    parser, _ = build_parser()
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
