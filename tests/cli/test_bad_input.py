"""Bad input on every command: one line naming the file, field or option, exit status 2.

Broken trees are built from a tiny SynthPed set in the real layouts. Parse-time and
dataset-kind errors never import Keras; the tests that load a model or train are marked
``keras``, except the end-to-end NaN runs, marked ``trains_once`` (one training run each, too
slow to repeat on every backend; `test_nan_guard_raises_out_of_fit_on_every_backend` covers
the backends).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import scipy.io

from valpat_keras.cli.main import EXIT_BAD_INPUT, EXIT_NON_FINITE_LOSS, main
from valpat_keras.data.synthped import SynthPedConfig, write_synthped


@pytest.fixture(scope="module")
def synthped(tmp_path_factory):
    """A tiny SynthPed set (Market-1501, PA-100K, CUHK-PEDES and pretraining layouts)."""
    root = tmp_path_factory.mktemp("bad_input") / "synthped"
    write_synthped(root, SynthPedConfig.preset("tiny"))
    return root


def _copy(synthped, layout, tmp_path):
    return shutil.copytree(synthped / layout, tmp_path / layout)


def _truncate(path):
    """Keeps the first half of an image file: the header parses, the pixels do not decode."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _parse_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == EXIT_BAD_INPUT
    return capsys.readouterr().err


def _bad_input(argv, capsys) -> str:
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


TRANSFER = ["--data", "synthped", "--out", "unused"]


@pytest.mark.parametrize("argv, option, expected", [
    (["reid", *TRANSFER, "--batch-size", "0"], "--batch-size", "an integer >= 1, got '0'"),
    (["reid", *TRANSFER, "--batch-size", "-4"], "--batch-size", "an integer >= 1, got '-4'"),
    (["reid", *TRANSFER, "--epochs", "0"], "--epochs", "an integer >= 1"),
    (["reid", *TRANSFER, "--p", "1"], "--p", "an integer >= 2 (a batch contrasts two"),
    (["reid", *TRANSFER, "--k", "0"], "--k", "an integer >= 1"),
    (["reid", *TRANSFER, "--eps", "-0.1"], "--eps", "a number > 0"),
    (["reid", *TRANSFER, "--warmup-epochs", "-1"], "--warmup-epochs", "an integer >= 0"),
    (["reid", *TRANSFER, "--lr", "nan"], "--lr", "a number > 0, got 'nan'"),
    (["reid", *TRANSFER, "--image-size", "0x64"], "--image-size", "positive HEIGHTxWIDTH"),
    (["reid", *TRANSFER, "--image-size", "128"], "--image-size", "HEIGHTxWIDTH"),
    (["attributes", *TRANSFER, "--batch-size", "0"], "--batch-size", "an integer >= 1"),
    (["attributes", *TRANSFER, "--label-smoothing", "1.5"], "--label-smoothing",
     "a number in [0, 1)"),
    (["attributes", *TRANSFER, "--head-lr-multiplier", "-2"], "--head-lr-multiplier",
     "a number >= 0"),
    (["attributes", *TRANSFER, "--steps-per-epoch", "0"], "--steps-per-epoch",
     "an integer >= 1"),
    (["search", *TRANSFER, "--batch-size", "0"], "--batch-size", "an integer >= 1"),
    (["search", *TRANSFER, "--loss-weights", "itc=-1"], "--loss-weights", "WEIGHT a number >= 0"),
    (["search", *TRANSFER, "--loss-weights", "mlm=1"], "--loss-weights", "NAME in itc,sdm,id"),
    (["search", *TRANSFER, "--loss-weights", "itc=0,sdm=0,id=0"], "--loss-weights",
     "at least one objective must stay on"),
    (["evaluate", "--data", "market1501:/x", "--out", "o", "--batch-size", "0"],
     "--batch-size", "an integer >= 1"),
    (["pretrain", "--out", "o", "--batch-size", "0"], "--batch-size", "an integer >= 1"),
    (["pretrain", "--out", "o", "--steps", "-5"], "--steps", "an integer >= 1"),
    (["pretrain", "--out", "o", "--queue-size", "-1"], "--queue-size", "an integer >= 0"),
    (["pretrain", "--out", "o", "--momentum", "1"], "--momentum", "a number in [0, 1)"),
    (["pretrain", "--out", "o", "--learning-rate", "0"], "--learning-rate", "a number > 0"),
    (["pretrain", "--out", "o", "--loss-weights", "ssl=inf"], "--loss-weights", "number >= 0"),
    (["synthped", "o", "--difficulty", "2"], "--difficulty", "a number in [0, 1]"),
    (["synthped", "o", "--height", "0"], "--height", "an integer >= 1"),
    (["datasets", "market1501:/x", "--split", "-1"], "--split", "an integer >= 0"),
    (["demo", "--seed", "-1"], "--seed", "an integer >= 0"),
])
def test_numeric_options_are_checked_while_parsing(argv, option, expected, capsys):
    err = _parse_error(argv, capsys)
    assert f"argument {option}" in err and expected in err, err


