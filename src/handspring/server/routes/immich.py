"""Immich's machine-learning contract (`GET /`, `GET /ping`, `POST /predict`), so an Immich
server pointed here gets its smart-search vectors from Handspring.

Only Immich's `clip` task is offered; its other tasks (facial recognition, OCR...) are
refused by name, so that Immich's logs say which job to turn off or route elsewhere.

A `modelName` is found among the served models (by name, alias or repo id, with or without
the `immich-app/` prefix), else as the hub repo `immich-app/<name>` when that is already in
the Hugging Face cache (never downloaded by a request); such a folder is Immich's own ONNX
export and preprocessing, so its vectors match a library Immich indexed.
"""

from __future__ import annotations

import io
import json
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, Form, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from PIL import Image

from handspring.server.config import ModelSpec
from handspring.server.errors import RequestError
from handspring.server.inputs.item_inputs import ItemRef
from handspring.server.state import ServerState

router = APIRouter(tags=["Immich ML"])

IMMICH_NAMESPACE = "immich-app/"
# Immich prefixes NLLB-CLIP queries with the FLORES-200 code of the user's language
# (Weblate's codes, as Immich's web client sends them; its own table, for equal vectors).
WEBLATE_TO_FLORES200 = {
    "af": "afr_Latn", "ar": "arb_Arab", "az": "azj_Latn", "be": "bel_Cyrl", "bg": "bul_Cyrl",
    "ca": "cat_Latn", "cs": "ces_Latn", "da": "dan_Latn", "de": "deu_Latn", "el": "ell_Grek",
    "en": "eng_Latn", "es": "spa_Latn", "et": "est_Latn", "fa": "pes_Arab", "fi": "fin_Latn",
    "fr": "fra_Latn", "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn", "hu": "hun_Latn",
    "hy": "hye_Armn", "id": "ind_Latn", "it": "ita_Latn", "ja": "jpn_Hira", "kmr": "kmr_Latn",
    "ko": "kor_Hang", "lb": "ltz_Latn", "lt": "lit_Latn", "lv": "lav_Latn", "mfa": "zsm_Latn",
    "mk": "mkd_Cyrl", "mn": "khk_Cyrl", "mr": "mar_Deva", "ms": "zsm_Latn", "nb-NO": "nob_Latn",
    "nn": "nno_Latn", "nl": "nld_Latn", "pl": "pol_Latn", "pt-BR": "por_Latn", "pt": "por_Latn",
    "ro": "ron_Latn", "ru": "rus_Cyrl", "sk": "slk_Latn", "sl": "slv_Latn", "sr-Cyrl": "srp_Cyrl",
    "sv": "swe_Latn", "ta": "tam_Taml", "te": "tel_Telu", "th": "tha_Thai", "tr": "tur_Latn",
    "uk": "ukr_Cyrl", "ur": "urd_Arab", "vi": "vie_Latn", "zh-CN": "zho_Hans",
    "zh-Hans": "zho_Hans", "zh-TW": "zho_Hant",
}  # fmt: skip
DEFAULT_FLORES = "eng_Latn"
CLIP_TYPES = {"visual": "image", "textual": "text"}


@router.get("/")
async def root() -> dict[str, str]:
    return {"message": "Immich ML"}


@router.get("/ping", response_class=PlainTextResponse)
async def ping() -> str:
    return "pong"


