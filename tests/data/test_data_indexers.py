"""Dataset indexers on small real layouts: Jester, Kinetics, UCF-101, generic folders."""

import json
import logging
import os

import pytest

from data_media import frames_rgb, write_frames, write_video
from keras_efficient3d.data import DataError, index_folders, index_jester, index_kinetics, index_ucf101
from keras_efficient3d.data.decode import list_frame_files


def write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return str(path)


def test_missing_frames_of_a_numbering():
    from keras_efficient3d.data.decode import missing_frames

    folder = os.path.join("a", "b")
    names = [os.path.join(folder, f"{i:05d}.jpg") for i in (1, 2, 4, 5, 7)]
    assert missing_frames(names) == (2, "00003.jpg")
    assert missing_frames(names[:2]) is None and missing_frames(names[:1]) is None
    assert missing_frames([f"img_{i}.png" for i in (8, 9, 11)]) == (1, "img_10.png")
    assert missing_frames([f"image_{i:05d}.jpg" for i in range(9, 12)]) is None
    assert missing_frames(["a.jpg", "b.jpg"]) is None  # no numbering to go by


def test_a_frame_folder_with_frames_missing_is_indexed_and_said(jester_root, caplog):
    """A folder whose numbering skips frames was read without a word: its clips jump where
    the frames are missing (the original's loader stops at the first missing frame)."""
    twelve = os.path.join(jester_root, "12")
    os.remove(os.path.join(twelve, "00002.jpg"))
    with caplog.at_level(logging.WARNING, logger="keras_efficient3d.data"):
        records, _ = index_jester(jester_root, "train")
    assert [(r.video_id, r.num_frames) for r in records] == [("11", 5), ("12", 3)]
    assert (f"1 frame folder with frames missing from the numbering, read as they are: their "
            f"clips jump there (first: {twelve} (1 missing, first 00002.jpg))") in caplog.text


# ---------------------------------------------------------------- Jester
@pytest.fixture
def jester_root(tmp_path):
    root = str(tmp_path / "jester")
    for video_id, n in (("11", 5), ("12", 4), ("13", 6), ("20", 3)):
        write_frames(os.path.join(root, video_id), frames_rgb(n, height=16, width=24))
    os.makedirs(os.path.join(root, "14"))  # empty folder
    write_text(os.path.join(root, "jester-v1-labels.csv"), "Swiping Left\nSwiping Right\nNo gesture\n")
    write_text(os.path.join(root, "jester-v1-train.csv"),
               "11;Swiping Right\n12;No gesture\n\n14;Swiping Left\n15;Swiping Left\n")
    write_text(os.path.join(root, "jester-v1-validation.csv"), "13;Swiping Left\n")
    write_text(os.path.join(root, "jester-v1-test.csv"), "20\n")
    return root


def test_jester_csv_index(jester_root, caplog):
    with caplog.at_level(logging.WARNING, logger="keras_efficient3d.data"):
        records, classes = index_jester(jester_root, "train")
    assert classes == ["Swiping Left", "Swiping Right", "No gesture"]
    assert [(r.video_id, r.label, r.kind, r.num_frames) for r in records] == [("11", 1, "frames", 5),
                                                                            ("12", 2, "frames", 4)]
    assert records[0].path == os.path.join(jester_root, "11")
    # 14 is empty, 15 is missing: both skipped and summarised.
    assert "1 missing" in caplog.text and "1 empty" in caplog.text
    val, _ = index_jester(jester_root, "val")
    assert [(r.video_id, r.label) for r in val] == [("13", 0)]
    test, _ = index_jester(jester_root, "test")
    assert [(r.video_id, r.label) for r in test] == [("20", -1)]


def test_a_frame_folder_of_two_naming_schemes_is_skipped_and_says_why(jester_root, caplog):
    """00001.jpg... and image_00001.jpg... in one folder (its frames extracted twice) read
    as one video of twice the frames, in neither order; the index says why it is skipped."""
    write_frames(os.path.join(jester_root, "12"), frames_rgb(4, height=16, width=24),
                 pattern="image_{:05d}.jpg", start=1)
    with caplog.at_level(logging.WARNING, logger="keras_efficient3d.data"):
        records, _ = index_jester(jester_root, "train")
    assert [r.video_id for r in records] == ["11"]
    twelve = os.path.join(jester_root, "12")
    assert (f"2 empty/unreadable and skipped (first: {twelve}: frame folder holds images named "
            "in 2 ways (00001.jpg, image_00001.jpg): one video's frames extracted twice? keep "
            "one set)") in caplog.text
    with pytest.raises(DataError, match=r"named in 2 ways \(00001.jpg, image_00001.jpg\)"):
        list_frame_files(twelve)


