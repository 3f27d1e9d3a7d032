"""Reaching the Hugging Face Hub: fail fast, with a useful message, where it cannot be reached."""

from __future__ import annotations

import socket
from functools import lru_cache
from urllib.parse import urlparse

from huggingface_hub import constants, hf_hub_download


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint accepts a TCP connection; False at once when HF_HUB_OFFLINE is set.

    Without this check an unreachable Hub costs about 46 s of retries per call before it fails.
    """
    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_hub(name: str, what: str) -> None:
    """Raise a clear error when `name` (not a local path) would need the Hub and the Hub is out of reach."""
    if not hub_reachable():
        raise ValueError(
            f"{what} {name!r} is not a local path, and the Hugging Face Hub cannot be reached "
            "(offline or HF_HUB_OFFLINE=1). Pass a local path instead."
        )


def download_file(repo_id: str, filename: str, revision: str | None = None, token: str | None = None) -> str:
    require_hub(repo_id, "Repository")
    return hf_hub_download(repo_id, filename, revision=revision, token=token)
