"""Consistency distillation: against closed forms (a Gaussian's consistency function, a mixture's exact
denoiser as the teacher), then end to end on a tiny audio teacher."""

from __future__ import annotations

import json
import math

import pytest
import torch
from gmm import GaussianMixture, LabelledMixture, distill_mixture, sample_mixture, sample_student
from helpers import TINY_AUDIO, compose

from multidiff.core.distill import (
    check_huber,
    consistency_loss,
    guided_teacher,
    heun_step,
    karras_levels,
    sample_index,
    segment_ends,
    teacher_solve,
)
from multidiff.core.embeddings import GuidanceEmbedding, guidance_input
from multidiff.core.samplers import sample_consistency, sample_dpmpp_2m, sample_euler
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
    """A student (a 128-wide MLP) distilled from the mixture's exact denoiser for 1,500 steps: at 1 and 4
    evaluations its samples are far closer to the mixture than DPM-Solver++(2M)'s at the same count
    (benchmarks/distill_gmm.py runs the full table, 256 wide)."""
    g = GaussianMixture.default()
    student = distill_mixture(g, steps=1500, levels=40, batch=1024, hidden=128)
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


# a discrete block beside the points: the mixture's component as a label (tests/gmm.py, LabelledMixture)


def test_a_teacher_step_with_a_discrete_block_carries_the_marginal_down_a_level():
    """From the mixed process's marginal, one Heun step of the exact teacher (points) with one posterior draw
    (labels) lands on the marginal a level lower, with one pair of levels per row (2 -> 1.5 and 1 -> 0.6
    alternating): per pair, the labels' frequencies a w_k + (1 - a) m_k, their coupling to the points
    E[y 1(z = k)] = a w_k mu_k + (1 - a) m_k sum_j w_j mu_j, and the joint of the label before and after,
    P(z_lo = j) q(z_hi = i | z_lo = j), within 4 standard errors. Labels left unmoved, or drawn without regard
    to the label they move from, miss by 10 or more."""
    lab = LabelledMixture(GaussianMixture.default())
    gen = torch.Generator().manual_seed(7)
    n = 200_000
    pairs = ((2.0, 1.5), (1.0, 0.6))
    hi = torch.tensor([pairs[i % 2][0] for i in range(n)], dtype=torch.float64)
    lo = torch.tensor([pairs[i % 2][1] for i in range(n)], dtype=torch.float64)
    b = lambda v: v.reshape(-1, 1)  # noqa: E731
    x0 = lab.sample(n, gen)
    x = lab.discrete.noisy(x0 + b(hi) * torch.randn(n, 5, generator=gen, dtype=torch.float64), x0, b(hi), gen)
    moved = heun_step(lab.denoise_items, x, hi, lo, b, lab.discrete, gen)
    assert set(moved[:, 2:].sum(1).tolist()) == {1.0}  # a one-hot: the labels stay discrete
    w, mu, m = lab.g.w, lab.g.mu, torch.tensor(lab.block.prior, dtype=torch.float64)
    keep = lambda sigma: float(lab.discrete.keep(lab.block, torch.tensor(sigma, dtype=torch.float64)))  # noqa: E731

    def se_units(freq: torch.Tensor, want: torch.Tensor, rows: int) -> float:
        return ((freq - want).abs() / (want * (1 - want) / rows).sqrt()).max().item()

    def misses(before: torch.Tensor, after: torch.Tensor, s_hi: float, s_lo: float) -> tuple[float, float, float]:
        """The worst deviations, in standard errors, from the marginal at s_lo: label frequencies, E[y 1(z = k)],
        and the joint of the labels before (at s_hi) and after."""
        a, rows = keep(s_lo), len(after)
        hot = after[:, 2:]
        want = a * w + (1 - a) * m
        cross = (after[:, :2, None] * hot[:, None, :]).mean(0)  # (2, K)
        want_cross = (a * w * mu.T) + (1 - a) * m * (w @ mu)[:, None]
        se_cross = (after[:, :2, None] * hot[:, None, :]).std(0) / rows**0.5
        r = keep(s_hi) / a  # q(z_hi = i | z_lo = j) = r [i = j] + (1 - r) m_i
        joint = want[None, :] * (r * torch.eye(3, dtype=torch.float64) + (1 - r) * m[:, None])  # [i, j]
        seen = torch.bincount(before[:, 2:].argmax(1) * 3 + hot.argmax(1), minlength=9).double() / rows
        return (
            se_units(hot.mean(0), want, rows),
            ((cross - want_cross).abs() / se_cross).max().item(),
            se_units(seen.reshape(3, 3), joint, rows),
        )

    for i, (s_hi, s_lo) in enumerate(pairs):
        rows = slice(i, None, 2)
        assert max(misses(x[rows], x[rows], s_hi, s_hi)[:2]) < 4  # the start is the marginal at s_hi
        assert max(misses(x[rows], moved[rows], s_hi, s_lo)) < 4, (s_hi, misses(x[rows], moved[rows], s_hi, s_lo))
        stale = lab.discrete.carry(moved[rows], x[rows])  # the points moved, the labels not
        assert min(misses(x[rows], stale, s_hi, s_lo)[:2]) > 10
        # drawn afresh from the class probabilities at the lower level, ignoring the label they move from
        p = lab.denoise_items(x[rows], torch.full((len(stale),), s_hi, dtype=torch.float64))[:, 2:]
        fresh_z = torch.multinomial(keep(s_lo) * p + (1 - keep(s_lo)) * m, 1, generator=gen).squeeze(1)
        fresh = torch.cat([moved[rows][:, :2], torch.nn.functional.one_hot(fresh_z, 3).double()], 1)
        assert misses(x[rows], fresh, s_hi, s_lo)[2] > 10


