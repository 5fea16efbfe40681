"""`handspring serve` whose engine runs wait while a file exists, for tests that need
requests held in flight in a server process of its own:

    python -m tests.server.held_serve HOLD_FILE [serve options...]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from handspring.server.command import serve
from handspring.server.engine.model_pool import ModelPool
from tests.support.gates import Run, hold_while_exists


def main() -> None:
    hold = hold_while_exists(Path(sys.argv[1]))
    make = ModelPool.batcher

    def batcher(self: ModelPool, loaded: Any, modality: str, variant: str | None, run: Run) -> Any:
        return make(self, loaded, modality, variant, hold(run))

    ModelPool.batcher = batcher  # type: ignore[method-assign]
    serve.main(sys.argv[2:], prog_name="handspring serve")


if __name__ == "__main__":
    main()