def test_jester_separate_annotation_folder(jester_root, tmp_path):
    annotations = tmp_path / "ann"
    for name in ("jester-v1-labels.csv", "jester-v1-validation.csv"):
        write_text(str(annotations / name), open(os.path.join(jester_root, name)).read())
    records, _ = index_jester(jester_root, "validation", annotations=str(annotations))
    assert [(r.video_id, r.num_frames) for r in records] == [("13", 6)]


def test_jester_original_json(jester_root, tmp_path):
    data = {
        "labels": ["Swiping Left", "Swiping Right", "No gesture"],
        "database": {
            "11": {"subset": "training", "annotations": {"label": "Swiping Right"}},
            "13": {"subset": "validation", "annotations": {"label": "Swiping Left"}},
            "12": {"subset": "training", "annotations": {"label": "No gesture"}},
        },
    }
    path = write_text(str(tmp_path / "jester.json"), json.dumps(data))
    records, classes = index_jester(jester_root, "training", annotations=path)
    assert sorted((r.video_id, r.label) for r in records) == [("11", 1), ("12", 2)]
    # written by a Windows editor, with a byte-order mark, as the CSV readers accept
    with open(path, "w", encoding="utf-8-sig") as file:
        json.dump(data, file)
    assert len(index_jester(jester_root, "training", annotations=path)[0]) == 2
    data["database"]["12"]["annotations"]["label"] = "Waving"
    write_text(path, json.dumps(data))
    with pytest.raises(DataError, match="Waving"):
        index_jester(jester_root, "train", annotations=path)
    # Other shapes of JSON: one line naming the file, not an AttributeError.
    for bad in ({"labels": ["a"], "database": [1, 2]}, {"labels": ["a"], "database": {"1": "training"}},
                {"labels": ["a"], "database": {"1": {"subset": "training", "annotations": {"label": ["a"]}}}},
                {"labels": "a", "database": {}}):
        write_text(path, json.dumps(bad))
        with pytest.raises(DataError, match=r"expected the original's annotation JSON|is not a name") as info:
            index_jester(jester_root, "train", annotations=path)
        assert str(info.value).startswith(path)
    # a name listed twice (its videos took the last index), a training video without a label
    # (it trained as class -1)
    for bad, match in (({"labels": ["a", "b", "a"], "database": {}}, "'labels' names 'a' twice"),
                       ({"labels": ["a"], "database": {"1": {"subset": "training", "annotations": {}}}},
                        "video '1' of subset 'training' has no label")):
        write_text(path, json.dumps(bad))
        with pytest.raises(DataError, match=match):
            index_jester(jester_root, "train", annotations=path)


@pytest.mark.parametrize(
    "content, line, match",
    [
        ("11;Swiping Right\n12\n", 2, "malformed"),
        ("11;Swiping Right\n12;No gesture;x\n", 2, "malformed"),
        ("11;Swiping Right\n\n12;Thumb Up\n", 3, "not in the label list"),
        ("11;Swiping Right\n11;No gesture\n", 2, "duplicate"),
        # a form feed is no line break (the lines after it were numbered one too far)
        ("11;Swiping Right\x0c\n12;Thumb Up\n", 2, "not in the label list$"),
        # the official CSVs have no header: one written is said to be one
        ("video_id;label\n11;Swiping Right\n", 1, "'label' is not in the label list \\(a "
                                                   "header line\\? the Jester CSVs have none"),
    ],
)
def test_jester_bad_csv_lines_name_file_and_line(jester_root, content, line, match):
    path = write_text(os.path.join(jester_root, "jester-v1-train.csv"), content)
    with pytest.raises(DataError, match=match) as info:
        index_jester(jester_root, "train")
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_jester_missing_label_file(jester_root):
    os.remove(os.path.join(jester_root, "jester-v1-labels.csv"))
    with pytest.raises(DataError, match=r"jester-v1-labels.csv: annotation file not found \(the "
                                        r"jester dataset is read in the Jester layout: .* a "
                                        r"folder of class folders is --dataset=folders\)"):
        index_jester(jester_root, "train")
    with pytest.raises(ValueError, match="split"):
        index_jester(jester_root, "holdout")
    labels = write_text(os.path.join(jester_root, "jester-v1-labels.csv"),
                        "label\nSwiping Left\nSwiping Right\nNo gesture\n")
    with pytest.raises(DataError, match=rf"^{labels}:1: 'label' reads as a header: the file "
                                        r"lists one class per line, without one$"):
        index_jester(jester_root, "train")
    os.remove(labels)
    with pytest.raises(DataError, match=r"or in the folder --annotations names"):
        index_jester(jester_root, "train")
    # --annotations naming one of the CSVs: the folder was joined onto it
    train_csv = os.path.join(jester_root, "jester-v1-train.csv")
    with pytest.raises(DataError, match=rf"^{train_csv}: a file: the annotations are a folder "
                                        r"holding jester-v1-labels.csv and the split CSVs, or the "
                                        r"original's JSON file$"):
        index_jester(jester_root, "train", annotations=train_csv)


