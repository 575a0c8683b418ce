"""VQAScore and the LLM grader on local chat VLMs (verifiers/vlm.py), against plain transformers.

Tiny random Qwen2.5-VL and Qwen3-VL checkpoints are built in the official file layout
(tests/vlm_fixtures.py) under the official folder names, loaded through the loader nodes
(hub resolution, lock file, ComfyUI's memory manager) and compared with a reference written
here from the processor and the model class alone, one image at a time. The reference's
probabilities are computed by hand from its logits (exp / sum in float64, no pack code).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import vlm_fixtures as vlmf
from tests.harness.host import node_class, pack_module, run_node

CHECKPOINTS = {"qwen2_5_vl": "Qwen2.5-VL-3B-Instruct", "qwen3_vl": "Qwen3-VL-4B-Instruct"}
PROMPT = "a red cube on a blue sphere"


@pytest.fixture(scope="module")
def vlm_root(comfy, tmp_path_factory):
    """A `verifiers` folder (first, as is_default makes it) holding both tiny checkpoints."""
    import folder_paths

    root = tmp_path_factory.mktemp("vlm_verifiers")
    for kind, folder in CHECKPOINTS.items():
        vlmf.write_checkpoint(root / folder, kind)
    paths = folder_paths.folder_names_and_paths["verifiers"][0]
    paths.insert(0, str(root))
    hub = pack_module("verifiers.hub")
    saved = dict(hub.OFFICIAL_FILES)
    yield root
    paths.remove(str(root))
    hub.OFFICIAL_FILES.clear()
    hub.OFFICIAL_FILES.update(saved)


def images(n: int, h: int = 40, w: int = 56, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Smooth colour fields plus noise: images that differ from each other at every scale.
    base = torch.rand(n, 1, 1, 3, generator=g)
    return (0.6 * base + 0.4 * torch.rand(n, h, w, 3, generator=g)).clamp(0, 1)


def load(node_id: str, folder: str, **inputs):
    args = {"model_folder": folder, "image_size": 0, "precision": "fp32", "allow_download": False, **inputs}
    (verifier,) = run_node(node_id, **args)
    return verifier


# -- the reference: processor + model forward, one image at a time --------------------------------

class Reference:
    def __init__(self, folder):
        import transformers

        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        cls = getattr(transformers, config.architectures[0])
        self.model = cls.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32).eval()
        self.processor = transformers.AutoProcessor.from_pretrained(str(folder), local_files_only=True)
        self.tok = self.processor.tokenizer

    def pil(self, image):
        from PIL import Image

        return Image.fromarray((image * 255).round().clamp(0, 255).to(torch.uint8).numpy())

    @torch.no_grad()
    def last_logits(self, image, question: str, suffix: str = "") -> torch.Tensor:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + suffix
        inputs = self.processor(text=[text], images=[self.pil(image)], return_tensors="pt")
        return self.model(**inputs).logits[0, -1].double()

    def prob(self, logits: torch.Tensor, token: str) -> float:
        (tid,) = self.tok(token, add_special_tokens=False)["input_ids"]
        e = [math.exp(v) for v in (logits - logits.max()).tolist()]
        return e[tid] / sum(e)

    def p_yes(self, image, prompt: str) -> float:
        return self.prob(self.last_logits(image, f'Does this figure show "{prompt}"? Please answer yes or no.'), "Yes")

    def expected_rating(self, image, question: str) -> float:
        first = self.last_logits(image, question)
        after_one = self.last_logits(image, question, suffix="1")  # the answer "1", then what follows it
        p = {d: self.prob(first, str(d)) for d in range(10)}
        p_zero_after_one = self.prob(after_one, "0")
        p_digit_after_one = sum(self.prob(after_one, str(d)) for d in range(10))
        answers = {0: p[0], 1: p[1] * (1 - p_digit_after_one), 10: p[1] * p_zero_after_one,
                   **{d: p[d] for d in range(2, 10)}}
        return sum(k * v for k, v in answers.items()) / sum(answers.values())


# -- scores equal the reference ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_scores_equal_plain_transformers_and_the_hand_computed_probabilities(vlm_root, kind):
    folder = CHECKPOINTS[kind]
    vlm = pack_module("verifiers.vlm")
    ref = Reference(vlm_root / folder)
    # "10" is two tokens in Qwen's tokenizers, so the grader takes the two-step route.
    assert len(ref.tok("10", add_special_tokens=False)["input_ids"]) == 2
    imgs = images(3)
    vqa = load("VQAScoreVerifierLoader", folder, question_template=vlm.VQA_TEMPLATE)
    got = vqa.score(imgs, PROMPT)
    want = torch.tensor([ref.p_yes(imgs[i], PROMPT) for i in range(3)], dtype=torch.float64)
    assert (got > 0).all() and (got < 1).all()
    torch.testing.assert_close(got.double(), want, rtol=2e-4, atol=1e-12)
    assert len(set(got.tolist())) == 3  # the images really are told apart

    grader = load("LLMGraderVerifierLoader", folder)
    overall = grader.score(imgs, PROMPT)
    aspects = grader.last_aspects
    assert aspects.shape == (3, 5)
    want_aspects = torch.tensor([[ref.expected_rating(imgs[i], vlm.GRADER_TEMPLATE.format(
        prompt=PROMPT, question=vlm.ASPECT_QUESTIONS[a])) for a in vlm.ASPECTS] for i in range(3)], dtype=torch.float64)
    torch.testing.assert_close(aspects.double(), want_aspects, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(overall.double(), want_aspects.mean(1) * 10, rtol=1e-4, atol=1e-3)
    assert ((overall >= 0) & (overall <= 100)).all()
    rows = vlm.aspects_dict(aspects)
    assert list(rows[0]) == [*vlm.ASPECTS, "overall"] and rows[0]["overall"] == pytest.approx(float(overall[0]), abs=1e-3)


def test_a_custom_question_template_is_the_question_asked(vlm_root):
    folder = CHECKPOINTS["qwen2_5_vl"]
    ref = Reference(vlm_root / folder)
    imgs = images(2, seed=3)
    template = "Is this a picture of {}? Answer yes or no."
    got = load("VQAScoreVerifierLoader", folder, question_template=template).score(imgs, PROMPT)
    want = [ref.prob(ref.last_logits(imgs[i], template.format(PROMPT)), "Yes") for i in range(2)]
    torch.testing.assert_close(got.double(), torch.tensor(want, dtype=torch.float64), rtol=2e-4, atol=1e-12)
    with pytest.raises(Exception, match="exactly one"):
        load("VQAScoreVerifierLoader", folder, question_template="no slot here")
    with pytest.raises(Exception, match="needs the prompt text"):
        load("VQAScoreVerifierLoader", folder, question_template=template).score(imgs, "  ")


def test_rating_distribution_by_hand():
    vlm = pack_module("verifiers.vlm")
    vocab = 16
    digits = list(range(3, 13))  # token ids of "0".."9"
    first = torch.full((1, vocab), -50.0)
    first[0, digits[1]] = math.log(0.5)   # "1"
    first[0, digits[7]] = math.log(0.25)  # "7"
    first[0, 0] = math.log(0.25)          # not a rating
    after = torch.full((1, vocab), -50.0)
    after[0, digits[0]] = math.log(0.4)   # "10"
    after[0, 1] = math.log(0.6)           # end of the answer: "1"
    dist = vlm.rating_distribution(first, digits, after, digits)
    # P(1) = 0.5 * 0.6, P(10) = 0.5 * 0.4, P(7) = 0.25; renormalised over 0.75.
    want = torch.zeros(11, dtype=torch.float64)
    want[1], want[10], want[7] = 0.3 / 0.75, 0.2 / 0.75, 0.25 / 0.75
    torch.testing.assert_close(dist[0].double(), want, atol=1e-6, rtol=0)
    assert float(vlm.expected_rating(dist)[0]) == pytest.approx((0.3 + 2.0 + 1.75) / 0.75, abs=1e-5)
    eleven = torch.full((1, vocab), -50.0)
    eleven[0, 14], eleven[0, 5] = 0.0, 0.0  # a tokenizer with one "10" token (id 14): 10 and 2 equally likely
    assert float(vlm.expected_rating(vlm.rating_distribution(eleven, [*digits, 14]))[0]) == pytest.approx(6.0)


def test_batch_size_does_not_change_scores_and_memory_manager_loads_the_model(vlm_root):
    import comfy.model_patcher

    scoring = pack_module("search.scoring")
    folder = CHECKPOINTS["qwen2_5_vl"]
    imgs = images(3, seed=1)
    for node in ("VQAScoreVerifierLoader", "LLMGraderVerifierLoader"):
        v = load(node, folder)
        assert all(isinstance(p, comfy.model_patcher.ModelPatcher) for p in v.patchers) and v.prepare is not None
        whole = v.score(imgs, PROMPT)
        singles = torch.cat([v.score(imgs[i:i + 1], PROMPT) for i in range(3)])
        torch.testing.assert_close(whole, singles, rtol=1e-4, atol=1e-9)
        v.max_batch = 2  # the Scorer's chunks of 2 and 1
        torch.testing.assert_close(scoring.score_images(v, imgs, PROMPT), whole, rtol=1e-4, atol=1e-9)
    # Scoring loaded the model through ComfyUI's memory manager (it may offload it between uses).
    import comfy.model_management

    loaded = [getattr(m.model.model, "inner", None) for m in comfy.model_management.current_loaded_models
              if m.model is not None]
    assert v.model in loaded
    # The cache: a second loader shares the model; a smaller image_size means fewer image tokens.
    a, b = load("VQAScoreVerifierLoader", folder), load("VQAScoreVerifierLoader", folder, image_size=28)
    assert a.model is b.model
    a.score(images(1, 112, 112), PROMPT)
    b.score(images(1, 112, 112), PROMPT)
    assert b.last_image_tokens < a.last_image_tokens


def test_grader_and_vqascore_join_the_ensemble_and_verifier_score(vlm_root):
    ensemble = pack_module("verifiers.ensemble")
    folder = CHECKPOINTS["qwen3_vl"]
    vqa, grader = load("VQAScoreVerifierLoader", folder), load("LLMGraderVerifierLoader", folder)
    imgs = images(3, seed=2)
    (ens,) = run_node("VerifierEnsemble", verifier_1=vqa, verifier_2=grader, weight_1=1.0, weight_2=1.0)
    comps = torch.stack([vqa.score(imgs, PROMPT), grader.score(imgs, PROMPT)])
    torch.testing.assert_close(ens.score(imgs, PROMPT), ensemble.mean_rank(comps).float())
    out = run_node("VerifierScore", images=imgs, verifier=grader, condition=PROMPT)
    assert out[1] == int(torch.argmax(comps[1])) and out[2] == pytest.approx(float(comps[1].max()), rel=1e-4)
    # The five ratings of every image, in chunks of the grader's max_batch.
    grader.max_batch = 2
    (aspects,) = run_node("LLMGraderAspects", images=imgs, verifier=grader, condition=PROMPT)
    rows = json.loads(aspects)
    assert [r["overall"] for r in rows] == pytest.approx(comps[1].tolist(), rel=1e-4)
    # The last chunk (image 2 alone) is what the grader rated last.
    assert [rows[2][a] for a in pack_module("verifiers.vlm").ASPECTS] == pytest.approx(
        grader.last_aspects[0].tolist(), abs=1e-4)
    with pytest.raises(Exception, match="VQAScore rates no aspects"):
        run_node("LLMGraderAspects", images=imgs, verifier=vqa, condition=PROMPT)


def test_interrupt_stops_scoring_between_forward_passes(vlm_root):
    import comfy.model_management as mm

    grader = load("LLMGraderVerifierLoader", CHECKPOINTS["qwen2_5_vl"])
    calls = []

    def interrupt_after_first(module, args, kwargs, output):
        calls.append(1)
        mm.interrupt_current_processing(True)

    hook = grader.model.register_forward_hook(interrupt_after_first, with_kwargs=True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            grader.score(images(2), PROMPT)
    finally:
        hook.remove()
        mm.interrupt_current_processing(False)
    assert len(calls) == 1  # four of the five aspects' forward passes never ran


# -- files ----------------------------------------------------------------------------------------



def test_missing_files_with_downloads_off_name_the_file_and_where_to_put_it(vlm_root, only_folder, monkeypatch):
    hub = pack_module("verifiers.hub")
    with pytest.raises(Exception, match="switched off") as e:
        load("VQAScoreVerifierLoader", "Qwen2.5-VL-7B-Instruct")
    text = str(e.value)
    assert "Qwen2.5-VL-7B-Instruct/config.json" in text and str(only_folder / "Qwen2.5-VL-7B-Instruct") in text
    assert "https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct/resolve/main/config.json" in text
    # Everything but one weight shard: the error names that shard, its place and its official URL.
    folder = CHECKPOINTS["qwen2_5_vl"]
    shutil.copytree(vlm_root / folder, only_folder / folder)
    (only_folder / folder / "model-00002-of-00003.safetensors").unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Exception, match="HF_HUB_OFFLINE") as e:
        load("LLMGraderVerifierLoader", folder, allow_download=True)
    assert str(only_folder / folder / "model-00002-of-00003.safetensors") in str(e.value)
    assert f"{hub.OFFICIAL_FILES[folder + '/config.json'].repo_id}/resolve/main/model-00002-of-00003" in str(e.value)


def test_loader_nodes_are_registered_with_tooltips_and_list_vlm_folders(vlm_root):
    for node_id in ("VQAScoreVerifierLoader", "LLMGraderVerifierLoader"):
        schema = node_class(node_id).define_schema()
        assert all(i.tooltip for i in schema.inputs) and all(o.tooltip for o in schema.outputs)
        options = node_class(node_id).INPUT_TYPES()["required"]["model_folder"][1]["options"]
        assert set(CHECKPOINTS.values()) <= set(options)


# -- through a live ComfyUI server ----------------------------------------------------------------

def vlm_node(class_type: str, folder: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": {"model_folder": folder, "image_size": 0, "precision": "fp32",
                                                 "allow_download": False, **inputs}}


@pytest.fixture
def live_vlms(live, vlm_root):
    """The tiny checkpoints in the live server's own `verifiers` folder, under the official names."""
    dest = live.dirs["models"] / "verifiers"
    for folder in CHECKPOINTS.values():
        if not (dest / folder).is_dir():
            shutil.copytree(vlm_root / folder, dest / folder)
    return live


