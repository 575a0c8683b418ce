"""The PickScore and HPS v2.1 golden fixtures (tiny random checkpoints in the official file
formats, made by scripts/pickscore_golden and scripts/hpsv2_golden with the reference
implementations), and helpers that place them in the pack's `verifiers` folder layout."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PICKSCORE_FIXTURE = REPO / "tests" / "fixtures" / "pickscore"
HPS_FIXTURE = REPO / "tests" / "fixtures" / "hpsv2"

PICKSCORE_DIR = "PickScore_v1"
PICKSCORE_PROCESSOR_DIR = "CLIP-ViT-H-14-laion2B-s32B-b79K"
PICKSCORE_MODEL_FILES = ("config.json", "model.safetensors")
PICKSCORE_PROCESSOR_FILES = ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
                             "special_tokens_map.json", "vocab.json", "merges.txt")
HPS_FILE = "HPSv2/HPS_v2.1_compressed.pt"


def hps_arch() -> str:
    """The tiny HPS architecture's open_clip name, registered with open_clip (add_model_config)."""
    import open_clip

    golden = json.loads((HPS_FIXTURE / "golden.json").read_text(encoding="utf-8"))
    name = golden["architecture"]
    if name not in open_clip.list_models():
        # open_clip names a config after its file; keep a copy under the architecture's name.
        target = Path(tempfile.mkdtemp(prefix="noise-search-open-clip-")) / f"{name}.json"
        shutil.copyfile(HPS_FIXTURE / "model_config.json", target)
        open_clip.add_model_config(target)
    return name


def pickscore_files() -> dict[str, bytes]:
    """rel path in the verifiers folder -> bytes, for every official PickScore file."""
    out = {f"{PICKSCORE_DIR}/{n}": (PICKSCORE_FIXTURE / "model" / n).read_bytes() for n in PICKSCORE_MODEL_FILES}
    out.update({f"{PICKSCORE_PROCESSOR_DIR}/{n}": (PICKSCORE_FIXTURE / "processor" / n).read_bytes()
                for n in PICKSCORE_PROCESSOR_FILES})
    return out


def hps_files() -> dict[str, bytes]:
    return {HPS_FILE: (HPS_FIXTURE / "HPS_v2.1_compressed.pt").read_bytes()}


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root