def test_videos_found_only_under_a_folder_of_the_root_say_that_folder(jester_root, tmp_path,
                                                                      caplog):
    """--data_root=/data/jester where the download unpacked into /data/jester/20bn-jester-v1:
    every video missing, and the summary says where they are."""
    import shutil

    parent = tmp_path / "data"
    nested = parent / "20bn-jester-v1"
    shutil.copytree(jester_root, nested)
    with caplog.at_level(logging.WARNING, logger="keras_efficient3d.data"):
        records, _ = index_jester(str(parent), "train", annotations=str(nested))
    assert records == []
    assert (f"0 videos indexed, 4 missing and skipped (first: {parent / '11'}); they are under "
            f"{nested}: give that folder as the data root") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keras_efficient3d.data"):
        index_jester(jester_root, "train")  # one found: nothing said of other folders
    assert "they are under" not in caplog.text and "1 missing" in caplog.text
    # The download as it unpacks: the CSVs in /data/jester, the frames one folder down. The
    # hint's folder alone then missed the CSVs ("annotation file not found"): it names them.
    for name in os.listdir(nested):
        if name.endswith(".csv"):
            shutil.copy(nested / name, parent / name)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keras_efficient3d.data"):
        index_jester(str(parent), "train")
    assert (f"give that folder as the data root, and --annotations={parent} (where the CSVs "
            "are)") in caplog.text


def test_jester_reencoded_as_videos_is_read_by_its_ids(jester_root, tmp_path):
    """A Jester set of <id>.mp4 files (re-encoded from its frames): every video was
    "missing" under the ids of its CSVs."""
    import shutil

    root = tmp_path / "as_videos"
    root.mkdir()
    for name in os.listdir(jester_root):
        if name.endswith(".csv"):
            shutil.copy(os.path.join(jester_root, name), root / name)
    write_video(str(root / "11.mp4"), frames_rgb(5, height=16, width=24))
    write_video(str(root / "12.avi"), frames_rgb(4, height=16, width=24), "avi")
    records, _ = index_jester(str(root), "train")
    assert [(r.video_id, r.label, r.kind, os.path.basename(r.path)) for r in records] == [
        ("11", 1, "video", "11.mp4"), ("12", 2, "video", "12.avi")]


# ---------------------------------------------------------------- Kinetics
KINETICS_CSV = (
    "label,youtube_id,time_start,time_end,split\n"
    "abseiling,aaa,10,20,train\n"
    "air drumming,bbb,0,10,train\n"
    "abseiling,ccc,5,15,train\n"
    "air drumming,ddd,30,40,val\n"
    "zumba,eee,1,11,train\n"
)


@pytest.fixture
def kinetics_root(tmp_path):
    root = str(tmp_path / "kinetics")
    small = frames_rgb(6, height=16, width=24)
    write_video(os.path.join(root, "train", "abseiling", "aaa_000010_000020.mp4"), small)
    write_video(os.path.join(root, "train", "air_drumming", "bbb_000000_000010.mp4"), small)  # underscored
    write_video(os.path.join(root, "air drumming", "ddd_000030_000040.mp4"), small)  # original's layout
    write_video(os.path.join(root, "train", "zumba", "eee_000001_000011.mp4"), small)
    # ccc is missing.
    return root