def history_text(result, node_id: str) -> str:
    return "".join(result["history"]["outputs"][node_id]["text"])


def test_live_search_with_each_vlm_verifier_the_ensemble_and_verifier_score(live_vlms):
    from tests import reliability_prompts as rp

    live = live_vlms
    vqa = vlm_node("VQAScoreVerifierLoader", CHECKPOINTS["qwen2_5_vl"],
                   question_template='Does this figure show "{}"? Please answer yes or no.')
    grader = vlm_node("LLMGraderVerifierLoader", CHECKPOINTS["qwen3_vl"])
    for node, name, top in ((vqa, "VQAScore", 1.0), (grader, "LLM grader", 100.0)):
        prompt = rp.search_prompt("RandomSearchSampler", save=False, verifier_node=node, condition=PROMPT)
        result = live.run(prompt, timeout=240)
        assert result["status"] == "success", result
        report = json.loads(history_text(result, rp.SAVE_ID))
        assert report["verifier"] == name and len(report["candidates"]) == 2, report
        assert 0.0 < report["best"]["score"] < top
        assert len(report["top_scores"]) == 1
    # The ensemble of both, judging a search.
    prompt = rp.search_prompt("RandomSearchSampler", save=False, condition=PROMPT, verifier_node={
        "class_type": "VerifierEnsemble", "inputs": {"verifier_1": ["30", 0], "verifier_2": ["31", 0],
                                                     "weight_1": 1.0, "weight_2": 1.0}})
    prompt.update({"30": vqa, "31": grader})
    result = live.run(prompt, timeout=240)
    assert result["status"] == "success", result
    assert json.loads(history_text(result, rp.SAVE_ID))["verifier"].lower().startswith("ensemble")
    # VerifierScore of two flat images: the server's scores are the in-process verifier's.
    colours = (0x2040A0, 0xE0C020)
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 48, "height": 40, "batch_size": 1, "color": colours[0]}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 48, "height": 40, "batch_size": 1, "color": colours[1]}},
        "3": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "4": vqa,
        "5": {"class_type": "VerifierScore", "inputs": {"images": ["3", 0], "verifier": ["4", 0], "condition": PROMPT}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 3]}},
    }
    result = live.run(prompt, timeout=240)
    assert result["status"] == "success", result
    served = torch.tensor(json.loads(history_text(result, "6")))
    flat = torch.stack([torch.tensor([(c >> 16) & 255, (c >> 8) & 255, c & 255]).float().div(255).expand(40, 48, 3)
                        for c in colours])
    local = load("VQAScoreVerifierLoader", CHECKPOINTS["qwen2_5_vl"]).score(flat, PROMPT)
    torch.testing.assert_close(served, local, rtol=1e-4, atol=1e-9)


