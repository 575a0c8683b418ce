"""nodes/host_compat.py on ComfyUI v0.3.75: the node API the pack is loaded against, free
memory, and how verifier patchers are made and loaded. The newer hosts' branches (dynamic VRAM)
run here with stand-ins shaped like ComfyUI 0.38's ModelPatcher (see the module's docstring for
what was read from its source)."""

from __future__ import annotations

import sys

import pytest
import torch

from tests.harness.host import pack_module


@pytest.fixture(scope="module")
def hc(comfy):
    return pack_module("nodes.host_compat")


def test_the_pack_uses_the_pinned_node_api_both_hosts_ship(hc):
    import comfy_api.latest
    import comfy_api.v0_0_2

    assert hc.API_MODULE == "comfy_api.v0_0_2"
    assert hc.io is comfy_api.v0_0_2.io and hc.ComfyExtension is comfy_api.v0_0_2.ComfyExtension
    # The pinned version hands out the host's own V3 classes: the pack's nodes are V3 nodes of this host.
    assert hc.io.ComfyNode is comfy_api.latest.io.ComfyNode
    nodes = pack_module("nodes").node_list()
    assert len(nodes) >= 15 and all(issubclass(n, comfy_api.latest.io.ComfyNode) for n in nodes)
    assert isinstance(pack_module("nodes").NoiseSearchExtension(), comfy_api.latest.ComfyExtension)


def test_node_api_falls_back_to_latest_and_names_what_is_missing(hc, monkeypatch):
    monkeypatch.setitem(sys.modules, "comfy_api.v0_0_2", None)  # a host without the pinned version
    name, module = hc._node_api()
    assert name == "comfy_api.latest" and module.io is sys.modules["comfy_api.latest"].io
    monkeypatch.setitem(sys.modules, "comfy_api.latest", None)
    with pytest.raises(ImportError, match=r"comfy_api\.v0_0_2, comfy_api\.latest"):
        hc._node_api()


class Recorder:
    def __init__(self, value=None):
        self.calls, self.value = [], value

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.value


def test_free_memory_asks_the_patcher_where_the_host_lets_it(hc, monkeypatch):
    import comfy.model_management
    import comfy.model_patcher

    module_level = Recorder(111)
    monkeypatch.setattr(comfy.model_management, "get_free_memory", module_level)
    # v0.3.75's ModelPatcher has no get_free_memory: the module-level count, at the load device.
    plain = comfy.model_patcher.ModelPatcher(torch.nn.Linear(2, 2), load_device=torch.device("cpu"),
                                             offload_device=torch.device("cpu"))
    assert not hasattr(plain, "get_free_memory")
    assert hc.free_memory(plain) == 111 and module_level.calls[-1][0] == (torch.device("cpu"),)

    class NewerPatcher:  # 0.38: the patcher counts what dynamic VRAM can page out too
        load_device = torch.device("cpu")
        get_free_memory = Recorder(222)

    newer = NewerPatcher()
    assert hc.free_memory(newer) == 222 and newer.get_free_memory.calls[-1][0] == (torch.device("cpu"),)
    assert hc.free_memory(newer, torch.device("meta")) == 222
    assert newer.get_free_memory.calls[-1][0] == (torch.device("meta"),)
    calls = len(module_level.calls)
    # A bare device has no patcher to ask.
    assert hc.free_memory("cpu") == 111 and module_level.calls[-1][0] == (torch.device("cpu"),)
    assert len(module_level.calls) == calls + 1


def test_patchers_are_made_like_core_auxiliary_models(hc, monkeypatch):
    import comfy.model_patcher

    assert not hasattr(comfy.model_patcher, "CoreModelPatcher")  # v0.3.75
    assert hc.patcher_class() is comfy.model_patcher.ModelPatcher
    made = hc.make_patcher(torch.nn.Linear(2, 2), torch.device("cpu"), torch.device("cpu"))
    assert type(made) is comfy.model_patcher.ModelPatcher and not hc.is_dynamic(made)

    class Dynamic(comfy.model_patcher.ModelPatcher):
        def is_dynamic(self):
            return True

    # 0.38 binds CoreModelPatcher at start-up (its dynamic patcher when dynamic VRAM is on):
    # looked up when a patcher is made, not when the pack was imported.
    monkeypatch.setattr(comfy.model_patcher, "CoreModelPatcher", Dynamic, raising=False)
    made = hc.make_patcher(torch.nn.Linear(2, 2), torch.device("cpu"), torch.device("cpu"))
    assert type(made) is Dynamic and hc.is_dynamic(made)


def test_verifier_patchers_load_whole_and_stay_usable(hc):
    """The v0.3.75 branch for real: plain patchers through the host's memory manager."""
    import comfy.model_management
    import comfy.model_patcher

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    patcher = hc.make_patcher(model, comfy.model_management.get_torch_device(),
                              comfy.model_management.unet_offload_device())
    hc.load_verifier_models([patcher])
    assert patcher in comfy.model_management.loaded_models()
    x = torch.randn(5, 3)
    assert model(x).shape == (5, 1)
    hc.load_verifier_models([])  # nothing to load: no call
    comfy.model_management.unload_all_models()


def test_verifier_load_policy(hc, monkeypatch):
    import comfy.model_management

    load = Recorder()
    monkeypatch.setattr(comfy.model_management, "load_models_gpu", load)

    class Stub:
        def __init__(self, dynamic):
            self.model = torch.nn.Linear(2, 2)  # weights on the CPU
            self.load_device = torch.device("meta")
            self.dynamic = dynamic

        def is_dynamic(self):
            return self.dynamic

    plain, dynamic = Stub(False), Stub(True)
    hc.load_verifier_models([plain, dynamic], memory_required=7)
    # One call, whole models (plain torch modules cannot run partly offloaded), the call's own need passed on.
    assert load.calls == [(([plain, dynamic],), {"memory_required": 7, "force_full_load": True})]
    # A dynamic patcher that left a plain module's weights off the load device: moved there (as
    # the stock upscale-model node does); the memory manager's own patchers are left alone.
    assert all(p.device.type == "meta" for p in dynamic.model.parameters())
    assert all(p.device.type == "cpu" for p in plain.model.parameters())


def test_verifier_runtime_makes_and_loads_patchers_through_the_shim(hc, monkeypatch):
    """verifiers/comfy_runtime.py: a verifier's modules get the host's auxiliary-model patcher
    and are loaded by load_verifier_models before each scoring call."""
    import comfy.model_management
    import comfy.model_patcher

    rt = pack_module("verifiers.comfy_runtime")

    class Dynamic(comfy.model_patcher.ModelPatcher):
        def is_dynamic(self):
            return True

    monkeypatch.setattr(comfy.model_patcher, "CoreModelPatcher", Dynamic, raising=False)
    load = Recorder()
    monkeypatch.setattr(comfy.model_management, "load_models_gpu", load)

    class Plain:  # a verifier that is not one of the pack's TorchVerifiers: its score is wrapped
        def __init__(self):
            self.net = torch.nn.Linear(2, 1)

        def score(self, images, condition=None):
            return self.net(images).squeeze(-1)

    verifier = rt.attach(Plain())
    try:
        (patcher,) = verifier.patchers
        assert type(patcher) is Dynamic and patcher.model.inner is verifier.net
        assert load.calls == []
        assert verifier.score(torch.ones(3, 2)).shape == (3,)
        assert load.calls == [(([patcher],), {"memory_required": 0, "force_full_load": True})]
    finally:
        rt.clear_cache()
