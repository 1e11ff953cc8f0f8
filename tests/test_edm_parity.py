"""multidiff equals EDM's own code (values computed with EDM's code by benchmarks/parity_edm.py and stored in
tests/fixtures; EDM's code is not needed here): the polynomial_2 schedule at its 1,000 steps, one ancestral
step, and the EGNN with EDM's weights and settings on a noisy QM9 batch (output, training loss, gradients)."""

from pathlib import Path

import numpy as np
from edm_parity import network_differences, schedule_differences

FIXTURES = Path(__file__).parent / "fixtures"


def test_schedule_and_ancestral_step_match_edm():
    diff = schedule_differences(dict(np.load(FIXTURES / "edm_schedule_step.npz")))
    assert diff["gamma, t < 1"] < 1e-10
    # the one documented difference: EDM clips alpha_t^2 / alpha_{t-1}^2 at 0.001, which moves only its value at
    # t = 1 (alpha_1^2 = s + 4e-9 instead of s)
    assert 1e-4 < diff["gamma, t = 1"] < 1e-3
    assert diff["ancestral step z_s"] < 1e-12


def test_egnn_with_edm_weights_computes_edm_output_loss_and_gradients():
    diff = network_differences(dict(np.load(FIXTURES / "edm_egnn.npz")))
    assert diff["eps prediction"] < 1e-9, diff
    assert diff["training loss (per molecule)"] < 1e-8, diff  # EDM's l2 normalisation, kl_prior set aside
    assert diff["gradients"] < 1e-8, diff
