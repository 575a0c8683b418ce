"""Verifier files through huggingface_hub: a fake Hub on 127.0.0.1 (HF_ENDPOINT) serves the
official file layouts; downloads, resume, lock files (trust on first use), pinned hashes,
offline switches, and files found in the Hugging Face cache or another tool's folder.

The first half drives ``verifiers.hub`` directly; the second half runs the loader nodes in
ComfyUI the way a user's first run does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import socket
from pathlib import Path

import pytest
import torch

from tests import preference_fixtures as pf
from tests import verifier_fixtures as vf
from tests.fake_hub import FakeHub
from verifiers import hub
from verifiers.weights import MissingWeightsError, WeightsFileError

IR = "ImageReward/ImageReward.pt"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real caches: HOME, HF_HOME and the download switches point at this test only."""
    import huggingface_hub.constants

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME", "HPS_ROOT", "HF_HUB_OFFLINE",
                hub.DOWNLOAD_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    hub.forget_hashes()
    yield tmp_path
    hub.forget_hashes()


@pytest.fixture
def fake_hub(isolated, monkeypatch):
    server = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    yield server
    server.close()


@pytest.fixture
def no_network(monkeypatch):
    """Record and refuse every outgoing connection."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:2] or args[:1])
        raise OSError("network access attempted in a test that forbids it")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def ir_bytes() -> bytes:
    return (vf.IMAGEREWARD_FIXTURE / "ImageReward.pt").read_bytes()


def unpin(module, monkeypatch, rel: str):
    """Trust the tiny stand-in on first use instead of the real file's pinned SHA-256 (revision kept)."""
    entry = dataclasses.replace(module.OFFICIAL_FILES[rel], sha256=None, size=None, hash_source="")
    monkeypatch.setitem(module.OFFICIAL_FILES, rel, entry)
    return entry


def pin_tiny(module, monkeypatch, rel: str, data: bytes):
    """Pin the tiny stand-in's SHA-256 where the real file's is pinned (the pinned check still runs)."""
    entry = module.OFFICIAL_FILES[rel]
    if entry.sha256 is not None:
        entry = dataclasses.replace(entry, sha256=sha(data), size=len(data))
        monkeypatch.setitem(module.OFFICIAL_FILES, rel, entry)
    return entry


def ir_path() -> str:
    return f"/THUDM/ImageReward/resolve/{hub.OFFICIAL_FILES[IR].revision}/ImageReward.pt"


# -- verifiers.hub directly ---------------------------------------------------------------------

def test_registry_names_official_sources_pins_and_licenses():
    for rel, entry in hub.OFFICIAL_FILES.items():
        assert entry.license, rel
        if entry.repo_id is None:
            assert entry.url.startswith("https://github.com/"), rel
        else:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+", entry.repo_id), rel
            assert entry.source("https://huggingface.co").startswith(f"https://huggingface.co/{entry.repo_id}/resolve/")
        if entry.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256) and entry.hash_source, rel
        if entry.revision is not None:
            assert re.fullmatch(r"[0-9a-f]{40}", entry.revision), rel
    pinned = ["clip/ViT-L-14-openai.safetensors", vf.AESTHETIC_NAME, IR, "HPSv2/HPS_v2.1_compressed.pt",
              "PickScore_v1/model.safetensors", "dinov2-small/model.safetensors", "dinov2-base/model.safetensors"]
    assert all(hub.OFFICIAL_FILES[r].sha256 for r in pinned)
    # Files without a published hash are pinned to a repository revision where one is known.
    for rel in ("ImageReward/med_config.json", "PickScore_v1/config.json", "dinov2-small/config.json"):
        assert hub.OFFICIAL_FILES[rel].sha256 is None and hub.OFFICIAL_FILES[rel].revision, rel
    for rel in ("ImageReward/ImageReward.pt", "PickScore_v1/model.safetensors", "HPSv2/HPS_v2.1_compressed.pt",
                "CLIP-ViT-H-14-laion2B-s32B-b79K/tokenizer.json", "dinov2-small/model.safetensors"):
        assert rel in hub.OFFICIAL_FILES, rel


