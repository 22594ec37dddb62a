import json

import numpy as np
import pytest
from PIL import Image

from rnnpool.cli import main
from rnnpool.data.vww import VisualWakeWords, make_vww, read_id_list, vww_labels

# Images 100x200 = 20,000 px: the 0.5 % threshold is an area of 100 px (strictly more needed).
PERSON, CAR = 1, 3


def _coco(images, anns):
    return {"images": [{"id": i, "width": 200, "height": 100, "file_name": f"im{i}.jpg"}
                       for i in images],
            "categories": [{"id": PERSON, "name": "person"}, {"id": CAR, "name": "car"}],
            "annotations": [dict(id=k, **a) for k, a in enumerate(anns)]}


def _ann(image, cat, area, bbox, crowd=0):
    return {"image_id": image, "category_id": cat, "area": area, "bbox": bbox, "iscrowd": crowd}


TRAIN = _coco([1, 2, 3, 4, 5, 6], [
    _ann(1, PERSON, 101, [0, 0, 20, 20]),     # seg 0.505 % > 0.5 %          -> 1
    _ann(2, PERSON, 100, [0, 0, 20, 20]),     # seg exactly 0.5 %: not above -> 0 (bbox 2 %: 1)
    _ann(3, CAR, 5000, [0, 0, 100, 50]),      # a big car, no person          -> 0
    _ann(4, PERSON, 30, [0, 0, 10, 10]),      # two small people...           -> 0
    _ann(4, PERSON, 150, [5, 5, 20, 20], 1),  # ...and a large crowd region   -> 1
    _ann(5, PERSON, 120, [0, 0, 9, 10]),      # seg 0.6 %, bbox 90 px 0.45 %  -> 1 (bbox: 0)
])                                            # 6: no annotations             -> 0
VAL = _coco([7, 8], [_ann(7, PERSON, 2000, [0, 0, 50, 50])])


def test_labels_by_hand():
    assert vww_labels(TRAIN) == {1: 1, 2: 0, 3: 0, 4: 1, 5: 1, 6: 0}
    assert vww_labels(TRAIN, area="bbox") == {1: 1, 2: 1, 3: 0, 4: 1, 5: 0, 6: 0}


def test_labels_agree_with_pycocotools_index(tmp_path):
    from pycocotools.coco import COCO

    path = tmp_path / "a.json"
    path.write_text(json.dumps(TRAIN))
    coco = COCO(str(path))
    person = coco.getCatIds(catNms=["person"])
    ref = {}
    for iid in coco.getImgIds():
        img = coco.loadImgs(iid)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=iid, catIds=person, iscrowd=None))
        ref[iid] = int(any(a["area"] / (img["width"] * img["height"]) > 0.005 for a in anns))
    assert vww_labels(TRAIN) == ref


def test_bad_annotations_are_named():
    bad = _coco([1], [_ann(9, PERSON, 500, [0, 0, 1, 1])])
    with pytest.raises(ValueError, match="annotation #0.*unknown image id 9"):
        vww_labels(bad, source="x.json")
    with pytest.raises(ValueError, match="no category named 'person'"):
        vww_labels({"images": [], "annotations": [], "categories": []})


def _coco_dir(tmp_path):
    (tmp_path / "annotations").mkdir(parents=True)
    (tmp_path / "annotations" / "instances_train2014.json").write_text(json.dumps(TRAIN))
    (tmp_path / "annotations" / "instances_val2014.json").write_text(json.dumps(VAL))
    for split, ids in (("train2014", range(1, 7)), ("val2014", (7, 8))):
        for i in ids:
            (tmp_path / split).mkdir(exist_ok=True)
            Image.fromarray(np.full((100, 200, 3), i * 20, np.uint8)).save(
                tmp_path / split / f"im{i}.jpg")
    return tmp_path


def test_make_vww_with_minival(tmp_path):
    coco = _coco_dir(tmp_path / "coco")
    ids = tmp_path / "minival.txt"
    ids.write_text("# minival\n7\n2\n\n123456\n")
    info = make_vww(coco, tmp_path / "vww", ids)
    val = (tmp_path / "vww" / "val.txt").read_text().splitlines()
    train = (tmp_path / "vww" / "train.txt").read_text().splitlines()
    assert val == ["train2014/im2.jpg 0", "val2014/im7.jpg 1"]
    assert train == ["train2014/im1.jpg 1", "train2014/im3.jpg 0", "train2014/im4.jpg 1",
                     "train2014/im5.jpg 1", "train2014/im6.jpg 0", "val2014/im8.jpg 0"]
    assert info["counts"]["train"] == {"images": 6, "person": 3, "no_person": 3}
    assert info["minival_ids_not_in_coco"] == 1
    ds = VisualWakeWords(tmp_path / "vww", "val")
    img, label = ds[1]
    assert label == 1 and img.size == (200, 100)