def test_kinetics_index(kinetics_root, tmp_path, caplog):
    csv_path = write_text(str(tmp_path / "kinetics_600_train.csv"), KINETICS_CSV)
    with caplog.at_level(logging.WARNING, logger="keras_efficient3d.data"):
        records, classes = index_kinetics(kinetics_root, csv_path, "train")
    assert classes == ["abseiling", "air drumming", "zumba"]
    assert [(r.video_id, r.label, r.kind) for r in records] == [
        ("aaa_000010_000020", 0, "video"), ("bbb_000000_000010", 1, "video"), ("eee_000001_000011", 2, "video")]
    assert records[1].path.endswith(os.path.join("train", "air_drumming", "bbb_000000_000010.mp4"))
    assert "1 missing" in caplog.text and "ccc_000005_000015" in caplog.text
    val, val_classes = index_kinetics(kinetics_root, csv_path, "validation", count_frames=True)
    assert val_classes == classes
    assert [(r.video_id, r.label, r.num_frames) for r in val] == [("ddd_000030_000040", 1, 6)]


def test_kinetics_reads_the_originals_annotation_json(kinetics_root, tmp_path):
    """utils/kinetics_json.py's file (database by subset, keys <id>_<start>_<end>.mp4, the
    labels in the order its models number them, not sorted), and ActivityNet's flat layout
    (3D-ResNets': entries naming their subset, a segment)."""
    labels = ["zumba", "abseiling", "air drumming"]  # the order of the validation CSV it read

    def entry(label):
        return {"annotations": {"label": label}, "n_frames": 6}

    original = {"labels": labels, "database": {
        "training": {"aaa_000010_000020.mp4": entry("abseiling"),
                     "bbb_000000_000010.mp4": entry("air drumming"),
                     "eee_000001_000011.mp4": entry("zumba")},
        "validation": {"ddd_000030_000040.mp4": entry("air drumming")}}}
    path = write_text(str(tmp_path / "kinetics.json"), json.dumps(original))
    records, classes = index_kinetics(kinetics_root, path, "train")
    assert classes == labels
    assert [(r.video_id, r.label) for r in records] == [
        ("aaa_000010_000020", 1), ("bbb_000000_000010", 2), ("eee_000001_000011", 0)]
    val, _ = index_kinetics(kinetics_root, path, "validation", classes=classes)
    assert [(r.video_id, r.label) for r in val] == [("ddd_000030_000040", 2)]
    flat = {"labels": labels, "database": {
        "aaa": {"subset": "training", "annotations": {"label": "abseiling", "segment": [10, 20]}},
        "eee_000001_000011": {"subset": "training",
                              "annotations": {"label": "zumba", "segment": [1, 11]}}}}
    path = write_text(str(tmp_path / "flat.json"), json.dumps(flat))
    assert [(r.video_id, r.label) for r in index_kinetics(kinetics_root, path, "train")[0]] == [
        ("aaa_000010_000020", 1), ("eee_000001_000011", 0)]
    bad = write_text(str(tmp_path / "bad.json"), json.dumps({"database": {"training": {
        "aaa.mp4": entry("abseiling")}}}))
    with pytest.raises(DataError, match=r"bad.json: entry 'aaa.mp4': expected "
                                        r"<youtube_id>_<start>_<end> or a 'segment'"):
        index_kinetics(kinetics_root, bad, "train")
    wrong = write_text(str(tmp_path / "w.json"), "[1, 2]")
    with pytest.raises(DataError, match=r"expected the original's annotation JSON"):
        index_kinetics(kinetics_root, wrong, "train")


