"""Verifier weight files: where they are published, where a user may already have them, how
they are fetched (``huggingface_hub``) and how every use is checked (SHA-256).

Free of ComfyUI so it can be tested on its own; ``verifiers.comfy_runtime`` passes in the
`verifiers` model folders, ComfyUI's models directory and a progress bar.

Where a file is looked for, in this order (nothing here touches the network):
1. every `verifiers` model folder, under the pack's name for it (``ImageReward/ImageReward.pt``);
2. the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
   ``~/.cache/huggingface/hub``), at the pinned revision and then at ``main``;
3. the layouts other tools use for the same file (``models/ImageReward/``, the ``image-reward``
   package's ``~/.cache/ImageReward/``, the ``hpsv2`` package's ``~/.cache/hpsv2/`` ...).
Files found in 2 or 3 are used where they are, never copied and never downloaded again.

Downloading (only files listed in ``OFFICIAL_FILES``, only when allowed):
- Hugging Face files go through ``huggingface_hub.hf_hub_download`` from the official
  repository (``HF_ENDPOINT`` applies), into a staging folder ``.downloads/<name>`` inside the
  first `verifiers` folder. That gives its progress bar, its retries and its resume (a
  dropped transfer is continued with a ``Range`` request; huggingface_hub 1.x/2.x starts a
  download that was stopped by the user over on the next run, older releases continued it
  from their ``.incomplete`` file). The finished file is checked and then renamed to its
  place (same file system, atomic), so a partial or unchecked file never sits under the
  real name.
- The one file published outside the Hub (the LAION aesthetic head, on GitHub) goes through
  ``huggingface_hub``'s HTTP downloader (``http_get``) with the same staging and progress
  bar; its ``.incomplete`` file stays in the staging folder and is continued next time.
- Downloads are off when ``NOISE_SEARCH_ALLOW_DOWNLOADS=0``, when ``HF_HUB_OFFLINE=1`` or
  when the loader node's ``allow_download`` is false; then no connection is opened and a
  missing file is an error naming the file, the folders searched and the official source.

Checking (every load, wherever the file was found):
- a download must have the pinned SHA-256 where one is pinned below (the weight files);
  otherwise the file is discarded. Files without a published hash come from a pinned
  repository revision where one is known;
- the SHA-256 of every official file at its first use (downloaded or found) is recorded in
  ``noise-search.lock.json`` beside the weights (for files found in the Hugging Face cache or
  another tool's folder: in the `verifiers` folder where the file would have been
  downloaded), and every later load must match it: a file that changed is refused with a
  message naming it; deleting its lock entry accepts the new bytes. For files without a pin
  this is trust on first use;
- at first use, a pinned file from the Hugging Face cache must have the pinned hash (else it
  is refused as corrupt); a file placed by hand under the official name that differs from the
  pin (a converted copy, a stand-in) is used with a warning and recorded like any other.
Hashes are cached per process by (path, size, mtime, ctime, inode).
Weights are then read only with safetensors or ``torch.load(weights_only=True)``
(``verifiers.weights``), so even an unpinned file cannot run code.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import stat
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .base import VerifierError
from .weights import MissingWeightsError, WeightsFileError

log = logging.getLogger(__name__)

DOWNLOAD_ENV = "NOISE_SEARCH_ALLOW_DOWNLOADS"
OFFLINE_ENV = "HF_HUB_OFFLINE"
LOCK_NAME = "noise-search.lock.json"
STAGING_DIR = ".downloads"
HF_ENDPOINT_DEFAULT = "https://huggingface.co"
_FALSE = ("0", "false", "no", "off")
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class OfficialFile:
    """Where a verifier file is published and how its bytes are checked.

    ``repo_id``/``filename``/``revision``: the file on the Hugging Face Hub (``revision`` is a
    pinned commit where one is known, else the repository's ``main``). ``url``: a file published
    elsewhere (https). ``sha256``: the pinned hash, or None (trust on first use).
    ``aliases``: other repository ids that serve the same file (legacy names, looked up in the
    cache only). ``elsewhere``: other tools' layouts, as templates: ``~`` is the home folder,
    ``{models}`` ComfyUI's models directory, ``{env:NAME|default}`` an environment variable.
    """

    repo_id: str | None
    filename: str
    revision: str | None = None
    sha256: str | None = None
    size: int | None = None
    hash_source: str = ""
    url: str | None = None
    license: str = ""
    aliases: tuple[str, ...] = ()
    elsewhere: tuple[str, ...] = ()

    def source(self, endpoint: str | None = None) -> str:
        """The URL a user can fetch the file from by hand."""
        if self.repo_id is None:
            return str(self.url)
        base = (endpoint or hf_endpoint()).rstrip("/")
        return f"{base}/{self.repo_id}/resolve/{self.revision or 'main'}/{self.filename}"


def _hf(repo_id: str, filename: str, license: str, **kw) -> OfficialFile:
    return OfficialFile(repo_id=repo_id, filename=filename, license=license, **kw)


_LAION_H14 = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
# Commits of the official repositories that hold the files below (read from the Hub's pages).
_IR_REVISION = "e102d1c82b37371960ba52df736a2450043b0ccd"
_DINO_S_REVISION = "ed25f3a31f01632728cabb09d1542f84ab7b0056"
_PICKSCORE_REVISION = "a4e4367c6dfa7288a00c550414478f865b875800"
_PICKSCORE_LICENSE = "none stated on the model card"
_IMAGEREWARD_ELSEWHERE = ("{models}/ImageReward/{name}", "{models}/image_reward/{name}", "~/.cache/ImageReward/{name}")

# Chat VLMs for VQAScore and the LLM grader (verifiers/vlm.py), folder name = repository name.
# The weights are the shards model.safetensors.index.json names (official_shards adds them).
# No SHA-256 is published: trust on first use at the repository's main.
VLM_FILES = ("config.json", "model.safetensors.index.json", "preprocessor_config.json", "tokenizer.json",
             "tokenizer_config.json", "chat_template.json")
VLM_REPOS = {
    "Qwen2.5-VL-3B-Instruct": ("Qwen/Qwen2.5-VL-3B-Instruct",
                               "Qwen Research License (qwen-research: non-commercial use only)"),
    "Qwen2.5-VL-7B-Instruct": ("Qwen/Qwen2.5-VL-7B-Instruct", "Apache-2.0"),
    "Qwen3-VL-4B-Instruct": ("Qwen/Qwen3-VL-4B-Instruct", "Apache-2.0"),
    "Qwen3-VL-8B-Instruct": ("Qwen/Qwen3-VL-8B-Instruct", "Apache-2.0"),
}

# Relative paths inside a `verifiers` model folder -> official source. The layout is the one
# the loader nodes expect (see verifiers/README.md).
OFFICIAL_FILES: dict[str, OfficialFile] = {
    # OpenAI CLIP ViT-L/14 in open_clip's format (QuickGELU), the timm/open_clip release.
    "clip/ViT-L-14-openai.safetensors": _hf(
        "timm/vit_large_patch14_clip_224.openai", "open_clip_model.safetensors", "MIT (OpenAI CLIP)",
        sha256="9ce2e8a8ebfff3793d7d375ad6d3c35cb9aebf3de7ace0fc7308accab7cd207e", size=1_710_517_724,
        hash_source="HF LFS oid of timm/vit_large_patch14_clip_224.openai open_clip_model.safetensors, "
                    "as recorded (with size) by two independent public projects"),
    # LAION improved aesthetic predictor v2 (torch.save'd state dict), published on GitHub.
    "aesthetic/sac+logos+ava1-l14-linearMSE.pth": OfficialFile(
        repo_id=None, filename="sac+logos+ava1-l14-linearMSE.pth",
        url="https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
            "sac+logos+ava1-l14-linearMSE.pth",
        sha256="21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0", size=3_714_759,
        hash_source="git-lfs pointer of a public mirror of the file (jewel/laion-aesthetics-predictor)",
        license="none stated (the GitHub repository has no license file)"),
    # ImageReward v1.0 (THUDM). The revision holds both files; med_config.json (not in LFS) has
    # no published SHA-256: trust on first use at that pinned revision.
    "ImageReward/ImageReward.pt": _hf(
        "THUDM/ImageReward", "ImageReward.pt", "Apache-2.0", revision=_IR_REVISION,
        sha256="d71dc8d4912bc633c06ab8ef1ef6a81e8199d4369f14b47b29baf1d19de561f6", size=1_786_880_927,
        hash_source="Git LFS pointer on the Hub: commit 7a9e21fc5c78 'Upload ImageReward.pt' and the file's "
                    "page on main (same oid and size)",
        elsewhere=tuple(t.format(name="ImageReward.pt", models="{models}") for t in _IMAGEREWARD_ELSEWHERE)),
    "ImageReward/med_config.json": _hf(
        "THUDM/ImageReward", "med_config.json", "Apache-2.0", revision=_IR_REVISION,
        elsewhere=tuple(t.format(name="med_config.json", models="{models}") for t in _IMAGEREWARD_ELSEWHERE)),
    "ImageReward/bert-base-uncased/vocab.txt": _hf(
        "google-bert/bert-base-uncased", "vocab.txt", "Apache-2.0", aliases=("bert-base-uncased",),
        elsewhere=("{models}/ImageReward/bert-base-uncased/vocab.txt",
                   "{models}/image_reward/bert-base-uncased/vocab.txt")),
    # DINOv2 (transformers layout).
    "dinov2-small/config.json": _hf("facebook/dinov2-small", "config.json", "Apache-2.0",
                                    revision=_DINO_S_REVISION),
    "dinov2-small/model.safetensors": _hf(
        "facebook/dinov2-small", "model.safetensors", "Apache-2.0", revision=_DINO_S_REVISION,
        sha256="ae1e99fcefd534ed978cdeb8326f08030c96e28b7a81ffcbc98a857c84d14be1",
        hash_source="Git LFS details on the Hub's pages of the file at revisions ed25f3a31f01 and 8c0210022ead"),
    "dinov2-base/config.json": _hf("facebook/dinov2-base", "config.json", "Apache-2.0"),
    "dinov2-base/model.safetensors": _hf(
        "facebook/dinov2-base", "model.safetensors", "Apache-2.0",
        sha256="d73036b56966966d07975d696bde331762f37297e2f095de8cea0040c3aa0841",
        hash_source="Git LFS details on the Hub's pages of the file on main and refs/pr/3"),
    # PickScore v1: a transformers CLIPModel (ViT-H/14) fine-tuned on Pick-a-Pic...
    "PickScore_v1/config.json": _hf("yuvalkirstain/PickScore_v1", "config.json", _PICKSCORE_LICENSE,
                                    revision=_PICKSCORE_REVISION),
    "PickScore_v1/model.safetensors": _hf(
        "yuvalkirstain/PickScore_v1", "model.safetensors", _PICKSCORE_LICENSE, revision=_PICKSCORE_REVISION,
        sha256="ef31ef6fc5ff4d9bb90dd232df4e145887ba62c5a03aa2841415f8c25f18d52e",
        hash_source="Git LFS details on the Hub's page of the file at revision a4e4367c6dfa"),
    # ... with the processor (tokenizer + image preprocessing) of LAION's CLIP ViT-H/14.
    **{f"CLIP-ViT-H-14-laion2B-s32B-b79K/{name}": _hf(_LAION_H14, name, "MIT")
       for name in ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json", "vocab.json", "merges.txt")},
    # HPS v2.1: open_clip ViT-H-14 weights fine-tuned on HPD v2 (the hpsv2 package's checkpoint).
    "HPSv2/HPS_v2.1_compressed.pt": _hf(
        "xswu/HPSv2", "HPS_v2.1_compressed.pt", "Apache-2.0",
        revision="697403c78157020a1ae59d23f111aa58ced35b0a",
        sha256="c57a38fb4a2f7e7c15bf00da2ea377cdf165448b4dd1052a484c215a998c9837", size=1_972_490_005,
        hash_source="Git LFS pointer in the Hub's commit 697403c78157 'Upload 2 files' that added the file",
        elsewhere=("{env:HPS_ROOT|~/.cache/hpsv2}/HPS_v2.1_compressed.pt",)),
    **{f"{folder}/{name}": _hf(repo, name, license) for folder, (repo, license) in VLM_REPOS.items()
       for name in VLM_FILES},
}


def official_shards(folder: str, names: Iterable[str]) -> None:
    """The weight shards an official VLM folder's index names are official files of its repository."""
    index = OFFICIAL_FILES.get(f"{folder}/model.safetensors.index.json")
    if index is None:
        return
    for name in names:
        if re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", name):
            OFFICIAL_FILES.setdefault(f"{folder}/{name}", OfficialFile(
                repo_id=index.repo_id, filename=name, revision=index.revision, license=index.license))


# ---------------------------------------------------------------------------------------
# Switches and places
# ---------------------------------------------------------------------------------------

def downloads_allowed(node_switch: bool = True) -> bool:
    return download_block_reason(node_switch) is None


def download_block_reason(node_switch: bool = True) -> str | None:
    """Why downloads are off (for the error message), or None when they are allowed."""
    reasons = []
    if not node_switch:
        reasons.append("the loader's allow_download is false")
    if os.environ.get(DOWNLOAD_ENV, "1").strip().lower() in _FALSE:
        reasons.append(f"{DOWNLOAD_ENV}={os.environ[DOWNLOAD_ENV]}")
    if os.environ.get(OFFLINE_ENV, "0").strip().lower() in _TRUE:
        reasons.append(f"{OFFLINE_ENV}={os.environ[OFFLINE_ENV]}")
    return " and ".join(reasons) if reasons else None


def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or HF_ENDPOINT_DEFAULT).rstrip("/")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    home = os.environ.get("HF_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        home = os.path.join(xdg, "huggingface")
    return Path(home).expanduser() / "hub"


def normalize_rel(rel: str) -> str:
    """A relative path inside the verifiers folder, with forward slashes and no escapes."""
    rel = rel.replace("\\", "/").strip("/")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise VerifierError(f"invalid verifier file name {rel!r}")
    return "/".join(parts)


def not_a_file(path: Path) -> str | None:
    """What sits at ``path`` when something is there but it is not a regular file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"a broken symbolic link (to {os.readlink(path)!r})" if path.is_symlink() else None
    except OSError as e:
        return "a symbolic link loop" if e.errno == errno.ELOOP else f"unreadable ({e.strerror})"
    for test, what in ((stat.S_ISREG, None), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "a device file"


def check_is_file(rel: str, path: Path) -> None:
    """Refuse something at a verifier file's place that is not a file, saying what it is."""
    what = not_a_file(path)
    if what is not None:
        raise MissingWeightsError(f"verifier file {rel!r}: {path} is {what}, not a file. Put the file itself "
                                  f"there (replace or remove what is at that path)")


def find_in_folders(rel: str, folders: Iterable[str | os.PathLike]) -> Path | None:
    rel = normalize_rel(rel)
    for folder in folders:
        path = Path(folder) / rel
        check_is_file(rel, path)
        if path.is_file():
            return path
    return None


def find_in_hf_cache(entry: OfficialFile) -> Path | None:
    """The file in the Hugging Face cache (pinned revision first, then main), or None."""
    if entry.repo_id is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    cache = hf_cache_dir()
    if not cache.is_dir():
        return None
    revisions = [r for r in (entry.revision, "main") if r] if entry.revision else ["main"]
    for repo in (entry.repo_id, *entry.aliases):
        for rev in revisions:
            hit = try_to_load_from_cache(repo, entry.filename, cache_dir=str(cache), revision=rev)
            if isinstance(hit, str) and os.path.isfile(hit):
                return Path(hit)
    return None


def expand_template(template: str, roots: Mapping[str, str | os.PathLike] | None = None) -> Path | None:
    """``{models}/x``, ``~/.cache/x``, ``{env:VAR|default}/x`` -> a path (None if a root is unknown)."""
    roots = roots or {}

    def env(m: re.Match) -> str:
        return os.environ.get(m.group(1)) or m.group(2)

    text = re.sub(r"\{env:([A-Za-z_][A-Za-z0-9_]*)\|([^}]*)\}", env, template)
    missing = False

    def root(m: re.Match) -> str:
        nonlocal missing
        value = roots.get(m.group(1))
        if value is None:
            missing = True
            return ""
        return str(value)

    text = re.sub(r"\{([a-z_]+)\}", root, text)
    return None if missing else Path(text).expanduser()


def find_elsewhere(entry: OfficialFile, roots: Mapping[str, str | os.PathLike] | None = None) -> Path | None:
    for template in entry.elsewhere:
        path = expand_template(template, roots)
        if path is not None and path.is_file():
            return path
    return None


@dataclass(frozen=True)
class Found:
    path: Path
    where: str  # "verifiers folder", "Hugging Face cache", "other tool's folder", "downloaded"
    folder: Path | None  # the verifiers folder holding it (None outside them)


def locate(rel: str, folders: list[str], roots: Mapping[str, str | os.PathLike] | None = None) -> Found | None:
    """Where ``rel`` already is, without any network access; None when nowhere."""
    rel = normalize_rel(rel)
    for folder in folders:
        path = Path(folder) / rel
        check_is_file(rel, path)
        if path.is_file():
            return Found(path, "verifiers folder", Path(folder))
    return _external(rel, roots)


# ---------------------------------------------------------------------------------------
# Resolving: find, else download; then verify
# ---------------------------------------------------------------------------------------

_download_lock = threading.Lock()


def ensure_file(rel: str, folders: list[str], allow_download: bool = True,
                roots: Mapping[str, str | os.PathLike] | None = None, tqdm_class=None) -> Path:
    """The path of ``rel``: found (see the module docstring) or downloaded, and verified.

    ``folders`` are the `verifiers` model folders in priority order; downloads go to the first.
    """
    rel = normalize_rel(rel)
    found = locate(rel, folders, roots)
    if found is None:
        found = _fetch(rel, folders, allow_download, roots, tqdm_class)
    if found.where != "verifiers folder":
        log.info("noise-search: using %s for %s (%s)", found.path, rel, found.where)
    verify(rel, found, folders)
    return found.path


def ensure_group(rels: list[str], folders: list[str], allow_download: bool = True,
                 roots: Mapping[str, str | os.PathLike] | None = None, tqdm_class=None) -> dict[str, Path]:
    """Resolve files that must sit in one folder (a transformers model or processor folder).

    The first place holding every file wins (each verifiers folder, then the Hugging Face
    cache); otherwise missing files are downloaded into the first verifiers folder and files
    found elsewhere are copied beside them (no network for those).
    """
    rels = [normalize_rel(r) for r in rels]
    for folder in folders:
        if all((Path(folder) / r).is_file() for r in rels):
            return {r: ensure_file(r, [folder], False, roots) for r in rels}
    entries = [OFFICIAL_FILES.get(r) for r in rels]
    if all(e is not None and e.repo_id for e in entries):
        hits = [find_in_hf_cache(e) for e in entries]  # type: ignore[arg-type]
        if all(h is not None for h in hits) and len({h.parent for h in hits}) == 1:  # type: ignore[union-attr]
            out = {}
            for r, h in zip(rels, hits):
                verify(r, Found(h, "Hugging Face cache", None), folders)  # type: ignore[arg-type]
                out[r] = h
            return out
    if not folders:
        raise MissingWeightsError(f"no `verifiers` model folder is registered; cannot find {rels[0]!r}")
    target_root = Path(folders[0])
    out = {}
    for r in rels:
        target = target_root / r
        if target.is_file():
            found = Found(target, "verifiers folder", target_root)
        else:
            other = (locate(r, folders[1:], roots) if len(folders) > 1 else None) or _external(r, roots)
            if other is not None:
                verify(r, other, folders)
                target.parent.mkdir(parents=True, exist_ok=True)
                log.info("noise-search: copying %s to %s (the other files of its folder are there)", other.path, target)
                shutil.copyfile(other.path, target)
                found = Found(target, "verifiers folder", target_root)
            else:
                found = _fetch(r, [str(target_root)], allow_download, roots, tqdm_class, searched=folders)
        verify(r, found, folders)
        out[r] = target
    return out


def _external(rel: str, roots) -> Found | None:
    entry = OFFICIAL_FILES.get(rel)
    if entry is None:
        return None
    hit = find_in_hf_cache(entry)
    if hit is not None:
        return Found(hit, "Hugging Face cache", None)
    hit = find_elsewhere(entry, roots)
    return Found(hit, "other tool's folder", None) if hit is not None else None


def _where(folders: list[str]) -> str:
    return f"folder {folders[0]!r}" if len(folders) == 1 else \
        f"folders {', '.join(repr(str(f)) for f in folders)}"


def _fetch(rel: str, folders: list[str], allow_download: bool, roots, tqdm_class,
           searched: list[str] | None = None) -> Found:
    searched = searched or folders
    if not folders:
        raise MissingWeightsError(f"no `verifiers` model folder is registered; cannot find {rel!r}")
    target = Path(folders[0]) / rel
    check_is_file(rel, target)
    entry = OFFICIAL_FILES.get(rel)
    if entry is None:
        raise MissingWeightsError(
            f"verifier file {rel!r} was not found in the `verifiers` {_where(searched)}; place it at {target}")
    blocked = download_block_reason(allow_download)
    elsewhere = "the Hugging Face cache" + (" or another tool's folder" if entry.elsewhere else "")
    if blocked:
        raise MissingWeightsError(
            f"verifier file {rel!r} was not found in the `verifiers` {_where(searched)} nor in {elsewhere}, "
            f"and downloads are switched off ({blocked}). Download it from {entry.source()} "
            f"and place it at {target}")
    with _download_lock:
        if target.is_file():  # another thread finished it meanwhile
            return Found(target, "verifiers folder", Path(folders[0]))
        log.info("noise-search: downloading %s from %s", rel, entry.source())
        try:
            download(rel, entry, Path(folders[0]), tqdm_class=tqdm_class)
        except _network_errors() as e:
            raise MissingWeightsError(
                f"could not download verifier file {rel!r} from {entry.source()}: {_first_line(e)}. "
                f"Download it by hand and place it at {target}") from None
    return Found(target, "downloaded", Path(folders[0]))


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]
    try:
        from huggingface_hub.errors import EntryNotFoundError

        errors.append(EntryNotFoundError)
    except ImportError:  # pragma: no cover - older huggingface_hub
        pass
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def download(rel: str, entry: OfficialFile, folder: Path, tqdm_class=None) -> Path:
    """Fetch ``entry`` to ``folder/rel`` through huggingface_hub, staged and hash-checked.

    The bytes land under ``folder/.downloads/<rel>/`` (resumable there) and are renamed into
    place only after the pinned hash (if any) matched; the lock file records the hash.
    """
    target = folder / rel
    staging = folder / STAGING_DIR / rel
    staging.mkdir(parents=True, exist_ok=True)
    if entry.repo_id is not None:
        from huggingface_hub import hf_hub_download

        kwargs = {"revision": entry.revision or "main", "local_dir": str(staging), "endpoint": hf_endpoint()}
        if tqdm_class is not None and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
            kwargs["tqdm_class"] = tqdm_class
        got = Path(hf_hub_download(entry.repo_id, entry.filename, **kwargs))
    else:
        got = _download_url(entry, staging, tqdm_class)
    if entry.size is not None and got.stat().st_size != entry.size:
        _discard(staging)
        raise WeightsFileError(f"download of {entry.source()} is incomplete or wrong: got {got.stat().st_size} "
                               f"bytes, expected {entry.size}; nothing was written to {target}")
    digest = sha256_file(got)
    if entry.sha256 is not None and digest != entry.sha256:
        _discard(staging)
        raise WeightsFileError(f"download of {entry.source()} has SHA-256 {digest}, expected the pinned "
                               f"{entry.sha256}; the file was discarded and nothing was written to {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(got, target)
    _discard(staging)
    _remember(target, digest)  # verify() records it in the lock file without hashing again
    return target


def _download_url(entry: OfficialFile, staging: Path, tqdm_class) -> Path:
    """A file published outside the Hub, through huggingface_hub's resumable HTTP downloader."""
    from huggingface_hub.file_download import http_get

    url = str(entry.url)
    if not url.startswith("https://") and not _is_loopback(url):
        raise MissingWeightsError(f"refusing to download from a non-https URL: {url}")
    part = staging / (entry.filename + ".incomplete")
    resume = part.stat().st_size if part.is_file() else 0
    kwargs = {"resume_size": resume, "expected_size": entry.size, "displayed_filename": entry.filename,
              "headers": {"User-Agent": "noise-search"}}
    if tqdm_class is not None and "tqdm_class" in inspect.signature(http_get).parameters:
        kwargs["tqdm_class"] = tqdm_class
    with open(part, "ab") as f:
        http_get(url, f, **kwargs)
    done = staging / entry.filename
    os.replace(part, done)
    return done


def _is_loopback(url: str) -> bool:
    # Plain http is accepted for a local test server only.
    return bool(re.match(r"^http://(127\.0\.0\.1|localhost)(:\d+)?/", url))


def _discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    # Remove empty parents up to and including .downloads.
    parent = staging.parent
    while parent.name and parent.exists() and STAGING_DIR in parent.parts:
        try:
            parent.rmdir()
        except OSError:
            break
        if parent.name == STAGING_DIR:
            break
        parent = parent.parent


# ---------------------------------------------------------------------------------------
# Hashes and the lock file
# ---------------------------------------------------------------------------------------

_verified_lock = threading.Lock()
# resolved path -> (stamp, sha256) of files hashed in this process.
_VERIFIED: dict[str, tuple[tuple, str]] = {}


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp(path: Path) -> tuple:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _remember(path: Path, digest: str) -> None:
    with _verified_lock:
        _VERIFIED[str(path.resolve())] = (_stamp(path.resolve()), digest)


def file_sha256(path: Path) -> str:
    """SHA-256 of ``path``, hashed once per process while its size/mtime/ctime/inode stay."""
    real = path.resolve()
    stamp = _stamp(real)
    with _verified_lock:
        hit = _VERIFIED.get(str(real))
    if hit is not None and hit[0] == stamp:
        return hit[1]
    digest = sha256_file(real)
    with _verified_lock:
        _VERIFIED[str(real)] = (stamp, digest)
    return digest


def forget_hashes() -> None:
    """Drop the per-process hash cache (tests; or after editing files by hand)."""
    with _verified_lock:
        _VERIFIED.clear()


def lock_dir_for(rel: str, found: Found, folders: list[str]) -> Path | None:
    """Beside the weights inside a verifiers folder; for files outside them, where the file
    would have been downloaded (the first verifiers folder)."""
    if found.folder is not None:
        return found.path.parent
    if folders:
        return Path(folders[0]) / Path(rel).parent
    return None


def read_lock(lock_dir: Path) -> dict:
    path = lock_dir / LOCK_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WeightsFileError(f"the lock file {path} is unreadable ({_first_line(e)}); fix or delete it "
                               f"(deleting it trusts the files beside it again on their next use)") from None
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def record(lock_dir: Path, name: str, digest: str, size: int, entry: OfficialFile | None, how: str,
           path: Path) -> None:
    """Write ``name``'s hash into ``lock_dir``'s lock file (atomically)."""
    lock_path = lock_dir / LOCK_NAME
    try:
        files = read_lock(lock_dir)
        files[name] = {
            "sha256": digest,
            "size": size,
            "source": entry.source() if entry else "",
            "revision": (entry.revision or "main") if entry and entry.repo_id else None,
            "how": how,
            "path": str(path),
            "recorded": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        lock_dir.mkdir(parents=True, exist_ok=True)
        tmp = lock_path.with_name(LOCK_NAME + ".tmp")
        tmp.write_text(json.dumps({"version": 1, "note": "SHA-256 of verifier files at their first use "
                                   "(noise-search trusts on first use; delete an entry to accept new bytes)",
                                   "files": dict(sorted(files.items()))}, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, lock_path)
    except OSError as e:
        log.warning("noise-search: could not record the SHA-256 of %s in %s (%s); it will be hashed again "
                    "and recorded on its next use", path, lock_path, _first_line(e))


def verify(rel: str, found: Found, folders: list[str]) -> str | None:
    """Check ``found.path`` against its lock entry, recording it on first use (see the module docstring).

    Only files listed in ``OFFICIAL_FILES`` are checked (the user's own files have no
    reference). Returns the SHA-256, or None for unchecked files.
    """
    entry = OFFICIAL_FILES.get(normalize_rel(rel))
    if entry is None:
        return None
    digest = file_sha256(found.path)
    lock_dir = lock_dir_for(rel, found, folders)
    name = Path(rel).name
    recorded = read_lock(lock_dir).get(name) if lock_dir is not None else None
    if isinstance(recorded, dict) and recorded.get("sha256"):
        if recorded["sha256"] != digest:
            raise WeightsFileError(
                f"verifier file {found.path} changed since its first use: its SHA-256 is now {digest}, "
                f"but {lock_dir / LOCK_NAME} recorded {recorded['sha256']} on {recorded.get('recorded', '?')} "
                f"(from {recorded.get('source') or recorded.get('path')}). Refusing to load it. If you replaced "
                f"it on purpose, delete the '{name}' entry of that lock file; otherwise delete the file and "
                f"fetch it again from {entry.source()}.")
        return digest
    # First use.
    how = "downloaded" if found.where == "downloaded" else f"first use ({found.where})"
    if entry.sha256 is not None:
        if digest == entry.sha256:
            how += ", official SHA-256"
        elif found.where in ("downloaded", "Hugging Face cache"):
            # Bytes that claim to be the official file but are not: a corrupt or tampered copy.
            raise WeightsFileError(
                f"verifier file {found.path} (for {rel!r}, from the {found.where}) has SHA-256 {digest}, not the "
                f"pinned {entry.sha256} of {entry.source()}. Refusing to load it: delete it (it is downloaded "
                f"again when allowed).")
        else:
            # A file placed by hand under the official name (a converted or re-saved copy, or a
            # stand-in): used as the user's own, and protected from here on like any other.
            log.warning("noise-search: %s is not the official %s (SHA-256 %s, official %s); using it as placed "
                        "and recording its hash", found.path, rel, digest, entry.sha256)
            how += ", differs from the official SHA-256"
    if lock_dir is not None:
        record(lock_dir, name, digest, found.path.stat().st_size, entry, how, found.path)
        log.info("noise-search: recorded SHA-256 %s of %s in %s", digest, found.path, lock_dir / LOCK_NAME)
    return digest


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__
