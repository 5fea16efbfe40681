"""Each text tower's tokenizer as a tokenizer.json, with the cleaning steps that run before
it, and whether the two together give handspring's ids exactly.

- A tokenizer that runs wholly in `tokenizers` (transformers-layout CLIP, sentence models,
  SigLIP 2's Gemma tokenizer, tokenizer.json files of exported layouts) is written as
  handspring runs it: exact. Python-side cleaning before it (open_clip's, Immich's) becomes
  preprocess.json steps.
- open_clip's and ImageBind's CLIP tokenizers clean and split in Python with the `regex`
  module; the split is written as the same pattern for Oniguruma, whose Unicode tables are
  older, and special-token spellings in a text are matched anywhere rather than at the
  start of a piece: close, not exact.
- SigLIP's spiece.model is rebuilt as a Unigram tokenizer (export/spiece_json.py): close,
  not exact; spiece.model is copied beside it.

Every tokenizer.json carries its truncation and padding, so `encode_batch` gives the rows
a graph takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, pre_tokenizers

from handspring.export.errors import ExportError
from handspring.export.spiece_json import spiece_tokenizer
from handspring.export.text_cleaning import CLEANINGS, LOWERCASE, Step, identify_cleaning
from handspring.preprocess.clip_vocab import BOS_TOKEN, EOS_TOKEN
from handspring.preprocess.open_clip_text import split_pattern
from handspring.preprocess.siglip_text import (
    GemmaTokenizer,
    SentencePieceTokenizer,
    SiglipTokenizer,
)
from handspring.preprocess.siglip_text_exports import CleanedTokenizer, TokenizerJson
from handspring.preprocess.text import SPECIAL_PIECES, ClipTokenizer
from handspring.towers.base import Tower
from handspring.towers.encoder_text import EncoderTextTower
from handspring.towers.siglip_text import SiglipTextTower
from handspring.towers.text import ClipTextTower


@dataclass
class ExportedTokenizer:
    tokenizer: Tokenizer  # with truncation and padding set
    clean: list[Step]  # run in order on each text before the tokenizer
    exact: bool  # clean + tokenizer give handspring's ids for every text
    note: str = ""  # what differs, when not exact
    eot_id: int | None = None  # CLIP-style towers read the first of these
    source_files: dict[str, bytes] = field(default_factory=dict)  # copied beside it

    def description(self) -> dict[str, Any]:
        """preprocess.json's account of the tokenizer (besides the file itself)."""
        truncation = self.tokenizer.truncation or {}
        padding = self.tokenizer.padding or {}
        specials = [
            {"id": token_id, "token": added.content}
            for token_id, added in sorted(self.tokenizer.get_added_tokens_decoder().items())
            if added.special
        ]
        return {
            "tokenizer": "tokenizer.json",
            "tokenizer_exact": self.exact,
            "differences": self.note or None,
            "clean": self.clean,
            "add_special_tokens": True,
            "max_length": truncation.get("max_length"),
            "truncation_side": truncation.get("direction", "right"),
            "padding": {
                "strategy": "fixed" if padding.get("length") else "longest",
                "length": padding.get("length"),
                "side": padding.get("direction", "right"),
                "pad_id": padding.get("pad_id"),
            },
            "special_tokens": specials,
            "eot_id": self.eot_id,
            "source_files": sorted(self.source_files) or None,
        }


def exported_tokenizer(tower: Tower) -> ExportedTokenizer:
    if isinstance(tower, ClipTextTower):
        # Pre-exported (Immich) graphs take rows of the full context length.
        return clip_tokenizer_export(tower.tokenizer, fixed_length=tower.fixed_length)
    if isinstance(tower, SiglipTextTower):
        return siglip_tokenizer_export(tower.tokenizer)
    if isinstance(tower, EncoderTextTower):
        return encoder_tokenizer_export(tower.tokenizer, tower.lower_case)
    raise ExportError(type(tower).__name__, "no tokenizer export for this kind of text tower")


def encoder_tokenizer_export(tokenizer: Tokenizer, lower_case: bool) -> ExportedTokenizer:
    """A BERT-family encoder's tokenizer.json as handspring runs it (texts lowercased first
    where sentence-transformers' do_lower_case says)."""
    return ExportedTokenizer(_copy(tokenizer), [LOWERCASE] if lower_case else [], exact=True)


# --------------------------------------------------------------------- CLIP


def clip_tokenizer_export(
    tokenizer: ClipTokenizer, fixed_length: bool = False
) -> ExportedTokenizer:
    backend = _copy(tokenizer.backend)
    pad_token = backend.id_to_token(tokenizer.pad_id) or ""
    length = tokenizer.context_length if fixed_length else None
    backend.enable_padding(pad_id=tokenizer.pad_id, pad_token=pad_token, length=length)
    if tokenizer.cleaning == "hf":
        return ExportedTokenizer(backend, [], exact=True, eot_id=tokenizer.eot_id)
    bos_piece, eot_piece = SPECIAL_PIECES[tokenizer.cleaning]
    backend.normalizer = None
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex("(?i)" + split_pattern(bos_piece, eot_piece)), "removed", invert=True
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    note = (
        f"{tokenizer.cleaning}'s split regex runs in Python's `regex` module, whose Unicode "
        "tables are newer than Oniguruma's (about 17,500 recent code points are letters or "
        "digits to one only)"
    )
    if (bos_piece, eot_piece) == (BOS_TOKEN, EOS_TOKEN):
        backend.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t in (BOS_TOKEN, EOS_TOKEN)]
        )
        note += f"; {EOS_TOKEN} written in a text is special wherever it is, not only where a piece starts"
    else:
        note += f"; {bos_piece} and {eot_piece} written in a text are plain text here"
    return ExportedTokenizer(
        backend, CLEANINGS["open_clip_lower"], exact=False, note=note, eot_id=tokenizer.eot_id
    )


# --------------------------------------------------------------------- SigLIP


def siglip_tokenizer_export(tokenizer: SiglipTokenizer) -> ExportedTokenizer:
    clean: list[Step] = []
    if isinstance(tokenizer, CleanedTokenizer):
        try:
            clean = CLEANINGS[identify_cleaning(tokenizer.clean)]
        except ValueError as exc:
            raise ExportError("text tokenizer", str(exc)) from None
        tokenizer = tokenizer.inner
    if isinstance(tokenizer, GemmaTokenizer | TokenizerJson):
        exported = ExportedTokenizer(_copy(tokenizer.backend), clean, exact=True)
    elif isinstance(tokenizer, SentencePieceTokenizer):
        exported = ExportedTokenizer(
            spiece_tokenizer(tokenizer),
            [*clean, *([LOWERCASE] if tokenizer.lowercase else [])],
            exact=False,
            note=(
                "spiece.model rebuilt as a tokenizers Unigram model: special tokens written "
                "in a text, and ties between equally scored segmentations, can tokenize "
                "otherwise than SentencePiece does"
            ),
            source_files={"spiece.model": tokenizer.processor.serialized_model_proto()},
        )
    else:
        raise ExportError(type(tokenizer).__name__, "no tokenizer export for this SigLIP tokenizer")
    backend = exported.tokenizer
    backend.enable_padding(
        direction=tokenizer.padding_side,
        pad_id=tokenizer.pad_id,
        pad_token=backend.id_to_token(tokenizer.pad_id) or "",
        length=tokenizer.context_length,  # SigLIP reads padded rows, as it was trained
    )
    return exported


def _copy(tokenizer: Tokenizer) -> Tokenizer:
    return Tokenizer.from_str(tokenizer.to_str())