def test_distilled_student_of_a_labelled_mixture_beats_the_solver_and_keeps_labels_with_points():
    """The student of the mixture with its component as a discrete label (1,500 steps, as the plain mixture's
    above): at 1 and 4 evaluations, with the labels moved by their chain, its points' weights and means and its
    labels' frequencies are far closer than DPM-Solver++(2M)'s on the exact teacher at the same count, and a
    label names its point's component (independent labels would disagree 60 % of the time)."""
    lab = LabelledMixture(GaussianMixture.default())
    student = distill_mixture(lab, steps=1500, levels=40, batch=1024, hidden=128)
    for steps in (1, 4):
        ours = lab.errors(sample_student(student, 20_000, steps).double())
        solver = lab.errors(sample_mixture(lab.denoise_items, sample_dpmpp_2m, 20_000, steps, 5, lab.discrete).double())
        for key in ("weight", "mean", "label_weight"):
            assert ours[key] < solver[key] / 3, (steps, key, ours, solver)
        assert ours["disagree"] < 0.1, ours


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


def gaussian_flow(x, sigma, s):
    """The probability-flow ODE's map of N(MU, S^2)'s noisy x from sigma down to s."""
    r = ((S**2 + s**2) / (S**2 + sigma**2)).sqrt()
    return MU + r * (x - MU)


def multistep_denoiser(grid, segments):
    """The estimate D whose jump D + (s / sigma) (x - D) from a grid level lands exactly on the flow at its
    segment's end s (0 for the lowest segment): the exact multistep consistency student."""

    def denoise(x, sigma):
        sigma = sigma.reshape(-1, 1).double()
        n = torch.searchsorted(grid, sigma.reshape(-1).float().contiguous(), right=False) - 1  # the pair below
        end = segment_ends(n.clamp(min=0), len(grid), segments)
        s = torch.where(end > 0, grid[end].double(), torch.zeros_like(end, dtype=torch.float64)).reshape(-1, 1)
        r = s / sigma
        return (gaussian_flow(x, sigma, s) - r * x) / (1 - r)

    return denoise