@pytest.mark.parametrize("command, spec, kind, accepted", [
    ("reid", "pa100k:/data", "attributes", "market1501"),
    ("attributes", "market1501:/data", "reid", "pa100k, peta, rap"),
    ("search", "pa100k:/data", "attributes", "cuhk_pedes, icfg_pedes, rstpreid"),
    ("evaluate", "cuhk_pedes:/data", "text", "market1501"),
])
def test_a_dataset_of_the_wrong_kind_is_refused_before_loading(command, spec, kind, accepted,
                                                              tmp_path, capsys):
    err = _bad_input([command, "--data", spec, "--out", str(tmp_path)], capsys)
    name = spec.split(":")[0]
    assert err.startswith(f"valpat {command}: error: --data '{spec}': {name} is a {kind} "
                          "dataset"), err
    assert accepted in err and "manifest / folder" in err


def test_unknown_dataset_and_missing_root_name_the_option(tmp_path, capsys):
    err = _bad_input(["reid", "--data", "market:/data", "--out", str(tmp_path)], capsys)
    assert "--data 'market:/data': unknown dataset 'market'; available:" in err
    err = _bad_input(["attributes", "--data", "pa100k", "--out", str(tmp_path)], capsys)
    assert "--data 'pa100k': expected NAME:ROOT, e.g. pa100k:/data" in err


def test_a_missing_dataset_folder_is_named(tmp_path, capsys):
    err = _bad_input(["reid", "--data", f"market1501:{tmp_path / 'nowhere'}", "--out",
                      str(tmp_path / "run")], capsys)
    assert err.startswith("valpat reid: error: ") and "nowhere: folder does not exist" in err


def test_evaluate_drops_truncated_gallery_images_and_names_the_empty_split(
        synthped, tmp_path, capsys):
    root = _copy(synthped, "Market-1501-v15.09.15", tmp_path)
    gallery = sorted((root / "bounding_box_test").glob("*.jpg"))
    for path in gallery:
        _truncate(path)
    gallery = [p for p in gallery if not p.name.startswith("-1_")]  # junk: never loaded
    with pytest.warns(UserWarning, match=rf"skipped {len(gallery)} unreadable image\(s\)"):
        err = _bad_input(["evaluate", "--data", f"market1501:{tmp_path}", "--out",
                          str(tmp_path / "eval")], capsys)
    assert f"the gallery split of market1501 ({root}) is empty after dropping " \
           f"{len(gallery)} unreadable gallery images" in err


def test_reid_names_an_empty_query_split(synthped, tmp_path, capsys):
    root = _copy(synthped, "Market-1501-v15.09.15", tmp_path)
    for path in (root / "query").glob("*.jpg"):
        path.write_bytes(b"")
    with pytest.warns(UserWarning, match="unreadable"):
        err = _bad_input(["reid", "--data", f"market1501:{tmp_path}", "--out",
                          str(tmp_path / "run")], capsys)
    assert "the query split of market1501" in err and "unreadable query images" in err