def test_live_interrupt_during_scoring_and_missing_files_with_downloads_off(live_vlms):
    live = live_vlms
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 224, "height": 224, "batch_size": 16, "color": 0x808080}},
        "4": vlm_node("LLMGraderVerifierLoader", CHECKPOINTS["qwen2_5_vl"]),
        "5": {"class_type": "VerifierScore", "inputs": {"images": ["1", 0], "verifier": ["4", 0], "condition": PROMPT}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 3]}},
    }
    seen = []

    def interrupt_after_the_first_chunk(msg):
        data = msg.get("data", {})
        if msg["type"] == "progress" and data.get("node") == "5" and 0 < data["value"] < data["max"] and not seen:
            seen.append(data["value"])
            live.request("POST", "/interrupt", {})

    result = live.run(prompt, timeout=240, on_message=interrupt_after_the_first_chunk)
    assert seen == [8], seen  # scored the first chunk of 8, then interrupted
    assert result["status"] == "interrupted", result["status"]
    assert not any(m["type"] == "executed" and m["data"].get("node") == "5" for m in result["messages"])
    # The server goes on: the same graph on 2 images finishes.
    prompt["1"]["inputs"]["batch_size"] = 2
    assert live.run(prompt, timeout=240)["status"] == "success"
    # A folder that is not there, with downloads off (the test server runs with NOISE_SEARCH_ALLOW_DOWNLOADS=0).
    prompt["4"] = vlm_node("LLMGraderVerifierLoader", "Qwen2.5-VL-7B-Instruct", allow_download=True)
    result = live.run(prompt, timeout=120)
    assert result["status"] == "error"
    message = result["data"]["exception_message"]
    place = live.dirs["models"] / "verifiers" / "Qwen2.5-VL-7B-Instruct" / "config.json"
    assert "Qwen2.5-VL-7B-Instruct/config.json" in message and str(place) in message, message
    assert "NOISE_SEARCH_ALLOW_DOWNLOADS=0" in message
    assert "https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct/resolve/main/config.json" in message