def test_switches_and_cache_location_are_read_at_call_time(isolated, monkeypatch):
    assert hub.downloads_allowed()
    assert not hub.downloads_allowed(node_switch=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE=1" in hub.download_block_reason()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv(hub.DOWNLOAD_ENV, "false")
    assert not hub.downloads_allowed()
    assert hub.hf_cache_dir() == isolated / "hf_home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(isolated / "c"))
    assert hub.hf_cache_dir() == isolated / "c"
    assert hub.expand_template("{models}/ImageReward/x", {"models": "/m"}) == Path("/m/ImageReward/x")
    assert hub.expand_template("{models}/x") is None
    monkeypatch.setenv("HPS_ROOT", "/h")
    assert hub.expand_template("{env:HPS_ROOT|~/.cache/hpsv2}/f") == Path("/h/f")
    monkeypatch.delenv("HPS_ROOT")
    assert hub.expand_template("{env:HPS_ROOT|~/.cache/hpsv2}/f") == Path.home() / ".cache" / "hpsv2" / "f"


def test_download_records_the_hash_and_later_loads_verify_it(fake_hub, tmp_path, monkeypatch):
    unpin(hub, monkeypatch, IR)
    data = ir_bytes()
    fake_hub.add("THUDM/ImageReward", "ImageReward.pt", data)
    folder = tmp_path / "verifiers"
    path = hub.ensure_file(IR, [str(folder)])
    assert path == folder / IR and path.read_bytes() == data
    assert [(r.method, r.path) for r in fake_hub.log] == [("HEAD", ir_path()), ("GET", ir_path())]
    # Recorded beside the weights; nothing staged or partial left behind.
    lock = json.loads((folder / "ImageReward" / hub.LOCK_NAME).read_text())
    entry = lock["files"]["ImageReward.pt"]
    assert entry["sha256"] == sha(data) and entry["size"] == len(data) and entry["how"] == "downloaded"
    assert entry["source"] == f"{fake_hub.endpoint}{ir_path()}" and entry["revision"] == hub.OFFICIAL_FILES[IR].revision
    assert sorted(p.name for p in folder.iterdir()) == ["ImageReward"]
    assert sorted(p.name for p in (folder / "ImageReward").iterdir()) == ["ImageReward.pt", hub.LOCK_NAME]

    # Later loads: found locally, no request, verified (hashed again in a fresh process).
    fake_hub.log.clear()
    hub.forget_hashes()
    assert hub.ensure_file(IR, [str(folder)]) == path
    assert fake_hub.log == []

    # A file changed after first use is refused, with its path in the message.
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0xFF
    path.write_bytes(bytes(changed))
    with pytest.raises(WeightsFileError, match="changed since its first use") as e:
        hub.ensure_file(IR, [str(folder)])
    assert str(path) in str(e.value) and sha(data) in str(e.value) and "ImageReward.pt" in str(e.value)
    assert fake_hub.log == []
    # Deleting the lock entry accepts the new bytes (documented way out).
    (folder / "ImageReward" / hub.LOCK_NAME).unlink()
    assert hub.ensure_file(IR, [str(folder)]) == path


def test_first_use_of_a_placed_file_is_recorded_then_checked(isolated, no_network):
    folder = isolated / "verifiers"
    (folder / "ImageReward").mkdir(parents=True)
    placed = folder / "ImageReward" / "med_config.json"
    shutil.copyfile(vf.IMAGEREWARD_FIXTURE / "med_config.json", placed)
    hub.ensure_file("ImageReward/med_config.json", [str(folder)], allow_download=False)
    lock = json.loads((folder / "ImageReward" / hub.LOCK_NAME).read_text())["files"]
    assert lock["med_config.json"]["sha256"] == sha(placed.read_bytes())
    assert lock["med_config.json"]["how"] == "first use (verifiers folder)"
    placed.write_text(placed.read_text().replace("768", "769"))
    with pytest.raises(WeightsFileError, match="changed since its first use") as e:
        hub.ensure_file("ImageReward/med_config.json", [str(folder)], allow_download=False)
    assert str(placed) in str(e.value)
    assert no_network == []


def test_pinned_hash_is_checked_on_download_and_on_every_load(fake_hub, tmp_path, monkeypatch, caplog):
    rel = "clip/ViT-L-14-openai.safetensors"
    data = vf.write_tiny_clip(tmp_path / "src").read_bytes()
    entry = hub.OFFICIAL_FILES[rel]
    fake_hub.add(entry.repo_id, entry.filename, data)
    folder = tmp_path / "verifiers"

    # Wrong pin: the download is discarded, nothing is left under the real name or staged.
    monkeypatch.setitem(hub.OFFICIAL_FILES, rel, hub.OfficialFile(entry.repo_id, entry.filename, sha256="0" * 64))
    with pytest.raises(WeightsFileError, match="pinned"):
        hub.ensure_file(rel, [str(folder)])
    assert not (folder / rel).exists() and not (folder / hub.STAGING_DIR).exists()

    monkeypatch.setitem(hub.OFFICIAL_FILES, rel, hub.OfficialFile(entry.repo_id, entry.filename, sha256=sha(data),
                                                                  size=len(data)))
    path = hub.ensure_file(rel, [str(folder)])
    assert path.read_bytes() == data
    lock = json.loads((folder / "clip" / hub.LOCK_NAME).read_text())["files"]["ViT-L-14-openai.safetensors"]
    assert lock["sha256"] == sha(data) and lock["how"] == "downloaded, official SHA-256"
    gets = fake_hub.gets()
    assert gets[-1] == "/timm/vit_large_patch14_clip_224.openai/resolve/main/open_clip_model.safetensors"
    hub.forget_hashes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(WeightsFileError, match="changed since its first use") as e:
        hub.ensure_file(rel, [str(folder)])
    assert str(path) in str(e.value)

    # A copy placed by hand that is not the official file: used with a warning, then locked.
    other = tmp_path / "placed"
    (other / "clip").mkdir(parents=True)
    (other / rel).write_bytes(b"converted copy")
    with caplog.at_level("WARNING"):
        assert hub.ensure_file(rel, [str(other)]) == other / rel
    assert "is not the official" in caplog.text
    assert "differs from the official" in json.loads((other / "clip" / hub.LOCK_NAME).read_text())["files"][
        "ViT-L-14-openai.safetensors"]["how"]
    # The same bytes in the Hugging Face cache, which only ever holds official files: refused.
    from huggingface_hub import hf_hub_download

    fake_hub.add(entry.repo_id, entry.filename, b"tampered")
    hf_hub_download(entry.repo_id, entry.filename, endpoint=fake_hub.endpoint, cache_dir=str(hub.hf_cache_dir()))
    with pytest.raises(WeightsFileError, match="not the pinned") as e:
        hub.ensure_file(rel, [str(tmp_path / "empty")])
    assert "models--timm--vit_large_patch14_clip_224.openai" in str(e.value)


def test_pinned_revision_is_requested(fake_hub, tmp_path, monkeypatch):
    rel = "dinov2-small/config.json"
    entry = hub.OFFICIAL_FILES[rel]
    monkeypatch.setitem(hub.OFFICIAL_FILES, rel, hub.OfficialFile(entry.repo_id, entry.filename,
                                                                  revision="a" * 40))
    fake_hub.add(entry.repo_id, entry.filename, b'{"model_type": "dinov2"}')
    hub.ensure_file(rel, [str(tmp_path / "v")])
    assert fake_hub.gets() == [f"/facebook/dinov2-small/resolve/{'a' * 40}/config.json"]
    lock = json.loads((tmp_path / "v" / "dinov2-small" / hub.LOCK_NAME).read_text())["files"]
    assert lock["config.json"]["revision"] == "a" * 40


@pytest.mark.parametrize("switch", ["env", "offline", "node"])
def test_downloads_off_make_no_network_attempt_and_name_file_folder_source(fake_hub, tmp_path, monkeypatch,
                                                                           no_network, switch):
    fake_hub.add("THUDM/ImageReward", "ImageReward.pt", ir_bytes())
    if switch == "env":
        monkeypatch.setenv(hub.DOWNLOAD_ENV, "0")
    elif switch == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "verifiers"
    with pytest.raises(MissingWeightsError, match="switched off") as e:
        hub.ensure_file(IR, [str(folder), str(tmp_path / "second")], allow_download=(switch != "node"))
    text = str(e.value)
    assert IR in text and str(folder) in text and str(tmp_path / "second") in text
    assert f"{fake_hub.endpoint}{ir_path()}" in text
    assert {"env": hub.DOWNLOAD_ENV, "offline": "HF_HUB_OFFLINE", "node": "allow_download"}[switch] in text
    assert no_network == [] and fake_hub.log == []
    assert not folder.exists()


def test_unknown_files_are_never_fetched(fake_hub, tmp_path):
    with pytest.raises(MissingWeightsError, match="place it at") as e:
        hub.ensure_file("classifiers/mine.safetensors", [str(tmp_path)])
    assert str(tmp_path / "classifiers" / "mine.safetensors") in str(e.value)
    with pytest.raises(Exception, match="invalid"):
        hub.ensure_file("../escape.pth", [str(tmp_path)])
    assert fake_hub.log == []


def test_dropped_connection_resumes_with_a_range_request(fake_hub, tmp_path, monkeypatch):
    import huggingface_hub.constants

    pin_tiny(hub, monkeypatch, IR, ir_bytes())
    chunk = 1 << 16
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", chunk)
    data = ir_bytes()
    fake_hub.add("THUDM/ImageReward", "ImageReward.pt", data)
    fake_hub.cut_after["ImageReward.pt"] = 3 * chunk + 100
    assert hub.ensure_file(IR, [str(tmp_path / "v")]).read_bytes() == data
    ranges = [r.range for r in fake_hub.log if r.method == "GET"]
    assert ranges == [None, f"bytes={3 * chunk}-"]  # huggingface_hub's retry continued the transfer
    assert not (tmp_path / "v" / hub.STAGING_DIR).exists()


def test_interrupted_download_leaves_nothing_under_the_real_name(fake_hub, tmp_path, monkeypatch):
    import huggingface_hub.constants
    from huggingface_hub.utils import tqdm as hf_tqdm

    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)
    data = ir_bytes()
    pin_tiny(hub, monkeypatch, IR, data)
    fake_hub.add("THUDM/ImageReward", "ImageReward.pt", data)

    class Interrupt(Exception):
        pass

    class StopAtFifthChunk(hf_tqdm):
        """What ComfyUI's progress bar does when the user interrupts the prompt."""
        calls = 0

        def update(self, n=1):
            StopAtFifthChunk.calls += 1
            if StopAtFifthChunk.calls >= 5:
                raise Interrupt
            return super().update(n)

    folder = tmp_path / "verifiers"
    with pytest.raises(Interrupt):
        hub.ensure_file(IR, [str(folder)], tqdm_class=StopAtFifthChunk)
    assert StopAtFifthChunk.calls == 5
    assert not (folder / "ImageReward").exists() and not (folder / hub.LOCK_NAME).exists()
    fake_hub.log.clear()
    assert hub.ensure_file(IR, [str(folder)]).read_bytes() == data
    assert not (folder / hub.STAGING_DIR).exists()