def test_one_line_annotation_json_error_names_line_and_column(synthped, tmp_path, capsys):
    root = _copy(synthped, "CUHK-PEDES", tmp_path)
    (root / "reid_raw.json").write_text('[{"id": 1, "file_path": "a.jpg",}]')
    assert main(["datasets", f"cuhk_pedes:{tmp_path}"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"{root / 'reid_raw.json'}: invalid JSON at line 1, column 33" in err, err


def test_synthped_over_a_dataset_it_did_not_write_is_bad_input(tmp_path, capsys):
    (tmp_path / "PA-100K").mkdir()
    err = _bad_input(["synthped", str(tmp_path), "--preset", "tiny"], capsys)
    assert err.startswith("valpat synthped: error: ") and "choose another OUT_DIR" in err


def test_datasets_command_exits_2_when_one_fails(synthped, tmp_path, capsys):
    assert main(["datasets", f"market1501:{synthped}", f"pa100k:{tmp_path}"]) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert "no PA-100K layout found" in captured.err and "market1501" in captured.out



def test_a_misspelt_manifest_attribute_is_one_line_naming_the_closest_name(tmp_path, capsys):
    (tmp_path / "manifest.csv").write_text("path,attr:Female,attr:Backpak\na.jpg,1,0\n")
    assert main(["datasets", f"manifest:{tmp_path}", "--kind", "attributes"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: manifest: {tmp_path / 'manifest.csv'}: header: unknown "
                          "attribute name 'Backpak'; closest valid name(s): Backpack")


def test_a_label_outside_0_1_in_pa100k_names_row_column_and_value(synthped, tmp_path, capsys):
    root = _copy(synthped, "PA-100K", tmp_path)
    mat_path = root / "annotation" / "annotation.mat"
    mat = scipy.io.loadmat(mat_path)
    mat["val_label"][0, 3] = 2
    scipy.io.savemat(mat_path, {k: v for k, v in mat.items() if not k.startswith("__")})
    first = str(mat["val_images_name"][0][0][0])
    err = _bad_input(["attributes", "--data", f"pa100k:{root}", "--out", str(tmp_path / "o")],
                     capsys)
    assert f"{mat_path}: row 1 ({first}), column 4 (AgeLess18) is 2" in err
    assert "(field 'val_label'); expected labels 0, 1" in err

@pytest.mark.keras
def test_pretrain_on_an_empty_manifest_names_the_file(tmp_path, capsys):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("")
    err = _bad_input(["pretrain", "--data", str(manifest), "--out", str(tmp_path / "run")],
                     capsys)
    assert f"{manifest}: no images to pretrain on" in err and "--batch-size" not in err


@pytest.mark.keras
def test_pretrain_with_fewer_images_than_a_batch_names_the_option(synthped, tmp_path, capsys):
    err = _bad_input(["pretrain", "--data", str(synthped), "--out", str(tmp_path / "run"),
                      "--batch-size", "64"], capsys)
    assert "has 20 images, fewer than one batch of 64; lower the batch size (--batch-size)" \
        in err


def test_pretrain_queue_not_a_multiple_of_the_batch_names_both_options(tmp_path, capsys):
    err = _bad_input(["pretrain", "--out", str(tmp_path), "--batch-size", "24",
                      "--queue-size", "100"], capsys)
    assert "--queue-size 100 must be a multiple of the batch size (--batch-size 24)" in err


@pytest.mark.keras
def test_pretrain_names_a_corrupt_checkpoint_metadata_file(synthped, tmp_path, capsys):
    metadata = tmp_path / "run" / "checkpoints" / "training_metadata.json"
    metadata.parent.mkdir(parents=True)
    metadata.write_text('{"epoch": ')
    err = _bad_input(["pretrain", "--data", str(synthped), "--out", str(tmp_path / "run"),
                      "--batch-size", "8", "--image-size", "32x16", "--steps", "1"], capsys)
    assert f"{metadata}: corrupt checkpoint metadata" in err
    assert "Delete the checkpoints folder" in err


@pytest.mark.keras
def test_evaluate_names_a_corrupt_preset_file_and_a_corrupt_model(synthped, tmp_path, capsys):
    from valpat_keras.models import build_image_encoder

    run = tmp_path / "run"
    build_image_encoder("tiny", image_size=(32, 16)).save_to_preset(str(run / "image_encoder"))
    config = run / "image_encoder" / "config.json"
    config.write_text(config.read_text()[:40])
    argv = ["evaluate", "--data", f"market1501:{synthped}", "--out", str(tmp_path / "eval"),
            "--init", str(run), "--image-size", "32x16"]
    err = _bad_input(argv, capsys)
    assert f"{config}: corrupt preset file" in err
    (run / "reid_model.keras").write_bytes(b"PK\x03\x04 not a zip")
    err = _bad_input(argv, capsys)
    assert f"{run / 'reid_model.keras'}: cannot load the re-ID model" in err


@pytest.mark.keras
def test_an_internal_error_keeps_its_traceback(synthped, tmp_path, monkeypatch):
    from valpat_keras.tasks import attributes

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(attributes, "train_attributes", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["attributes", "--data", f"synthped:{synthped}", "--out", str(tmp_path)])


def _strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path} holds the non-JSON literal {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_run_files_are_strict_json_with_non_finite_values_as_null(tmp_path):
    from valpat_keras.run_outputs import write_json

    path = write_json(tmp_path / "m.json", {
        "loss": [1.0, float("nan")], "mAP": np.float32("inf"),
        "cmc": np.array([0.5, -np.inf]), "rank1": np.float64(0.25), "n": np.int64(3)})
    assert _strict_json(path) == {"loss": [1.0, None], "mAP": None, "cmc": [0.5, None],
                                  "rank1": 0.25, "n": 3}


@pytest.mark.keras
def test_nan_guard_raises_out_of_fit_on_every_backend():
    import keras

    from valpat_keras.errors import NonFiniteLossError
    from valpat_keras.tasks.callbacks import TerminateOnNonFiniteLoss
    from valpat_keras.tasks.pretrainer import TerminateOnNaNWithMessage

    assert TerminateOnNaNWithMessage is TerminateOnNonFiniteLoss
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((8, 2), "float32")
    y = np.ones((8, 1), "float32")
    y[4:] = np.nan  # the third batch of two
    guard = TerminateOnNonFiniteLoss(raise_error=True)
    seen = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(b))
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, batch 3 \(non-finite: loss\)"):
        model.fit(x, y, batch_size=2, epochs=3, shuffle=False, verbose=0,
                  callbacks=[guard, counter])
    assert model.stop_training and seen == [0, 1]  # stopped at once, in the first epoch


def test_nan_guard_names_the_loss_terms():
    pytest.importorskip("keras")
    import keras

    from valpat_keras.errors import NonFiniteLossError
    from valpat_keras.tasks.callbacks import TerminateOnNonFiniteLoss

    guard = TerminateOnNonFiniteLoss(raise_error=True)
    guard.set_model(keras.Sequential([keras.layers.Dense(1)]))
    guard.on_epoch_begin(1)
    guard.on_train_batch_end(0, {"loss": 2.0, "id_loss": 1.0, "triplet_loss": 1.0})
    with pytest.raises(NonFiniteLossError) as info:
        guard.on_train_batch_end(1, {"loss": float("inf"), "id_loss": 1.0,
                                     "triplet_loss": float("inf"), "val_mAP": float("nan")})
    assert "epoch 2, batch 2 (non-finite: triplet_loss)" in str(info.value)


HUGE_LR = ["--lr", "1e38", "--epochs", "2", "--steps-per-epoch", "3", "--random-init"]


@pytest.mark.parametrize("command, extra", [
    ("reid", ["--image-size", "32x16", "--p", "4", "--k", "2"]),
    ("reid", ["--image-size", "32x16", "--p", "4", "--k", "2", "--unsupervised",
              "--min-samples", "2", "--k1", "6", "--eps", "0.6"]),
    ("attributes", ["--image-size", "32x16", "--batch-size", "8"]),
    ("search", ["--image-size", "32x16", "--batch-size", "8"]),
])
@pytest.mark.trains_once
def test_every_command_stops_at_the_first_non_finite_loss(command, extra, synthped, tmp_path,
                                                          capsys):
    out = tmp_path / "run"
    status = main([command, "--data", f"synthped:{synthped}", "--out", str(out), *HUGE_LR,
                   *extra])
    err = capsys.readouterr().err
    assert status == EXIT_NON_FINITE_LOSS, err
    assert f"valpat {command}: error: training stopped: the loss became" in err
    assert "(non-finite: " in err and "lower learning rate" in err
    assert not (out / "metrics.json").exists()
