import argparse

import pytest

from rnnpool.train.config import (
    TrainConfig,
    add_config_arguments,
    config_from_args,
    config_from_dict,
)


def test_flags_derive_from_fields():
    p = argparse.ArgumentParser()
    add_config_arguments(p, defaults={"epochs": 7})
    a = p.parse_args(["--lr", "0.1", "--no-progress", "--max-steps-per-epoch", "3", "--amp"])
    cfg = config_from_args(a)
    assert cfg.epochs == 7 and cfg.lr == 0.1 and cfg.progress is False and cfg.amp is True
    assert cfg.max_steps_per_epoch == 3 and cfg.batch_size == 256 and cfg.weight_decay == 4e-5
    assert config_from_dict(cfg.__dict__) == cfg


def test_bad_values_name_the_field():
    with pytest.raises(ValueError, match="metric_mode"):
        TrainConfig(metric_mode="up")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown TrainConfig fields: bogus"):
        config_from_dict({"bogus": 1})


def test_negative_warmup_or_min_lr_is_refused():
    # By hand: warm-up -1 epoch of 4 steps in an 8-step run started the cosine at
    # 0.1 * (1 + cos(pi * 4/12)) / 2 = 0.075 instead of the peak 0.1, and min_lr -0.05 drove the
    # lr below 0 (gradient ascent) in the second half; both were accepted silently.
    with pytest.raises(ValueError, match="warmup_epochs must be >= 0"):
        TrainConfig(warmup_epochs=-1)
    with pytest.raises(ValueError, match="min_lr must be >= 0"):
        TrainConfig(min_lr=-0.05)
    assert TrainConfig(warmup_epochs=0, min_lr=0).min_lr == 0


def test_zero_epochs_is_refused():
    # fit would return at once and write nothing: no checkpoint, no metrics.
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        TrainConfig(epochs=0)


@pytest.mark.parametrize("kw, name", [({"lr": -0.1}, "lr"), ({"lr": float("nan")}, "lr"),
                                      ({"momentum": -0.5}, "momentum"),
                                      ({"weight_decay": -1e-4}, "weight_decay"),
                                      ({"nesterov": True, "momentum": 0.0}, "nesterov")])
def test_optimizer_settings_are_checked_by_name(kw, name):
    # They reached torch.optim.SGD, whose message names no command-line option, after the
    # output folder had been made.
    with pytest.raises(ValueError, match=f"^{name}"):
        TrainConfig(**kw)


def test_help_says_batch_size_is_per_process_and_lr_is_not_scaled():
    p = argparse.ArgumentParser()
    add_config_arguments(p, defaults={"batch_size": None})
    text = " ".join(p.format_help().split())
    assert "--batch-size INT images per process and step; under torchrun the global batch is " \
        "nproc_per_node times this (default: see the description)" in text
    assert "not scaled with the number of processes (default: 0.05)" in text
