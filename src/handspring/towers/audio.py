"""Sounds: decode -> resample to 16 kHz -> clips -> Kaldi fbank -> the graph, with the
clips' embeddings averaged as the reference averages them (after its postprocessor)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from handspring.errors import AudioError, HandspringError
from handspring.preprocess.audio import CLIPS_PER_ITEM, audio_clips
from handspring.runtime.session import TowerSession
from handspring.towers.base import Options, Tower


class AudioTower(Tower):
    modality = "audio"
    error_type = AudioError
    batch_size = 8
    # One sound's clips per session run: a run of 8 clips (1,832 token rows) held ~65 MiB
    # more activations in ORT's arena for no measurable speed, rows this long being
    # large GEMMs already.
    run_rows = CLIPS_PER_ITEM

    def __init__(self, compiled: TowerSession, dim: int, max_seconds: float) -> None:
        try:  # said once at load, not as every sound's error
            import soundfile  # noqa: F401
        except ImportError as exc:
            raise HandspringError(
                "the audio tower reads sound files with soundfile, which is not installed: "
                "pip install 'handspring[audio]'"
            ) from exc
        super().__init__(compiled, dim)
        self.max_seconds = max_seconds
        self.input_name = self.session.get_inputs()[0].name

    def prepare(self, item: Any, name: str, options: Options) -> np.ndarray:
        """float32 [clips, 1, mel bins, frames]."""
        return audio_clips(item, name, max_seconds=self.max_seconds)

    def run(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        clips = np.concatenate(batch)  # [N*C, 1, M, F]
        per_clip = self.run_chunked({self.input_name: clips})  # [N*C, D]
        counts = [len(b) for b in batch]
        starts = np.cumsum([0, *counts[:-1]])
        return np.stack(
            [per_clip[s : s + c].mean(axis=0) for s, c in zip(starts, counts, strict=True)]
        )
