"""The fixed validation render: a synthetic pair (never a real person) through the current LoRA, scored.

Rank 0 renders it every `validate_every` steps with the training transformer itself (the adapter active),
the base model's VAE and scheduler, and the validation prompt's precomputed embedding (no text encoder
on the workers). Start image: the service's composed first frame of the pair (kiss_core.generation.
backends.wan.start_frame). Guidance 1 (one transformer pass per step). Scores: the quality report's
identity (similarity to each subject, share of frames the face is found in) and contact (mouth
distance) on the rendered frames; NaN where the report finds nothing (a tiny random model draws no
faces). The render is kept as log_dir/validation/step_NNNNNNN.mp4.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from kiss_core.generation.backends.weights import PIPELINE_CLASSES
from kiss_core.safety.prompt import build_prompt
from kiss_core.schemas import QualityReport, SubjectAnalysis, VideoParams
from kiss_core.training.config import ValidationConfig
from kiss_core.training.plan import TrainPlan
from kiss_core.training.precompute import load_record

_PLAN_SIZE = "320x192"  # the composed start frame is planned at a size VideoParams accepts, then resized


def validation_prompt(validation: ValidationConfig, trigger_words: str) -> str:
    """The prompt of the validation render, as the service builds it with the LoRA active."""
    prompt = build_prompt(validation.style).prompt
    return f"{trigger_words.strip()}. {prompt}" if trigger_words.strip() else prompt


def validation_pair(validation: ValidationConfig) -> tuple[np.ndarray, dict[str, SubjectAnalysis], Any]:
    """(start frame at the validation size, the subjects' analyses, the face analyzer) of the pair."""
    from kiss_core.faces.analysis import DlibFaceAnalyzer
    from kiss_core.faces.synthetic import synthetic_subject
    from kiss_core.generation.backends.wan import start_frame

    analyzer = DlibFaceAnalyzer()
    photos = {s: synthetic_subject(i) for s, i in zip(("a", "b"), validation.pair, strict=True)}
    analyses = {s: analyzer.analyze(photos[s], s) for s in photos}
    params = VideoParams(style=validation.style, size=_PLAN_SIZE, seconds=1.0, fps=8)
    frame = start_frame(photos, analyses, params, lighting_strength=0.5)
    frame = cv2.resize(frame, (validation.width, validation.height), interpolation=cv2.INTER_AREA)
    return frame, analyses, analyzer


def report_metrics(report: QualityReport) -> dict[str, float]:
    def value(v: float | None) -> float:
        return math.nan if v is None else float(v)

    metrics = {}
    for subject in report.subjects:
        metrics[f"val/similarity_mean_{subject.subject}"] = value(subject.similarity_mean)
        metrics[f"val/visible_share_{subject.subject}"] = float(subject.visible_share)
    metrics["val/mouth_distance"] = value(report.contact.mouth_distance if report.contact else None)
    return metrics


class Validator:
    """Holds the validation pipeline (sharing the training transformer) and the pair's references."""

    def __init__(self, plan: TrainPlan, transformer: Any, device: torch.device, dtype: torch.dtype):
        import diffusers

        self.plan = plan
        self.config = plan.config.validation
        cls = getattr(diffusers, PIPELINE_CLASSES[plan.base])
        self.pipe = cls.from_pretrained(
            plan.base_dir,
            transformer=transformer,
            text_encoder=None,
            tokenizer=None,
            dtype={"default": dtype, "vae": torch.float32, "image_encoder": torch.float32},
        )
        self.pipe.vae.to(device)
        if getattr(self.pipe, "image_encoder", None) is not None:
            self.pipe.image_encoder.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.device = device
        self.prompt_embeds = load_record(plan.data.store(plan.config), plan.data.validation_text)[
            "prompt_embeds"
        ]
        self.start, self.analyses, self.analyzer = validation_pair(self.config)

    def render(self) -> np.ndarray:
        """(F, H, W, 3) uint8 frames of the pair with the current LoRA."""
        c = self.config
        inputs: dict[str, Any] = {}
        if self.plan.base == "wan-i2v":
            inputs["image"] = Image.fromarray(self.start)
        else:
            inputs["reference_images"] = [Image.fromarray(self.start)]
        self.pipe.transformer.eval()
        with torch.no_grad():
            frames = self.pipe(
                **inputs,
                prompt_embeds=self.prompt_embeds.to(self.device, self.pipe.transformer.dtype),
                height=c.height,
                width=c.width,
                num_frames=c.num_frames,
                num_inference_steps=c.steps,
                guidance_scale=1.0,
                generator=torch.Generator("cpu").manual_seed(c.seed),
                output_type="np",
            ).frames[0]
        return np.clip(np.rint(np.asarray(frames) * 255.0), 0, 255).astype(np.uint8)

    def run(self, step: int) -> dict[str, float]:
        """Render, keep the MP4, and the report's identity and contact numbers as metrics."""
        from kiss_core.generation.quality import video_quality_report
        from kiss_core.media.video import encode_mp4

        frames = self.render()
        if self.plan.log_dir is not None:
            folder = self.plan.log_dir / "validation"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"step_{step:07d}.mp4").write_bytes(encode_mp4(list(frames), fps=16))
        references = {s: np.asarray(a.embedding, dtype=np.float64) for s, a in self.analyses.items()}
        report = video_quality_report(
            list(frames), references, self.analyzer, self.analyzer.settings.same_person_threshold
        )
        return report_metrics(report)
