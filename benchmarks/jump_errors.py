"""Where a trajectory student's error sits: for each of its K jumps, its distance from the teacher's next stored
state on one stored part (``distill.method=trajectory``), and for molecules the coordinates' RMSD; the teacher
itself, taken as a K-jump student (one DDIM jump from its estimate), gives the reference.

    python benchmarks/jump_errors.py --ckpt runs/t7_traj_soft/checkpoints/last.ckpt \\
        --bank runs/t7_traj_soft/trajectories                    # the held-out part (the last)
    python benchmarks/jump_errors.py --ckpt runs/t7_mol_softmax/checkpoints/last.ckpt \\
        --bank runs/t7_traj_soft/trajectories --part 0            # the teacher as a student, a training part
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import multidiff.env  # noqa: F401  (OpenMP's waiting, set before torch loads)

import torch

from multidiff.build import load_checkpoint
from multidiff.core.categorical import discrete_of
from multidiff.core.distill import jump, jump_pair, jump_tops, trajectory_loss
from multidiff.core.parts import Parts, parts_of
from multidiff.core.state import State


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a student's or its teacher's checkpoint")
    p.add_argument("--bank", required=True, help="a trajectory student's trajectories/ folder")
    p.add_argument("--part", type=int, default=-1, help="which stored part (default: the last, held out)")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load_checkpoint(args.ckpt).eval()
    parts = sorted(Path(args.bank).glob("part_*.pt"))
    if not parts:
        raise SystemExit(f"--bank {args.bank}: no part_*.pt files (a trajectory student's trajectories/ folder)")
    part = torch.load(parts[args.part], weights_only=True)
    states = Parts(part["states"]) if isinstance(part["states"], dict) else part["states"]
    ctx, space = part.get("ctx", {}), model.domain.space
    first = states.select(0, 0)
    b = lambda v: space.per_item(v, first, ctx)  # noqa: E731
    n, jumps = space.num_items(first, ctx), len(next(iter(parts_of(states).values()))) - 1
    # where the jumps start: the levels the trajectories were stored at (bank.json says if they were chosen)
    record = Path(args.bank) / "bank.json"
    chosen = json.loads(record.read_text()).get("jumps_at") if record.exists() else None
    tops = jump_tops(model.process.schedule, jumps, chosen)
    discrete = discrete_of(space)
    print(f"{parts[args.part]}: {n} items, {jumps} jumps")
    with torch.no_grad():
        for k in range(jumps):
            level = torch.full((n,), k)
            x, aim = jump_pair(states, level, b, discrete)
            state = State(x, part["cond"], ctx)
            student = lambda v, s, state=state: model.model(v, s, state)  # noqa: E731
            mean = lambda e: space.item_mean(e, ctx)  # noqa: E731
            loss = trajectory_loss(student, x, tops[level], tops[level + 1], aim, b, mean, None, discrete).mean()
            line = f"jump {k}: {float(tops[k]):.3g} -> {float(tops[k + 1]):.3g}  distance {float(loss):.4f}"
            if isinstance(x, Parts):  # molecules: the coordinates (the node rows' first three columns)
                jumped = jump(student(x, tops[level]), x, b(tops[level + 1] / tops[level]))
                rmsd = ((jumped["node"][:, :3] - aim["node"][:, :3]) ** 2).sum(1).mean().sqrt()
                line += f"  coordinate RMSD {float(rmsd):.4f}"
            print(line)


if __name__ == "__main__":
    main()
