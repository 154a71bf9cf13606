"""Hostile and malformed input through ``ketos``: one clear line naming the file and element, or the item
skipped and counted; never an exception's name or a traceback (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bad_input import DATASET_META, alto_page, arrow_file, assert_clean, png_bomb, png_bytes
from scriba.config import TrainConfig
from shared_paths import run_ketos
from train_helpers import TINY_SPEC, make_lines

TRAIN = ["-f", "path", "-q", "fixed", "-N", "1", "-B", "4", "-s", TINY_SPEC]


@pytest.fixture
def lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Six training and three validation lines (path format) in the current directory, with their manifests."""
    monkeypatch.chdir(tmp_path)
    paths = make_lines(tmp_path / "lines", 9, seed=3)
    (tmp_path / "train.lst").write_text("\n".join(paths[:6]) + "\n")
    (tmp_path / "val.lst").write_text("\n".join(paths[6:]) + "\n")
    return tmp_path


def ketos(args: list[str], capsys) -> tuple[int, str, str]:
    """``ketos`` in this process, without worker processes: forking a process that runs torch threads can
    deadlock in the child, and a test's lines load in no time anyway."""
    return run_ketos(["--workers", "0", "--threads", "1", *args], capsys)


def one_error(rc: int, err: str, expected_rc: int = 1) -> str:
    assert rc == expected_rc, err
    assert_clean(err)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


# -- pages and line images --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "1e400", "-inf", "nan"])
def test_non_finite_alto_box_does_not_abort_compile(lines, value, capsys):
    xml = alto_page(lines, "page.xml", {"hpos": value})
    rc, out, err = ketos(["compile", "-o", "out.arrow", str(xml)], capsys)
    assert rc == 0, err
    assert_clean(out + err)
    # the polygon still gives the line its box, as for any unusable HPOS
    assert "3 lines written" in out


def test_one_bad_coordinate_string_drops_only_its_line(lines, capsys):
    xml = alto_page(lines, "page.xml", {"points": "10 5 1e400 5 310 50 10 50"})
    rc, out, err = ketos(["compile", "-o", "out.arrow", str(xml)], capsys)
    assert rc == 0, err
    assert_clean(out + err)
    assert "2 lines written" in out
    assert "1 lines skipped" in out and "coordinates are not finite numbers" in out
    assert "page.xml (bad)" in err  # the warning names the page and the line


def test_zero_area_polygon_is_skipped_and_counted(lines, capsys):
    xml = alto_page(lines, "page.xml", {"points": "10 5 100 5 200 5", "baseline": "10 5 200 5"})
    rc, out, err = ketos(["compile", "-o", "out.arrow", str(xml)], capsys)
    assert rc == 0, err
    assert "2 lines written" in out and "boundary polygon has no area" in out
    from scriba.data.arrow import ArrowDataset

    assert ArrowDataset("out.arrow").texts() == ["abc dab", "bead cafe"]


def test_image_over_the_pixel_limit_is_left_out_of_training(lines, capsys):
    bomb = png_bomb(lines / "lines" / "bomb.png")
    (lines / "lines" / "bomb.gt.txt").write_text("abc")
    with open(lines / "train.lst", "a") as fh:
        fh.write(f"{bomb}\n")
    rc, out, err = ketos(["train", *TRAIN, "-t", "train.lst", "-e", "val.lst", "-o", "model"], capsys)
    assert rc == 0, err
    assert_clean(out + err)
    (warning,) = [line for line in err.splitlines() if "bomb.png" in line]
    assert "exceeds the limit" in warning and warning.count("bomb.png") == 1
    assert list(Path("model").glob("best_*.safetensors"))


def test_unreadable_line_image_named_once_without_a_memory_address(lines, capsys):
    broken = lines / "lines" / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    (lines / "lines" / "broken.gt.txt").write_text("abc")
    rc, out, err = ketos(["compile", "-f", "path", "-o", "out.arrow", str(broken), "lines/l000.png"], capsys)
    assert rc == 0, err
    assert_clean(out + err)
    (warning,) = [line for line in err.splitlines() if "broken.png" in line]
    assert warning.count("broken.png") == 1 and "not an image file" in warning


