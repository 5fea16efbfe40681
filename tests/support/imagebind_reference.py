"""The reference ImageBind model (PyPI imagebind-unofficial) and random-weight checkpoints of it.

The package's `__init__` imports `imagebind.data`, which needs pytorchvideo
(not installable here); registering a bare package module first lets
`imagebind.models.imagebind_model` import on its own.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
from dataclasses import asdict
from pathlib import Path
from typing import Any

from handspring.models.imagebind import ImageBindConfig

# Real input sizes (the reference hard-codes most of them), tiny widths and depths.
TINY = ImageBindConfig(
    out_embed_dim=40,
    vision_embed_dim=64,
    vision_num_blocks=2,
    vision_num_heads=4,
    text_embed_dim=48,
    text_num_blocks=2,
    text_num_heads=4,
    audio_embed_dim=32,
    audio_num_blocks=2,
    audio_num_heads=2,
    depth_embed_dim=32,
    depth_num_blocks=2,
    depth_num_heads=4,
    thermal_embed_dim=48,
    thermal_num_blocks=2,
    thermal_num_heads=3,
    imu_embed_dim=32,
    imu_num_blocks=2,
    imu_num_heads=2,
)

# Relative size of the noise added to every parameter and buffer: the reference
# initialises LayerNorms to exactly (1, 0) and biases and bias_k/bias_v to 0,
# which would leave those paths untested.
_NOISE = 0.05


def imagebind_package_folder() -> Path:
    """The installed package's folder, found without running its `__init__`."""
    registered = sys.modules.get("imagebind")
    if registered is not None and getattr(registered, "__path__", None):
        return Path(next(iter(registered.__path__)))
    spec = importlib.util.find_spec("imagebind")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "imagebind-unofficial is not installed: pip install --no-deps imagebind-unofficial"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def register_bare_package() -> None:
    """`imagebind` in sys.modules as a package whose `__init__` never ran, with a real spec
    (so later `find_spec` calls and submodule imports work as for any package)."""
    if "imagebind" in sys.modules:
        return
    spec = importlib.util.find_spec("imagebind")
    if spec is None or not spec.submodule_search_locations:
        imagebind_package_folder()  # raises, saying how to install it
        return
    sys.modules["imagebind"] = importlib.util.module_from_spec(spec)


def imagebind_model_module() -> types.ModuleType:
    """`imagebind.models.imagebind_model`, imported without the package's `__init__`."""
    register_bare_package()
    return importlib.import_module("imagebind.models.imagebind_model")


def reference_model(cfg: ImageBindConfig, seed: int) -> Any:
    """A reference `ImageBindModel` of `cfg`'s sizes, random weights, eval mode."""
    import torch

    module = imagebind_model_module()
    torch.manual_seed(seed)
    model = module.ImageBindModel(**asdict(cfg)).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith((".mask", "log_logit_scale")):
                continue  # the causal mask is fixed; logit scales keep their meaning
            spread = float(tensor.float().std()) if tensor.numel() > 1 else 0.0
            scale = _NOISE * (spread if spread > 0 else 1.0)
            tensor.add_(scale * torch.randn(tensor.shape, generator=generator))
        text_scale = model.modality_postprocessors["text"][1].log_logit_scale
        text_scale.add_(0.3)  # off the init value, still under the clip at 100
    return model


def write_imagebind_checkpoint(folder: Path, cfg: ImageBindConfig, seed: int) -> Path:
    """`model.safetensors` (the reference's own state_dict keys) + `config.json`."""
    from safetensors.torch import save_file

    model = reference_model(cfg, seed)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / "model.safetensors"))
    config = {"model_type": "imagebind", **asdict(cfg), "audio_drop_path": 0.1}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def imagebind_vision_and_text() -> dict[str, Any]:
    """data.py's `load_and_transform_vision_data` and `load_and_transform_text`, compiled
    alone from the real file (its imports need pytorchvideo and torchaudio), with the real
    torchvision transforms, PIL and the package's own SimpleTokenizer and BPE file."""
    import torch
    from PIL import Image
    from torchvision import transforms

    from tests.support.audio_reference import imagebind_definitions

    imagebind_model_module()  # registers the bare `imagebind` package
    tokenizers = importlib.import_module("imagebind.models.multimodal_preprocessors")
    bpe = Path(next(iter(sys.modules["imagebind"].__path__))) / "bpe"
    namespace: dict[str, Any] = {
        "torch": torch,
        "Image": Image,
        "transforms": transforms,
        "SimpleTokenizer": tokenizers.SimpleTokenizer,
        # return_bpe_path asks pkg_resources for the package's own file.
        "pkg_resources": types.SimpleNamespace(
            resource_filename=lambda package, name: str(bpe.parent / name)
        ),
    }
    names = {"return_bpe_path", "load_and_transform_vision_data", "load_and_transform_text"}
    return imagebind_definitions(names, namespace)
