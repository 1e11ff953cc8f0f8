"""Direct distillation on stored teacher trajectories (``distill.method=trajectory``): the stored states against
the Gaussian's closed-form flow, a student of the mixture's exact teacher against the solver, then train.py and
sample.py end to end on a tiny audio teacher."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from gmm import GaussianMixture, sample_student, trajectory_mixture
from helpers import TINY_AUDIO, compose

from multidiff.core.distill import balanced, check_jumps_at, jump_tops, run_grid, trajectory_loss, trajectory_states
from multidiff.core.samplers import sample_dpmpp_2m, sample_euler
from multidiff.core.schedules import KarrasSchedule

MU, S = 1.5, 0.7  # N(MU, S^2) per coordinate: its flow is closed form


def gaussian_denoiser(x, sigma):
    return MU + S**2 / (S**2 + sigma.double() ** 2) * (x - MU)


def gaussian_flow(x, sigma, s):
    """The probability-flow ODE's map of N(MU, S^2)'s noisy x from sigma down to s (per item, broadcast)."""
    return MU + ((S**2 + s**2) / (S**2 + sigma**2)).sqrt() * (x - MU)


def test_stored_trajectories_follow_the_gaussian_flow_and_the_exact_jumps_have_no_loss():
    """The teacher's DPM-Solver++(2M) solve on the Karras grid of 4 x 12 + 1 levels, kept at every 12th level: those
    are the karras_open levels of 4 steps, and the kept states lie on the exact flow from the prior (3 % of the
    Gaussian's scale, a third of that at twice the steps); the jump that lands on the flow has no loss beyond the
    solve's own error, a jump to the data from every level has."""
    schedule = KarrasSchedule()
    fine = schedule.sigmas(4 * 12 + 1, "karras").double()
    tops = torch.cat([fine[:-2:12], fine.new_zeros(1)])
    torch.testing.assert_close(tops.float(), schedule.sigmas(4, "karras_open"))
    gen = torch.Generator().manual_seed(0)
    prior = fine[0] * torch.randn(4096, 3, generator=gen, dtype=torch.float64)
    states = trajectory_states(sample_dpmpp_2m, gaussian_denoiser, prior, fine, 12)
    assert states.shape == (5, 4096, 3)
    exact = torch.stack([gaussian_flow(prior, fine[0], s) for s in tops])
    error = (states - exact).abs().amax(dim=(1, 2))
    finer = schedule.sigmas(4 * 24 + 1, "karras").double()  # twice the solver's steps per jump
    error_finer = (trajectory_states(sample_dpmpp_2m, gaussian_denoiser, prior, finer, 24) - exact).abs().amax((1, 2))
    # on the flow from the prior to within 3 % of the Gaussian's scale, converging as the second-order solver does
    assert error[0] < 1e-12 and error.max() < 0.03 * S and (error_finer[1:] < error[1:] / 3).all(), (error, error_finer)
    b, mean = (lambda v: v.reshape(-1, 1)), (lambda e: e.mean(1))  # noqa: E731
    k = torch.randint(0, 4, (4096,), generator=gen)
    x, sigma, s, aim = states[k, torch.arange(4096)], tops[k], tops[k + 1], states[k + 1, torch.arange(4096)]

    def exact_jump(x, sigma):  # the estimate D whose jump D + (s / sigma) (x - D) lands on the flow at s
        r = b(s / sigma)
        return (gaussian_flow(x, b(sigma), b(s)) - r * x) / (1 - r)

    def to_the_data(x, sigma):  # the one-jump consistency function: right for the lowest run only
        return gaussian_flow(x, b(sigma), torch.zeros_like(b(sigma)))

    ours = trajectory_loss(exact_jump, x, sigma, s, aim, b, mean)
    # what is left is the stored solve's own error (squared); a jump to the data from every level is far off
    assert (
        ours.mean() < error.max() ** 2
        and trajectory_loss(to_the_data, x, sigma, s, aim, b, mean).mean() > 1e3 * ours.mean()
    )
    with pytest.raises(ValueError, match="not K runs of 5 steps"):
        trajectory_states(sample_dpmpp_2m, gaussian_denoiser, prior, fine, 5)


def test_chosen_jump_levels_are_where_the_stored_states_lie_on_the_flow():
    """``distill.jumps_at``: the solver's grid runs through the prior's level and the chosen levels, 12 steps per
    jump, and keeps the states exactly there, on the exact flow (within 10 % of the Gaussian's scale, converging as
    the second-order solver does: the first jump, 80 to 6, is longer than the default's); on the karras_open
    levels the same construction is the Karras grid of 4 x 12 + 1 levels. Levels that are not K - 1, descending
    strictly within (sigma_min, sigma_max) are refused by name."""
    schedule = KarrasSchedule()
    torch.testing.assert_close(
        run_grid(jump_tops(schedule, 4), schedule.sigma_min, 12), schedule.sigmas(4 * 12 + 1, "karras")
    )
    tops = jump_tops(schedule, 4, [6.0, 1.5, 0.5])
    assert tops.tolist() == pytest.approx([schedule.sigma_max, 6.0, 1.5, 0.5, 0.0])
    fine = run_grid(tops, schedule.sigma_min, 12).double()
    assert len(fine) == 4 * 12 + 2 and float(fine[-2]) == pytest.approx(schedule.sigma_min)
    gen = torch.Generator().manual_seed(1)
    prior = fine[0] * torch.randn(4096, 3, generator=gen, dtype=torch.float64)
    states = trajectory_states(sample_dpmpp_2m, gaussian_denoiser, prior, fine, 12)
    exact = torch.stack([gaussian_flow(prior, fine[0], s) for s in tops.double()])
    error = (states - exact).abs().amax().item()
    finer = run_grid(tops, schedule.sigma_min, 24).double()  # twice the solver's steps per jump
    error_finer = (trajectory_states(sample_dpmpp_2m, gaussian_denoiser, prior, finer, 24) - exact).abs().amax().item()
    assert error < 0.1 * S and error_finer < error / 3, (error, error_finer)
    # the default levels' states, kept at other levels, are far from the flow at the chosen ones
    default = trajectory_states(sample_dpmpp_2m, gaussian_denoiser, prior, schedule.sigmas(49, "karras").double(), 12)
    assert (default[1:-1] - exact[1:-1]).abs().amax().item() > 0.3 * S
    for bad in ([6.0, 1.5], [1.5, 6.0, 0.5], [100.0, 1.5, 0.5], [6.0, 1.5, 1e-4], "6,1.5,0.5", [6.0, "1.5", 0.5]):
        with pytest.raises(ValueError, match="distill.jumps_at="):
            check_jumps_at(bad, 4, schedule.sigma_min, schedule.sigma_max)
    check_jumps_at([6.0, 1.5, 0.5], 4, schedule.sigma_min, schedule.sigma_max)
    check_jumps_at(None, 4, schedule.sigma_min, schedule.sigma_max)


def test_balanced_jump_weights_make_each_jumps_loss_about_one_and_its_gradient_alike():
    """``jump_weight=balanced``: distances of 4 jumps 10,000-fold apart in size (the coarse jumps' states are mostly
    noise) each weigh about 1 after the running means have settled, so a step moves every jump's error by the same
    share; without updates (validation) the means stay as they are, and before any update nothing is divided."""
    gen = torch.Generator().manual_seed(0)
    sizes = torch.tensor([100.0, 1.0, 0.1, 0.01])
    scale = torch.zeros(4)
    fresh = torch.rand(8, generator=gen)
    torch.testing.assert_close(balanced(fresh, torch.arange(8) % 4, scale, update=False), fresh)
    for _ in range(300):
        k = torch.randint(0, 4, (64,), generator=gen)
        weighted = balanced(sizes[k] * torch.rand(64, generator=gen) * 2, k, scale, update=True)
    means = torch.stack([weighted[k == j].mean() for j in range(4)])
    assert ((means - 1).abs() < 0.35).all(), means
    torch.testing.assert_close(scale, sizes, rtol=0.1, atol=0)
    before = scale.clone()
    balanced(sizes * 5, torch.arange(4), scale, update=False)
    assert torch.equal(scale, before)
    # the gradient of each jump's share of the loss: the raw sizes differ 10,000-fold, the balanced ones not
    error = sizes.clone().requires_grad_(True)
    balanced(error, torch.arange(4), scale, update=False).sum().backward()
    assert (error.grad * sizes).max() / (error.grad * sizes).min() < 1.3


def test_a_trajectory_student_of_the_mixture_beats_the_solver_in_its_four_steps():
    """A 4-jump student learned from 20,000 stored solves of the mixture's exact denoiser (1,500 steps): at 4
    evaluations its weights and means are far closer than DPM-Solver++(2M)'s (benchmarks/distill_gmm.py
    --trajectories 20000 --segments 4)."""
    g = GaussianMixture.default()
    student = trajectory_mixture(g, steps=1500, hidden=128)
    ours = g.moment_errors(sample_student(student, 20_000, 4, segments=4).double())
    sigmas = KarrasSchedule().sigmas(4).double()
    x = (
        torch.randn(20_000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        * (sigmas[0] ** 2 + 1) ** 0.5
    )
    solver = g.moment_errors(sample_dpmpp_2m(g.denoise, x, sigmas))
    assert ours["weight"] < solver["weight"] / 3 and ours["mean"] < 0.08, (ours, solver)


def test_a_trajectory_student_of_a_labelled_mixture_keeps_labels_with_points():
    """The mixture with its component as a discrete label (tests/gmm.py, LabelledMixture): the stored solves move
    the labels by the solver's chain; the 4-jump student learned from them, its labels drawn by the same chain,
    is far closer than DPM-Solver++(2M) at 4 in weights, means and label frequencies, and a label names its
    point's component (independent labels would disagree 60 % of the time)."""
    from gmm import LabelledMixture, sample_mixture

    lab = LabelledMixture(GaussianMixture.default())
    student = trajectory_mixture(lab, steps=1500, hidden=128)
    ours = lab.errors(sample_student(student, 20_000, 4, segments=4).double())
    solver = lab.errors(sample_mixture(lab.denoise_items, sample_dpmpp_2m, 20_000, 4, 5, lab.discrete).double())
    for key in ("weight", "mean", "label_weight"):
        assert ours[key] < solver[key] / 3, (key, ours, solver)
    assert ours["disagree"] < 0.1, ours


def test_stored_labels_are_the_chains_classes_at_each_kept_level():
    """With a discrete block the solver's chain moves the labels: a kept state holds the classes the teacher was
    shown at exactly that level, and the end the chain's last class probabilities."""
    from gmm import LabelledMixture

    lab = LabelledMixture(GaussianMixture.default())
    shown = {}

    def teacher(x, sigma):
        shown.setdefault(float(sigma), x.clone())
        return lab.denoise_items(x, sigma)

    fine = KarrasSchedule().sigmas(3 * 4 + 1, "karras").double()
    gen = torch.Generator().manual_seed(0)
    prior = torch.randn(512, 5, generator=gen, dtype=torch.float64) * fine[0]
    states = trajectory_states(sample_dpmpp_2m, teacher, prior, fine, 4, lab.discrete, gen)
    assert states.shape == (4, 512, 5)
    for j in range(3):
        assert torch.equal(states[j, :, 2:], shown[float(fine[4 * j])][:, 2:]), j
    assert not torch.equal(states[1, :, 2:], shown[float(fine[5])][:, 2:])  # a level later the classes have moved
    last = fine[-2]  # the end: the class probabilities of the teacher's last call
    torch.testing.assert_close(states[3, :, 2:], lab.denoise_items(shown[float(last)], last)[:, 2:])


def test_a_trajectory_student_samples_in_exactly_its_jumps_even_one():
    """A trajectory student of K jumps samples by its K deterministic jumps, K = 1 included (a one-jump
    consistency student samples in 1-4 steps); other counts are refused with the one it needs."""
    from multidiff.config import sampler_config
    from multidiff.module import student_steps
    from multidiff.sampling import build_sampler, jumps_of

    one = build_sampler(sampler_config("consistency"), steps=1)
    assert student_steps(one, {"method": "trajectory", "segments": 1}) is sample_euler
    assert jumps_of({"method": "trajectory", "segments": 1}) == 1 and jumps_of({"method": "consistency"}) is None
    assert jumps_of(None) is None and jumps_of({"method": "consistency", "segments": 4}) == 4
    with pytest.raises(ValueError, match="samples in exactly steps=1"):
        student_steps(build_sampler(sampler_config("consistency"), steps=2), {"method": "trajectory", "segments": 1})


@pytest.mark.slow
def test_a_trajectory_student_trains_resumes_on_its_stored_trajectories_and_samples(
    tiny_audio_ckpt, shared_datasets, tmp_path
):
    """experiment=distill_trajectory: the teacher's trajectories are stored in parts in the run folder and recorded
    with their settings, the checkpoint says method=trajectory, sample.py takes its K jumps; a resumed run trains
    on the same parts (none rewritten), a new run on a copy of them with more solves only the new part, a new run
    into the folder with other settings is refused, and settings that cannot serve are refused before anything is
    written."""
    import sample
    import train
    from multidiff.build import load_checkpoint
    from multidiff.sampling import named_request
    from multidiff.training import EMA

    common = ["experiment=distill_trajectory", "domain=audio", f"paths.data_dir={shared_datasets}", *TINY_AUDIO]
    tiny = [*common, f"teacher={tiny_audio_ckpt}", "distill.trajectories=16", "distill.teacher_steps=2"]
    for bad, message in (
        ("distill.trajectories=0", "distill.trajectories=0: give how many"),
        ("distill.teacher_steps=1", "distill.teacher_steps=1: with method=trajectory"),
        ("distill.segments=0", "distill.segments=0: give a whole number of segments"),
        ("distill.method=trajectories", "distill.method='trajectories'; valid: consistency, trajectory"),
        ("distill.method=consistency", "distill.trajectories=16: stored trajectories are for distill.method=traj"),
        ("distill.jump_weight=snr", "distill.jump_weight='snr'; valid: uniform, sample, root, balanced"),
        ("distill.jumps_at=[2.0]", r"distill.jumps_at=\[2.0\]: where jumps 2..4 of 4 start; give 3 noise level"),
        ("distill.jumps_at=[0.5,2.0,0.1]", r"distill.jumps_at=\[0.5, 2.0, 0.1\]: give 3 noise level\(s\) descending"),
    ):
        with pytest.raises(ValueError, match=message):
            train.train(compose("train", [*tiny, bad, "trainer.max_steps=1"], tmp_path / "bad"))
    assert not (tmp_path / "bad" / "trajectories").exists()
    run = tmp_path / "student"
    # Lightning's sanity validation runs before the training loader exists: the datamodule's gives the conditions
    trainer = train.train(compose("train", [*tiny, "trainer.max_steps=2", "trainer.num_sanity_val_steps=1"], run))
    bank = run / "trajectories"
    parts = sorted(bank.glob("part_*.pt"))
    assert len(parts) == 2 and not list(bank.glob("*.tmp"))  # 16 trajectories in batches of 8
    part = torch.load(parts[0], weights_only=True)
    assert part["states"].shape == (5, 8, 1, 1024) and part["cond"].shape == (8,)
    settings = json.loads((bank / "bank.json").read_text())
    assert (settings["segments"], settings["teacher_steps"], settings["trajectories"]) == (4, 2, 16)
    assert trainer.lightning_module.bank["train"]["states"].shape[1] == 8  # one part of two held out
    assert any(isinstance(c, EMA) for c in trainer.callbacks)  # the student's weights averaged, as a teacher's
    ckpt = run / "checkpoints" / "last.ckpt"
    recorded = load_checkpoint(ckpt).distilled
    assert (recorded["method"], recorded["segments"], recorded["trajectories"]) == ("trajectory", 4, 16)
    out = tmp_path / "s"
    sample.sample(compose("sample", [f"ckpt={ckpt}", "n=2", f"out={out}"], tmp_path / "hs"))
    record = json.loads((out / "sampling.json").read_text())
    assert (record["sampler"], record["steps"]) == ("consistency", 4) and len(list(out.glob("*.wav"))) == 2
    stamps = [p.stat().st_mtime_ns for p in parts]
    resumed = train.train(compose("train", [*tiny, "trainer.max_steps=3", f"ckpt_path={ckpt}"], run))
    assert resumed.global_step == 3 and [p.stat().st_mtime_ns for p in parts] == stamps
    parts[1].write_bytes(parts[1].read_bytes()[:100])  # a damaged part is solved again, the other kept
    assert train.train(compose("train", [*tiny, "trainer.max_steps=4"], run)).global_step == 4
    assert parts[0].stat().st_mtime_ns == stamps[0] and torch.load(parts[1], weights_only=True)["states"].shape[1] == 8

    # a copy of the stored parts in a new run with more: they are kept and only the new part is solved (that it is
    # the part a bank of that size solved at once holds: the molecule test); with fewer, the first parts are used
    more = [*common, f"teacher={tiny_audio_ckpt}", "distill.trajectories=24", "distill.teacher_steps=2"]
    shutil.copytree(bank, tmp_path / "grown" / "trajectories")
    grown = train.train(compose("train", [*more, "trainer.max_steps=1"], tmp_path / "grown")).lightning_module.bank
    grown_parts = sorted((tmp_path / "grown" / "trajectories").glob("part_*.pt"))
    assert [p.read_bytes() for p in grown_parts[:2]] == [p.read_bytes() for p in parts] and len(grown_parts) == 3
    assert json.loads((tmp_path / "grown" / "trajectories" / "bank.json").read_text())["trajectories"] == 24
    new = torch.load(grown_parts[2], weights_only=True)
    assert torch.equal(grown["val"]["states"], new["states"])  # the new part is the held-out one
    shutil.copytree(bank, tmp_path / "fewer" / "trajectories")
    fewer = [*common, f"teacher={tiny_audio_ckpt}", "distill.trajectories=8", "distill.teacher_steps=2"]
    kept = train.train(compose("train", [*fewer, "trainer.max_steps=1"], tmp_path / "fewer")).lightning_module.bank
    assert torch.equal(kept["train"]["states"], torch.load(parts[0], weights_only=True)["states"])
    other = [*common, f"teacher={tiny_audio_ckpt}", "distill.trajectories=16", "distill.teacher_steps=3"]
    with pytest.raises(ValueError, match="holds trajectories drawn with other settings"):  # afresh in the folder
        train.train(compose("train", [*other, "trainer.max_steps=1", "ckpt_path=null"], run))
    consistency = [*common, f"teacher={tiny_audio_ckpt}", "distill.method=consistency", "distill.trajectories=null"]
    with pytest.raises(ValueError, match="chosen jump levels are for distill.method=trajectory"):
        train.train(compose("train", [*consistency, "distill.jumps_at=[2.0,0.5,0.1]"], tmp_path / "bad"))

    # chosen jump levels: stored there, recorded in the bank and the checkpoint, and sampled on exactly
    chosen = tmp_path / "chosen"
    balanced = ["distill.jumps_at=[2.0,0.5,0.1]", "distill.jump_weight=balanced", "trainer.max_steps=1"]
    module = train.train(compose("train", [*tiny, *balanced], chosen)).lightning_module
    assert json.loads((chosen / "trajectories" / "bank.json").read_text())["jumps_at"] == [2.0, 0.5, 0.1]
    assert (module.jump_scale > 0).any()  # the seen jumps' running means
    with pytest.raises(ValueError, match=r"other settings \(stored, now\): \{'jumps_at': \(\[2.0, 0.5, 0.1\], None\)"):
        train.train(compose("train", [*tiny, "trainer.max_steps=1"], chosen))  # the same folder, default levels
    student = load_checkpoint(chosen / "checkpoints" / "last.ckpt")
    assert student.distilled["jumps_at"] == [2.0, 0.5, 0.1]
    tops = [student.process.schedule.sigma_max, 2.0, 0.5, 0.1]
    seen: list[float] = []
    network = student.model.forward

    def recorded(x, sigma, state, cond_drop=None, known=None, guidance=None):
        seen.append(float(sigma.flatten()[0]))
        return network(x, sigma, state, cond_drop, known, guidance)

    student.model.forward = recorded
    student.generate(2, named_request("consistency", steps=4), seed=0)
    assert seen == pytest.approx(tops, rel=1e-6)
    out = tmp_path / "s_chosen"
    sample.sample(
        compose("sample", [f"ckpt={chosen / 'checkpoints' / 'last.ckpt'}", "n=1", f"out={out}"], tmp_path / "hc")
    )
    assert json.loads((out / "sampling.json").read_text())["levels"] == pytest.approx([*tops, 0.0], rel=1e-6)


def test_each_item_takes_its_own_stored_level_in_plain_tensors_and_graphs():
    """A stored part's state for per-item levels: fixed-shape items pick their row of the level, a graph's node and
    pair rows all take their item's level."""
    from multidiff.core.distill import states_at
    from multidiff.core.parts import Parts
    from multidiff.core.space import PairGraphSpace, all_pairs

    gen = torch.Generator().manual_seed(0)
    plain = torch.randn(3, 4, 2, generator=gen)
    level = torch.tensor([2, 0, 1, 2])
    assert torch.equal(states_at(plain, level, lambda v: v.reshape(-1, 1)), plain[level, torch.arange(4)])
    batch = torch.tensor([0, 0, 1, 1, 1])  # two molecules: 2 atoms (1 pair) and 3 atoms (3 pairs)
    pairs = all_pairs(batch, 2)
    ctx = {"batch": batch, "num_items": 2, "pair_index": pairs, "pair_batch": batch[pairs[0]]}
    states = Parts({"node": torch.randn(3, 5, 4, generator=gen), "pair": torch.randn(3, 4, 2, generator=gen)})
    space = PairGraphSpace()
    got = states_at(states, torch.tensor([2, 0]), lambda v: space.per_item(v, states.select(0, 0), ctx))
    assert torch.equal(got["node"], torch.cat([states["node"][2, :2], states["node"][0, 2:]]))
    assert torch.equal(got["pair"], torch.cat([states["pair"][2, :1], states["pair"][0, 1:]]))


@pytest.mark.slow
def test_a_graph_teacher_distils_on_stored_trajectories_and_writes_bonded_molecules(qm9_root, tmp_path):
    """Molecules vary in size: each stored part keeps its batch's graphs (node and pair rows, zero centre of mass)
    and trains whole; the student samples in its jumps and writes molecules with the bonds it generated, read back
    by RDKit. With the discrete process (the graph default) the stored types and bonds are the chain's classes at
    each kept level (one-hots) and its class probabilities at the end."""
    from rdkit import Chem

    import sample
    import train
    from multidiff.build import load_checkpoint
    from multidiff.core.categorical import categorical_of
    from multidiff.core.parts import Parts

    tiny = ["domain=molecule", "domain.bonds=true", f"data.root={qm9_root}", "data.max_molecules=64",
            "data.batch_size=8", "net.hidden=16", "net.layers=2", "callbacks.samples=null",
            "optimized_metric=null"]  # fmt: skip
    teacher = tmp_path / "teacher"
    train.train(compose("train", [*tiny, "domain.categorical=softmax", "trainer.max_steps=2"], teacher))
    distil = ["experiment=distill_trajectory", *tiny, f"teacher={teacher / 'checkpoints' / 'last.ckpt'}",
              "distill.trajectories=16", "distill.teacher_steps=2", "distill.segments=2"]  # fmt: skip
    run = tmp_path / "student"
    trainer = train.train(compose("train", [*distil, "trainer.max_steps=2"], run))
    parts = sorted((run / "trajectories").glob("part_*.pt"))
    part = torch.load(parts[0], weights_only=True)
    nodes, pairs = part["ctx"]["batch"].shape[0], part["ctx"]["pair_index"].shape[1]
    assert len(parts) == 2 and part["ctx"]["num_items"] == 8
    assert part["states"]["node"].shape[:2] == (3, nodes) and part["states"]["pair"].shape[:2] == (3, pairs)
    for level in part["states"]["node"]:  # every stored state keeps each molecule's centre of mass at zero
        assert torch.zeros(8, 3).index_add_(0, part["ctx"]["batch"], level[:, :3]).abs().max() < 1e-3
    module = trainer.lightning_module
    assert len(module.bank["train"]) == 1  # one part of two held out
    # each molecule trains from its own stored level to the next: a student that returns its input jumps nowhere,
    # so its loss is the distance between the two levels, and its noise level names the first
    asked = {}

    def still(state, drop, w):
        def denoise(x, sigma):
            asked["x"], asked["sigma"] = x, sigma
            return x

        return denoise

    module.student_of = still
    losses = module.part_loss(module.bank["train"], torch.Generator().manual_seed(3))
    stored, ctx = module.bank["train"][0]["states"], module.bank["train"][0]["ctx"]
    k = (asked["sigma"][:, None] == module.tops[None, :2]).float().argmax(1)
    assert k.unique().numel() == 2 and torch.equal(module.tops[k], asked["sigma"])  # both jumps drawn
    rows = {"node": k[ctx["batch"]], "pair": k[ctx["pair_batch"]]}
    at = lambda j: Parts({p: v[j + rows[p], torch.arange(len(rows[p]))] for p, v in stored.items()})  # noqa: E731
    assert all(torch.equal(asked["x"][p], at(0)[p]) for p in ("node", "pair"))
    torch.testing.assert_close(losses, module.domain.space.item_mean((at(0) - at(1)) ** 2, ctx))
    module.jump_weight = "sample"  # each jump's distance times the share of its error that reaches the sample
    weighted = module.part_loss(module.bank["train"], torch.Generator().manual_seed(3))
    data = module.process.sigma_data**2
    torch.testing.assert_close(weighted, losses * data / (data + module.tops[k + 1] ** 2))
    assert (weighted[k == 0] < losses[k == 0] / 10).all()  # the coarse jump counts far less
    module.jump_weight = "root"
    rooted = module.part_loss(module.bank["train"], torch.Generator().manual_seed(3))
    torch.testing.assert_close(rooted, losses * (data / (data + module.tops[k + 1] ** 2)).sqrt())
    # a bank grown from a copy holds the part a bank of that size solved at once holds: its noise and its batch's
    # molecules (the loader's third batch, not its first again)
    more = [*distil[:-3], "distill.trajectories=24", *distil[-2:], "trainer.max_steps=1"]
    shutil.copytree(run / "trajectories", tmp_path / "grown" / "trajectories")
    train.train(compose("train", more, tmp_path / "grown"))
    train.train(compose("train", more, tmp_path / "whole"))
    grown, whole = (
        torch.load(tmp_path / d / "trajectories" / "part_00002.pt", weights_only=True) for d in ("grown", "whole")
    )
    first = torch.load(parts[0], weights_only=True)
    assert torch.equal(grown["ctx"]["batch"], whole["ctx"]["batch"])
    assert not torch.equal(grown["ctx"]["batch"], first["ctx"]["batch"])  # (these molecules' sizes tell them apart)
    assert all(torch.equal(grown["states"][p], whole["states"][p]) for p in ("node", "pair"))
    ckpt = run / "checkpoints" / "last.ckpt"
    assert load_checkpoint(ckpt).distilled["method"] == "trajectory"
    out = tmp_path / "samples"
    sample.sample(compose("sample", [f"ckpt={ckpt}", "n=3", f"out={out}"], tmp_path / "s"))
    assert json.loads((out / "sampling.json").read_text())["steps"] == 2
    records = list(Chem.SDMolSupplier(str(out / "samples.sdf"), sanitize=False, removeHs=False))
    assert len(records) == 3 and all(r.GetProp("bond_source") == "model" for r in records)
    discrete = tmp_path / "discrete"
    train.train(compose("train", [*tiny, "domain.categorical=discrete", "trainer.max_steps=1"], discrete))
    run = tmp_path / "discrete_student"
    train.train(compose("train", [*distil[:-4], f"teacher={discrete / 'checkpoints' / 'last.ckpt'}",
                                  *distil[-3:], "trainer.max_steps=2"], run))  # fmt: skip
    student = load_checkpoint(run / "checkpoints" / "last.ckpt")
    blocks = categorical_of(student.domain.space).blocks
    assert categorical_of(student.domain.space).discrete and {b.part for b in blocks} == {"node", "pair"}
    states = torch.load(sorted((run / "trajectories").glob("part_*.pt"))[0], weights_only=True)["states"]
    for b in blocks:
        cols = states[b.part][..., b.start : b.stop] / b.scale
        one_hot = ((cols == 0) | (cols == 1)).all(-1) & (cols.sum(-1) == 1)
        assert one_hot[:2].all() and not one_hot[2].all(), b  # classes at the kept levels, probabilities at the end
        torch.testing.assert_close(cols[2].sum(-1), torch.ones(cols.shape[1]))
    out = tmp_path / "discrete_samples"
    sample.sample(compose("sample", [f"ckpt={run / 'checkpoints' / 'last.ckpt'}", "n=2", f"out={out}"], tmp_path / "d"))
    assert len(list(Chem.SDMolSupplier(str(out / "samples.sdf"), sanitize=False, removeHs=False))) == 2