# -- datasets ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case, message",
    [
        ("metadata_list", "metadata record is an array, not a JSON object"),
        ("lines_not_struct", "column 'lines' holds string, not a struct"),
        ("no_im", "column 'lines' has no 'im' field"),
    ],
)
def test_foreign_arrow_schema_is_named(lines, case, message, capsys):
    import pyarrow as pa

    struct = pa.struct([("text", pa.string()), ("im", pa.binary())])
    if case == "metadata_list":
        arrow_file(lines / "x.arrow", pa.array([{"text": "ab", "im": png_bytes()}], struct), [1, 2])
    elif case == "lines_not_struct":
        arrow_file(lines / "x.arrow", pa.array(["ab"]), DATASET_META)
    else:
        other = pa.struct([("text", pa.string()), ("image", pa.binary())])
        arrow_file(lines / "x.arrow", pa.array([{"text": "ab", "image": png_bytes()}], other), DATASET_META)
    rc, out, err = ketos(["train", *TRAIN[2:], "-f", "binary", "-o", "model", "x.arrow"], capsys)
    line = one_error(rc, err)
    assert "no usable training lines" in line
    assert f"x.arrow: {message}" in err


def test_null_image_row_is_skipped_and_counted(lines, capsys):
    import pyarrow as pa

    struct = pa.struct([("text", pa.string()), ("im", pa.binary())])
    rows = [{"text": "ab", "im": png_bytes()}, {"text": "cd", "im": None}, {"text": "ba", "im": png_bytes()}]
    arrow_file(lines / "x.arrow", pa.array(rows, struct), DATASET_META)
    rc, out, err = ketos(["test", "-f", "binary", "-m", str(_tiny_model(lines)), "x.arrow"], capsys)
    assert rc == 0, err
    assert_clean(out + err)
    assert "1 line(s) left out: x.arrow (row 1): row has no image" in out + err


def _tiny_model(folder: Path) -> Path:
    from scriba.codec import Codec
    from scriba.vgsl import build_model
    from scriba.weights import save_weights

    net = build_model(TINY_SPEC, seg_type="bbox")
    net.append_output(5)
    net.codec = Codec("abcd")
    return Path(save_weights(net, folder / "tiny.safetensors"))


# -- codecs, specs and options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{}", "empty.json: codec file holds an empty object"),
        (b'{"a": [1], "\xff": [2]}', "empty.json: codec file is not UTF-8 text"),
        (b'{"a": [1.5]}', "empty.json: codec entry 'a' needs a list of labels"),
        (b'{"a": null}', "empty.json: codec entry 'a' needs a list of labels"),
    ],
)
def test_bad_codec_file_is_refused(lines, content, message, capsys):
    (lines / "empty.json").write_bytes(content)
    rc, _, err = ketos(["train", *TRAIN, "-t", "train.lst", "-c", "empty.json", "-o", "model"], capsys)
    assert message in one_error(rc, err)
    assert not Path("model").exists()


def test_empty_codec_mapping_in_experiment_file_is_refused(lines, capsys):
    Path("exp.yml").write_text("train:\n  codec: {}\n")
    rc, _, err = ketos(["--config", "exp.yml", "train", *TRAIN, "-t", "train.lst", "-o", "model"], capsys)
    assert "the codec is empty" in one_error(rc, err)
    assert not list(Path().glob("model/*.safetensors"))


