"""Model registry in the style of timm: ``@register_model``, ``create_model``, ``list_models``."""
from __future__ import annotations

import difflib
import inspect
from typing import Callable

from torch import nn

from .contract import check_model_class

_REGISTRY: dict[str, type[nn.Module]] = {}


def register_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make ``create_model(name, **cfg)`` build this class."""
    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        check_model_class(cls)
        _REGISTRY[name] = cls
        cls.model_name = name
        return cls
    return wrap


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_REGISTRY)


def model_class(name: str) -> type[nn.Module]:
    """The registered class for ``name``; an unknown name raises with the close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}.{hint}") \
            from None


def model_options(name: str) -> list[str]:
    """The constructor options of a registered model, in signature order."""
    return [p for p in inspect.signature(model_class(name).__init__).parameters if p != "self"]


def build_model(name: str, **cfg) -> nn.Module:
    """Instantiate a registered model; unknown keyword arguments raise a readable error."""
    accepted = model_options(name)
    unknown = sorted(set(cfg) - set(accepted))
    if unknown:
        raise TypeError(f"{name}: unknown option(s) {unknown}; accepted: {accepted}")
    return model_class(name)(**cfg)