def test_sweep_with_the_llm_grader_column_writes_the_paper_shaped_table(live_vlms, tmp_path):
    """The sweep's own pieces (config, task prompts, the server worker, rows, report) on the live
    server; only the Ray scheduling that tests/test_sweep.py covers is left out."""
    from sweep.config import load as load_config
    from sweep.report import collect, write_tables
    from sweep.results import Store
    from sweep.scheduler import _row
    from sweep.tasks import all_tasks
    from sweep.worker import ServerWorker
    from sweep.workflow import Template
    from tests.harness import workflow_convert as wc
    from tests.harness.host import REPO

    live = live_vlms
    wc.place_test_verifiers(live.dirs["models"])
    config = tmp_path / "sweep.toml"
    config.write_text(f"""
workflow = {json.dumps(str(REPO / "example_workflows" / "sd15_random_search_imagereward.json"))}
node = "RandomSearchSampler"
output = {json.dumps(str(tmp_path / "out"))}
budgets = [4]
seeds = [0]
baseline = true
search_verifiers = ["vqascore"]
eval_verifiers = ["aesthetic", "clipscore", "imagereward", "llm_grader"]
[prompts]
list = ["{PROMPT}"]
[[strategies]]
kind = "random"
candidates = 64
[verifiers.vqascore]
class_type = "VQAScoreVerifierLoader"
inputs = {{ model_folder = "{CHECKPOINTS['qwen2_5_vl']}", precision = "fp32", allow_download = false }}
[verifiers.aesthetic]
class_type = "AestheticVerifierLoader"
inputs = {{ clip_file = "{wc.TEST_CLIP}" }}
[verifiers.clipscore]
class_type = "CLIPScoreVerifierLoader"
inputs = {{ clip_file = "{wc.TEST_CLIP}" }}
[verifiers.imagereward]
class_type = "ImageRewardVerifierLoader"
inputs = {{ precision = "fp32", allow_download = false }}
[verifiers.llm_grader]
class_type = "LLMGraderVerifierLoader"
inputs = {{ model_folder = "{CHECKPOINTS['qwen3_vl']}", precision = "fp32", allow_download = false }}
[edits]
set = {{ "RandomSearchSampler.steps" = 2, "EmptyLatentImage.width" = 32, "EmptyLatentImage.height" = 32 }}
replace = {{ "v1-5-pruned-emaonly.safetensors" = "tiny_sd15.safetensors" }}
[servers]
urls = ["{live.url}"]
""")
    cfg = load_config(config)
    template = Template(cfg, live.object_info())
    worker = ServerWorker("live", url=live.url)
    store = Store(cfg.output)
    tasks = all_tasks(cfg)
    assert len(tasks) == 2  # the "no search" row and random search at 4 NFEs
    try:
        for task in tasks:
            prompt, outputs = template.build(task)
            result = worker.run({"task": task.id, "prompt": prompt, "outputs": outputs, "timeout": 300,
                                 "extra_data": {"extra_pnginfo": {"noise_search_sweep": task.describe()}}})
            assert result["status"] == "ok", result.get("error")
            store.add_row(_row(task, result, store.save_image(task.id, result["png"]), "live", 1, 0.0))
    finally:
        store.close()
    md_path, _ = write_tables(cfg, collect(cfg, tasks), cfg.output)
    lines = md_path.read_text().splitlines()
    assert "| search verifier | strategy | aesthetic | clipscore | imagereward | llm_grader | search NFEs | tasks |" \
        in lines
    rows = [line for line in lines if line.startswith("| - | no search") or line.startswith("| vqascore | random")]
    assert len(rows) == 2
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        values = [float(c.split(" [")[0]) for c in cells[2:6]]  # the four evaluation columns, all filled
        assert 0.0 <= values[3] <= 100.0 and cells[-1] == "1/1", line


