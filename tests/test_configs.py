"""Every config group composes, and what it names instantiates."""

from pathlib import Path

import pytest
from helpers import ROOT, compose
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Timer

from multidiff.core.processes import Process
from multidiff.core.samplers import SAMPLERS
from multidiff.core.schedules import Schedule
from multidiff.precision import resolve_trainer_precision
from multidiff.sampling import build_sampler

CONF = ROOT / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("domain", options("domain"))
def test_domain_composes_and_instantiates(domain, tmp_path):
    cfg = compose("train", [f"domain={domain}"], tmp_path)
    assert instantiate(cfg.domain).name == domain
    assert instantiate(cfg.net) is not None


@pytest.mark.parametrize("schedule", options("schedule"))
@pytest.mark.parametrize("process", options("process"))
def test_process_and_schedule_instantiate(process, schedule, tmp_path):
    cfg = compose("train", [f"process={process}", f"schedule={schedule}"], tmp_path)
    p = instantiate(cfg.process)
    assert isinstance(p, Process) and isinstance(p.schedule, Schedule)


@pytest.mark.parametrize("sampler", options("sampler"))
def test_sampler_configs_build_real_samplers(sampler, tmp_path):
    cfg = compose("sample", ["ckpt=x", f"sampler={sampler}"], tmp_path)
    built = build_sampler(cfg.sampler)
    assert SAMPLERS[sampler] is built.fn.func and built.name == sampler and built.steps >= 1


def test_sampler_group_is_the_registry_and_names_samplers_one_way(tmp_path):
    assert options("sampler") == sorted(SAMPLERS)  # one config per sample_* function, named alike
    for name in options("sampler"):
        assert OmegaConf.load(CONF / "sampler" / f"{name}.yaml").name == name
    with pytest.raises(ValueError, match="unknown sampler 'plms'; valid: euler, ddim"):
        build_sampler({"name": "plms", "steps": 4})
    with pytest.raises(ValueError, match="names its sampler with name:"):
        build_sampler({"_target_": "multidiff.core.samplers.sample_euler", "_partial_": True, "steps": 4})


def test_sampler_option_typo_names_valid_options(tmp_path):
    cfg = compose("sample", ["ckpt=x", "sampler=heun", "+sampler.s_chrun=1"], tmp_path)
    with pytest.raises(ValueError, match=r"unknown option of sampler .*'s_chrun'; valid: s_churn, s_tmin"):
        build_sampler(cfg.sampler)
    cfg = compose("sample", ["ckpt=x", "sampler=ddim", "sampler.eta=0.5"], tmp_path)
    assert build_sampler(cfg.sampler).options == {"eta": 0.5}


@pytest.mark.parametrize("data", options("data"))
def test_data_configs_compose(data, tmp_path):
    cfg = compose(
        "train", [f"data={data}", "data.root=/nonexistent"] if data == "audio_folder" else [f"data={data}"], tmp_path
    )
    assert "_target_" in cfg.data


@pytest.mark.parametrize("hardware", options("hardware"))
def test_hardware_composes(hardware, tmp_path):
    cfg = compose("train", [f"hardware={hardware}"], tmp_path)
    assert cfg.trainer.accelerator in ("cpu", "gpu")
    if hardware == "cpu":
        assert resolve_trainer_precision(cfg.trainer) in ("32-true", "bf16-mixed")
        assert instantiate(cfg.trainer, logger=False).max_steps == cfg.trainer.max_steps


@pytest.mark.parametrize("logger", options("logger"))
def test_loggers_instantiate(logger, tmp_path):
    cfg = compose("train", [f"logger={logger}"], tmp_path)
    assert all(instantiate(c) is not None for c in cfg.logger.values())


def test_callbacks_instantiate(tmp_path):
    cfg = compose("train", [], tmp_path)
    assert len([instantiate(c) for c in cfg.callbacks.values()]) == len(cfg.callbacks)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_compose(experiment, tmp_path):
    cfg = compose("train", [f"experiment={experiment}"], tmp_path)
    assert instantiate(cfg.process) is not None


def test_evaluate_config_composes(tmp_path):
    assert compose("evaluate", ["samples=x"], tmp_path).samples == "x"


def test_run_dir_is_where_outputs_go(tmp_path):
    cfg = compose("train", [], tmp_path / "here")
    assert Path(cfg.callbacks.checkpoint.dirpath) == tmp_path / "here" / "checkpoints"


def test_unknown_choice_lists_valid_ones(tmp_path):
    with pytest.raises(ConfigCompositionException) as e:
        compose("train", ["process=ddpm_magic"], tmp_path)
    assert "edm" in str(e.value) and "vp_eps" in str(e.value)


def test_in_training_previews_use_the_runs_sampler_with_its_options(tmp_path):
    cfg = compose("train", ["sampler=ddim", "sampler.eta=0.7", "sampler.steps=12"], tmp_path)
    preview = instantiate(cfg.callbacks.samples)
    sampling = build_sampler(cfg.sampler)
    assert preview.request.sampler.name == sampling.name == "ddim"
    assert preview.request.sampler.options == sampling.options == {"eta": 0.7} and preview.request.sampler.steps == 12


def test_multi_node_preset_sizes_the_slurm_job_from_the_trainer(tmp_path):
    cfg = compose("train", ["hardware=multi_node", "hydra.launcher.partition=gpu", "trainer.num_nodes=4"], tmp_path)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher") and launcher.partition == "gpu"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (4, 8, 8)
    assert cfg.trainer.strategy == "ddp" and launcher.max_num_timeout > 0 and launcher.signal_delay_s > 0


@pytest.mark.parametrize("search", options("hparams_search"))
def test_hparams_search_names_real_config_keys(search, tmp_path):
    from omegaconf import OmegaConf

    cfg = compose("train", [f"hparams_search={search}"], tmp_path)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert cfg.domain._target_.split(".")[2] == search.split("_")[0]  # the domain the search is for
    for key in sweeper.params:  # a typo in the search space would otherwise fail only inside each trial
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", f"{search}: no config key {key}"


def test_trainer_options_users_reach_for_are_settable_without_plus(tmp_path):
    overrides = [
        "trainer.max_time=00:00:01:00",
        "trainer.limit_train_batches=0.5",
        "trainer.limit_val_batches=2",
        "trainer.accumulate_grad_batches=4",
    ]
    cfg = compose("train", overrides, tmp_path)
    trainer = instantiate(cfg.trainer, precision="32-true", logger=False, enable_checkpointing=False)
    assert trainer.limit_train_batches == 0.5 and trainer.limit_val_batches == 2
    timers = [c for c in trainer.callbacks if isinstance(c, Timer)]
    assert trainer.accumulate_grad_batches == 4 and timers[0].time_remaining() == 60
    # and the defaults are Lightning's own: all batches, no time limit
    trainer = instantiate(compose("train", [], tmp_path).trainer, precision="32-true", logger=False)
    assert trainer.limit_train_batches == 1.0 and not [c for c in trainer.callbacks if isinstance(c, Timer)]
