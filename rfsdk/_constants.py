"""Every environment variable rfsdk reads, in one place.

Each is read when asked, not at import, so an application (or a test) may set it before
the call it affects. Offline mode is huggingface_hub's own: ``HF_HUB_OFFLINE`` (or
``TRANSFORMERS_OFFLINE``) as ``huggingface_hub.constants`` read it, with its truthy values,
so rfsdk and the hub client never disagree about it.

========================  ===============================================================
``RFSDK_CACHE``           folder for downloaded and built models (default: the user cache)
``RFSDK_BASE_MODEL``      path of the base GGUF the default model is built on
``RFSDK_DEFAULT_MODEL``   "trained" or "demo": which default model to use
``HF_HUB_OFFLINE``        no downloads from Hugging Face (read by huggingface_hub)
``NO_COLOR``              the commands print no colours
========================  ===============================================================
"""

from __future__ import annotations

import os


def cache_folder() -> str | None:
    """``$RFSDK_CACHE``, or None when unset or empty."""
    return os.environ.get("RFSDK_CACHE") or None


def base_model_file() -> str | None:
    """``$RFSDK_BASE_MODEL``, or None when unset or empty."""
    return os.environ.get("RFSDK_BASE_MODEL") or None


def default_model_choice() -> str:
    """``$RFSDK_DEFAULT_MODEL``, stripped and lower-cased ("" when unset)."""
    return os.environ.get("RFSDK_DEFAULT_MODEL", "").strip().lower()


def hf_offline() -> bool:
    """Whether Hugging Face downloads are off (huggingface_hub's ``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants  # imported when needed: it is slow to import

    return bool(constants.HF_HUB_OFFLINE)


def no_color() -> bool:
    """Whether ``$NO_COLOR`` asks the commands for plain text."""
    return bool(os.environ.get("NO_COLOR"))