def test_bench_line_counts_forward_passes_and_tokens(tmp_path):
    """bench/verifiers.py's VLM table: one pass for VQAScore, five for the grader; image tokens of
    Qwen2.5-VL's processor limits (14 px patches merged 2 x 2) at 224 px and at 448 px."""
    from bench.verifiers import CLIP_L14_TOKENS, vlm_costs
    from verifiers.common import TorchVerifier

    class Flat(TorchVerifier):  # stands in for CLIPScore: only its time is read
        early_level = None

        def torch_modules(self):
            return []

        def _score(self, images, condition, early):
            return images.mean(dim=(1, 2, 3))

    rows = {(r["verifier"], r["image_px"]): r for r in vlm_costs(tmp_path, 448, Flat())}
    assert rows[("CLIPScore", 448)]["image_tokens"] == CLIP_L14_TOKENS == 257
    for px, tokens in ((224, 64), (448, 256)):
        vqa, grader = rows[("VQAScore", px)], rows[("LLM grader", px)]
        assert (vqa["forward_passes"], grader["forward_passes"]) == (1, 5)
        assert vqa["image_tokens"] == tokens and grader["image_tokens"] == 5 * tokens
        assert vqa["vision_patches"] == 4 * tokens and tokens < vqa["tokens"] < grader["tokens"]
        assert vqa["time_vs_clipscore"] > 0
    # docs/verifiers.md's cost table: the 224 px rows are these; the 1024 px rows' image counts are the
    # processor's grid at the official limits, and their sequence tokens add the 224 px rows' text.
    from transformers import AutoProcessor

    from bench.verifiers import QWEN25_PIXELS

    doc = {}
    for line in (Path(__file__).resolve().parents[1] / "docs" / "verifiers.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[1].endswith("px") or len(cells) == 6 and "px (native)" in cells[1]:
            doc[(cells[0], int(cells[1].split()[0]))] = [int(c) for c in cells[2:]]
    assert len(doc) == 6, doc
    keys = ("forward_passes", "vision_patches", "image_tokens", "tokens")
    for name in ("CLIPScore", "VQAScore", "LLM grader"):
        assert doc[(name, 224)] == [rows[(name, 224)][k] for k in keys], name
    processor = AutoProcessor.from_pretrained(str(tmp_path / "qwen2_5_vl"), local_files_only=True)
    grid = processor.image_processor(images=[np.zeros((1024, 1024, 3), np.uint8)], return_tensors="pt",
                                     size={"shortest_edge": QWEN25_PIXELS[0], "longest_edge": QWEN25_PIXELS[1]})
    patches = int(grid["image_grid_thw"].prod())
    text = {n: rows[(n, 224)]["tokens"] - rows[(n, 224)]["image_tokens"] for n in ("VQAScore", "LLM grader")}
    assert doc[("VQAScore", 1024)] == [1, patches, patches // 4, patches // 4 + text["VQAScore"]]
    assert doc[("LLM grader", 1024)] == [5, 5 * patches, 5 * patches // 4, 5 * patches // 4 + text["LLM grader"]]
    assert doc[("CLIPScore", 1024)] == [1, 257, 257, 257]


def test_docs_state_each_vlm_folders_source_and_licence():
    hub = pack_module("verifiers.hub")
    text = (Path(__file__).resolve().parents[1] / "docs" / "verifiers.md").read_text()
    for folder, (repo, licence) in hub.VLM_REPOS.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{folder}`"))
        assert f"https://huggingface.co/{repo}" in row
        cell = [c.strip() for c in row.strip("|").split("|")][2]
        assert cell == "Apache-2.0" if licence == "Apache-2.0" else "non-commercial" in cell and "non-commercial" in licence, row


# Every strategy's options node at a tiny size (budget caps what the rest would cost).
STRATEGIES = {
    "SearchRandom": {"candidates": 2},
    "SearchZeroOrder": {"neighbours": 2, "iterations": 1},
    "SearchPaths": {"paths": 2, "branches": 2, "start": 0.5, "forward": 0.2, "backward": 0.7, "interval_steps": 1},
    "SearchParticles": {"particles": 2},
    "SearchEarlyRejection": {"candidates": 2, "levels": "0.5"},
    "SearchTree": {"rollouts": 2, "branches": 2, "wave": 2},
}


def test_every_strategy_searches_with_a_vlm_verifier_and_a_vlm_held_out_judge(vlm_root, parts):
    """The VLM verifiers join every strategy through the one judging path: NoiseSearch with each
    strategy's options node, judged by VQAScore, with the LLM grader as the held-out judge."""
    from tests.helpers import LATENT, search

    vqa = load("VQAScoreVerifierLoader", CHECKPOINTS["qwen2_5_vl"], image_size=28)
    grader = load("LLMGraderVerifierLoader", CHECKPOINTS["qwen2_5_vl"], image_size=28)
    guider = run_node("CFGGuider", model=parts["model"], positive=parts["positive"], negative=parts["negative"],
                      cfg=2.0)[0]
    euler = run_node("KSamplerSelect", sampler_name="euler")[0]
    sigmas = pack_module("nodes.sampling_adapter").ksampler_sigmas(parts["model"], "euler", "normal", 2, 1.0)
    with_held_out = run_node("SearchJudge", vae=parts["vae"], verifier=vqa, condition=PROMPT, held_out=grader)[0]
    plain = run_node("SearchJudge", vae=parts["vae"], verifier=vqa, condition=PROMPT)[0]
    for node, options in STRATEGIES.items():
        strategy = run_node(node, **{**options, "budget": 0, "top_k": 1, "batch_size": 0})[0]
        judge = with_held_out if node == "SearchRandom" else plain  # the grader's five passes once, not six times
        out = search("NoiseSearch", noise=run_node("NoiseCandidates", seed=3, count=4)[0], guider=guider,
                     sampler=euler, sigmas=sigmas, latent_image=LATENT, search=strategy, judge=judge)
        report = out["report"]
        assert report["verifier"] == "VQAScore" and 0.0 < out["best_score"] < 1.0, (node, report)
        if judge is with_held_out:
            held = json.loads(out["judged"])["held_out"]
            assert held["verifier"] == "LLM grader" and 0.0 < held["winner"] < 100.0, (node, held)
            # Every aspect of the grader's rating of the winner is in the report, and they make its score.
            aspects = report["held_out"]["aspects"]
            assert set(aspects) == {*pack_module("verifiers.vlm").ASPECTS, "overall"}
            assert aspects["overall"] == pytest.approx(held["winner"], abs=1e-3)
            assert aspects["overall"] == pytest.approx(2 * sum(v for k, v in aspects.items() if k != "overall"),
                                                       abs=1e-3)
