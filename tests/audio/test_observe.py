"""sample.py observe=clip.wav keep=...: infilling and continuation keep the observed samples exactly."""

import json

import numpy as np
import pytest
import soundfile as sf
from helpers import compose

import sample

pytestmark = pytest.mark.slow  # samples a trained checkpoint through sample.py


@pytest.fixture
def clip(shared_datasets, tmp_path):
    """A real spoken digit cut to the tiny model's 1,024-sample window, as 16-bit PCM."""
    data, rate = sf.read(shared_datasets / "fsdd" / "recordings" / "3_theo_0.wav", dtype="int16")
    path = tmp_path / "clip.wav"
    assert len(data) >= 1524
    sf.write(path, data[500:1524], rate, subtype="PCM_16")
    return path


def run(ckpt, tmp_path, *overrides, name="out"):
    out = tmp_path / name
    sample.sample(compose("sample", [f"ckpt={ckpt}", "n=2", "steps=6", f"out={out}", *overrides], tmp_path / "h"))
    return out


@pytest.mark.parametrize(
    "ckpt, by",
    [("tiny_audio_ckpt", "replacement"), ("tiny_audio_masked_ckpt", "model")],
    ids=["replacement", "trained"],
)
def test_infilling_keeps_the_observed_samples(ckpt, by, clip, tmp_path, request):
    original = sf.read(clip, dtype="int16")[0]
    out = run(request.getfixturevalue(ckpt), tmp_path, f"observe={clip}", "+observe_options.keep=[[0,0.3],[0.7,1]]")
    assert json.loads((out / "sampling.json").read_text())["observe_with"] == by
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 2 and (out / "preview.png").is_file()
    kept = np.zeros(1024, bool)
    kept[: round(0.3 * 1024)] = kept[round(0.7 * 1024) :] = True
    for w in wavs:
        got = sf.read(w, dtype="int16")[0]
        assert (got[kept] == original[kept]).all()  # exact, to the sample
        assert (got[~kept] != original[~kept]).any()  # the gap is generated
    a, b = (sf.read(w, dtype="int16")[0] for w in wavs)
    assert (a[~kept] != b[~kept]).any()  # two seeds, two infills


def test_continuation_in_seconds_and_resampling(tiny_audio_ckpt, clip, tmp_path):
    data, rate = sf.read(clip, dtype="float32")
    clip16k = tmp_path / "clip16k.wav"
    sf.write(clip16k, np.repeat(data, 2)[:2048], 2 * rate, subtype="PCM_16")
    out = run(
        tiny_audio_ckpt,
        tmp_path,
        f"observe={clip16k}",
        "+observe_options.keep=[0,0.05]",
        "+observe_options.keep_unit=s",
        "resample=2",
        "sampler.noise=gaussian",
    )
    assert len(list(out.glob("*.wav"))) == 2


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["+observe_options.keep=[[0,0.3],[0.7,1.2]]"], "outside the clip"),
        (["+observe_options.keep=[0.5,0.2]"], "outside the clip"),
        ([], "say which spans to keep"),
        (["+observe_options.keep=[0,0.5]", "+observe_options.keep_unit=ms"], "keep_unit"),
        (["+observe_options.keep=[0,1]"], "full"),
    ],
)
def test_bad_observation_requests_write_nothing(tiny_audio_ckpt, clip, tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        run(tiny_audio_ckpt, tmp_path, f"observe={clip}", *overrides)
    assert not (tmp_path / "out").exists()


def test_wrong_files_are_named(tiny_audio_ckpt, clip, tmp_path):
    data, rate = sf.read(clip, dtype="float32")
    stereo, long = tmp_path / "stereo.wav", tmp_path / "long.wav"
    sf.write(stereo, np.stack([data, data], 1), rate)
    sf.write(long, np.tile(data, 3), rate)
    for path, match in ((stereo, "2 channels"), (long, "longer than the model's window")):
        with pytest.raises(ValueError, match=match):
            run(tiny_audio_ckpt, tmp_path, f"observe={path}", "+observe_options.keep=[0,0.5]")
    with pytest.raises(ValueError, match="need observe"):
        run(tiny_audio_ckpt, tmp_path, "+observe_options.keep=[0,0.5]")
    assert not (tmp_path / "out").exists()


def test_observing_by_the_model_needs_a_model_trained_with_masks(
    tiny_audio_ckpt, tiny_audio_masked_ckpt, clip, tmp_path
):
    with pytest.raises(ValueError, match="observe_with=model needs a model trained with observations"):
        run(
            tiny_audio_ckpt,
            tmp_path,
            f"observe={clip}",
            "+observe_options.keep=[0,0.5]",
            "observe_with=model",
            name="refused",
        )
    with pytest.raises(ValueError, match="observe_with=nope; valid: auto, model, replacement"):
        run(
            tiny_audio_masked_ckpt,
            tmp_path,
            f"observe={clip}",
            "+observe_options.keep=[0,0.5]",
            "observe_with=nope",
            name="refused",
        )
    with pytest.raises(ValueError, match="needs observe=FILE"):
        run(tiny_audio_masked_ckpt, tmp_path, "observe_with=model", name="refused")
    assert not (tmp_path / "refused").exists()
    # the trained model also observes by replacement when asked, and generates from nothing
    out = run(
        tiny_audio_masked_ckpt, tmp_path, f"observe={clip}", "+observe_options.keep=[0,0.5]", "observe_with=replacement"
    )
    assert json.loads((out / "sampling.json").read_text())["observe_with"] == "replacement"
    assert len(list(run(tiny_audio_masked_ckpt, tmp_path, name="free").glob("*.wav"))) == 2
