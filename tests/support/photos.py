"""The real photos shipped inside installed wheels, for testing face *analysis* only.

Never use these to generate a kiss (see mission.md): generation tests use kiss_core.faces.synthetic.
The packages are located with find_spec, so insightface and scikit-image are not imported.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
from PIL import Image


def package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (it is a dev dependency)")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    return path


def t1_path() -> Path:
    """insightface's t1.jpg: six adults around a table, 1280x886."""
    return package_file("insightface", "data/images/t1.jpg")


def astronaut_path() -> Path:
    """scikit-image's astronaut.png: one adult, 512x512."""
    return package_file("skimage", "data/astronaut.png")


def skimage_path(name: str) -> Path:
    """Another scikit-image sample (e.g. coffee.png, rocket.jpg: no faces)."""
    return package_file("skimage", f"data/{name}")


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image.convert("RGB"), dtype=np.uint8)


def t1_rgb() -> np.ndarray:
    return load_rgb(t1_path())


def astronaut_rgb() -> np.ndarray:
    return load_rgb(astronaut_path())


def t1_bytes() -> bytes:
    return t1_path().read_bytes()


def astronaut_bytes() -> bytes:
    return astronaut_path().read_bytes()


def to_bytes(image: np.ndarray, fmt: str = "PNG", **save_args: object) -> bytes:
    """Encode an RGB uint8 array (JPEG, PNG, ...) as an upload would carry it."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **save_args)
    return buffer.getvalue()
