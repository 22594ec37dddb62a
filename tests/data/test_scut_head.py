import numpy as np
import pytest
from PIL import Image

from rnnpool.data.detection_transforms import eval_transform
from rnnpool.data.scut_head import ScutHeadDetection, VocAnnotationError, parse_voc_xml, split_ids

XML = ("<annotation><filename>{id}.jpg</filename>"
       "<size><width>64</width><height>48</height><depth>3</depth></size>\n"
       "{objects}</annotation>")
OBJ = ("<object><name>person</name><difficult>0</difficult>"
       "<bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>")


def make_scut(root, n=10):
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for i in range(n):
        arr = np.zeros((48, 64, 3), np.uint8)
        arr[10:20, 5:15] = 255  # the head of VOC box (6, 11, 15, 20)
        Image.fromarray(arr).save(root / "JPEGImages" / f"PartB_{i:05d}.jpg")
        objs = OBJ.format(6, 11, 15, 20)
        if i == 0:
            objs += OBJ.format(30, 30, 29, 40)  # xmax < xmin: zero width -> dropped
            objs += OBJ.format(60, 40, 70, 48)  # partly outside -> clipped to x 59..64
        (root / "Annotations" / f"PartB_{i:05d}.xml").write_text(XML.format(id=i, objects=objs))


def test_split_is_seeded_80_20_and_disjoint(tmp_path):
    make_scut(tmp_path)
    tr, va = ScutHeadDetection(tmp_path, "train"), ScutHeadDetection(tmp_path, "val")
    assert len(tr) == 8 and len(va) == 2 and not set(tr.ids) & set(va.ids)
    assert ScutHeadDetection(tmp_path, "train").ids == tr.ids
    ids = [f"{i:04d}" for i in range(100)]
    assert split_ids(ids, "val", seed=1) != split_ids(ids, "val", seed=0)
    assert len(ScutHeadDetection(tmp_path, "all")) == 10


def test_items_and_drop_counts(tmp_path):
    make_scut(tmp_path)
    ds = ScutHeadDetection(tmp_path, "all")
    assert ds.dropped.nonpositive_size == 1 and ds.dropped.clipped == 1
    img, t = ds[0]
    assert img.shape == (3, 48, 64)
    assert t["boxes"].tolist() == [[5, 10, 15, 20], [59, 39, 64, 48]]
    assert t["labels"].tolist() == [1, 1]
    assert img[:, 10:20, 5:15].min() > 0.9 and img[:, 10:20, 15].max() < 0.1
    ds = ScutHeadDetection(tmp_path, "all", transform=eval_transform(size=32))
    img, t = ds[1]
    assert img.shape == (3, 32, 32)
    np.testing.assert_allclose(t["boxes"].numpy(), [[2.5, 20 / 3, 7.5, 40 / 3]], rtol=1e-6)


def test_malformed_xml_names_file(tmp_path):
    make_scut(tmp_path, n=3)
    (tmp_path / "Annotations" / "PartB_00001.xml").write_text("<annotation><object>")
    with pytest.raises(VocAnnotationError, match="PartB_00001.xml"):
        ScutHeadDetection(tmp_path, "all")
    p = tmp_path / "b.xml"
    p.write_text(XML.format(id=0, objects=OBJ.format(1, 2, "x", 4)))
    with pytest.raises(VocAnnotationError, match=r"b\.xml: object 1 .*<xmax>"):
        parse_voc_xml(p)


def test_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="Annotations"):
        ScutHeadDetection(tmp_path)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_non_finite_coordinate_names_file_and_object(tmp_path, bad):
    # float("nan") parses: the NaN box passed the size and clipping tests (NaN compares false)
    # and reached the training targets as a NaN box.
    make_scut(tmp_path, n=2)
    (tmp_path / "Annotations" / "PartB_00001.xml").write_text(
        XML.format(id=1, objects=OBJ.format(6, 11, 15, 20) + OBJ.format(1, 2, bad, 4))
    )
    with pytest.raises(VocAnnotationError, match=r"PartB_00001\.xml: object 2 .*<xmax>"):
        ScutHeadDetection(tmp_path, "all")
