import numpy as np
import pytest
from PIL import Image

from rnnpool.data.classification import DataSpec, build_datasets, detect_format
from rnnpool.data.imagefolder import IMAGENET10, IMAGENET10_WNIDS, ImageFolder


def _img(path, color, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), color, np.uint8)).save(path)


def _imagenet(root, wnids, per_class=2):
    for split in ("train", "val"):
        for k, w in enumerate(wnids):
            for i in range(per_class):
                _img(root / split / w / f"{w}_{i}.JPEG", 10 * k + i)


def test_imagenet10_selects_the_ten_wnids(tmp_path):
    assert len(IMAGENET10) == 10 and IMAGENET10["n02690373"] == "airliner"
    _imagenet(tmp_path, list(IMAGENET10_WNIDS) + ["n09999999"])
    spec = DataSpec("imagefolder", str(tmp_path), imagenet10=True, image_size=16)
    data = build_datasets(spec)
    assert spec.classes == sorted(IMAGENET10)
    assert len(data["train"]) == 20 and len(data["val"]) == 20
    x, y = data["val"][3]
    assert x.shape == (3, 16, 16) and y == 1  # sorted: second wnid, second image
    assert all("n09999999" not in p for p, _ in data["train"].samples)
    assert detect_format(str(tmp_path)) == "imagefolder"


def test_missing_wnids_are_named(tmp_path):
    _imagenet(tmp_path, list(IMAGENET10_WNIDS)[:8])
    with pytest.raises(FileNotFoundError, match="n04285008, n04467665"):
        build_datasets(DataSpec("imagefolder", str(tmp_path), imagenet10=True))


