"""SigLIP's SentencePiece tokenizer (spiece.model, run as transformers' `SiglipTokenizer`)
as a tokenizer.json: the same pieces and scores in a `tokenizers` Unigram model, with
SigLIP's canonicalisation as normalizers.

What handspring runs (preprocess/siglip_text.py), step by step, and its counterpart here:
- special tokens split out first, case-sensitively -> added tokens (normalized=False);
- per piece between them: lowercase -> a `lowercase` step of preprocess.json, before the
  tokenizer (Python's str.lower; `tokenizers`' own differs on final sigma);
- ASCII punctuation removed, whitespace runs to one space, stripped -> normalizers;
- SentencePiece with its nmt_nfkc map, extra whitespace removed -> the model's own
  precompiled character map, then runs of spaces to one;
- "▁" before the text -> prepended to each piece between special tokens (transformers puts
  it before the first piece only: they differ after a special token written in a text);
- "</s>" appended unless the text already ends in one -> always appended.

Not exact, then, only for special-token spellings written in a text and for ties between
equally scored segmentations, which the two Unigram implementations break differently
(tests/test_export.py counts the differences on its corpus).
"""

from __future__ import annotations

from collections.abc import Iterator

from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram

from handspring.export.text_cleaning import ASCII_PUNCTUATION, PYTHON_WHITESPACE
from handspring.preprocess.siglip_text import SPIECE_UNDERLINE, SentencePieceTokenizer

# sentencepiece_model.proto: ModelProto.normalizer_spec = 3; NormalizerSpec.precompiled_charsmap = 2.
_NORMALIZER_SPEC = 3
_PRECOMPILED_CHARSMAP = 2


def spiece_tokenizer(tokenizer: SentencePieceTokenizer) -> Tokenizer:
    """A tokenizer.json for `tokenizer`'s model, cut and padded as handspring pads it."""
    sp = tokenizer.processor
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    backend = Tokenizer(Unigram(vocab, sp.unk_id(), byte_fallback=False))
    charsmap = _precompiled_charsmap(sp.serialized_model_proto())
    backend.normalizer = normalizers.Sequence(
        [
            normalizers.Replace(Regex(ASCII_PUNCTUATION), ""),
            normalizers.Replace(Regex(PYTHON_WHITESPACE + "+"), " "),
            normalizers.Strip(),
            normalizers.Precompiled(charsmap),
            normalizers.Replace(Regex(" {2,}"), " "),
            normalizers.Strip(),
            normalizers.Prepend(SPIECE_UNDERLINE),
        ]
    )
    backend.pre_tokenizer = pre_tokenizers.Metaspace(SPIECE_UNDERLINE, prepend_scheme="never")
    backend.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in tokenizer.added_tokens]
    )
    eos = sp.id_to_piece(tokenizer.eos_id)
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", special_tokens=[(eos, tokenizer.eos_id)]
    )
    backend.enable_truncation(tokenizer.context_length, direction=tokenizer.truncation_side)
    return backend


def _precompiled_charsmap(model_proto: bytes) -> bytes:
    """The normalizer's character map from a serialized ModelProto. sentencepiece's own
    generated protobuf module needs a newer protobuf runtime than onnx pins, and two
    fields of the wire format are all this needs."""
    spec = next((v for n, v in _fields(model_proto) if n == _NORMALIZER_SPEC), b"")
    charsmap = next((v for n, v in _fields(spec) if n == _PRECOMPILED_CHARSMAP), None)
    if not isinstance(charsmap, bytes) or not charsmap:
        raise ValueError("the SentencePiece model has no precompiled normalization map")
    return charsmap


def _fields(buffer: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each field of a protobuf message, in order."""
    at = 0
    while at < len(buffer):
        key, at = _varint(buffer, at)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, at = _varint(buffer, at)
            yield number, value
        elif wire_type == 2:
            size, at = _varint(buffer, at)
            yield number, buffer[at : at + size]
            at += size
        elif wire_type in (1, 5):
            at += 8 if wire_type == 1 else 4
        else:
            raise ValueError(f"unexpected protobuf wire type {wire_type}")


def _varint(buffer: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buffer[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at
