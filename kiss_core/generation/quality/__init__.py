"""Output checks: the four known failure modes of a kiss video, measured on its frames.

- identity `similarity_min` / `similarity_mean`: cosine similarity of the dlib 128-D descriptor of
  each face found in a checked frame to the subject's reference descriptor; -1..1 (0.8..1 in
  practice), the same person scores above `same_person_threshold` (0.92). With an insightface pack
  mounted the producer passes its ArcFace embedder instead (unrelated faces near 0, the same person
  above `arcface_same_person_threshold`, 0.4); the report's `similarity` names which.
- identity `visible_share`: frames_found / frames_checked, the share of checked frames in which that
  person's face was found; 0..1. `both_found`: the share in which both were; 0..1.
- contact `mouth_distance`: distance between the two mouth centres (mean of landmarks 48-67) at the
  contact frame / the mean face width (jaw span, landmark 0 to 16); 0..~3, below ~0.3 the lips
  meet, 1 = a face width apart.
- contact `seam`: at the contact frame, mean |Sobel| of the luma on the band along one face's outline
  where it meets the other face (the larger of the two) / the mean inside both faces (landmark
  hulls); ~1-1.7 seamless (a face's outline is an edge too), a hard cut raises it; see `seam`.
- flicker `mean` / `p95`: mean absolute luma change (BT.601, 0..255) between consecutive frames
  inside the static mask, after a Gaussian blur (sigma 1.5 px) that hides codec noise; mean and
  95th percentile over frame pairs; 0 = perfectly stable, below ~1 invisible.
- lighting `delta_e_input` / `delta_e_output`: CIE76 ΔE between the two people's mean skin colour in
  CIE Lab (cheeks, forehead and nose from the landmarks; no eyes, brows or mouth); 0..~100, below 2
  barely perceptible, above 10 clearly different lighting.

One module per metric: `identity`, `contact`, `seam`, `flicker`, `lighting`; `faces` finds and follows
the faces they measure (HOG, plus kiss_core.faces.full_range_detector for turned faces), `report`
puts them together for any video, `thresholds` says what passes.
"""

from kiss_core.generation.quality.contact import contact_quality, mouth_center
from kiss_core.generation.quality.faces import detector_box, predict_landmarks
from kiss_core.generation.quality.flicker import (
    FlickerMeter,
    flicker_quality,
    static_mask_from_boxes,
    static_mask_from_plan,
)
from kiss_core.generation.quality.identity import identity_report
from kiss_core.generation.quality.lighting import delta_e, lighting_delta_e, mean_skin_lab, photos_delta_e
from kiss_core.generation.quality.report import checked_frames, video_quality_report
from kiss_core.generation.quality.seam import seam_ratio
from kiss_core.generation.quality.thresholds import QualityThresholds, quality_problems

__all__ = [
    "FlickerMeter",
    "QualityThresholds",
    "checked_frames",
    "contact_quality",
    "delta_e",
    "detector_box",
    "flicker_quality",
    "identity_report",
    "lighting_delta_e",
    "mean_skin_lab",
    "mouth_center",
    "photos_delta_e",
    "predict_landmarks",
    "quality_problems",
    "seam_ratio",
    "static_mask_from_boxes",
    "static_mask_from_plan",
    "video_quality_report",
]
