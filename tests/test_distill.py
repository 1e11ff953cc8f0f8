"""Consistency distillation: against closed forms (a Gaussian's consistency function, a mixture's exact
denoiser as the teacher), then end to end on a tiny audio teacher."""

from __future__ import annotations

import pytest
import torch
from gmm import GaussianMixture, distill_mixture, sample_student
from helpers import TINY_AUDIO, compose

from multidiff.core.distill import consistency_loss, heun_step, karras_levels, sample_index
from multidiff.core.samplers import sample_consistency, sample_dpmpp_2m
from multidiff.core.schedules import KarrasSchedule

MU, S = 1.5, 0.7  # a 1-D Gaussian N(MU, S^2) per coordinate: every map of its flow is in closed form


def gaussian_denoiser(x, sigma):
    s = sigma.reshape(-1, 1).double()
    return MU + S**2 / (S**2 + s**2) * (x - MU)


def gaussian_consistency(x, sigma):
    """The probability-flow ODE's end from (x, sigma): MU + S / sqrt(S^2 + sigma^2) (x - MU)."""
    s = sigma.reshape(-1, 1).double()
    return MU + S / (S**2 + s**2).sqrt() * (x - MU)


def test_heun_step_follows_the_gaussian_flow_and_the_exact_consistency_function_has_no_loss():
    gen = torch.Generator().manual_seed(0)
    n, grid = 4096, karras_levels(0.002, 80.0, 40).double()
    x0 = MU + S * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    noise = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    index = sample_index(n, len(grid), gen)
    b = lambda v: v.reshape(-1, 1)  # noqa: E731
    x = x0 + b(grid[index + 1]) * noise
    moved = heun_step(gaussian_denoiser, x, grid[index + 1], grid[index], b)
    # the ODE keeps the consistency function's value: the Heun step lands where it should, to its own order
    drift = (gaussian_consistency(moved, grid[index]) - gaussian_consistency(x, grid[index + 1])).abs()
    assert drift.max() < 0.01 and drift.mean() < 2e-4
    mean = lambda e: e.mean(1)  # noqa: E731
    exact = consistency_loss(
        gaussian_consistency, gaussian_consistency, gaussian_denoiser, x0, noise, grid, index, b, mean
    )
    teacher = consistency_loss(gaussian_denoiser, gaussian_denoiser, gaussian_denoiser, x0, noise, grid, index, b, mean)
    assert exact.mean() < 1e-6 and teacher.mean() > 1e3 * exact.mean()  # the teacher's D is no consistency function


def test_consistency_sampling_with_the_exact_function_is_exact_in_one_step():
    gen = torch.Generator().manual_seed(1)
    n = 20_000
    for steps in (1, 2, 4):
        sigmas = KarrasSchedule().sigmas(steps, "karras_open").double()
        assert len(sigmas) == steps + 1 and sigmas[-1] == 0 and sigmas[-2] > 0.002  # sigma_min is left out
        x = MU + (S**2 + sigmas[0] ** 2).sqrt() * torch.randn(n, 1, generator=gen, dtype=torch.float64)
        out = sample_consistency(
            gaussian_consistency, x, sigmas, noise_sampler=lambda a, b: torch.randn(n, 1, generator=gen).double()
        )
        assert abs(out.mean() - MU) < 0.02 and abs(out.std() - S) < 0.02


def test_distilled_student_of_the_mixture_beats_the_solver_at_equal_evaluations():
    """A student distilled from the mixture's exact denoiser for 1,500 steps: at 1 and 4 evaluations its samples
    are far closer to the mixture than DPM-Solver++(2M)'s at the same count (benchmarks/distill_gmm.py runs the
    full table)."""
    g = GaussianMixture.default()
    student = distill_mixture(g, steps=1500, levels=40, batch=1024)
    for steps in (1, 4):
        ours = g.moment_errors(sample_student(student, 20_000, steps).double())
        sigmas = KarrasSchedule().sigmas(steps).double()
        x = (
            torch.randn(20_000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
            * (sigmas[0] ** 2 + 1) ** 0.5
        )
        solver = g.moment_errors(sample_dpmpp_2m(g.denoise, x, sigmas))
        # (a collapsed solver's covariance error is bounded by the true covariance: weights and means tell)
        assert ours["weight"] < solver["weight"] / 3 and ours["mean"] < solver["mean"] / 3, (steps, ours, solver)


@pytest.mark.slow
def test_distill_a_tiny_audio_teacher_end_to_end(tiny_audio_ckpt, shared_datasets, tmp_path):
    """train.py experiment=distill on a checkpoint: the student records its teacher, samples with sampler=consistency
    in one and two evaluations, refuses a solver; a student is no teacher; the teacher's domain is required."""

    import sample
    import train
    from multidiff.build import load_checkpoint

    run = tmp_path / "student"
    common = ["experiment=distill", "domain=audio", f"paths.data_dir={shared_datasets}", *TINY_AUDIO]
    train.train(compose("train", [*common, f"teacher={tiny_audio_ckpt}", "trainer.max_steps=2"], run))
    ckpt = run / "checkpoints" / "last.ckpt"
    student, teacher = load_checkpoint(ckpt), load_checkpoint(tiny_audio_ckpt)
    info = student.distilled
    assert (
        info["method"] == "consistency"
        and info["teacher"] == str(tiny_audio_ckpt)
        and len(info["teacher_digest"]) == 12
    )
    assert student.run_config["net"] == teacher.run_config["net"]  # the teacher's network, not the command line's
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, teacher.state_dict()[k])]
    assert changed  # trained from the teacher's weights
    for steps in (1, 2):
        out = tmp_path / f"s{steps}"
        sample.sample(
            compose(
                "sample",
                [f"ckpt={ckpt}", "sampler=consistency", f"steps={steps}", "n=2", f"out={out}"],
                tmp_path / f"h{steps}",
            )
        )
        assert len(list(out.glob("*.wav"))) == 2
    with pytest.raises(ValueError, match="consistency student.*sampler=consistency"):
        sample.sample(
            compose("sample", [f"ckpt={ckpt}", "sampler=dpmpp_2m", "n=2", f"out={tmp_path / 'x'}"], tmp_path / "hx")
        )
    with pytest.raises(ValueError, match="is itself a student"):
        train.train(compose("train", [*common, f"teacher={ckpt}", "trainer.max_steps=1"], tmp_path / "again"))
    with pytest.raises(ValueError, match="needs teacher="):
        train.train(compose("train", [*common, "trainer.max_steps=1"], tmp_path / "none"))
