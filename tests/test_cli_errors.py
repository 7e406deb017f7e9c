"""Every command answers bad input with one line ``<prog>: error: <message>`` (naming the file
and the fix), exit status 2 and no traceback; ``--debug`` keeps the traceback (issue 15)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gpcore.errors import EXIT_BAD_INPUT, message, one_line_errors

ROOT = Path(__file__).resolve().parents[1]


def _bad_checkpoint(tmp: Path) -> Path:
    path = tmp / "broken.safetensors"
    path.write_bytes(b"not a safetensors file")
    return path


def _run_dir(tmp: Path) -> Path:
    run = tmp / "run"
    run.mkdir()
    return run


#: (command line, a substring the one-line error must hold); ``{tmp}`` is a fresh folder
CASES = {
    "models": (["models", "--size", "0"], "--size 0"),
    "phantom": (["phantom", "--out", "{tmp}/ph", "--subjects", "0"], "n_subjects"),
    "preprocess": (["preprocess", "--source", "brats", "--input", "{tmp}/missing", "--out",
                    "{tmp}/store"], "{tmp}/missing"),
    "split": (["split", "--store", "{tmp}/nostore"], "{tmp}/nostore"),
    "train": (["train", "--store", "{tmp}/nostore", "--split", "{tmp}/split.csv", "--out",
               "{tmp}/run", "--model", "gp_unet"], "{tmp}/nostore"),
    "predict": (["predict", "--checkpoint", "{bad}", "--store", "{tmp}/nostore", "--out",
                 "{tmp}/pred"], "{tmp}"),
    "segment": (["segment", "--checkpoint", "{bad}", "--input", "{tmp}", "--out",
                 "{tmp}/seg"], "broken.safetensors"),
    "evaluate": (["evaluate", "{run}"], "not a finished training run"),
    "evaluate --checkpoint": (["evaluate", "--checkpoint", "{bad}", "--store", "{tmp}/nostore",
                               "--split", "{tmp}/split.csv", "--out", "{tmp}/pred"],
                              "{tmp}/nostore"),
    "compare": (["compare", "{run}", "--out", "{tmp}/cmp"], "{run}"),
}


def _argv(args: list[str], tmp: Path) -> list[str]:
    subs = {"{tmp}": str(tmp), "{bad}": str(_bad_checkpoint(tmp)),
            "{run}": str(tmp / "run")}
    (tmp / "run").mkdir(exist_ok=True)
    out = []
    for a in args:
        for k, v in subs.items():
            a = a.replace(k, v)
        out.append(a)
    return out


@pytest.mark.parametrize("command", sorted(CASES))
def test_each_command_rejects_bad_input_in_one_line(command, tmp_path, capsys, monkeypatch):
    from gpcore.cli import main

    monkeypatch.delenv("GPCORE_DEBUG", raising=False)
    args, expected = CASES[command]
    argv = _argv(args, tmp_path)
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == EXIT_BAD_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"gpcore {command.split()[0]}: error: ")
    assert expected.replace("{tmp}", str(tmp_path)).replace("{run}", str(tmp_path / "run")) \
        in lines[0]
    # nothing half-written: no output folder appears for a rejected command
    for name in ("store", "pred", "seg", "cmp", "ph"):
        assert not (tmp_path / name).exists() or command == "phantom" and name != "ph"


def test_debug_keeps_the_traceback(tmp_path):
    from gpcore.cli import main

    with pytest.raises(FileNotFoundError, match="not a finished training run"):
        main(["evaluate", str(tmp_path), "--debug"])


def test_a_bug_is_not_hidden():
    """Only the project's own error types become one line; anything else keeps its traceback."""
    with pytest.raises(ZeroDivisionError):
        with one_line_errors("gpcore x"):
            1 / 0


def test_os_errors_name_their_file(tmp_path):
    try:
        open(tmp_path / "nope.csv")
    except FileNotFoundError as err:
        assert str(tmp_path / "nope.csv") in message(err)


def test_run_all_rejects_missing_data_in_one_line(tmp_path):
    """``run_all.sh`` (``python -m gpcore.study``) as a user runs it: a subprocess, no
    traceback on stderr."""
    proc = subprocess.run([sys.executable, "-m", "gpcore.study", "--study", "figshare",
                           "--data", str(tmp_path / "missing")], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"--data {tmp_path / 'missing'}: no such folder"]


def test_report_rejects_a_missing_results_folder_in_one_line(tmp_path, capsys):
    from gpcore.study.report import main

    with pytest.raises(SystemExit) as err:
        main([str(tmp_path / "results"), "--readme", str(tmp_path / "README.md")])
    assert err.value.code == EXIT_BAD_INPUT
    line = capsys.readouterr().err.strip()
    assert line.startswith("gpcore report: error: ") and "\n" not in line


# ------------------------------------------------------------------------------------------
# Bad configuration, rejected by name (issue 15, item 5)
# ------------------------------------------------------------------------------------------
def test_a_typo_in_a_profile_names_the_file_and_the_close_key(tmp_path):
    from gpcore.configs import load_profile
    from gpcore.errors import ConfigError

    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\ndata:\n  slice_sise: 64\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: data: unknown key 'slice_sise'; "
                                          r"did you mean 'slice_size'\?"):
        load_profile(str(bad))
    bad.write_text("name: mine\ntrainn: {}\n")
    with pytest.raises(ConfigError, match="unknown key 'trainn'; did you mean 'train'"):
        load_profile(str(bad))
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_profile(str(bad))


def test_a_typo_in_a_train_key_or_model_option_is_refused():
    from gpcore.errors import ConfigError
    from gpcore.training.config import resolve_config

    with pytest.raises(ConfigError, match="train: unknown key 'epochz'; did you mean 'epochs'"):
        resolve_config("quick", "gp_unet", ["train.epochz=3"])
    with pytest.raises(ConfigError, match="models.gp_unet: unknown key 'wff'"):
        resolve_config("quick", "gp_unet", ["model.wff=3"])
    # every shipped profile and model passes the check
    for profile in ("smoke", "quick", "paper"):
        for model in ("gp_unet", "gp_shuffle_unet", "gp_recon_resnet", "mprotonet",
                      "cnn_gradcam"):
            resolve_config(profile, model)


def test_train_cli_rejects_a_typo_in_one_line(tmp_path, capsys):
    from gpcore.cli import main

    with pytest.raises(SystemExit) as err:
        main(["train", "--store", str(tmp_path), "--split", str(tmp_path / "s.csv"), "--out",
              str(tmp_path / "run"), "--model", "gp_unet", "train.epochz=3"])
    assert err.value.code == EXIT_BAD_INPUT
    line = capsys.readouterr().err.strip()
    assert line.startswith("gpcore train: error: ") and "epochz" in line and "\n" not in line