def test_file_published_outside_the_hub_downloads_through_huggingface_hub(fake_hub, tmp_path, monkeypatch):
    rel = vf.AESTHETIC_NAME
    data = vf.write_aesthetic(tmp_path / "src").read_bytes()
    fake_hub.raw["aesthetic.pth"] = data
    entry = hub.OFFICIAL_FILES[rel]
    assert entry.repo_id is None and entry.url.startswith("https://github.com/")
    monkeypatch.setitem(hub.OFFICIAL_FILES, rel, hub.OfficialFile(
        None, entry.filename, url=fake_hub.raw_url("aesthetic.pth"), sha256=sha(data), size=len(data)))
    path = hub.ensure_file(rel, [str(tmp_path / "v")])
    assert path.read_bytes() == data
    assert [(r.method, r.path, r.range) for r in fake_hub.log] == [("GET", "/raw/aesthetic.pth", None)]
    # Resumable like Hub files: a partial file in the staging folder is continued.
    (tmp_path / "w" / hub.STAGING_DIR / rel).mkdir(parents=True)
    (tmp_path / "w" / hub.STAGING_DIR / rel / (entry.filename + ".incomplete")).write_bytes(data[:1000])
    fake_hub.log.clear()
    assert hub.ensure_file(rel, [str(tmp_path / "w")]).read_bytes() == data
    assert [r.range for r in fake_hub.log] == ["bytes=1000-"]
    assert not (tmp_path / "w" / hub.STAGING_DIR).exists()


