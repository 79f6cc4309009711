"""Labelling of generated media, and checking it: what every kissgen video and still carries.

- `label`: `FrameLabeler`, the visible "AI-generated" mark (corner, opacity from settings).
- `watermark`: `WatermarkEmbedder` puts the job id into every frame invisibly; `extract_job_id` and
  `read_video_watermark` read it back, also after re-encoding at lower quality.
- `credentials`: `sign_media` embeds a C2PA manifest (trainedAlgorithmicMedia, generator, job id)
  signed with the operator's certificate; `read_manifest` reads one; `require_signing` stops a
  profile that must sign from starting without a working certificate and key.
- `devcert`: the local profile's development certificate (`provenance.c2pa.dev_certificate`), made once
  under the local data directory, so `make run`'s outputs carry a manifest too (valid, never trusted).
- `verify`: `verify_media` reports both, for `kissgen verify FILE` and the API.
- `marks`: `FrameMarks` applies a job's watermark and label to its frames, in that order.

Order per frame: watermark first, then the label (so the mark's patch is drawn over the watermark,
not the other way round); the C2PA manifest is added to the encoded file last, as nothing may change
the bytes after signing. None of this imports Ray; c2pa is imported only when signing or reading.
"""