def test_kinetics_bad_rows(kinetics_root, tmp_path):
    bad_time = write_text(str(tmp_path / "a.csv"), KINETICS_CSV.replace("bbb,0,10", "bbb,zero,10"))
    with pytest.raises(DataError, match=r"whole seconds \(found 'zero', '10'\)") as info:
        index_kinetics(kinetics_root, bad_time, "train")
    assert str(info.value).startswith(f"{bad_time}:3: ")
    half = write_text(str(tmp_path / "half.csv"), KINETICS_CSV.replace("bbb,0,10", "bbb,0.5,10"))
    with pytest.raises(DataError, match=r"whole seconds \(found '0.5', '10'\)"):
        index_kinetics(kinetics_root, half, "train")
    # some copies write the times as floats: 10.0 is the 10 of the file name
    floats = write_text(str(tmp_path / "f.csv"), KINETICS_CSV.replace("aaa,10,20", "aaa,10.0,20.0"))
    assert index_kinetics(kinetics_root, floats, "train")[0][0].video_id == "aaa_000010_000020"
    # An unbalanced quote swallows the rest of the file: the record's first line is named.
    quote = write_text(str(tmp_path / "q.csv"), KINETICS_CSV.replace("bbb,0,10", '"bbb,0,10'))
    with pytest.raises(DataError, match="fields") as info:
        index_kinetics(kinetics_root, quote, "train")
    assert str(info.value).startswith(f"{quote}:3: ")
    # ... and in a large file, past csv's field size limit: one line still, not csv.Error.
    big = write_text(str(tmp_path / "big.csv"),
                     KINETICS_CSV.replace("bbb,0,10", '"bbb,0,10') + "abseiling,x,0,10,train\n" * 9000)
    with pytest.raises(DataError, match="malformed CSV from this line on .*unbalanced quote") as info:
        index_kinetics(kinetics_root, big, "train")
    assert str(info.value).startswith(f"{big}:3: ")
    short = write_text(str(tmp_path / "b.csv"), KINETICS_CSV + "abseiling,fff,1\n")
    with pytest.raises(DataError, match="fields") as info:
        index_kinetics(kinetics_root, short, "train")
    assert f"{short}:7:" in str(info.value)
    no_header = write_text(str(tmp_path / "c.csv"), "abseiling,aaa,10,20,train\n")
    with pytest.raises(DataError, match="header"):
        index_kinetics(kinetics_root, no_header, "train")
    good = write_text(str(tmp_path / "d.csv"), KINETICS_CSV)
    with pytest.raises(DataError, match="'zumba' is not in the class list") as info:
        index_kinetics(kinetics_root, good, "train", classes=["abseiling", "air drumming"])
    assert f"{good}:6:" in str(info.value)
    with pytest.raises(DataError, match="not found"):
        index_kinetics(kinetics_root, str(tmp_path / "none.csv"), "train")
    # an unbalanced quote in the header of a large file: one line, not csv.Error
    header = write_text(str(tmp_path / "h.csv"), '"' + KINETICS_CSV + "abseiling,x,0,10,train\n" * 9000)
    with pytest.raises(DataError, match="malformed CSV header") as info:
        index_kinetics(kinetics_root, header, "train")
    assert str(info.value).startswith(f"{header}:1: ")
    # a class file naming a class twice: its videos took the second index
    twice = write_text(str(tmp_path / "classes.txt"), "abseiling\nair drumming\nabseiling\n")
    with pytest.raises(DataError, match="duplicate class name 'abseiling' .first on line 1.") as info:
        index_kinetics(kinetics_root, good, "train", classes=twice)
    assert str(info.value).startswith(f"{twice}:3: ")


def test_kinetics_rows_listed_twice_index_once_and_say_so(kinetics_root, tmp_path, caplog):
    # once more in the same CSV, and once more in a second CSV given beside it
    first = write_text(str(tmp_path / "k1.csv"), KINETICS_CSV + "abseiling,aaa,10,20,train\n")
    second = write_text(str(tmp_path / "k2.csv"), "label,youtube_id,time_start,time_end,split\n"
                        "zumba,eee,1,11,train\n")
    with caplog.at_level(logging.WARNING, logger="keras_efficient3d.data"):
        records, _ = index_kinetics(kinetics_root, [first, second], "train")
    assert [r.video_id for r in records] == [
        "aaa_000010_000020", "bbb_000000_000010", "eee_000001_000011"]
    assert (f"2 duplicate rows skipped (first: {first}:7 (aaa_000010_000020 again, first on "
            "line 2))") in caplog.text


def test_kinetics_test_split_without_labels(tmp_path):
    root = str(tmp_path / "k")
    write_video(os.path.join(root, "test", "xyz_000001_000011.mp4"), frames_rgb(4, height=16, width=24))
    csv_path = write_text(str(tmp_path / "test.csv"), "youtube_id,time_start,time_end,split\nxyz,1,11,test\n")
    records, classes = index_kinetics(root, csv_path, "test", classes=["a", "b"])
    assert [(r.video_id, r.label) for r in records] == [("xyz_000001_000011", -1)]


