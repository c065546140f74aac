"""Exceptions raised by rfsdk. Every message says what is wrong and what to do."""

from __future__ import annotations


class RfsdkError(Exception):
    """Base class of every error rfsdk raises on purpose."""


class ModelNotFoundError(RfsdkError, FileNotFoundError):
    """A model file could not be found locally or fetched."""


class ModelFileError(RfsdkError, ValueError):
    """A model file exists but is not a usable GGUF (not GGUF, truncated, corrupt)."""


class MissingRfTokenError(RfsdkError, ValueError):
    """The model has no <rf> token, so it cannot be guarded."""


class ChatTemplateError(RfsdkError, ValueError):
    """The model's chat template is missing or cannot render the conversation."""


class ContextOverflowError(RfsdkError, ValueError):
    """The conversation does not fit into the model's context window."""


class EmptyMessageError(RfsdkError, ValueError):
    """A chat message was empty or only whitespace."""


class InvalidMessageError(RfsdkError, ValueError):
    """A history message is malformed: not a role and text, or a role a history cannot hold."""


class InvalidTextError(RfsdkError, ValueError):
    """A message, system prompt or prefill is not valid Unicode text (e.g. a lone surrogate)."""


class ReentrantCallError(RfsdkError, RuntimeError):
    """A chat was called from inside one of its own callbacks."""


class RfTokenTypeError(RfsdkError, ValueError):
    """The model has an <rf> token that is not a CONTROL token, so text could inject it."""


class ConversionError(RfsdkError, ValueError):
    """A model conversion or patch cannot proceed with the given inputs."""
