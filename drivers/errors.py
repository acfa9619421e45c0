"""Driver errors are OSErrors with a real errno, so the kernel passes them to apps unchanged.

`OSError(errno.ENOENT, ...)` is a FileNotFoundError, `OSError(errno.ETIMEDOUT, ...)` a
TimeoutError, `OSError(errno.ECONNRESET, ...)` a ConnectionResetError: Python picks the subclass
from the errno. Device answers carry an errno name (EINVAL, ENOMEM, EIO, ...), see
`sim_hw.device_ops` and `docs/hil-protocol.md`.
"""
from __future__ import annotations

import errno


def device_error(code: str, message: str) -> OSError:
    """The OSError (of the right subclass) for an errno name; unknown names become EIO."""
    number = getattr(errno, code, None)
    if not isinstance(number, int):
        number = errno.EIO
        message = f"[{code}] {message}"
    return OSError(number, message)
