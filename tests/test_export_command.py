"""`indep-seg export` as a user calls it: JSON on stdout, a progress line per stage on stderr."""

import json

from indep_seg.cli import main
from tests._serving_helpers import red_model, segmenter


def test_export_prints_a_line_per_stage(tmp_path, capsys):
    segmenter(red_model(16)).save(tmp_path / "run" / "segmenter")
    code = main(
        ["export", "--model-dir", str(tmp_path / "run"), "--export-base", str(tmp_path / "export")]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads(out.out)
    assert summary["version"] == 1 and (tmp_path / "export" / "1" / "saved_model.pb").is_file()
    lines = [line for line in out.err.splitlines() if line.startswith("indep-seg export: [")]
    assert len(lines) >= 3, out.err
    assert "loading the model" in lines[0] and "writing the SavedModel" in lines[1]
    assert lines[-1].endswith(str(tmp_path / "export" / "1"))


def test_missing_model_dir_is_one_line(tmp_path, capsys):
    code = main(
        ["export", "--model-dir", str(tmp_path / "nope"), "--export-base", str(tmp_path / "e")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "indep-seg export: error: --model-dir" in err and "Traceback" not in err
