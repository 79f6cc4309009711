"""Generation backends: where a job's frames come from. The producer does everything around them.

A backend is a `FrameSource`: given the plan (motion, first-frame layout, pose tracks), the
lighting-harmonised photos, their analyses and the conditioning the IdentityEncoder computed, it
yields the clip's frames (H, W, 3) uint8 RGB, one per plan frame, and calls `progress` with its
share done (0..1) as it goes. Labelling, encoding, the quality report and storage are the
producer's, so every backend is measured and marked the same way.

`preview` (preview.py over kiss_core.scene.render, CPU, no weights) is always there; the Wan
backends (wan.py) load when their weights are configured. This `__init__` imports nothing, so a
GPU bench can import `guidance` without the service's stack.
"""
