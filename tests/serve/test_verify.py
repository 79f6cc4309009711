"""POST /v1/verify on the running service: a video this service made names its job and carries a manifest
(the local profile's development certificate); junk is a 415."""

from __future__ import annotations

import httpx

from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.generation.provenance.verify import verify_media
from kiss_core.jobs.audit import AuditLog
from kiss_core.storage import LocalDirStore
from tests.conftest import ServeApp
from tests.serve.helpers import assert_problem, post_job, wait_terminal


def test_verify_reads_the_job_id_back_from_a_finished_video(serve_app: ServeApp) -> None:
    """The local profile (`make run`) signs with its development certificate, made on first start under
    the store root: the MP4, the still and the thumbnail each carry a manifest that validates, reported as
    development-signed and not trusted, asserting the job's consent audit record."""
    with httpx.Client(base_url=serve_app.url, timeout=120) as client:
        response = post_job(
            client,
            synthetic_subject_png(1),
            synthetic_subject_png(3),
            style="peck",
            seconds=2,
            size="416x240",
        )
        assert response.status_code == 202, response.text
        job = wait_terminal(client, response.headers["location"])
        assert job["status"] == "completed", job.get("error")
        assert job["result"]["provenance"] == {"label": True, "watermark": True, "c2pa": True}
        assert (serve_app.store_root / "dev-c2pa" / "chain.pem").exists()
        content = {
            variant: client.get(f"/v1/videos/{job['id']}/content?variant={variant}", follow_redirects=True)
            for variant in ("video", "image", "thumbnail")
        }
        for variant, answer in content.items():
            assert answer.status_code == 200, (variant, answer.text)
            local = verify_media(answer.content)  # what `kissgen verify` reports
            assert local.c2pa.valid and not local.c2pa.trusted, (variant, local.c2pa)
            assert local.c2pa.development_certificate and local.c2pa.job_id == job["id"]
        video = content["video"].content

        report = client.post("/v1/verify", content=video, headers={"content-type": "video/mp4"})
        assert report.status_code == 200, report.text
        body = report.json()
        assert body["mime"] == "video/mp4" and body["watermark"]["job_id"] == job["id"]
        assert body["ai_generated"] is True
        manifest = body["c2pa"]
        assert manifest["valid"] is True and manifest["trusted"] is False
        assert manifest["development_certificate"] is True and manifest["job_id"] == job["id"]
        assert manifest["issuer"] == "kissgen development CA (not trusted)"
        assert manifest["validation_errors"] == ["signingCredential.untrusted: signing certificate untrusted"]

        # The manifest asserts the consent attestation: the audit record admission wrote for this job.
        consent = manifest["consent"]
        assert consent["attested"] is True and consent["subjects"] == 2
        record = AuditLog(LocalDirStore(serve_app.store_root)).find(consent["audit_record"])
        assert record is not None and record.job_id == job["id"]
        assert consent["policy_version"] == record.policy_version
        assert record.consent.a.consented and record.consent.b.consented

        junk = client.post("/v1/verify", content=b"GIF89a" + bytes(200))
        assert_problem(junk, 415, "unsupported_media")
        truncated = client.post("/v1/verify", content=video[:2000])
        assert truncated.status_code in (200, 415), truncated.text
