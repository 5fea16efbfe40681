"""Images: decode (paths, bytes, PIL images, arrays) -> resize, crop, normalise -> the graph.

Decoding runs on the embedder's decode pool, one image per task: Pillow releases the GIL
while it decodes and resizes, so decoding overlaps inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from handspring.errors import ImageError
from handspring.preprocess.decode import DEFAULT_MAX_PIXELS, ImageInput, decode_image
from handspring.preprocess.image import ImageTransform
from handspring.runtime.session import TowerSession
from handspring.towers.base import Options, Tower, items_per_run


@dataclass(frozen=True)
class DecodeOptions:
    """How photos are read: chosen at `load`, the same for every image tower."""

    exif_orientation: bool = True
    fast_decode: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS


class ImageTower(Tower):
    modality = "image"
    error_type = ImageError

    def __init__(
        self,
        compiled: TowerSession,
        dim: int,
        transform: ImageTransform,
        decode: DecodeOptions,
        *,
        tokens: int,
        composite_alpha: bool = True,
    ) -> None:
        super().__init__(compiled, dim)
        self.run_rows = items_per_run(tokens)
        self.transform = transform
        self.decode = decode
        # Transparency onto white, as transformers does; ImageBind's data.py drops it
        # (`convert("RGB")` before resizing).
        self.composite_alpha = composite_alpha
        self.input_name = self.session.get_inputs()[0].name

    def prepare(self, item: ImageInput, name: str, options: Options) -> np.ndarray:
        """float32 [3, S, S]."""
        draft = self.transform.draft_size() if self.decode.fast_decode else None
        image = decode_image(
            item,
            item=name,
            max_pixels=self.decode.max_pixels,
            exif_orientation=self.decode.exif_orientation,
            draft_shortest=draft,
            composite_alpha=self.composite_alpha,
        )
        return self.transform(image)

    def run(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        return self.run_chunked({self.input_name: np.stack(batch)})  # [N, 3, S, S] -> [N, P]