def test_the_exact_multistep_student_has_no_loss_and_samples_exactly_in_its_segments():
    """Multistep consistency (Heek et al. 2024) on N(MU, S^2): the estimate that jumps onto the flow at its
    segment's end has no loss in 4 segments, where the one-jump consistency function (exact for 1 segment) has;
    the sampler's karras_open levels at 4 steps are the segments' tops, so 4 Euler jumps draw N(MU, S^2)."""
    gen = torch.Generator().manual_seed(3)
    n, grid = 4096, karras_levels(0.002, 80.0, 41)
    x0 = MU + S * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    noise = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    index = sample_index(n, len(grid), gen)
    b, mean = (lambda v: v.reshape(-1, 1)), (lambda e: e.mean(1))  # noqa: E731
    exact = multistep_denoiser(grid, 4)
    ours = consistency_loss(exact, exact, gaussian_denoiser, x0, noise, grid, index, b, mean, segments=4)
    one_jump = consistency_loss(
        gaussian_consistency, gaussian_consistency, gaussian_denoiser, x0, noise, grid, index, b, mean, segments=4
    )
    assert ours.mean() < 1e-6 and one_jump.mean() > 1e3 * ours.mean()
    # segments = 1 is consistency distillation: the same loss as without the argument
    plain = consistency_loss(
        gaussian_consistency, gaussian_denoiser, gaussian_denoiser, x0, noise, grid, index, b, mean
    )
    again = consistency_loss(
        gaussian_consistency, gaussian_denoiser, gaussian_denoiser, x0, noise, grid, index, b, mean, segments=1
    )
    assert torch.equal(plain, again)
    sigmas = KarrasSchedule().sigmas(4, "karras_open")
    torch.testing.assert_close(sigmas[:-1], grid[[40, 30, 20, 10]], rtol=1e-5, atol=0)
    x = MU + (S**2 + sigmas[0].double() ** 2).sqrt() * torch.randn(20_000, 1, generator=gen, dtype=torch.float64)
    out = sample_euler(lambda v, sig: exact(v, sig.reshape(1).expand(len(v))), x, sigmas.double())
    assert abs(out.mean() - MU) < 0.02 and abs(out.std() - S) < 0.01
    with pytest.raises(ValueError, match="distill.levels = a multiple of 4 plus 1"):
        segment_ends(index, 40, 4)
    # the pseudo-Huber distance: sqrt(d + c^2) - c of each item's squared distance d, far below off the function
    off = lambda x, sigma: exact(x, sigma) + 0.1 * b(sigma)  # noqa: E731  (farther off at higher levels)
    squared = consistency_loss(off, exact, gaussian_denoiser, x0, noise, grid, index, b, mean, segments=4)
    huber = [
        consistency_loss(f, exact, gaussian_denoiser, x0, noise, grid, index, b, mean, segments=4, huber=1e-3)
        for f in (exact, off)
    ]
    for h, d in zip(huber, (ours, squared)):
        torch.testing.assert_close(h, (d + 1e-6).sqrt() - 1e-3)
    assert huber[1].mean() > 100 * huber[0].mean()
    for bad in (0, -1.0, "a"):
        with pytest.raises(ValueError, match="pseudo-Huber constant must be > 0"):
            check_huber(bad)


def test_the_teachers_refined_solve_converges_and_direct_segments_need_no_target():
    """On N(MU, S^2): ``teacher_steps`` Heun steps across each of 4 segments land on the exact flow at the
    segment's end with an error falling as the square of the step (16 steps: 100 times below 1 step); on a grid of
    segments + 1 levels every aim is the teacher's own solution, so the target network is never asked, and the
    exact multistep estimate's loss is the teacher's error alone (16 steps: 1e4 times below 1 step)."""
    gen = torch.Generator().manual_seed(4)
    n, grid = 4096, karras_levels(0.002, 80.0, 5).double()
    x0 = MU + S * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    noise = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    index = sample_index(n, len(grid), gen)
    b, mean = (lambda v: v.reshape(-1, 1)), (lambda e: e.mean(1))  # noqa: E731
    hi, lo = grid[index + 1], grid[index]
    x = x0 + b(hi) * noise
    exact_end = MU + b((S**2 + lo**2).sqrt() / (S**2 + hi**2).sqrt()) * (x - MU)
    errors = [(teacher_solve(gaussian_denoiser, x, hi, lo, b, k) - exact_end).abs().max() for k in (1, 4, 16)]
    assert errors[1] < errors[0] / 8 and errors[2] < errors[0] / 100, errors

    def no_target(x, sigma):
        raise AssertionError("the target network was asked on a grid whose every pair ends its run")

    exact = multistep_denoiser(grid.float(), 4)
    losses = [
        consistency_loss(
            exact, no_target, gaussian_denoiser, x0, noise, grid, index, b, mean, segments=4, teacher_steps=k
        ).mean()
        for k in (1, 16)
    ]
    assert losses[1] < 1e-5 and losses[0] > 1e4 * losses[1], losses
    with pytest.raises(ValueError, match="teacher_steps=0"):
        teacher_solve(gaussian_denoiser, x, hi, lo, b, 0)


