"""Fixtures: ComfyUI in-process, a live ComfyUI server, and tiny models."""

from __future__ import annotations

import pytest
import torch

from tests.harness import tiny_models
from tests.harness.host import load_host
from tests.harness.server import ComfyServer


@pytest.fixture(scope="session")
def comfy():
    """ComfyUI's `nodes` module, imported on the CPU with this pack loaded."""
    return load_host()


@pytest.fixture(scope="session")
def tiny_unet_path(comfy):
    return tiny_models.tiny_unet()


@pytest.fixture(scope="session")
def tiny_vae_path(comfy):
    return tiny_models.tiny_taesd()


@pytest.fixture(scope="session")
def tiny_checkpoint_path(comfy):
    return tiny_models.tiny_checkpoint()


@pytest.fixture(scope="module")
def parts(comfy, tiny_unet_path, tiny_vae_path):
    """A tiny SD1.5-shaped UNet and TAESD as ComfyUI objects, with random conditioning."""
    import comfy.sd
    import comfy.utils

    model = comfy.sd.load_diffusion_model(str(tiny_unet_path))
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(tiny_vae_path)))
    g = torch.Generator().manual_seed(1)
    pos = [[torch.randn(1, 77, 768, generator=g), {}]]
    neg = [[torch.randn(1, 77, 768, generator=g) * 0.1, {}]]
    return {"model": model, "vae": vae, "positive": pos, "negative": neg}


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def server(tmp_path_factory, tiny_checkpoint_path, tiny_unet_path, tiny_vae_path):
    """A live ComfyUI with only this pack, tiny models in its own model folders."""
    srv = ComfyServer(tmp_path_factory.mktemp("comfy_server"))
    srv.add_model("checkpoints", tiny_checkpoint_path, "tiny_sd15.safetensors")
    srv.add_model("diffusion_models", tiny_unet_path, "tiny_sd15_unet.safetensors")
    srv.add_model("vae", tiny_vae_path, "tiny_taesd.safetensors")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def live(server, request):
    """The session server; prints its log when the test fails."""
    yield server
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print("\n----- ComfyUI server log (last 200 lines) -----")
        print("\n".join(server.log().splitlines()[-200:]))


@pytest.fixture
def only_folder(comfy, tmp_path, monkeypatch):
    """Make an empty folder the first `verifiers` folder for one test (downloads land there)."""
    import folder_paths

    folder = tmp_path / "verifiers"
    folder.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "verifiers", ([str(folder)], set()))
    # No real caches or other tools' folders: this machine's files must not answer for the test.
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return folder