def test_plain_folder_and_broken_image(tmp_path):
    _img(tmp_path / "cat" / "a.png", 1)
    _img(tmp_path / "dog" / "b.png", 2)
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    ds = ImageFolder(tmp_path, limit_per_class=5)
    assert ds.classes == ["cat", "dog"] and len(ds) == 3
    assert np.asarray(ds[0][0]).shape == (30, 40, 3)
    with pytest.raises(ValueError, match="broken.jpg"):
        ds[2]


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    # PIL's convert("RGB") clipped 16-bit grey to 255; expected: the high byte (v >> 8), by
    # hand: 0 -> 0, 32896 -> 128, 40000 -> 156, 65535 -> 255 (and 100 -> 0).
    from rnnpool.data.imagefolder import load_rgb

    values = np.array([[0, 32896, 40000, 65535, 100]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    rgb = np.asarray(load_rgb(str(tmp_path / "g16.png")))
    assert rgb.shape == (1, 5, 3)
    assert rgb[0, :, 0].tolist() == [0, 128, 156, 255, 0]
    assert (rgb == rgb[..., :1]).all()


def test_negative_limits_are_an_error_not_a_dropped_image(tmp_path):
    # A limit of -1 used to slice [:-1] and silently drop the last image of every class.
    for c in ("a", "b"):
        for i in range(3):
            _img(tmp_path / "train" / c / f"{i}.png", 10 * i)
            _img(tmp_path / "val" / c / f"{i}.png", 10 * i)
    with pytest.raises(ValueError, match="limit"):
        ImageFolder(tmp_path / "train", limit_per_class=-1)
    for kw in ({"train_limit": -1}, {"val_limit": -2}, {"image_size": 0},
               {"resize_size": -5}):
        with pytest.raises(ValueError, match="|".join(kw)):
            build_datasets(DataSpec("imagefolder", str(tmp_path), **{"image_size": 16, **kw}))
    assert len(ImageFolder(tmp_path / "train", limit_per_class=3)) == 6  # all 3 per class


def test_a_class_folder_without_images_is_named(tmp_path):
    # It used to become a label that no image has, silently.
    _img(tmp_path / "cat" / "a.png", 1)
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "eel").mkdir()
    _img(tmp_path / "fox" / "deep" / "b.png", 2)
    with pytest.raises(FileNotFoundError, match=r"dog, eel\b.*\.png"):
        ImageFolder(tmp_path)
    ds = ImageFolder(tmp_path, allow_empty=True)
    assert ds.classes == ["cat", "dog", "eel", "fox"] and [y for _, y in ds.samples] == [0, 3]


def test_hidden_files_are_not_images(tmp_path):
    # macOS copies leave "._name.jpg" metadata files beside every image; they are not images
    # and failed to load in the middle of an epoch.
    _img(tmp_path / "cat" / "a.png", 1)
    (tmp_path / "cat" / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    _img(tmp_path / "cat" / ".hidden" / "b.png", 2)
    ds = ImageFolder(tmp_path)
    assert [p.rsplit("/", 1)[-1] for p, _ in ds.samples] == ["a.png"]


def test_val_images_of_a_class_outside_the_training_classes_are_an_error(tmp_path):
    # They used to leave the evaluation set silently (accuracy over a subset).
    for split in ("train", "val"):
        for k, c in enumerate(("cat", "dog")):
            _img(tmp_path / split / c / "a.png", 10 * k)
    _img(tmp_path / "val" / "eel" / "a.png", 99)
    (tmp_path / "val" / "empty_backup").mkdir()  # no images: nothing lost, no error
    with pytest.raises(ValueError, match=r"val: class folder\(s\) eel hold images but are not "
                                         r"among the 2 classes of train/"):
        build_datasets(DataSpec("imagefolder", str(tmp_path), image_size=16))
    with pytest.raises(ValueError, match="eel .*of the checkpoint"):
        build_datasets(DataSpec("imagefolder", str(tmp_path), image_size=16,
                                classes=["cat", "dog"]), splits=("val",))
    (tmp_path / "val" / "eel" / "a.png").unlink()
    data = build_datasets(DataSpec("imagefolder", str(tmp_path), image_size=16))
    assert [y for _, y in data["val"].samples] == [0, 1]


def test_imagenet10_ignores_the_other_imagenet_classes(tmp_path):
    _imagenet(tmp_path, list(IMAGENET10_WNIDS) + ["n00000001"], per_class=1)
    data = build_datasets(DataSpec("imagefolder", str(tmp_path), imagenet10=True, image_size=16))
    assert len(data["val"]) == 10 and data["val"].unused_classes == ["n00000001"]


def test_image_modes_load_as_8_bit_rgb(tmp_path):
    from rnnpool.data.imagefolder import load_rgb

    v = np.array([[0, 77, 255]], np.uint8)
    cases = {  # file -> expected R, G, B planes (by hand)
        "l.png": (Image.fromarray(v, "L"), (v, v, v)),
        "la.png": (Image.fromarray(np.dstack([v, 255 - v]), "LA"), (v, v, v)),
        "rgba.png": (Image.fromarray(np.dstack([v, v // 2, 255 - v, v]), "RGBA"),
                     (v, v // 2, 255 - v)),  # alpha dropped, colours kept (as PIL / torchvision)
        "one.png": (Image.fromarray(v > 100), (255 * (v > 100),) * 3),
        # CMYK (0,0,0,0) is white and K = 255 black
        "cmyk.tif": (Image.fromarray(np.dstack([0 * v, 0 * v, 0 * v, np.array([[0, 255, 0]],
                                                                                np.uint8)]),
                                     "CMYK"), (np.array([[255, 0, 255]]),) * 3),
    }
    p = Image.new("P", (3, 1))
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    p.putpixel((1, 0), 1)
    cases["p.png"] = (p, (np.array([[0, 10, 0]]), np.array([[0, 20, 0]]), np.array([[0, 30, 0]])))
    for name, (im, planes) in cases.items():
        im.save(tmp_path / name)
        rgb = load_rgb(tmp_path / name)
        assert rgb.mode == "RGB" and rgb.size == (3, 1), name
        assert np.array_equal(np.asarray(rgb), np.dstack(planes).astype(np.uint8)), name


def test_truncated_images_are_named(tmp_path):
    from rnnpool.data.imagefolder import load_rgb

    a = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    for name in ("t.jpg", "t.png"):
        Image.fromarray(a).save(tmp_path / name)
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match=rf"cannot read image .*{name}.*truncated"):
            load_rgb(tmp_path / name)


def test_exif_orientation_is_not_applied(tmp_path):
    # Decision (docs/experiments.md): pixels as stored, as torchvision's / timm's loaders
    # (Image.open(path).convert("RGB")) that the paper's numbers come from.
    from rnnpool.data.imagefolder import load_rgb

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(tmp_path / "r.jpg", exif=exif)
    assert Image.open(tmp_path / "r.jpg").getexif()[0x0112] == 6
    assert load_rgb(tmp_path / "r.jpg").size == (40, 20)