def test_a_multistep_student_is_sampled_by_its_jumps_and_only_in_its_segments():
    """``generate``'s step function: a 4-segment student's is the deterministic jump (Euler on karras_open), a
    one-jump student's and an old checkpoint's (no ``segments``) the consistency sampler; other counts, other
    spacings and segment counts that are not whole numbers are refused."""
    from multidiff.config import sampler_config
    from multidiff.module import student_steps
    from multidiff.sampling import build_sampler

    four = build_sampler(sampler_config("consistency"), steps=4)
    assert student_steps(four, {"method": "consistency", "segments": 4}) is sample_euler
    assert student_steps(four, {"method": "consistency"}).func is sample_consistency  # no segments recorded: one
    with pytest.raises(ValueError, match="samples in exactly steps=4"):
        student_steps(build_sampler(sampler_config("consistency"), steps=2), {"segments": 4})
    with pytest.raises(ValueError, match="spacing=karras_open"):
        student_steps(build_sampler(sampler_config("consistency"), steps=4, spacing="karras"), {"segments": 4})
    for bad in (0, None, 2.5):
        with pytest.raises(ValueError, match="whole number of segments"):
            segment_ends(torch.zeros(1, dtype=torch.long), 41, bad)


def test_a_multistep_student_of_the_mixture_beats_the_solver_in_its_four_steps():
    """A 4-segment student distilled from the mixture's exact denoiser for 1,500 steps (as the one-jump student
    above): at 4 evaluations its weights and means are far closer than DPM-Solver++(2M)'s and its mean error
    within 0.07 (the one-jump student's is 0.16 at this length; benchmarks/distill_gmm.py --segments 4)."""
    g = GaussianMixture.default()
    student = distill_mixture(g, steps=1500, levels=41, batch=1024, segments=4, hidden=128)
    ours = g.moment_errors(sample_student(student, 20_000, 4, segments=4).double())
    sigmas = KarrasSchedule().sigmas(4).double()
    x = (
        torch.randn(20_000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        * (sigmas[0] ** 2 + 1) ** 0.5
    )
    solver = g.moment_errors(sample_dpmpp_2m(g.denoise, x, sigmas))
    assert ours["weight"] < solver["weight"] / 3 and ours["mean"] < 0.07, (ours, solver)


@pytest.mark.slow
def test_a_multistep_student_trains_and_samples_in_exactly_its_segments(tiny_audio_ckpt, shared_datasets, tmp_path):
    """train.py experiment=distill distill.segments=4: recorded in the checkpoint, sampled in 4 jumps (4 network
    calls), any other step count refused with the count it needs; a grid the segments do not cut is refused."""
    import sample
    import train
    from multidiff.build import load_checkpoint

    run = tmp_path / "student"
    common = ["experiment=distill", "domain=audio", f"paths.data_dir={shared_datasets}", *TINY_AUDIO]
    segmented = [*common, f"teacher={tiny_audio_ckpt}", "distill.segments=4"]
    with pytest.raises(ValueError, match="distill.levels = a multiple of 4 plus 1"):
        train.train(compose("train", [*segmented, "trainer.max_steps=1"], tmp_path / "uneven"))
    with pytest.raises(ValueError, match="distill.teacher_steps=0"):
        train.train(compose("train", [*segmented, "distill.levels=5", "distill.teacher_steps=0"], tmp_path / "t0"))
    with pytest.raises(ValueError, match="distill.huber=0.0: the pseudo-Huber constant must be > 0"):
        train.train(compose("train", [*segmented, "distill.levels=5", "distill.huber=0.0"], tmp_path / "h0"))
    direct = tmp_path / "direct"  # direct segments: 5 levels, the teacher's 2 steps per pair; pseudo-Huber
    options = ["distill.levels=5", "distill.teacher_steps=2", "distill.huber=5.4e-4", "trainer.max_steps=1"]
    trainer = train.train(compose("train", [*segmented, *options], direct))
    recorded = load_checkpoint(direct / "checkpoints" / "last.ckpt").distilled
    assert (recorded["teacher_steps"], recorded["huber"], trainer.lightning_module.huber) == (2, 5.4e-4, 5.4e-4)
    preview = [
        "+callbacks.samples={_target_: multidiff.training.SampleCallback, sampler: ${sampler}, every_n_steps: 1, n: 1}"
    ]
    train.train(compose("train", [*segmented, "distill.levels=41", "trainer.max_steps=2", *preview], run))
    ckpt = run / "checkpoints" / "last.ckpt"
    assert load_checkpoint(ckpt).distilled["segments"] == 4
    assert list((run / "samples" / "step_0000001").glob("*.wav"))  # its previews sample in its 4 steps
    out = tmp_path / "s4"
    sample.sample(compose("sample", [f"ckpt={ckpt}", "sampler=consistency", "n=2", f"out={out}"], tmp_path / "h4"))
    assert len(list(out.glob("*.wav"))) == 2
    assert json.loads((out / "sampling.json").read_text())["steps"] == 4  # its K, without steps=
    plain = tmp_path / "plain"  # no sampler named: the one that serves a student, in its K steps
    sample.sample(compose("sample", [f"ckpt={ckpt}", "n=2", f"out={plain}"], tmp_path / "hp"))
    record = json.loads((plain / "sampling.json").read_text())
    assert (record["sampler"], record["steps"]) == ("consistency", 4), record
    with pytest.raises(ValueError, match="it samples with sampler=consistency"):  # a solver named is refused
        sample.sample(compose("sample", [f"ckpt={ckpt}", "sampler=dpmpp_2m", "n=2"], tmp_path / "hd"))
    with pytest.raises(ValueError, match="samples in exactly steps=4"):  # an option alone applies to consistency
        sample.sample(compose("sample", [f"ckpt={ckpt}", "sampler.steps=3", "n=2"], tmp_path / "ho"))
    with pytest.raises(ValueError, match="samples in exactly steps=4"):  # sampler.steps=3 is not overridden
        sample.sample(
            compose("sample", [f"ckpt={ckpt}", "sampler=consistency", "sampler.steps=3", "n=2"], tmp_path / "h3")
        )
    same_teacher = tiny_audio_ckpt.parent / ".." / tiny_audio_ckpt.parent.name / tiny_audio_ckpt.name  # another path
    again = [*common, f"teacher={same_teacher}", "distill.segments=4", "distill.levels=41", "trainer.max_steps=3"]
    resumed = train.train(compose("train", [*again, f"ckpt_path={ckpt}"], tmp_path / "resumed"))
    assert resumed.ckpt_path == str(ckpt) and resumed.global_step == 3  # a student's run continues from its checkpoint
    with pytest.raises(ValueError, match=r"distill\.segments: 4 in the checkpoint, 2 now"):
        train.train(
            compose(
                "train",
                [
                    *common,
                    f"teacher={tiny_audio_ckpt}",
                    "distill.segments=2",
                    "distill.levels=41",
                    "trainer.max_steps=3",
                    f"ckpt_path={ckpt}",
                ],
                tmp_path / "resumed",
            )
        )
    with pytest.raises(ValueError, match="samples in exactly steps=4"):
        sample.sample(
            compose(
                "sample",
                [f"ckpt={ckpt}", "sampler=consistency", "steps=2", "n=2", f"out={tmp_path / 'x'}"],
                tmp_path / "hx",
            )
        )


# guidance distilled in: two classes N(MU_C[c], S^2) and a plain (unconditional) model N(MU_U, S^2). The guided
# denoiser D_u + w (D_c - D_u) is then the denoiser of N(MU_U + w (MU_C[c] - MU_U), S^2): its flow's end is closed form
MU_C, MU_U = torch.tensor([-1.0, 2.0], dtype=torch.float64), 0.5


def class_denoiser(mu):
    return lambda x, sigma: (
        mu.reshape(-1, 1) + S**2 / (S**2 + sigma.reshape(-1, 1).double() ** 2) * (x - mu.reshape(-1, 1))
    )


def guided_consistency(c, w):
    mu = (MU_U + w * (MU_C[c] - MU_U)).reshape(-1, 1)
    return lambda x, sigma: mu + S / (S**2 + sigma.reshape(-1, 1).double() ** 2).sqrt() * (x - mu)


def test_a_student_written_before_its_newer_settings_resumes_with_their_defaults():
    from multidiff.distillation import resume_settings

    old = {"method": "consistency", "levels": 40, "rho": 7.0, "target_decay": 0.95, "teacher": "a.ckpt"}
    now = {**old, "segments": 1, "guidance": None, "teacher": "./a.ckpt", "teacher_digest": "d"}
    assert resume_settings({**old, "teacher_digest": "d"}) == resume_settings(now)
    assert resume_settings({**old, "teacher_digest": "d"}) != resume_settings({**now, "segments": 4})
    assert resume_settings({**old, "teacher_digest": "d"}) == resume_settings({**now, "teacher_steps": 1})
    assert resume_settings({**old, "teacher_digest": "d"}) != resume_settings({**now, "teacher_steps": 8})
    assert resume_settings({**old, "teacher_digest": "d"}) == resume_settings({**now, "huber": None})
    assert resume_settings({**old, "teacher_digest": "d"}) != resume_settings({**now, "huber": 5.4e-4})
    assert resume_settings(None) is None


def test_the_guided_teacher_has_the_guided_flows_consistency_function():
    gen = torch.Generator().manual_seed(3)
    n, grid = 8192, karras_levels(0.002, 80.0, 40).double()
    c = torch.randint(0, 2, (n,), generator=gen)
    w = 4 * torch.rand(n, generator=gen, dtype=torch.float64)
    mu_w = MU_U + w * (MU_C[c] - MU_U)
    x0 = mu_w.reshape(-1, 1) + S * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    noise = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    b = lambda v: v.reshape(-1, 1)  # noqa: E731
    teacher = guided_teacher(class_denoiser(torch.full((n,), MU_U, dtype=torch.float64)), class_denoiser(MU_C[c]), w, b)
    exact = guided_consistency(c, w)
    index = sample_index(n, len(grid), gen)
    loss = consistency_loss(exact, exact, teacher, x0, noise, grid, index, b, lambda e: e.mean(1))
    wrong = guided_consistency(c, w + 0.5)  # the consistency function of another scale
    assert (
        loss.mean() < 1e-6
        and consistency_loss(wrong, wrong, teacher, x0, noise, grid, index, b, lambda e: e.mean(1)).mean()
        > 1e3 * loss.mean()
    )


class GuidedLine(torch.nn.Module):
    """A 1-D conditional denoiser network taking the guidance scale as an input (the DenoiserNet contract)."""

    conditional, observable, equivariance = True, False, None

    def __init__(self, hidden: int = 128, freqs: int = 16):
        super().__init__()
        self.register_buffer("freqs", torch.randn(freqs, generator=torch.Generator().manual_seed(0)) * 4)
        self.inp = torch.nn.Linear(1 + 2 * freqs, hidden)
        self.cond = torch.nn.Embedding(2, hidden)
        self.guidance_embed = GuidanceEmbedding(hidden)
        self.out = torch.nn.Sequential(
            torch.nn.SiLU(), torch.nn.Linear(hidden, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, 1)
        )

    def forward(self, x, c_noise, *, cond=None, cond_drop=None, guidance=None):
        e = c_noise.reshape(-1, 1).to(x.dtype) * self.freqs
        h = self.inp(torch.cat([x, e.sin(), e.cos()], 1)) + self.cond(cond)
        return self.out(h + guidance_input(self, guidance, len(x)))


def test_a_guidance_conditioned_student_learns_every_scale_in_one_step():
    """Distilled from the guided teacher at scales drawn from [0, 4], one student draws each scale's exact
    distribution in one evaluation (mean and spread within 0.12 of N(mu_w, 0.7^2); 3,000 steps leave errors of
    0.003-0.085; one step of a solver with the same teacher returns the mean alone, a spread error of 0.7)."""
    import copy

    from multidiff.core.denoiser import Preconditioned
    from multidiff.core.processes import EDMProcess
    from multidiff.core.space import TensorSpace
    from multidiff.core.state import State

    torch.manual_seed(0)
    student = Preconditioned(GuidedLine(), EDMProcess(KarrasSchedule(), sigma_data=2.0), TensorSpace())
    target = copy.deepcopy(student).requires_grad_(False)
    grid, n, steps = karras_levels(0.002, 80.0, 40), 1024, 3000
    opt = torch.optim.Adam(student.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    b = lambda v: v.reshape(-1, 1)  # noqa: E731
    for step in range(steps):
        c = torch.randint(0, 2, (n,), generator=gen)
        w = 4 * torch.rand(n, generator=gen)
        state = State(torch.zeros(n, 1), c, {})
        mu_w = (MU_U + w * (MU_C[c].float() - MU_U)).reshape(-1, 1)
        teacher = guided_teacher(
            lambda x, s: class_denoiser(torch.full((n,), MU_U, dtype=torch.float64))(x, s).float(),
            lambda x, s: class_denoiser(MU_C[c])(x, s).float(),  # noqa: B023
            w,
            b,
        )
        loss = consistency_loss(
            lambda x, s: student(x, s, state, guidance=w),  # noqa: B023
            lambda x, s: target(x, s, state, guidance=w),  # noqa: B023
            teacher,
            mu_w + S * torch.randn(n, 1, generator=gen),
            torch.randn(n, 1, generator=gen),
            grid,
            sample_index(n, len(grid), gen),
            b,
            lambda e: e.mean(1),
        ).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        for group in opt.param_groups:
            group["lr"] = 2e-3 * 0.5 * (1 + math.cos(math.pi * (step + 1) / steps))
        with torch.no_grad():
            for t, s in zip(target.parameters(), student.parameters()):
                t.lerp_(s, 0.05)
    m = 20_000
    for c in (0, 1):
        for w in (0.0, 1.0, 2.5, 4.0):
            state = State(torch.zeros(m, 1), torch.full((m,), c), {})
            x = torch.randn(m, 1, generator=gen) * (80.0**2 + 4.0) ** 0.5
            with torch.no_grad():
                out = student(x, torch.full((m,), 80.0), state, guidance=torch.full((m,), w)).double()
            mu = MU_U + w * (float(MU_C[c]) - MU_U)
            assert abs(out.mean() - mu) < 0.12 and abs(out.std() - S) < 0.12, (c, w, out.mean(), out.std(), mu)


@pytest.mark.slow
def test_guidance_distilled_in_costs_one_network_call_per_step(tiny_audio_ckpt, shared_datasets, tmp_path):
    """experiment=distill distill.guidance=[1,3] on a conditional teacher: the student takes the scale as an input,
    so guidance=2 costs one call per step where the teacher's guidance costs two; scales outside what it learned
    and an unconditional teacher are refused."""
    import sample
    import train
    from multidiff.build import load_checkpoint

    common = ["experiment=distill", "domain=audio", f"paths.data_dir={shared_datasets}", *TINY_AUDIO]
    run = tmp_path / "student"
    train.train(
        compose("train", [*common, f"teacher={tiny_audio_ckpt}", "distill.guidance=[1,3]", "trainer.max_steps=2"], run)
    )
    ckpt = run / "checkpoints" / "last.ckpt"
    student = load_checkpoint(ckpt)
    assert (
        student.distilled["guidance"] == [1, 3]
        and student.model.guided
        and not load_checkpoint(tiny_audio_ckpt).model.guided
    )

    def calls(source, *args, digit=("+condition.digit=3",)):
        seen = []
        hook = torch.nn.modules.module.register_module_forward_hook(
            lambda m, i, o: seen.append(1) if type(m).__name__ == "UNet1d" else None
        )
        try:
            out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
            sample.sample(
                compose(
                    "sample",
                    [f"ckpt={source}", "n=2", *digit, f"out={out}", *args],
                    out.with_suffix(".h"),
                )
            )
        finally:
            hook.remove()
        assert len(list(out.glob("*.wav"))) == 2
        return len(seen)

    assert calls(ckpt, "sampler=consistency", "steps=2", "guidance=2") == 2
    assert calls(ckpt, "sampler=consistency", "steps=2", digit=()) == 2  # unconditional: the plain model
    assert calls(tiny_audio_ckpt, "sampler=euler", "steps=2", "guidance=2") == 4  # conditional + unconditional
    with pytest.raises(ValueError, match=r"guidance=5.0: this student learned guidance scales in \[1, 3\]"):
        calls(ckpt, "sampler=consistency", "steps=2", "guidance=5")
    plain = tmp_path / "plain"
    train.train(
        compose(
            "train",
            [
                "domain=audio",
                f"paths.data_dir={shared_datasets}",
                *TINY_AUDIO,
                "data.num_classes=0",
                "trainer.max_steps=1",
            ],
            plain,
        )
    )
    with pytest.raises(ValueError, match="is unconditional; classifier-free guidance needs a conditional teacher"):
        train.train(
            compose(
                "train",
                [*common, f"teacher={plain / 'checkpoints' / 'last.ckpt'}", "distill.guidance=[1,3]"],
                tmp_path / "x",
            )
        )


def test_a_guided_student_is_given_the_scale_and_scale_zero_without_a_condition():
    from multidiff.core.denoiser import Preconditioned, sampling_denoiser
    from multidiff.core.processes import EDMProcess
    from multidiff.core.space import TensorSpace
    from multidiff.core.state import State

    class Recorder(torch.nn.Module):
        conditional, observable, equivariance = True, False, None

        def __init__(self):
            super().__init__()
            self.guidance_embed, self.seen = GuidanceEmbedding(4), []

        def forward(self, x, c_noise, *, cond=None, cond_drop=None, guidance=None):
            self.seen.append((cond, cond_drop, guidance))
            return torch.zeros_like(x)

    model = Preconditioned(Recorder(), EDMProcess(KarrasSchedule()), TensorSpace())
    x, sigma = torch.zeros(5, 1), torch.tensor(3.0)
    sampling_denoiser(model, State(x, torch.arange(5), {}), guidance=2.5)(x, sigma)
    ((cond, drop, w),) = model.net.seen  # one call, not two
    assert torch.equal(cond, torch.arange(5)) and drop is None and torch.equal(w, torch.full((5,), 2.5))
    sampling_denoiser(model, State(x, None, {}), guidance=1.0)(x, sigma)
    assert model.net.seen[-1][0] is None and torch.equal(model.net.seen[-1][2], torch.zeros(5))  # the plain model
    with pytest.raises(ValueError, match="guidance=2.0 needs a condition"):
        sampling_denoiser(model, State(x, None, {}), guidance=2.0)
    with pytest.raises(ValueError, match="cannot be combined with a guide model"):
        sampling_denoiser(model, State(x, torch.arange(5), {}), guidance=2.0, interval=(0.1, 1.0))


@pytest.mark.slow
def test_distill_a_discrete_graph_teacher_end_to_end(qm9_root, tmp_path, monkeypatch):
    """A graph molecule model whose atom types and bonds follow the discrete process (the graph default) is a
    teacher: the teacher's steps move both blocks (atom types on the nodes, bond orders on the pairs) by posterior
    draws, its student keeps the process, samples with sampler=consistency in two evaluations, and writes
    molecules with the bonds it generated, read back by RDKit."""
    from rdkit import Chem

    import sample
    import train
    from multidiff.build import load_checkpoint
    from multidiff.core.categorical import DiscreteCategorical, categorical_of

    moved_parts = []
    advance = DiscreteCategorical.advance

    def spy(self, x_next, *args, **kwargs):
        moved_parts.append(tuple(b.part for b in self.blocks))
        return advance(self, x_next, *args, **kwargs)

    monkeypatch.setattr(DiscreteCategorical, "advance", spy)

    tiny = ["domain=molecule", "domain.bonds=true", f"data.root={qm9_root}", "data.max_molecules=64",
            "data.batch_size=8", "net.hidden=16", "net.layers=2", "callbacks.samples=null",
            "optimized_metric=null"]  # fmt: skip
    teacher = tmp_path / "teacher"
    train.train(compose("train", [*tiny, "trainer.max_steps=2"], teacher))
    run = tmp_path / "student"
    train.train(
        compose(
            "train",
            ["experiment=distill", *tiny, f"teacher={teacher / 'checkpoints' / 'last.ckpt'}", "trainer.max_steps=2"],
            run,
        )  # fmt: skip
    )
    assert moved_parts and set(moved_parts) == {("node", "pair")}  # every teacher step moved types and bonds
    student = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert student.distilled["method"] == "consistency" and student.run_config["domain"]["categorical"] == "discrete"
    assert categorical_of(student.domain.space).discrete
    out = tmp_path / "samples"
    sample.sample(
        compose(
            "sample",
            [f"ckpt={run / 'checkpoints' / 'last.ckpt'}", "sampler=consistency", "steps=2", "n=3", f"out={out}"],
            tmp_path / "s",
        )  # fmt: skip
    )
    records = list(Chem.SDMolSupplier(str(out / "samples.sdf"), sanitize=False, removeHs=False))
    assert len(records) == 3 and all(r.GetProp("bond_source") == "model" for r in records)