# ---------------------------------------------------------------- UCF-101
@pytest.fixture
def ucf_root(tmp_path):
    root = str(tmp_path / "ucf")
    small = frames_rgb(5, height=16, width=24)
    write_video(os.path.join(root, "ApplyEyeMakeup", "v_ApplyEyeMakeup_g08_c01.avi"), small, "avi")
    write_frames(os.path.join(root, "Archery", "v_Archery_g01_c01"), small, pattern="image_{:05d}.jpg")
    write_video(os.path.join(root, "Archery", "v_Archery_g02_c01.avi"), small, "avi")
    write_text(os.path.join(root, "classInd.txt"), "1 ApplyEyeMakeup\r\n2 ApplyLipstick\r\n3 Archery\r\n")
    write_text(os.path.join(root, "trainlist01.txt"),
               "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nArchery/v_Archery_g01_c01.avi 3\n"
               "ApplyLipstick/v_ApplyLipstick_g01_c01.avi 2\n")
    write_text(os.path.join(root, "testlist01.txt"), "Archery/v_Archery_g02_c01.avi\n")
    return root


def test_ucf101_index(ucf_root, caplog):
    with caplog.at_level(logging.WARNING, logger="keras_efficient3d.data"):
        records, classes = index_ucf101(ucf_root, "train", fold=1)
    assert classes == ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
    assert [(r.video_id, r.label, r.kind, r.num_frames) for r in records] == [
        ("v_ApplyEyeMakeup_g08_c01", 0, "video", 5), ("v_Archery_g01_c01", 2, "frames", 5)]
    assert "1 missing" in caplog.text
    test, _ = index_ucf101(ucf_root, "test", fold=1)
    assert [(r.video_id, r.label) for r in test] == [("v_Archery_g02_c01", 2)]


def test_ucf101_finds_a_listed_avi_under_another_extension_or_case(ucf_root):
    """The lists name .avi: videos re-encoded to .mp4, or named .AVI, were all missing
    ("0 videos indexed"); the listed file itself wins over another of its name."""
    small = frames_rgb(5, height=16, width=24)
    folder = os.path.join(ucf_root, "ApplyLipstick")
    write_video(os.path.join(folder, "v_ApplyLipstick_g01_c01.mp4"), small)
    os.rename(os.path.join(ucf_root, "ApplyEyeMakeup", "v_ApplyEyeMakeup_g08_c01.avi"),
              os.path.join(ucf_root, "ApplyEyeMakeup", "v_ApplyEyeMakeup_g08_c01.AVI"))
    records, _ = index_ucf101(ucf_root, "train", fold=1)
    assert [(os.path.basename(r.path), r.label, r.kind) for r in records] == [
        ("v_ApplyEyeMakeup_g08_c01.AVI", 0, "video"), ("v_Archery_g01_c01", 2, "frames"),
        ("v_ApplyLipstick_g01_c01.mp4", 1, "video")]
    write_video(os.path.join(ucf_root, "Archery", "v_Archery_g02_c01.mp4"), small)
    test, _ = index_ucf101(ucf_root, "test", fold=1)
    assert [os.path.basename(r.path) for r in test] == ["v_Archery_g02_c01.avi"]


def test_kinetics_finds_a_video_whose_extension_is_in_upper_case(kinetics_root, tmp_path):
    """.MP4 was missing where .mkv was found; the YouTube id keeps its case."""
    os.rename(os.path.join(kinetics_root, "train", "zumba", "eee_000001_000011.mp4"),
              os.path.join(kinetics_root, "train", "zumba", "eee_000001_000011.MP4"))
    write_video(os.path.join(kinetics_root, "train", "abseiling", "CCC_000005_000015.mp4"),
                frames_rgb(6, height=16, width=24))  # another video: ccc stays missing
    csv_path = write_text(str(tmp_path / "kinetics_600_train.csv"), KINETICS_CSV)
    records, _ = index_kinetics(kinetics_root, csv_path, "train")
    assert [os.path.basename(r.path) for r in records] == [
        "aaa_000010_000020.mp4", "bbb_000000_000010.mp4", "eee_000001_000011.MP4"]