def test_hf_cache_and_other_tools_folders_are_used_without_download(fake_hub, tmp_path, monkeypatch):
    # Fill the Hugging Face cache the way users do (hf_hub_download into HF_HOME), then go offline.
    from huggingface_hub import hf_hub_download

    fake_hub.add("google-bert/bert-base-uncased", "vocab.txt", (vf.IMAGEREWARD_FIXTURE / "vocab.txt").read_bytes())
    cached = hf_hub_download("google-bert/bert-base-uncased", "vocab.txt", endpoint=fake_hub.endpoint,
                             cache_dir=str(hub.hf_cache_dir()))
    fake_hub.log.clear()
    attempts = []

    def refuse(*a, **k):
        attempts.append(a)
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    unpin(hub, monkeypatch, IR)  # trust on first use below (the tiny file is not the pinned one)
    pin_tiny(hub, monkeypatch, "HPSv2/HPS_v2.1_compressed.pt", b"hps")

    folder = tmp_path / "verifiers"
    got = hub.ensure_file("ImageReward/bert-base-uncased/vocab.txt", [str(folder)])
    assert got == Path(cached) and "models--google-bert--bert-base-uncased" in str(got)
    # Recorded in the verifiers folder where it would have been downloaded (not in the HF cache).
    lock = json.loads((folder / "ImageReward" / "bert-base-uncased" / hub.LOCK_NAME).read_text())["files"]
    assert lock["vocab.txt"]["how"] == "first use (Hugging Face cache)"

    # The image-reward package's cache folder and ComfyUI's models/ImageReward/.
    home_cache = Path.home() / ".cache" / "ImageReward"
    home_cache.mkdir(parents=True)
    shutil.copyfile(vf.IMAGEREWARD_FIXTURE / "ImageReward.pt", home_cache / "ImageReward.pt")
    assert hub.ensure_file(IR, [str(folder)]) == home_cache / "ImageReward.pt"
    models = tmp_path / "models"
    (models / "ImageReward").mkdir(parents=True)
    shutil.copyfile(vf.IMAGEREWARD_FIXTURE / "med_config.json", models / "ImageReward" / "med_config.json")
    assert hub.ensure_file("ImageReward/med_config.json", [str(folder)], roots={"models": models}) == \
        models / "ImageReward" / "med_config.json"
    # The hpsv2 package's folder (HPS_ROOT).
    monkeypatch.setenv("HPS_ROOT", str(tmp_path / "hps"))
    (tmp_path / "hps").mkdir()
    (tmp_path / "hps" / "HPS_v2.1_compressed.pt").write_bytes(b"hps")
    assert hub.ensure_file("HPSv2/HPS_v2.1_compressed.pt", [str(folder)]) == tmp_path / "hps" / "HPS_v2.1_compressed.pt"

    # A changed file outside the verifiers folders is refused like any other.
    (home_cache / "ImageReward.pt").write_bytes(b"tampered")
    hub.forget_hashes()
    with pytest.raises(WeightsFileError, match="changed since its first use") as e:
        hub.ensure_file(IR, [str(folder)])
    assert str(home_cache / "ImageReward.pt") in str(e.value)
    assert attempts == [] and fake_hub.log == []
    assert not any(p.name != hub.LOCK_NAME for p in folder.rglob("*") if p.is_file())


