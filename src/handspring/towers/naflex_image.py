"""SigLIP 2 NaFlex images: decode -> resize to at most N patches at the image's own aspect
ratio -> patches and resized position embeddings -> one padded batch -> the graph.

Each image keeps its own patch grid; a batch is one tensor because every row is padded to
`max_num_patches` and a mask marks the padding, which the graph never attends to. Padding
to the same N whatever the batch holds keeps a row's result independent of the other rows,
and an image's padding the same alone or in a batch (where images run one per session run,
int8 quantizes the padded tensor with one scale: the same scale either way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from handspring.errors import ImageError
from handspring.models.siglip2 import MASK_INPUT, PATCHES_INPUT, POSITIONS_INPUT
from handspring.models.siglip2_positions import ResizedPositions
from handspring.preprocess.decode import ImageInput, decode_image
from handspring.preprocess.naflex import NaflexTransform
from handspring.runtime.session import TowerSession
from handspring.towers.base import Options, Tower, items_per_run
from handspring.towers.image import DecodeOptions


@dataclass(frozen=True)
class NaflexInput:
    """One prepared image, unpadded."""

    patches: np.ndarray  # float32 [n, p * p * C]
    positions: np.ndarray  # float32 [n, D]


class NaflexImageTower(Tower):
    modality = "image"
    error_type = ImageError

    def __init__(
        self,
        compiled: TowerSession,
        dim: int,
        transform: NaflexTransform,
        positions: ResizedPositions,
        decode: DecodeOptions,
    ) -> None:
        super().__init__(compiled, dim)
        self.run_rows = items_per_run(transform.max_num_patches)
        self.transform = transform
        self.positions = positions
        self.decode = decode

    def prepare(self, item: ImageInput, name: str, options: Options) -> NaflexInput:
        draft = self.transform.draft_size() if self.decode.fast_decode else None
        image = decode_image(
            item,
            item=name,
            max_pixels=self.decode.max_pixels,
            exif_orientation=self.decode.exif_orientation,
            draft_shortest=draft,
        )
        patches = self.transform(image)
        return NaflexInput(patches.values, self.positions(patches.rows, patches.cols))

    def run(self, batch: Sequence[NaflexInput]) -> np.ndarray:
        rows, width = self.transform.max_num_patches, self.positions.width
        values = batch[0].patches.shape[1]
        patches = np.zeros((len(batch), rows, values), dtype=np.float32)  # [B, N, p*p*C]
        mask = np.zeros((len(batch), rows), dtype=np.int64)  # [B, N]
        positions = np.zeros((len(batch), rows, width), dtype=np.float32)  # [B, N, D]
        for i, item in enumerate(batch):
            n = len(item.patches)
            patches[i, :n] = item.patches
            mask[i, :n] = 1
            positions[i, :n] = item.positions
        inputs = {PATCHES_INPUT: patches, MASK_INPUT: mask, POSITIONS_INPUT: positions}
        return self.run_chunked(inputs)  # [B, D]
