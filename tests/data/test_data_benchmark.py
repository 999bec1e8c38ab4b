"""The throughput benchmark runs end to end on a tiny generated dataset."""

import json

from keras_efficient3d import cli
from keras_efficient3d.data import benchmark


def test_benchmark_rows_and_cli(tmp_path, capsys):
    rows = benchmark.run(("jester", "video"), ("train", "val"), batch_size=2, num_batches=2, sample_duration=4,
                         sample_size=32, videos_per_class=2, frames=16, size=48, compare_jpeg=True)
    timed = [row for row in rows if "clips_per_s" in row]
    assert [(r["layout"], r["mode"]) for r in timed] == [("jester", "train"), ("jester", "val"),
                                                        ("video", "train"), ("video", "val")]
    assert all(r["clips"] == 4 and r["clips_per_s"] > 0 for r in timed)
    jpeg = [row for row in rows if "opencv" in row][0]
    assert jpeg["clips"] == 16 and jpeg["opencv"] > 0 and jpeg["tf.io.decode_jpeg"] > 0

    out = tmp_path / "bench.json"
    status = cli.invoke(benchmark.main, benchmark.define_flags, [
        "benchmark", "--layout", "video", "--modes", "train", "--batch_size", "2", "--num_batches", "1",
        "--frames", "4", "--size", "32", "--videos_per_class", "1", "--source_frames", "8",
        "--source_size", "48", "--json_out", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "clips/s" in printed and "video" in printed
    assert json.load(open(out))[0]["mode"] == "train"