def test_codec_that_encodes_no_training_line_is_refused(lines, capsys):
    Path("xyz.json").write_text(json.dumps({"x": [1], "y": [2]}))
    rc, _, err = ketos(["train", *TRAIN, "-t", "train.lst", "-e", "val.lst", "-c", "xyz.json", "-o", "m"], capsys)
    assert "encodes none of the 6 training line(s)" in one_error(rc, err)
    assert not list(Path().glob("m/*.ckpt"))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("[1,16,0,1 Cr0,0,16]", "'Cr0,0,16': the kernel height must be at least 1"),
        ("[1,16,0,1 Cr3,3,8 Lbx16]", "leaves an output of height 16"),
        ("[1,0,0,1 Cr3,3,8 Lbx16]", "leaves an output of height 32 on a line of height 32"),
        ("[1,16,0,1 Mp2,2,0,0]", "'Mp2,2,0,0': the stride must be at least 1"),
        ("[1,16,0,1 S7(1x0)1,3]", "dimension 7 does not exist"),
        ("[1,16,0,1 Cr3,3,99999999]", "too large"),
        ("[1,0,0,1 Cr3,3,8 S1(1x0)1,3 Lbx16]", "cannot run on a line of height 32"),
    ],
)
def test_spec_that_cannot_run_is_refused_before_training(lines, spec, message, capsys):
    args = ["train", *TRAIN[:-2], "-s", spec, "-t", "train.lst", "-e", "val.lst", "-o", "model"]
    rc, _, err = ketos(args, capsys)
    assert message in one_error(rc, err)
    assert not Path("model").exists()  # refused before the output folder, the data or the trainer


def test_spec_ending_in_an_output_layer_gets_a_second_one_as_in_kraken(lines, capsys):
    spec = TINY_SPEC[:-1] + " O1c9]"
    args = ["train", *TRAIN[:-2], "-s", spec, "-t", "train.lst", "-e", "val.lst", "-o", "model"]
    rc, out, err = ketos(args, capsys)
    assert rc == 0, err
    assert "ends in an output layer (O1c9)" in err
    from scriba.weights import load_model

    (best,) = Path("model").glob("best_*.safetensors")
    net = load_model(best)
    assert net.spec.endswith("O{O_4}1c9 O{O_5}1c8]")  # kraken's overfit_bl.safetensors has the same shape


@pytest.mark.parametrize("option", [["-r", "nan"], ["-r", "inf"], ["--momentum", "nan"], ["-g", "nan"]])
def test_non_finite_numbers_are_refused(lines, option, capsys):
    rc, _, err = ketos(["train", *TRAIN, "-t", "train.lst", *option], capsys)
    assert "is not a finite number" in one_error(rc, err, expected_rc=2)


def test_cosine_over_the_run_without_its_length_is_refused(lines, capsys):
    rc, _, err = ketos(["train", "-f", "path", "-t", "train.lst", "--schedule", "cosine", "--cos-max", "0"], capsys)
    assert "--cos-max 0 anneals over the whole run" in one_error(rc, err, expected_rc=2)
    assert not Path("model").exists()
    rc, _, err = ketos(["train", *TRAIN, "-t", "train.lst", "--schedule", "cosine", "--cos-max", "0"], capsys)
    assert rc == 0, err  # with -N 1 the run has a length


@pytest.mark.parametrize("yaml_value, message", [("1.5", "1.5 is not a whole number"), ("true", "true is not a whole")])
def test_experiment_file_epochs_of_the_wrong_type_are_refused(lines, yaml_value, message, capsys):
    Path("exp.yml").write_text(f"train:\n  quit: fixed\n  epochs: {yaml_value}\n")
    rc, _, err = ketos(["--config", "exp.yml", "train", "-f", "path", "-t", "train.lst"], capsys)
    line = one_error(rc, err, expected_rc=2)
    assert "exp.yml" in line and "train.epochs" in line and message in line


def test_non_utf8_experiment_file_is_named(lines, capsys):
    Path("exp.yml").write_bytes(b"train:\n  lrate: 0.001  # caf\xe9\n")
    rc, _, err = ketos(["--config", "exp.yml", "train", "-t", "train.lst"], capsys)
    assert "exp.yml (line 2): experiment file is not UTF-8 text" in one_error(rc, err, expected_rc=2)


