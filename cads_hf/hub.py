"""Reaching the Hugging Face Hub: a fail-fast guard for names that are not local paths.

Without it, a mistyped local path that looks like a Hub id makes ``datasets`` / ``transformers``
retry the network for most of a minute before failing.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request

from huggingface_hub import constants, hf_hub_download

_PROBE_TIMEOUT_S = 3.0
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "name" or "owner/name"


def hub_offline() -> bool:
    """True when offline mode is requested; the environment is read too because the
    library constants are frozen at import time."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("HF_DATASETS_OFFLINE", ""))
    return bool(constants.HF_HUB_OFFLINE) or any(f.strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags)


def require_hub(name: str, what: str) -> None:
    """Raise ``ValueError`` within seconds unless ``name`` looks like a Hub id and the Hub answers."""
    if not _HUB_ID.match(name):
        raise ValueError(f"{what} {name!r}: no such local file or folder, and not a Hub id")
    hint = f"{what} {name!r} is not an existing local path"
    if hub_offline():
        raise ValueError(f"{hint} and the Hugging Face Hub is offline (HF_HUB_OFFLINE is set); pass a local path")
    try:
        urllib.request.urlopen(constants.ENDPOINT, timeout=_PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return  # any HTTP status means the endpoint is reachable
    except (OSError, ValueError) as err:  # URLError and socket timeouts are OSErrors
        raise ValueError(f"{hint} and the Hugging Face Hub ({constants.ENDPOINT}) is unreachable ({err}); pass a local path") from err


def download_file(repo_id: str, filename: str, revision: str | None = None, token: str | None = None) -> str:
    """One file of a Hub repository, after the fail-fast check."""
    require_hub(repo_id, "Repository")
    return hf_hub_download(repo_id, filename, revision=revision, token=token)


def resolve_file(path_or_repo_id: str, filename: str, revision: str | None = None, token: str | None = None) -> str:
    """`filename` in a local folder, a local file itself, or `filename` downloaded from a Hub repository."""
    if os.path.isdir(path_or_repo_id):
        return os.path.join(path_or_repo_id, filename)
    if os.path.isfile(path_or_repo_id):
        return path_or_repo_id
    return download_file(path_or_repo_id, filename, revision=revision, token=token)