@pytest.mark.parametrize(
    "content, line, match",
    [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 2\n", 1, "disagrees"),
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nFencing/v_Fencing_g01_c01.avi 4\n", 2, "not in classInd"),
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi\n", 1, "malformed"),
        ("Archery/v_Archery_g01_c01.avi 3\nApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
         "Archery/v_Archery_g01_c01.avi 3\n", 3,
         r"duplicate video 'Archery/v_Archery_g01_c01.avi' \(first on line 1\)"),
    ],
)
def test_ucf101_bad_lines(ucf_root, content, line, match):
    path = write_text(os.path.join(ucf_root, "trainlist01.txt"), content)
    with pytest.raises(DataError, match=match) as info:
        index_ucf101(ucf_root, "train")
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_ucf101_bad_class_file_and_fold(ucf_root):
    path = write_text(os.path.join(ucf_root, "classInd.txt"), "1 A\n3 B\n")
    with pytest.raises(DataError, match="out of order") as info:
        index_ucf101(ucf_root, "train")
    assert str(info.value).startswith(f"{path}:2: ")
    with pytest.raises(ValueError, match="fold"):
        index_ucf101(ucf_root, "train", fold=4)
    with pytest.raises(DataError, match="trainlist02.txt: annotation file not found"):
        write_text(path, "1 ApplyEyeMakeup\n2 ApplyLipstick\n3 Archery\n")
        index_ucf101(ucf_root, "train", fold=2)
    os.remove(path)
    with pytest.raises(DataError, match=r"classInd.txt: annotation file not found \(name the "
                                        r"folder holding classInd.txt .* with --annotations\)"):
        index_ucf101(ucf_root, "train")


# ---------------------------------------------------------------- generic folders
def test_folders_index(tmp_path):
    root = str(tmp_path / "folders")
    small = frames_rgb(4, height=16, width=24)
    write_video(os.path.join(root, "train", "cat", "a.mp4"), small)
    write_frames(os.path.join(root, "train", "dog", "b"), small)
    write_text(os.path.join(root, "train", "dog", "notes.txt"), "ignored")
    os.makedirs(os.path.join(root, "train", "dog", "empty"))
    write_text(os.path.join(root, "train", "cat", "broken.mp4"), "")  # a failed download
    write_video(os.path.join(root, "val", "eel", "c.webm"), small, "webm")
    # other folders of the root name no class (they added classes, shifting the indices)
    write_frames(os.path.join(root, "unlabelled", "clip_0001"), small)
    os.makedirs(os.path.join(root, "annotations", "old"))
    records, classes = index_folders(root, "train", count_frames=True)
    assert classes == ["cat", "dog", "eel"]  # union over splits: same indices in val
    assert [(r.video_id, r.label, r.kind, r.num_frames) for r in records] == [("a", 0, "video", 4),
                                                                            ("b", 1, "frames", 4)]
    lazy, _ = index_folders(root, "train")
    assert [r.num_frames for r in lazy] == [None, 4]  # videos counted at load time only
    val, val_classes = index_folders(root, "val")
    assert val_classes == classes and [(r.video_id, r.label) for r in val] == [("c", 2)]
    with pytest.raises(DataError, match="split folder 'test' not found"):
        index_folders(root, "test")
    # the list is shown: a folder named otherwise than a model's class is plain to see
    with pytest.raises(DataError, match=r"class folder\(s\) \['dog'\] are not among the 1 "
                                        r"classes \['cat'\]"):
        index_folders(root, "train", classes=["cat"])
    flat, flat_classes = index_folders(os.path.join(root, "train"), split=None)
    assert flat_classes == ["cat", "dog"] and len(flat) == 2
    with pytest.raises(DataError, match=r"holds splits: its folders train and val are splits, not classes; "
                                        r"index one: split='train'"):
        index_folders(root, split=None)  # the root of the splits, as if it had none


def test_videos_beside_the_class_folders_are_said_to_need_one(tmp_path):
    """val/left_clip3.mp4 (no class folder): "no video file or frame folder found", beside
    four videos."""
    root = tmp_path / "flat"
    write_video(str(root / "train" / "left" / "a.mp4"), frames_rgb(4, height=16, width=24))
    for name in ("left_clip3.mp4", "right_clip1.mp4"):
        write_video(str(root / "val" / name), frames_rgb(4, height=16, width=24))
    with pytest.raises(DataError, match=r"val: no video in a class folder; 2 videos "
                                        r"\(left_clip3.mp4, ...\) lie in the folder itself: put "
                                        r"each in a folder named after its class$"):
        index_folders(str(root), "val")


