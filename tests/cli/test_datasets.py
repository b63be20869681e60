"""`valpat datasets`: loads each NAME:ROOT and prints its summary, one line per failure."""

from __future__ import annotations

from PIL import Image

from valpat_keras.cli.main import main


def _market(root):
    for folder, name in [("bounding_box_train", "0002_c1s1_000451_03.jpg"),
                         ("query", "0010_c1s1_001051_00.jpg"),
                         ("bounding_box_test", "0010_c2s1_001201_01.jpg"),
                         ("bounding_box_test", "-1_c1s1_000401_03.jpg")]:
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 8)).save(root / folder / name)


def test_datasets_command_prints_summaries(tmp_path, capsys):
    _market(tmp_path / "Market-1501-v15.09.15")
    assert main(["datasets", f"market1501:{tmp_path}", "--verify-images"]) == 0
    out = capsys.readouterr().out
    assert "market1501" in out and "skipped 1 (junk pid -1 in bounding_box_test)" in out


def test_datasets_command_reports_errors_and_lists_loaders(tmp_path, capsys):
    _market(tmp_path)
    status = main(["datasets", f"pa100k:{tmp_path}", f"market1501:{tmp_path}", "nosuch:/x",
                   "market1501", "--split", "1"])
    captured = capsys.readouterr()
    assert status == 2
    assert "error: pa100k:" in captured.err and "no PA-100K layout" in captured.err
    assert "unknown dataset 'nosuch'" in captured.err and "expected NAME:ROOT" in captured.err
    # The good one is still summarised, naming the option it does not use.
    assert "query" in captured.out
    assert "ignored options: split=1 (market1501 does not use them)" in captured.out
    assert main(["datasets"]) == 0
    assert "luperson_ta" in capsys.readouterr().out


def test_datasets_command_refuses_a_kind_the_loader_does_not_read(tmp_path, capsys):
    _market(tmp_path)
    assert main(["datasets", f"market1501:{tmp_path}", "--kind", "attributes"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: market1501: market1501 is a dataset of kind 'reid', not 'attributes'")
    assert "pa100k" in err and err.count("\n") == 1