def test_make_vww_cli_without_minival_falls_back(tmp_path, capsys):
    coco = _coco_dir(tmp_path)
    assert main(["make-vww", "--coco", str(coco), "--area", "bbox"]) == 0
    out = capsys.readouterr().out
    assert "NOT the paper's split" in out
    assert (coco / "vww" / "val.txt").read_text().splitlines() == [
        "val2014/im7.jpg 1", "val2014/im8.jpg 0"]
    info = json.loads((coco / "vww" / "vww_info.json").read_text())
    assert info["area"] == "bbox" and info["counts"]["train"]["person"] == 3


def test_bad_id_list_line_is_named(tmp_path, capsys):
    p = tmp_path / "ids.txt"
    p.write_text("12\nabc\n")
    with pytest.raises(ValueError, match="line 2"):
        read_id_list(p)
    coco = _coco_dir(tmp_path / "c")
    assert main(["make-vww", "--coco", str(coco), "--minival-ids", str(p)]) == 2
    assert "line 2" in capsys.readouterr().err


def test_broken_vww_info_is_named(tmp_path):
    (tmp_path / "vww_info.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"vww_info\.json: not a JSON file"):
        VisualWakeWords(tmp_path, "val")
    (tmp_path / "vww_info.json").write_text(json.dumps({"counts": {}}))
    with pytest.raises(ValueError, match=r"vww_info\.json: no 'coco_dir'"):
        VisualWakeWords(tmp_path, "val")


def test_negative_limit_is_an_error_not_a_dropped_image(tmp_path):
    coco = _coco_dir(tmp_path / "coco")
    make_vww(coco, tmp_path / "vww")
    assert len(VisualWakeWords(tmp_path / "vww", "val")) == 2
    with pytest.raises(ValueError, match="limit must be >= 0"):
        VisualWakeWords(tmp_path / "vww", "val", limit=-1)  # used to give 1 of the 2 images


def test_threshold_is_a_fraction():
    # A percentage (5 meant as 5 %) would label every image "no person" without a word.
    coco = {"images": [{"id": 1, "width": 10, "height": 10}], "annotations": [],
            "categories": [{"id": 1, "name": "person"}]}
    for bad in (5.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="threshold must be a fraction"):
            vww_labels(coco, threshold=bad)
    assert vww_labels(coco, threshold=0.0) == {1: 0}


@pytest.mark.parametrize("break_it, message", [
    (lambda d: d["annotations"][0].pop("image_id"), r"annotation #0 \(id 0\) has no 'image_id'"),
    (lambda d: d["annotations"][0].update(image_id="x"),
     r"annotation #0 \(id 0\): 'image_id' must be an integer, got 'x'"),
    (lambda d: d["annotations"][0].pop("category_id"),  # was skipped: a person lost silently
     r"annotation #0 \(id 0\) has no 'category_id'"),
    (lambda d: d["images"][0].pop("id"), r"image #0 \(id None\) has no 'id'"),
    (lambda d: d["images"][0].update(width="wide"), r"image id 1 has no valid width/height"),
    (lambda d: d["categories"][0].pop("id"), r"category #0 \(id None\) has no 'id'"),
    (lambda d: d["annotations"].append(5), r"annotation #6 is not a JSON object"),
    (lambda d: d.update(images={"a": 1}), r"'images' is not a list"),
    (lambda d: d["images"][0].pop("file_name"), r"image #0 \(id 1\) has no 'file_name'"),
    (lambda d: d["annotations"][0].update(area="big"),  # was float()'s message, no file
     r"annotation #0 \(id 0\): 'area' must be a number >= 0, got 'big'"),
    (lambda d: d["annotations"][0].update(area=float("nan")),
     r"annotation #0 \(id 0\): 'area' must be a number >= 0, got nan"),
])
def test_malformed_coco_entries_are_named(tmp_path, capsys, break_it, message):
    # Each used to end in a KeyError / AttributeError / TypeError traceback or an int() message
    # without the file, or (category_id) to drop the annotation without a word.
    coco = _coco_dir(tmp_path / "c")
    ann = coco / "annotations" / "instances_train2014.json"
    data = json.loads(ann.read_text())
    break_it(data)
    ann.write_text(json.dumps(data))
    assert main(["make-vww", "--coco", str(coco), "--out", str(tmp_path / "v")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"rnnpool make-vww: error: {ann}: "), lines
    assert __import__("re").search(message, lines[0]), lines
    assert not (tmp_path / "v").exists()


def test_coco_file_that_is_not_an_object_is_named(tmp_path, capsys):
    coco = _coco_dir(tmp_path / "c")
    ann = coco / "annotations" / "instances_train2014.json"
    ann.write_text("5")  # was "TypeError: argument of type 'int' is not iterable"
    assert main(["make-vww", "--coco", str(coco), "--out", str(tmp_path / "v")]) == 2
    assert f"{ann}: not a COCO instances file" in capsys.readouterr().err


def test_a_repeated_image_id_in_one_file_is_named(tmp_path):
    # The second entry's size used to replace the first one's silently (a 10x10 image made a
    # 50 px person count), and make-vww then blamed "another split".
    coco = _coco([1, 2], [_ann(1, PERSON, 50, [0, 0, 5, 10])])
    coco["images"].append({"id": 1, "width": 10, "height": 10, "file_name": "x.jpg"})
    with pytest.raises(ValueError, match=r"x\.json: image #2 repeats the id 1 of image #0"):
        vww_labels(coco, source="x.json")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train2014.json").write_text(json.dumps(TRAIN))
    (tmp_path / "annotations" / "instances_val2014.json").write_text(json.dumps(_coco([3], [])))
    with pytest.raises(ValueError, match=r"instances_val2014\.json: image id 3 \(image #0\) "
                                         r"also appears in instances_train2014\.json"):
        make_vww(tmp_path, tmp_path / "out")


def _builder_labels(coco):
    """A literal transcription of the rule of TensorFlow's build_visualwakewords_data_lib.py
    (``_filter_annotations_list``): the category id of 'person' found by name, annotations
    indexed by image, an object is "small" when area / (width * height) < threshold, label 1
    when the image has a person annotation that is not small."""
    person = 1
    for c in coco["categories"]:
        if c["name"] == "person":
            person = c["id"]
    index = {img["id"]: [] for img in coco["images"]}
    for a in coco["annotations"]:
        index[a["image_id"]].append(a)
    out = {}
    for img in coco["images"]:
        small = [a["area"] / (img["height"] * img["width"]) < 0.005
                 for a in index[img["id"]] if int(a["category_id"]) == person]
        out[img["id"]] = int(False in small)
    return out


def test_labels_equal_the_reference_builder_except_exact_ties():
    # Random images and annotations; 'person' has id 7 and id 1 is another category (the
    # builder and we look the id up by name). Crowds count in both. The one difference, by
    # choice (SPEC §4, "more than"): an area of exactly 0.5 % of the image.
    rng = np.random.default_rng(0)
    images, anns, ties = [], [], set()
    for iid in range(1, 301):
        w, h = 10 * int(rng.integers(5, 70)), 20 * int(rng.integers(3, 35))  # 200 | w*h
        images.append({"id": iid, "width": w, "height": h, "file_name": f"{iid}.jpg"})
        for _ in range(int(rng.integers(0, 4))):  # some images have no annotation
            cat = int(rng.choice([1, 7, 7, 9]))
            if rng.random() < 0.15:
                area, tie = w * h // 200, True  # exactly 0.5 %
            else:
                area, tie = float(rng.uniform(0, 0.012) * w * h), False
            anns.append({"id": len(anns), "image_id": iid, "category_id": cat, "area": area,
                         "bbox": [0, 0, 1, 1], "iscrowd": int(rng.random() < 0.2)})
            if tie and cat == 7:
                ties.add(iid)
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "bicycle"}, {"id": 7, "name": "person"},
                           {"id": 9, "name": "dog"}]}
    ours, ref = vww_labels(coco), _builder_labels(coco)
    assert 20 < sum(ref.values()) < 280 and len(ties) >= 3  # both labels and ties occur
    differ = {i for i in ref if ours[i] != ref[i]}
    assert differ <= ties and all(ref[i] == 1 and ours[i] == 0 for i in differ)
    assert differ  # some tie decides its image's label
    assert {i: v for i, v in ours.items() if i not in ties} == \
        {i: v for i, v in ref.items() if i not in ties}