def test_folders_read_every_container_ffmpeg_reads_and_say_what_they_ignore(tmp_path, caplog):
    """A .wmv or .flv in a class folder was ignored without a word (12 of 36 videos
    indexed); other files are counted in the summary line, by extension."""
    import shutil

    root = tmp_path / "folders"
    small = frames_rgb(4, height=16, width=24)
    write_video(str(root / "train" / "cat" / "a.mp4"), small)
    for ext in (".wmv", ".flv", ".3gp"):  # FFmpeg reads a container by its content
        shutil.copy(root / "train" / "cat" / "a.mp4", root / "train" / "cat" / f"b{ext}")
    for name in ("notes.txt", "more.txt", "Thumbs.db", "README"):
        write_text(str(root / "train" / "cat" / name), "x")
    with caplog.at_level(logging.INFO, logger="keras_efficient3d.data"):
        records, _ = index_folders(str(root), "train", count_frames=True)
    assert sorted(os.path.basename(r.path) for r in records) == [
        "a.mp4", "b.3gp", "b.flv", "b.wmv"]
    assert all(r.num_frames == 4 for r in records)
    assert ("folders [train]: 4 videos indexed; 4 other files ignored (.txt 2, no extension 1, "
            ".db 1: not a video extension)") in caplog.text


def test_index_dataset_reads_either_layout_the_trainer_reads(tmp_path):
    """The exporters' calibration (no --dataset flag): the Jester layout by its labels CSV,
    else a folder of class folders; a folder of neither is one line saying what was looked for."""
    from keras_efficient3d.data import agreement_records, index_dataset, synthetic

    for layout in ("jester", "video"):
        root = synthetic.generate(tmp_path / layout, layout=layout, videos_per_class=2, seed=1,
                                  frames=8, size=32, num_workers=1)
        train, classes = index_dataset(root, "train")
        val, val_classes = index_dataset(root, "validation")
        assert len(classes) == 8 and classes == val_classes, layout
        assert train and val and not {r.path for r in train} & {r.path for r in val}
        reader = index_jester if layout == "jester" else index_folders
        split = "validation" if layout == "jester" else "val"
        assert [r.path for r in val] == [r.path for r in reader(root, split)[0]]
        records, note = agreement_records(root)  # an int8 export's agreement check
        assert note is None and [r.path for r in records] == [r.path for r in val]
    # no validation split: the check runs on the training clips, and says so
    import shutil

    shutil.rmtree(tmp_path / "video" / "val")
    records, note = agreement_records(tmp_path / "video")
    assert [r.path for r in records] == [r.path for r in index_folders(tmp_path / "video")[0]]
    assert note.startswith("the int8 agreement check runs on training clips: no validation "
                           "split (split folder 'val' not found"), note
    with pytest.raises(ValueError, match="`split` must be 'train' or 'validation'"):
        index_dataset(tmp_path / "video", "test")
    # class folders without split folders (UCF-101's videos, whose splits are lists apart):
    # every video is a training (calibration) clip; the agreement check runs on them, saying so
    ucf = tmp_path / "UCF-101"
    for name in ("ApplyEyeMakeup", "Archery"):
        write_video(str(ucf / name / f"v_{name}_g01_c01.avi"), frames_rgb(4, height=16, width=24),
                    "avi")
    train, classes = index_dataset(ucf)
    assert classes == ["ApplyEyeMakeup", "Archery"] and len(train) == 2
    records, note = agreement_records(ucf)
    assert len(records) == 2 and note.startswith(
        "the int8 agreement check runs on training clips: no validation split (no "
        "jester-v1-labels.csv (the Jester layout) and no val/ folder (class folders without "
        "split folders))"), note
    (tmp_path / "other" / "clips").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        index_dataset(tmp_path / "other")
    assert str(err.value) == (f"{tmp_path / 'other'}: neither dataset layout: no "
                              "jester-v1-labels.csv (the Jester layout) and no train/ or val/ "
                              "folder of class folders (found: 'clips'); as class folders "
                              "alone: no video file or frame folder found")


def test_a_missing_split_folder_lists_a_few_of_the_folders_found(tmp_path):
    """A Jester root of 148,000 numbered folders given as --dataset=folders: the message
    names the first folders and counts the rest, in one line."""
    for i in range(20):
        (tmp_path / f"{i:05d}").mkdir()
    with pytest.raises(DataError) as err:
        index_folders(tmp_path, "val")
    assert str(err.value) == (f"{tmp_path / 'val'}: split folder 'val' not found (found: "
                              "'00000', '00001', '00002', '00003', '00004', '00005', '00006', "
                              "'00007' and 12 more)")
