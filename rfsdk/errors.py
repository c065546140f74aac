"""Exceptions raised by rfsdk. Every message says what is wrong and what to do.

Every error rfsdk raises on purpose is an :class:`RfsdkError`, so ``except RfsdkError``
catches them all; anything else escaping rfsdk is a bug. Each class also derives from the
built-in exception that fits, so ``except ValueError`` keeps working::

    RfsdkError
    ├── ConfigError (ValueError)               a setting or argument has a bad value
    │   └── ArgumentTypeError (TypeError)      ... or the wrong type
    ├── ModelNotFoundError (FileNotFoundError) a model file is not there and cannot be fetched
    ├── ModelFileError (ValueError)            a model file is not a usable GGUF
    ├── MissingRfTokenError (ValueError)       the model has no <rf> token
    ├── RfTokenTypeError (ValueError)          <rf> is not a CONTROL token
    ├── ChatTemplateError (ValueError)         no chat template, or it cannot render
    ├── ContextOverflowError (ValueError)      the conversation does not fit the context
    ├── EmptyMessageError (ValueError)         a message is empty or whitespace
    ├── InvalidTextError (ValueError)          text that is not Unicode (a lone surrogate)
    ├── HistoryError (ValueError)              a history (set or loaded) send would not produce
    ├── ReentrantCallError (RuntimeError)      a chat called from inside its own callback
    ├── ChatClosedError (RuntimeError)         a chat used after close()
    └── ConversionError (ValueError)           rf-convert / rf-train cannot proceed

Failures inside a turn (a policy or callback that raises, a classifier that fails) are not
raised: the turn reports them as an ``ErrorEvent`` and ends cleanly.
"""

from __future__ import annotations


class RfsdkError(Exception):
    """Base class of every error rfsdk raises on purpose."""


class ConfigError(RfsdkError, ValueError):
    """A setting or argument has a value rfsdk cannot use (e.g. ``threshold=2.0``)."""


class ArgumentTypeError(ConfigError, TypeError):
    """A setting or argument has the wrong type (e.g. a number where a message belongs)."""


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


class InvalidTextError(RfsdkError, ValueError):
    """A message, system prompt or prefill is not valid Unicode text (e.g. a lone surrogate)."""


class HistoryError(RfsdkError, ValueError):
    """A history given to ``set_history`` or read by ``load_history`` is not one that turns produce."""


class ReentrantCallError(RfsdkError, RuntimeError):
    """A chat was called from inside one of its own callbacks."""


class ChatClosedError(RfsdkError, RuntimeError):
    """A chat was used after :meth:`GuardedChat.close`."""


class RfTokenTypeError(RfsdkError, ValueError):
    """The model has an <rf> token that is not a CONTROL token, so text could inject it."""


class ConversionError(RfsdkError, ValueError):
    """A model conversion or patch cannot proceed with the given inputs."""
