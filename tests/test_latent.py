"""Latent diffusion's seam: the autoencoders' shapes and symmetries, the latent scale, the latent domain's round
trip, and the stage-one module's loss."""

from __future__ import annotations

import math

import pytest
import soundfile as sf
import torch

from multidiff.autoencoder import AutoencoderModule
from multidiff.core.latent import LatentDomain, measure_latent_scale
from multidiff.core.state import State
from multidiff.domains.audio import AudioDomain
from multidiff.domains.audio.autoencoder import ConvAutoencoder1d
from multidiff.domains.molecule.autoencoder import EquivariantAutoencoder
from multidiff.domains.pointcloud.autoencoder import PointAutoencoder

AUDIO_INFO = {"sample_rate": 8000, "length": 1024, "num_classes": 0, "class_names": [], "normalize": "peak"}


def _audio_ae() -> ConvAutoencoder1d:
    return ConvAutoencoder1d(channels=(4, 8, 16), factors=(4, 8), latent_channels=3)


def _clips(n: int = 4, t: int = 1024) -> torch.Tensor:
    time = torch.arange(t) / 8000
    freq = torch.linspace(200, 900, n)[:, None]
    return (0.5 * torch.sin(2 * math.pi * freq * time)).unsqueeze(1)


def test_audio_autoencoder_compresses_time_and_maps_masks():
    ae = _audio_ae()
    z = ae.encode(State(_clips()))
    assert z.x.shape == (4, 3, 32)  # 1,024 samples / 32
    assert ae.decode(z).x.shape == (4, 1, 1024)
    assert ae.latent_template(State(torch.zeros(2, 1, 1024))).x.shape == (2, 3, 32)
    mask = torch.zeros(1, 1, 1024, dtype=torch.bool)
    mask[..., :100] = True  # frames 0-2 fully known (96 samples), frame 3 only in part
    frames = ae.latent_mask(mask)
    assert frames.shape == (1, 3, 32) and frames[0, :, :3].all() and not frames[0, :, 3:].any()
    with pytest.raises(ValueError, match="multiple of 32"):
        ae.encode(State(torch.zeros(1, 1, 1000)))


def test_point_autoencoder_is_permutation_equivariant():
    torch.manual_seed(0)
    ae = PointAutoencoder(latent_features=2, hidden=16, layers=2)
    for p in ae.parameters():  # off the zero initialisation of the output heads
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 50, 3)
    perm = torch.randperm(50)
    z, zp = ae.encode(State(x)).x, ae.encode(State(x[:, perm])).x
    assert z.shape == (2, 50, 5)
    torch.testing.assert_close(zp, z[:, perm])
    torch.testing.assert_close(ae.decode(State(zp)).x, ae.decode(State(z)).x[:, perm])


def _rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q * torch.sign(torch.det(q))


def test_molecule_autoencoder_is_e3_equivariant():
    """Rotating and translating a molecule rotates its latent positions (translation removed with the centre of
    mass) and leaves the latent features, and the decoded elements and charges, as they were."""
    torch.manual_seed(0)
    ae = EquivariantAutoencoder(num_atom_types=5, charges=True, latent_features=2, hidden=16, layers=2).double()
    for name, p in ae.named_parameters():
        if name.endswith("out.weight"):  # heads start at zero; move them so the test sees real outputs
            torch.nn.init.normal_(p, std=0.3)
    ctx = {"batch": torch.tensor([0] * 6 + [1] * 4), "num_items": 2}
    pos = torch.randn(10, 3, dtype=torch.float64)
    feats = torch.cat([torch.nn.functional.one_hot(torch.randint(0, 5, (10,)), 5) * 0.25, torch.zeros(10, 1)], 1)
    x = ae.space.remove_com(torch.cat([pos, feats.double()], 1), ctx)
    rot, shift = _rotation(1), torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)
    moved = torch.cat([x[:, :3] @ rot.T + shift, x[:, 3:]], 1)
    z, zm = ae.encode(State(x, None, ctx)).x, ae.encode(State(moved, None, ctx)).x
    zm = ae.space.remove_com(zm, ctx)
    assert z.shape == (10, 5)
    assert (zm[:, :3] - z[:, :3] @ rot.T).abs().max() < 1e-4
    assert (zm[:, 3:] - z[:, 3:]).abs().max() < 1e-4
    y, ym = ae.decode(State(z, None, ctx)).x, ae.decode(State(zm, None, ctx)).x
    assert (ym[:, :3] - y[:, :3] @ rot.T).abs().max() < 1e-4
    assert (ym[:, 3:] - y[:, 3:]).abs().max() < 1e-4
    assert z[:, 3:].abs().max() > 1e-3  # the features are not trivially zero


