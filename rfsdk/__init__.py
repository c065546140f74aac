"""rfsdk: guarded local chat with the red-flag (<rf>) token over llama.cpp.

>>> from rfsdk import GuardedChat
>>> chat = GuardedChat("model-with-rf.gguf", policy="halt")
>>> for event in chat.stream("Hello!"):
...     if event.kind == "token":
...         print(event.text, end="")
"""

from .chat import GuardedChat
from .classifiers import Classifier, FunctionClassifier, LlamaJudge, TextClassifier
from .config import DEFAULT_REFUSAL, CrossCheckConfig, GuardConfig, SamplingConfig
from ._cross_check import CrossCheckMode
from .default_model import DefaultModel, default_model, default_model_path
from .errors import (
    ArgumentTypeError,
    ChatClosedError,
    ChatTemplateError,
    ConfigError,
    ContextOverflowError,
    ConversionError,
    EmptyMessageError,
    HistoryError,
    InvalidTextError,
    MissingRfTokenError,
    ModelFileError,
    ModelNotFoundError,
    ReentrantCallError,
    RfsdkError,
    RfTokenTypeError,
)
from .events import (
    Action,
    Check,
    EndEvent,
    ErrorEvent,
    Event,
    Flag,
    FlagEvent,
    FlagSource,
    Message,
    NoticeEvent,
    Reply,
    Timings,
    TokenEvent,
    Usage,
    Verdict,
    VerdictEvent,
)
from .model_source import resolve_model
from ._prompt import CHATML_TEMPLATE

__version__ = "0.1.0"

__all__ = [
    "Action",
    "ArgumentTypeError",
    "ChatClosedError",
    "ConfigError",
    "ConversionError",
    "CrossCheckConfig",
    "GuardConfig",
    "HistoryError",
    "CHATML_TEMPLATE",
    "ChatTemplateError",
    "Check",
    "Classifier",
    "ContextOverflowError",
    "CrossCheckMode",
    "DEFAULT_REFUSAL",
    "DefaultModel",
    "EmptyMessageError",
    "EndEvent",
    "ErrorEvent",
    "Event",
    "Flag",
    "FlagEvent",
    "FlagSource",
    "FunctionClassifier",
    "GuardedChat",
    "InvalidTextError",
    "LlamaJudge",
    "Message",
    "MissingRfTokenError",
    "ModelFileError",
    "ModelNotFoundError",
    "NoticeEvent",
    "ReentrantCallError",
    "Reply",
    "RfTokenTypeError",
    "RfsdkError",
    "SamplingConfig",
    "TextClassifier",
    "Timings",
    "TokenEvent",
    "Usage",
    "Verdict",
    "VerdictEvent",
    "default_model",
    "default_model_path",
    "resolve_model",
]
