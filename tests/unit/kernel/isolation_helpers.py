"""Images of process-isolated apps for the kernel tests (the harness's Signer makes threaded ones)."""
from __future__ import annotations

import textwrap
from typing import Any

from orbitos.kernel.image import build_image
from tests.unit.kernel.harness import SCRIPT_APP, Signer, manifest_toml


def isolated_image(signer: Signer, code: str = SCRIPT_APP, name: str = "script",
                   isolation: str = "process", version: str = "1.0.0", **manifest: Any) -> bytes:
    """Like `signer.image`, with the manifest's isolation and version set."""
    signer._count += 1
    app = signer.directory / f"iso{signer._count}"
    app.mkdir()
    text = manifest_toml(name, **manifest).replace('version = "1.0.0"', f'version = "{version}"')
    (app / "manifest.toml").write_text(f'isolation = "{isolation}"\n' + text)
    (app / "app.py").write_text(textwrap.dedent(code))
    return build_image(app, signer.key)
