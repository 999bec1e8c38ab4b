"""Class names: shipped sets and label files."""

import json

import pytest

from keras_efficient3d import predict
from keras_efficient3d.predict import PredictError


def test_shipped_label_sets():
    jester = predict.load_labels("jester")
    assert len(jester) == len(set(jester)) == 27
    # jester-v1-labels.csv order (the indices this project's training gives the official CSVs).
    assert jester[:4] == ["Swiping Left", "Swiping Right", "Swiping Down", "Swiping Up"]
    assert jester[20:] == ["Thumb Up", "Thumb Down", "Shaking Hand", "Stop Sign", "Drumming Fingers",
                           "No gesture", "Doing other things"]
    # The original's indices (annotation_Jester/categories.txt, alphabetical; its vallist01.txt
    # gives video 9223, "Thumb Up" in jester-v1-validation.csv, the label 21): the same names.
    original = predict.load_labels("jester_original")
    assert sorted(original) == sorted(jester) and original == sorted(jester)
    assert (original[0], original[16], original[20]) == ("Doing other things", "Swiping Left",
                                                          "Thumb Up")
    assert predict.load_labels("Jester-Original") == original
    ucf = predict.load_labels("ucf101")
    assert len(ucf) == len(set(ucf)) == 101
    # classInd.txt is in case-insensitive alphabetical order ("Hammering" before "HammerThrow").
    assert ucf == sorted(ucf, key=str.lower)
    assert (ucf[0], ucf[34], ucf[35], ucf[100]) == ("ApplyEyeMakeup", "Hammering", "HammerThrow", "YoYo")
    assert all(" " not in name for name in ucf)


def test_a_set_name_beside_a_dataset_folder_of_that_name_is_the_set(tmp_path, monkeypatch):
    # `--labels jester` run where the Jester dataset folder is named jester
    monkeypatch.chdir(tmp_path)
    (tmp_path / "jester").mkdir()
    assert len(predict.load_labels("jester")) == 27
    (tmp_path / "ucf101").write_text("a\nb\n")  # a file of that name is the file
    assert predict.load_labels("ucf101") == ["a", "b"]


def test_label_files(tmp_path):
    (tmp_path / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 ApplyLipstick\n\n3 Archery\n")
    assert predict.load_labels(str(tmp_path / "classInd.txt")) == [
        "ApplyEyeMakeup", "ApplyLipstick", "Archery"]
    (tmp_path / "map.csv").write_text("id,name\n0,abseiling\n1,air drumming\n")
    assert predict.load_labels(str(tmp_path / "map.csv")) == ["abseiling", "air drumming"]
    # A Kinetics annotation CSV: one row per video; classes sorted as the original does.
    (tmp_path / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nzumba,a,0,10,train\nabseiling,b,0,10,train\n"
        "zumba,c,0,10,train\n\"air drumming\",d,0,10,train\n")
    assert predict.load_labels(str(tmp_path / "train.csv")) == ["abseiling", "air drumming", "zumba"]
    (tmp_path / "jester-v1-labels.csv").write_text("Swiping Left\nSwiping Right\n")
    assert predict.load_labels(str(tmp_path / "jester-v1-labels.csv")) == ["Swiping Left", "Swiping Right"]
    (tmp_path / "ann.json").write_text(json.dumps({"labels": ["a", "b"], "database": {}}))
    assert predict.load_labels(str(tmp_path / "ann.json")) == ["a", "b"]
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(PredictError, match="no class names"):
        predict.load_labels(str(tmp_path / "empty.txt"))


def test_unknown_and_unshipped_label_sets():
    with pytest.raises(PredictError, match="official"):
        predict.load_labels("kinetics600")
    with pytest.raises(PredictError, match="unknown label set 'klingon'"):
        predict.load_labels("klingon")


def test_only_an_index_column_is_taken_off(tmp_path):
    """classInd.txt's "1 ApplyEyeMakeup": every line numbered 1, 2, ... (or 0, 1, ...). In a
    file of bare names, a name that begins with a number keeps it."""
    path = tmp_path / "labels.txt"
    path.write_text("100 metre sprint\n3 legged race\nhigh jump\n")
    assert predict.load_labels(str(path)) == ["100 metre sprint", "3 legged race", "high jump"]
    path.write_text("1 100 metre sprint\n2 3 legged race\n3 high jump\n")
    assert predict.load_labels(str(path)) == ["100 metre sprint", "3 legged race", "high jump"]
    path.write_text("0,sprint\n1,race\n")
    assert predict.load_labels(str(path)) == ["sprint", "race"]


def test_a_class_named_twice_is_refused(tmp_path):
    """Two outputs with one name: a result naming it could be either."""
    path = tmp_path / "labels.txt"
    path.write_text("1 Archery\n2 Bowling\n\n3 Archery\n")
    with pytest.raises(PredictError, match=rf"^{path}:4: class 'Archery' is named twice \(line 1 too\)$"):
        predict.load_labels(str(path))
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(["a", "b", "a"]))
    with pytest.raises(PredictError, match=rf"^{path}: class 'a' is named twice \(entries 1 and 3\)$"):
        predict.load_labels(str(path))