def test_group_prefers_one_complete_place_and_fills_the_rest(fake_hub, tmp_path, monkeypatch):
    d = vf.write_tiny_dinov2(tmp_path / "src")
    files = {n: (d / n).read_bytes() for n in ("config.json", "model.safetensors")}
    entry = pin_tiny(hub, monkeypatch, "dinov2-small/model.safetensors", files["model.safetensors"])
    for name, data in files.items():
        fake_hub.add("facebook/dinov2-small", name, data)
    folder = tmp_path / "verifiers"
    (folder / "dinov2-small").mkdir(parents=True)
    (folder / "dinov2-small" / "config.json").write_bytes(files["config.json"])
    rels = ["dinov2-small/config.json", "dinov2-small/model.safetensors"]
    out = hub.ensure_group(rels, [str(folder)])
    assert {r: p.parent for r, p in out.items()} == {r: folder / "dinov2-small" for r in rels}
    assert fake_hub.gets() == [f"/facebook/dinov2-small/resolve/{entry.revision}/model.safetensors"]
    lock = json.loads((folder / "dinov2-small" / hub.LOCK_NAME).read_text())["files"]
    assert set(lock) == {"config.json", "model.safetensors"}
    assert lock["model.safetensors"]["how"] == "downloaded, official SHA-256"


# -- the loader nodes in ComfyUI ----------------------------------------------------------------