def test_latent_scale_standardises_the_latents():
    ae = _audio_ae()
    domain = AudioDomain()
    domain.bind(AUDIO_INFO)
    batches = [(_clips(4) * s, torch.zeros(4, dtype=torch.long)) for s in (0.5, 1.0, 2.0)]
    scale = measure_latent_scale(ae, domain, batches)
    latents = torch.cat([ae.encode(domain.unpack(b)).x for b in batches]) * scale
    assert abs(float(latents.double().std(unbiased=False)) - 1) < 1e-3


def test_latent_domain_round_trip_and_observation(tmp_path):
    """Batches become scaled latents, templates latent zeros, samples the data domain's items; generated from an
    observation, the decoded clip keeps the observed samples exactly."""
    torch.manual_seed(0)
    domain = AudioDomain()
    domain.bind(AUDIO_INFO)
    ae = _audio_ae()
    ae.latent_scale.fill_(2.0)
    latent = LatentDomain(domain, ae)
    assert latent.name == "audio" and latent.info["length"] == 1024
    state = latent.unpack((_clips(), torch.zeros(4, dtype=torch.long)))
    torch.testing.assert_close(state.x, ae.encode(State(_clips())).x * 2)
    torch.testing.assert_close(latent.to_data(state).x, ae.decode(State(state.x / 2)).x)
    assert latent.template(3, None, torch.Generator()).x.shape == (3, 3, 32)

    path = tmp_path / "clip.wav"
    sf.write(path, _clips(1)[0, 0].numpy(), 8000)
    with pytest.raises(ValueError, match="keep_unit"):
        latent.observe(2, path, keep=[0, 0.5], keep_unit="furlongs")
    obs = latent.observe(2, path, keep=[0, 0.5])
    assert obs.values.shape == (2, 3, 32) and obs.mask[..., :16].all() and not obs.mask[..., 16:].any()
    items = latent.decode(State(torch.randn(2, 3, 32)), obs)
    given = obs.meta["data_observation"]
    wav = items[0]["wav"]
    torch.testing.assert_close(wav[..., :512], (given.values[0, :, :512] / given.meta["scale"]).clamp(-1, 1))
    assert items[0]["known"][:512].all() and not items[0]["known"][512:].any()


def test_autoencoder_module_learns_and_its_kl_is_half_the_mean_square():
    torch.manual_seed(0)
    domain = AudioDomain()
    domain.bind(AUDIO_INFO)
    ae = _audio_ae()
    module = AutoencoderModule(domain, ae, optimizer=lambda params: torch.optim.Adam(params, lr=3e-3), kl_weight=0.1)
    state = State(_clips(8))
    _, parts = module.losses(state)
    z = ae.encode(state).x
    torch.testing.assert_close(parts["kl"], 0.5 * (z**2).mean())
    opt = module.configure_optimizers()
    first = None
    for _ in range(60):
        loss, _ = module.losses(state)
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.7 * first


def test_autoencoders_refuse_another_domain():
    from multidiff.domains.pointcloud import PointCloudDomain

    with pytest.raises(ValueError, match="'audio' autoencoder cannot encode 'pointcloud'"):
        LatentDomain(PointCloudDomain(), _audio_ae())
    with pytest.raises(ValueError, match="is for 'audio' data; this run's domain is 'pointcloud'"):
        AutoencoderModule(PointCloudDomain(), _audio_ae(), optimizer=torch.optim.Adam)


def test_latent_domain_pickles_with_strict_observation_options(tmp_path):
    """ddp_spawn pickles the module, domain included; its observation options are checked against the data
    domain's own."""
    import pickle

    domain = AudioDomain()
    domain.bind(AUDIO_INFO)
    latent = pickle.loads(pickle.dumps(LatentDomain(domain, _audio_ae())))
    with pytest.raises(ValueError, match=r"unknown audio observation option .*'kep'; valid: keep, keep_unit, seed"):
        latent.observe(1, tmp_path / "clip.wav", kep=[0, 0.5])
    assert latent.info["length"] == 1024 and latent.template(1, None, torch.Generator()).x.shape == (1, 3, 32)