def _no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()


@pytest.mark.skipif(not _no_cuda(), reason="this machine has CUDA")
def test_cuda_device_without_cuda_is_refused_in_train_and_test(lines, capsys):
    rc, _, err = ketos(["-d", "cuda:0", "train", *TRAIN, "-t", "train.lst", "-e", "val.lst", "-o", "m"], capsys)
    assert "'cuda:0' requested but this machine has no CUDA device" in one_error(rc, err, expected_rc=2)
    assert not list(Path().glob("m/*.ckpt"))
    rc, _, err = ketos(
        ["-d", "cuda:0", "test", "-f", "path", "-m", str(_tiny_model(lines)), "-e", "val.lst"], capsys
    )
    assert "cuda:0" in one_error(rc, err, expected_rc=2)


# -- manifests --------------------------------------------------------------------------------------------------


def test_manifest_whose_entries_are_all_missing_says_so(lines, capsys):
    Path("elsewhere.lst").write_text("nothere1.png\nnothere2.png\n")
    rc, _, err = ketos(["train", *TRAIN, "-t", "elsewhere.lst"], capsys)
    line = one_error(rc, err, expected_rc=2)
    assert "elsewhere.lst: none of its 2 entries exists (first: 'nothere1.png'" in line
    assert "use -t" not in line


def test_empty_manifest_says_so(lines, capsys):
    Path("empty.lst").write_text("\n\n")
    rc, _, err = ketos(["train", *TRAIN, "-t", "empty.lst"], capsys)
    assert "empty.lst: manifest lists no files" in one_error(rc, err, expected_rc=2)


def test_entity_bomb_and_external_entity_are_refused_naming_the_page_once(lines, capsys):
    entities = '<!ENTITY e0 "lol">' + "".join(f'<!ENTITY e{i} "{f"&e{i - 1};" * 10}">' for i in range(1, 10))
    entities += '<!ENTITY xxe SYSTEM "file:///etc/passwd">'
    for name, ref in (("bomb.xml", "&e9;"), ("xxe.xml", "&xxe;")):
        page = alto_page(lines, name, {"text": ref}).read_text()
        (lines / name).write_text(page.replace("<alto ", f"<!DOCTYPE alto [{entities}]>\n<alto ", 1))
    rc, out, err = ketos(["compile", "-o", "out.arrow", "bomb.xml", "xxe.xml"], capsys)
    line = one_error(rc, err)
    assert "no lines could be compiled" in line
    for name in ("bomb.xml", "xxe.xml"):
        (warning,) = [w for w in err.splitlines() if w.startswith("warning:") and name in w]
        assert "XML does not parse" in warning and warning.count(name) == 1
    assert "root:" not in out + err


def test_null_in_experiment_file_leaves_the_default(lines, monkeypatch, capsys):
    import scriba.jobs.train.job as job

    seen = []
    monkeypatch.setattr(job, "train", lambda cfg, g: seen.append((cfg, g)) or job.TrainResult(output_dir="m"))
    Path("exp.yml").write_text("seed: null\ntrain:\n  lrate: null\n  epochs: ~\n  codec: null\n")
    rc, _, err = ketos(["--config", "exp.yml", "train", "-f", "path", "-t", "train.lst"], capsys)
    assert rc == 0, err
    ((cfg, g),) = seen
    assert (cfg.lrate, cfg.epochs, cfg.codec, g.seed) == (TrainConfig().lrate, -1, None, None)


def test_surrogate_escape_in_experiment_file_is_refused(lines, capsys):
    Path("exp.yml").write_text('train:\n  checkpoint_path: "\\ud800\\udc00"\n')
    rc, _, err = ketos(["--config", "exp.yml", "train", "-f", "path", "-t", "train.lst"], capsys)
    assert "holds a lone surrogate" in one_error(rc, err, expected_rc=2)
