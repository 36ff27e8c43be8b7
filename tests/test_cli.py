"""The ``pyneural`` command line: a real training run through ``python -m pyneural train`` and the
argument handling of the entry point."""
import os
import re
import subprocess
import sys

import pytest

from conftest import subprocess_env
from pyneural import cli


def run_module(*args, timeout=120, cwd=None):
    return subprocess.run([sys.executable, "-m", "pyneural", *args], capture_output=True, text=True,
                          timeout=timeout, env=subprocess_env(), cwd=cwd or os.path.expanduser("~"))


def accuracies(stdout):
    return [float(a) / 100 for a in re.findall(r"test acc\s+([\d.]+)%", stdout)]


@pytest.mark.parametrize("model,epochs,expected", [("cnn", 3, 0.95), ("mlp", 4, 0.93)])
def test_train_through_the_entry_point(model, epochs, expected):
    result = run_module("train", "--model", model, "--epochs", str(epochs), "--no-progress")
    assert result.returncode == 0, result.stderr
    acc = accuracies(result.stdout)
    assert len(acc) == epochs, result.stdout
    assert acc[-1] >= expected, result.stdout
    assert re.search(r"final test accuracy [\d.]+% after", result.stdout)
    assert re.search(r"[\d,]+ img/s", result.stdout)


def test_train_with_adam_in_process(capsys):
    assert cli.main(["train", "--model", "mlp", "--optimizer", "adam", "--epochs", "2", "--batch-size", "64",
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "adam, lr 0.002, batch 64, 2 epochs" in out
    assert accuracies(out)[-1] > 0.85


def test_no_command_prints_usage():
    result = run_module()
    assert result.returncode == 2
    assert "train" in result.stderr and "usage: pyneural" in result.stderr


@pytest.mark.parametrize("flag,value,message", [("--epochs", "0", "must be an integer >= 1, got 0"),
                                                ("--batch-size", "-4", "must be an integer >= 1"),
                                                ("--lr", "0", "must be a number > 0"),
                                                ("--model", "vgg", "invalid choice: 'vgg'"),
                                                ("--optimizer", "lbfgs", "invalid choice: 'lbfgs'")])
def test_bad_train_flags(capsys, flag, value, message):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and message in err


def test_train_defaults():
    args = cli.build_parser().parse_args(["train"])
    assert (args.model, args.optimizer, args.lr, args.seed) == ("cnn", "sgd", None, 0)
    assert args.handler.__module__ == "pyneural.commands.train"


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert re.match(r"pyneural \d", capsys.readouterr().out)


def test_augment_is_off_by_default_and_crops_without_flipping():
    from pyneural.commands.train import build
    from pyneural.data.augment import RandomCrop
    parser = cli.build_parser()
    assert build(parser.parse_args(["train"]))[3].transform is None
    args = parser.parse_args(["train", "--augment", "--workers", "2", "--deterministic"])
    loader = build(args)[3]
    assert isinstance(loader.transform, RandomCrop), "a mirrored digit is another symbol: crop only"
    assert (loader.transform.size, loader.transform.padding, loader.workers) == ((8, 8), 1, 2)
    args.check(parser, args)  # --deterministic is accepted without --distributed