@pytest.fixture
def comfy_folder(comfy, isolated, tmp_path, monkeypatch):
    """An empty first `verifiers` folder and an empty models directory for one test."""
    import folder_paths

    from tests.harness.host import pack_module

    folder = tmp_path / "verifiers"
    folder.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "verifiers", ([str(folder)], set()))
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    pack_hub = pack_module("verifiers.hub")
    pack_hub.forget_hashes()
    pack_module("verifiers.comfy_runtime").clear_cache()
    yield folder, pack_hub
    pack_hub.forget_hashes()
    pack_module("verifiers.comfy_runtime").clear_cache()


def _serve(server, pack_hub, monkeypatch, files: dict[str, bytes]):
    """Serve ``files`` (rel -> bytes) at their official places (pinned revisions included); pinned
    entries get the tiny files' hashes (the real pins are for the real files)."""
    for rel, data in files.items():
        entry = pack_hub.OFFICIAL_FILES[rel]
        if entry.repo_id is None:
            server.raw[entry.filename] = data
            monkeypatch.setitem(pack_hub.OFFICIAL_FILES, rel, dataclasses.replace(
                entry, url=server.raw_url(entry.filename), sha256=sha(data), size=len(data)))
        else:
            server.add(entry.repo_id, entry.filename, data)
            pin_tiny(pack_hub, monkeypatch, rel, data)


def _loader_cases(src: Path):
    clip = vf.write_tiny_clip(src).read_bytes()
    aesthetic = vf.write_aesthetic(src).read_bytes()
    dino = vf.write_tiny_dinov2(src)
    ir = vf.IMAGEREWARD_FIXTURE
    return {
        "CLIPScoreVerifierLoader": (
            {"clip_file": "clip/ViT-L-14-openai.safetensors", "architecture": vf.TINY_CLIP},
            {"clip/ViT-L-14-openai.safetensors": clip}, "a photo of a cat"),
        "AestheticVerifierLoader": (
            {"aesthetic_file": vf.AESTHETIC_NAME, "clip_file": "clip/ViT-L-14-openai.safetensors",
             "architecture": vf.TINY_CLIP},
            {vf.AESTHETIC_NAME: aesthetic, "clip/ViT-L-14-openai.safetensors": clip}, ""),
        "ImageRewardVerifierLoader": (
            {"model_file": IR, "med_config_file": "ImageReward/med_config.json",
             "tokenizer_dir": "ImageReward/bert-base-uncased"},
            {IR: (ir / "ImageReward.pt").read_bytes(),
             "ImageReward/med_config.json": (ir / "med_config.json").read_bytes(),
             "ImageReward/bert-base-uncased/vocab.txt": (ir / "vocab.txt").read_bytes()}, "a red cat"),
        "DINOv2VerifierLoader": (
            {"dinov2_folder": "dinov2-small", "early_level": 0.4},
            {"dinov2-small/config.json": (dino / "config.json").read_bytes(),
             "dinov2-small/model.safetensors": (dino / "model.safetensors").read_bytes()}, ""),
        "PickScoreVerifierLoader": (
            {"model_folder": pf.PICKSCORE_DIR, "processor_folder": pf.PICKSCORE_PROCESSOR_DIR},
            pf.pickscore_files(), "a red cat"),
        "HPSv2VerifierLoader": (
            {"model_file": pf.HPS_FILE, "architecture": pf.hps_arch()}, pf.hps_files(), "a red cat"),
    }


LOADERS = ["CLIPScoreVerifierLoader", "AestheticVerifierLoader", "ImageRewardVerifierLoader", "DINOv2VerifierLoader",
           "PickScoreVerifierLoader", "HPSv2VerifierLoader"]


