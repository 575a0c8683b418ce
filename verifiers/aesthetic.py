"""LAION aesthetic predictor v2 over CLIP ViT-L/14 image embeddings.

The official head (``sac+logos+ava1-l14-linearMSE.pth``) is a torch.save'd state dict of
an MLP 768 -> 1024 -> 128 -> 64 -> 16 -> 1 with dropouts between the first layers and no
activations, under the keys ``layers.{0,2,4,6,7}.{weight,bias}``. It reads the
L2-normalised OpenAI CLIP ViT-L/14 image embedding; its output is the predicted mean
rating on a 1-10 scale (higher is better).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Condition
from .clip import OpenCLIPModel
from .common import TorchVerifier
from .weights import WeightsFileError, load_state_dict_file


class AestheticMLP(nn.Module):
    """The predictor head; module indices match the official keys (dropouts hold no weights)."""

    def __init__(self, input_size: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def load_aesthetic_mlp(path) -> AestheticMLP:
    state = load_state_dict_file(path)
    weight = state.get("layers.0.weight")
    if weight is None or weight.ndim != 2:
        raise WeightsFileError(f"{path} is not an aesthetic predictor head: no 'layers.0.weight' "
                               f"(keys: {', '.join(sorted(state)[:8])})")
    mlp = AestheticMLP(weight.shape[1])
    try:
        mlp.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsFileError(f"{path} does not fit the aesthetic MLP: {str(e).splitlines()[0]}") from None
    return mlp.float().eval().requires_grad_(False)


class AestheticVerifier(TorchVerifier):
    """Predicted aesthetic rating (about 1-10); needs no condition."""

    name = "Aesthetic"
    max_batch = 32

    def __init__(self, clip: OpenCLIPModel, mlp: AestheticMLP):
        super().__init__()
        self.clip = clip
        self.mlp = mlp
        embed_dim = getattr(clip.model.visual, "output_dim", None)
        if embed_dim is not None and mlp.layers[0].in_features != embed_dim:
            raise WeightsFileError(f"the aesthetic head takes {mlp.layers[0].in_features}-d embeddings but the CLIP "
                                   f"model {clip.arch!r} gives {embed_dim}-d ones (use CLIP ViT-L/14)")

    def torch_modules(self):
        return [self.clip.model, self.mlp]

    def _score(self, images, condition: Condition, early):
        emb = self.clip.image_embeddings(images)  # normalised, float32
        mlp_param = next(self.mlp.parameters())
        return self.mlp(emb.to(mlp_param.device, mlp_param.dtype))[:, 0]