# Served by routes.predict, which tells Immich's forms from TEI's JSON bodies on this path.
async def predict(
    request: Request,
    entries: Annotated[str, Form(description='e.g. {"clip": {"visual": {"modelName": ...}}}')],
    image: Annotated[bytes | None, File()] = None,
    text: Annotated[str | None, Form()] = None,
) -> JSONResponse:
    state = ServerState.of(request)
    model_type, model_name, options = _clip_entry(entries)
    if image is not None:
        inputs: bytes | str = image
    elif text is not None:
        inputs = text
    else:
        raise RequestError(400, "Either image or text must be provided")
    modality = CLIP_TYPES[model_type]
    if (modality == "image") != isinstance(inputs, bytes):
        given = "an image" if isinstance(inputs, bytes) else "a text"
        raise RequestError(422, f"clip.{model_type} was asked for, but {given} was sent")
    spec = await _served(state, model_name)
    if isinstance(inputs, bytes):
        width, height = _image_size(inputs)
        result = await state.service.embed_items(
            spec, "image", [ItemRef("image", inputs)], param="image"
        )
        return JSONResponse(
            {"clip": _serialize(result.vectors[0]), "imageHeight": height, "imageWidth": width}
        )
    # Immich cleans the text's whitespace before it prefixes the language code.
    query = _language_prefix(model_name, options.get("language")) + " ".join(inputs.split())
    # Blank text cleans to "", which Immich's service embeds (an empty `text` field never
    # gets here: routes.predict reads it as none given, as FastAPI does).
    texts = await state.service.embed_texts(spec, [query], param="text", empty_text_ok=True)
    return JSONResponse({"clip": _serialize(texts.vectors[0])})


def _clip_entry(entries: str) -> tuple[str, str, dict[str, Any]]:
    """(type, model name, options) of the one clip entry; other tasks are refused by name."""
    try:
        request = json.loads(entries)
        tasks = {task: dict(types) for task, types in request.items()}
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        raise RequestError(422, "Invalid request format.") from None
    if other := [t for t in tasks if t != "clip"]:
        raise RequestError(
            422,
            f"task {other[0]!r} is not offered here: Handspring serves Immich's smart search "
            "(clip) only; turn the other jobs off in Immich (Administration > Settings > "
            "Machine Learning) or send them to Immich's own machine-learning service",
        )
    clip = tasks.get("clip", {})
    if len(clip) != 1 or next(iter(clip)) not in CLIP_TYPES:
        raise RequestError(422, "Invalid request format.")
    model_type, entry = next(iter(clip.items()))
    if not isinstance(entry, dict) or not isinstance(entry.get("modelName"), str):
        raise RequestError(422, "Invalid request format.")
    options = entry.get("options") or {}
    if not isinstance(options, dict):
        raise RequestError(422, "Invalid request format.")
    return model_type, entry["modelName"], options


async def _served(state: ServerState, model_name: str) -> ModelSpec:
    """The served model of that name, else Immich's repo of it from the hub cache."""
    bare = model_name.removeprefix(IMMICH_NAMESPACE)
    for candidate in (model_name, bare, IMMICH_NAMESPACE + bare):
        if (spec := state.pool.named(candidate)) is not None:
            return spec
    repo = IMMICH_NAMESPACE + bare
    if not _in_hub_cache(repo):
        served = ", ".join(state.pool.specs)
        raise RequestError(
            404,
            f"model {model_name!r} is not served here (served: {served}) and {repo} is not "
            f"in the Hugging Face cache: run `handspring download {repo}`, or serve it with "
            f"--model {bare}={repo}",
        )
    return await state.pool.adopt(ModelSpec(bare, repo, "fp32"))


def _in_hub_cache(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, "config.json"), str)


def _image_size(data: bytes) -> tuple[int, int]:
    """The stored size, as Immich reports it (no EXIF rotation): from the header alone."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            return opened.size
    except Exception as exc:  # Pillow raises many kinds for bytes that are not an image
        raise RequestError(422, f"image: not a readable image ({exc})", param="image") from None


def _language_prefix(model_name: str, language: object) -> str:
    if not model_name.removeprefix(IMMICH_NAMESPACE).startswith("nllb") or not language:
        return ""
    code = str(language)
    return WEBLATE_TO_FLORES200.get(code) or WEBLATE_TO_FLORES200.get(
        code.split("-")[0], DEFAULT_FLORES
    )


def _serialize(vector: np.ndarray) -> str:
    """A JSON array in a string, as Immich's service answers (its server stores it as is);
    each value in float32's shortest form."""
    return "[" + ",".join(str(v) for v in vector.astype(np.float32)) + "]"