@pytest.mark.parametrize("node_id", LOADERS)
def test_loader_fetches_records_and_verifies_its_files(node_id, comfy_folder, fake_hub, tmp_path, monkeypatch):
    from tests.harness.host import pack_module, run_node

    folder, pack_hub = comfy_folder
    vf.register_tiny_clip(tmp_path / "cfg")
    inputs, files, condition = _loader_cases(tmp_path / "src")[node_id]
    _serve(fake_hub, pack_hub, monkeypatch, files)
    args = {"precision": "fp32", "allow_download": True, **inputs}
    (verifier,) = run_node(node_id, **args)
    imgs = vf.images(2)
    early = vf.images(2, seed=5) if node_id == "DINOv2VerifierLoader" else None
    assert torch.isfinite(verifier.score(imgs, condition, early)).all()

    # Fetched: one GET per official file, from its official repository path.
    expected = {pack_hub.OFFICIAL_FILES[r].source(fake_hub.endpoint).replace(fake_hub.endpoint, "") for r in files}
    assert set(fake_hub.gets()) == expected and len(fake_hub.gets()) == len(files)
    for rel, data in files.items():
        assert (folder / rel).read_bytes() == data, rel
        recorded = json.loads(((folder / rel).parent / pack_hub.LOCK_NAME).read_text())["files"][Path(rel).name]
        assert recorded["sha256"] == sha(data) and recorded["how"].startswith("downloaded")
        # Pinned files were checked against the pin (here: the tiny stand-in's hash).
        assert ("official SHA-256" in recorded["how"]) == (pack_hub.OFFICIAL_FILES[rel].sha256 is not None)
    assert not (folder / pack_hub.STAGING_DIR).exists()

    # A second load in a fresh process: no request; every file verified again.
    fake_hub.log.clear()
    pack_hub.forget_hashes()
    pack_module("verifiers.comfy_runtime").clear_cache()
    run_node(node_id, **args)
    assert fake_hub.log == []

    # A file changed after first use is refused with a message naming it.
    rel, data = next(iter(files.items()))
    changed = folder / rel
    changed.write_bytes(data[:-2] + bytes([data[-2] ^ 1, data[-1]]))
    pack_hub.forget_hashes()
    pack_module("verifiers.comfy_runtime").clear_cache()
    with pytest.raises(Exception, match="SHA-256") as e:
        run_node(node_id, **args)
    assert str(changed) in str(e.value)
    assert fake_hub.log == []


@pytest.mark.parametrize("node_id", LOADERS)
def test_loader_with_downloads_off_opens_no_connection(node_id, comfy_folder, fake_hub, tmp_path, monkeypatch,
                                                      no_network):
    folder, pack_hub = comfy_folder
    vf.register_tiny_clip(tmp_path / "cfg")
    inputs, files, _ = _loader_cases(tmp_path / "src")[node_id]
    _serve(fake_hub, pack_hub, monkeypatch, files)
    monkeypatch.setenv(hub.DOWNLOAD_ENV, "0")
    from tests.harness.host import run_node

    with pytest.raises(Exception, match="switched off") as e:
        run_node(node_id, precision="fp32", allow_download=True, **inputs)
    text = str(e.value)
    rel = next(r for r in files if r in text)
    assert str(folder) in text and pack_hub.OFFICIAL_FILES[rel].source(fake_hub.endpoint) in text
    assert no_network == [] and fake_hub.log == []


@pytest.mark.parametrize("node_id", LOADERS)
def test_loader_uses_files_in_the_hf_cache_without_download(node_id, comfy_folder, fake_hub, tmp_path, monkeypatch):
    from huggingface_hub import hf_hub_download

    from tests.harness.host import run_node

    folder, pack_hub = comfy_folder
    vf.register_tiny_clip(tmp_path / "cfg")
    inputs, files, condition = _loader_cases(tmp_path / "src")[node_id]
    _serve(fake_hub, pack_hub, monkeypatch, files)
    for rel in files:
        entry = pack_hub.OFFICIAL_FILES[rel]
        if entry.repo_id is None:  # not a Hub file: another tool's copy is not known for it
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(files[rel])
            continue
        hf_hub_download(entry.repo_id, entry.filename, endpoint=fake_hub.endpoint,
                        cache_dir=str(pack_hub.hf_cache_dir()))
    fake_hub.log.clear()
    attempts = []

    def refuse(*a, **k):
        attempts.append(a)
        raise OSError("network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    (verifier,) = run_node(node_id, precision="fp32", allow_download=True, **inputs)
    early = vf.images(2, seed=5) if node_id == "DINOv2VerifierLoader" else None
    assert torch.isfinite(verifier.score(vf.images(2), condition, early)).all()
    assert attempts == [] and fake_hub.log == []
    hub_files = [r for r in files if pack_hub.OFFICIAL_FILES[r].repo_id]
    assert all(not (folder / r).exists() for r in hub_files)  # used in place, not copied


def test_imagereward_loader_uses_other_tools_folders(comfy_folder, tmp_path, monkeypatch, no_network):
    import folder_paths

    from tests.harness.host import run_node

    folder, pack_hub = comfy_folder
    pin_tiny(pack_hub, monkeypatch, IR, ir_bytes())
    models = Path(folder_paths.models_dir)
    (models / "ImageReward" / "bert-base-uncased").mkdir(parents=True)
    shutil.copyfile(vf.IMAGEREWARD_FIXTURE / "med_config.json", models / "ImageReward" / "med_config.json")
    shutil.copyfile(vf.IMAGEREWARD_FIXTURE / "vocab.txt", models / "ImageReward" / "bert-base-uncased" / "vocab.txt")
    home_cache = Path.home() / ".cache" / "ImageReward"
    home_cache.mkdir(parents=True)
    shutil.copyfile(vf.IMAGEREWARD_FIXTURE / "ImageReward.pt", home_cache / "ImageReward.pt")
    (verifier,) = run_node("ImageRewardVerifierLoader", model_file=IR, med_config_file="ImageReward/med_config.json",
                           tokenizer_dir="ImageReward/bert-base-uncased", precision="fp32", allow_download=True)
    assert torch.isfinite(verifier.score(vf.images(2), "a red cat")).all()
    assert no_network == []
    # Recorded on first use where they would have been downloaded; nothing else written.
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        f"ImageReward/bert-base-uncased/{hub.LOCK_NAME}", f"ImageReward/{hub.LOCK_NAME}"]
    lock = json.loads((folder / "ImageReward" / hub.LOCK_NAME).read_text())["files"]
    assert lock["ImageReward.pt"]["how"] == "first use (other tool's folder), official SHA-256"
    assert lock["ImageReward.pt"]["path"] == str(home_cache / "ImageReward.pt")
    assert lock["med_config.json"]["path"] == str(models / "ImageReward" / "med_config.json")


