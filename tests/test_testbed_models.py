"""The offline testbed's shipped models: strict loading, shapes, classifier quality, splits."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from bench.testbed import data, models
from bench.testbed.models import WEIGHTS_DIR, build_from_config, config_from_json, load_model

NAMES = ("denoiser", "verifier_classifier", "evaluator_classifier")


def test_weights_load_strictly_from_safetensors_via_config():
    for name in NAMES:
        path = WEIGHTS_DIR / f"{name}.safetensors"
        assert path.stat().st_size < 5 * 2**20, name
        model = build_from_config(config_from_json(WEIGHTS_DIR / f"{name}.json"))
        sd = load_file(str(path))
        assert set(sd) == set(model.state_dict()), name  # strict: no missing or extra keys
        model.load_state_dict(sd, strict=True)
        # Trained weights differ from a fresh init (the file is not a placeholder).
        fresh = build_from_config(config_from_json(WEIGHTS_DIR / f"{name}.json")).state_dict()
        assert any(not torch.equal(sd[k], fresh[k]) for k in sd), name


def test_denoiser_output_shape_and_finite():
    model = load_model("denoiser")
    x = torch.randn(6, 1, 16, 16)
    sigma = torch.tensor([models.SIGMA_MIN, 0.1, 1.0, 3.0, 10.0, models.SIGMA_MAX])
    labels = torch.tensor([0, 3, 9, models.NULL_CLASS, 5, 7])
    with torch.no_grad():
        eps = model(x / (sigma**2 + 1).sqrt()[:, None, None, None], sigma, labels)
        x0 = model.denoise(x * 5, 5.0, labels, cfg=3.0)
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    assert x0.shape == x.shape and torch.isfinite(x0).all()


def test_denoiser_predicts_noise_better_than_zero():
    # A trained eps-model beats the trivial eps_hat = 0 (MSE 1) on held-out digits at mid noise.
    x, y = data.load_digits_16()
    idx = data.splits()["evaluator_clf"][:64]
    x0 = (x[idx] * 2 - 1).unsqueeze(1)
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(x0.shape, generator=g)
    sigma = torch.full((len(idx),), 1.0)
    with torch.no_grad():
        pred = load_model("denoiser").predict_eps(x0 + eps, sigma, y[idx])
    assert torch.mean((pred - eps) ** 2) < 0.5


def test_schedule_matches_scaled_linear():
    s = models.sigmas()
    assert s.shape == (1000,) and torch.all(s[1:] > s[:-1])
    assert abs(models.SIGMA_MIN - 0.0292) < 1e-3 and abs(models.SIGMA_MAX - 14.6146) < 1e-3
    t = torch.tensor([0.0, 123.4, 999.0])
    assert torch.allclose(models.sigma_to_timestep(models.timestep_to_sigma(t)), t, atol=1e-3)


def test_evaluator_accuracy_on_held_out_digits():
    x, y = data.load_digits_16()
    sp = data.splits()
    clf = load_model("evaluator_classifier")
    for split in ("denoiser", "verifier_clf"):
        with torch.no_grad():
            acc = (clf(x[sp[split]]).argmax(1) == y[sp[split]]).float().mean().item()
        assert acc > 0.9, (split, acc)


def test_verifier_and_evaluator_differ():
    v, e = load_file(str(WEIGHTS_DIR / "verifier_classifier.safetensors")), load_file(
        str(WEIGHTS_DIR / "evaluator_classifier.safetensors")
    )
    assert any(not torch.equal(v[k], e[k]) for k in v)


def test_splits_disjoint_covering_and_deterministic():
    sp = data.splits()
    n = len(data.load_digits_16()[1])
    assert n == 1797
    allidx = torch.cat(list(sp.values()))
    assert len(allidx) == n and len(torch.unique(allidx)) == n  # disjoint and covering
    assert 0.55 < len(sp["denoiser"]) / n < 0.65
    for k, v in data.splits().items():
        assert torch.equal(v, sp[k])
    x, _ = data.load_digits_16()
    assert x.shape == (n, 16, 16) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
