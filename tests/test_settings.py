"""Typed training settings (gpcore.training.settings): every key of train.yaml is declared with
its type, and a typo or a wrong type raises naming the fix instead of being ignored."""
import dataclasses
import typing

import pytest
import yaml

from gpcore.configs import CONFIGS
from gpcore.data.normalise import MODES
from gpcore.errors import ConfigError
from gpcore.training.config import resolve_config
from gpcore.training.settings import (FastSettings, MProtoNetSettings, TrainSettings,
                                      check_train)


def test_the_dataclasses_declare_exactly_the_keys_of_train_yaml():
    cfg = yaml.safe_load((CONFIGS / "train.yaml").read_text())
    train = cfg["train"]
    names = {f.name for f in dataclasses.fields(TrainSettings)}
    assert set(train) | {"mprotonet"} == names
    assert set(train["fast"]) == {f.name for f in dataclasses.fields(FastSettings)}
    assert set(cfg["model_train"]["mprotonet"]["mprotonet"]) == \
        {f.name for f in dataclasses.fields(MProtoNetSettings)}
    hints = typing.get_type_hints(TrainSettings)
    assert set(typing.get_args(hints["normalisation"])) == set(MODES)


@pytest.mark.parametrize("model", ["gp_unet", "mprotonet", "cnn_gradcam"])
def test_every_profile_resolves_to_valid_settings(model):
    for profile in ("smoke", "quick", "paper"):
        settings = check_train(resolve_config(profile, model)["train"], profile)
        assert isinstance(settings.fast, FastSettings)
        assert (settings.mprotonet is not None) == (model == "mprotonet")


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "unknown key 'epoch'; did you mean 'epochs'?"),
    ("train.epochs=three", "train.epochs: expected an integer, got 'three'"),
    ("train.batch_size=true", "train.batch_size: expected an integer, got True"),
    ("train.lr_schedule=linear", "train.lr_schedule: expected 'none' | 'cosine'"),
    ("train.fast.bf16=maybe", "train.fast.bf16: expected true or false or 'auto'"),
    ("train.fast.bogus=1", "train.fast: unknown key 'bogus'; known: bf16,"),
])
def test_typos_and_wrong_types_raise_with_the_fix(override, message):
    with pytest.raises(ConfigError, match=message.replace("|", r"\|").replace("?", r"\?")):
        resolve_config("quick", "gp_unet", [override])


def test_integers_are_accepted_where_numbers_are_wanted():
    cfg = resolve_config("quick", "gp_unet", ["train.lr=1", "train.grad_clip_value=null"])
    assert check_train(cfg["train"], "x").lr == 1