def test_hps_loader_uses_the_hpsv2_package_folder(comfy_folder, monkeypatch, no_network):
    from tests.harness.host import run_node

    folder, pack_hub = comfy_folder
    pin_tiny(pack_hub, monkeypatch, pf.HPS_FILE, pf.hps_files()[pf.HPS_FILE])
    pkg = Path.home() / ".cache" / "hpsv2"  # the hpsv2 package's default HPS_ROOT
    pkg.mkdir(parents=True)
    (pkg / "HPS_v2.1_compressed.pt").write_bytes(pf.hps_files()[pf.HPS_FILE])
    (verifier,) = run_node("HPSv2VerifierLoader", model_file=pf.HPS_FILE, architecture=pf.hps_arch(),
                           precision="fp32", allow_download=True)
    assert torch.isfinite(verifier.score(vf.images(2), "a red cat")).all()
    assert no_network == []
    assert [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()] == [f"HPSv2/{hub.LOCK_NAME}"]


def test_download_drives_comfy_progress_bar_and_stops_on_interrupt(comfy_folder, fake_hub, monkeypatch):
    import comfy.model_management
    import comfy.utils
    import huggingface_hub.constants

    from tests.harness.host import run_node

    folder, pack_hub = comfy_folder
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)
    files = {IR: ir_bytes(), "ImageReward/med_config.json": (vf.IMAGEREWARD_FIXTURE / "med_config.json").read_bytes(),
             "ImageReward/bert-base-uncased/vocab.txt": (vf.IMAGEREWARD_FIXTURE / "vocab.txt").read_bytes()}
    _serve(fake_hub, pack_hub, monkeypatch, files)
    args = {"model_file": IR, "med_config_file": "ImageReward/med_config.json",
            "tokenizer_dir": "ImageReward/bert-base-uncased", "precision": "fp32", "allow_download": True}
    seen = []
    original = comfy.utils.ProgressBar.update_absolute
    monkeypatch.setattr(comfy.utils.ProgressBar, "update_absolute",
                        lambda self, value, total=None, preview=None: seen.append((value, total)) or
                        original(self, value, total, preview))

    # The user interrupts the prompt: the download stops at the next chunk; nothing is left in place.
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(BaseException) as e:
            run_node("ImageRewardVerifierLoader", **args)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert type(e.value).__name__ == "InterruptProcessingException"
    assert not (folder / IR).exists()

    (verifier,) = run_node("ImageRewardVerifierLoader", **args)
    size = len(files[IR])
    assert (size, size) in seen and any(0 < v < size for v, t in seen if t == size)  # per-chunk progress
    assert torch.isfinite(verifier.score(vf.images(1), "a cat")).all()
