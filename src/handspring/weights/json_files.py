"""Reading a model's JSON files, with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from handspring.errors import CheckpointError


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(str(path), "file not found") from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(str(path), f"not valid JSON ({exc})") from exc
