"""One verb for every method: ``compress(model, config, data) -> model`` (torchao style).

A method is a config dataclass plus a ``CompressionMethod`` subclass registered for that
config type. ``compress`` mutates the model in place by swapping modules, appends what
it did to ``model.compression_log`` (the manifest export replays) and returns the model.
Methods compose by calling ``compress`` again (e.g. MEC embeddings, then low-rank MLP).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Generic, TypedDict, TypeVar

from ctrzip.data.dataset import EncodedDataset
from ctrzip.models.base import CTRModel
from ctrzip.registry import Registry

C = TypeVar("C")


class TargetDecision(TypedDict):
    """What a method did with one target (a table or a Linear), in ``report["targets"]``.

    ``target`` is the module's fqn (``embedding.tables.C1``, ``mlp.net.0``); ``kind`` is
    ``"table"`` or ``"linear"``; ``action`` is ``"compressed"`` or ``"kept"``; ``reason`` says why
    a target was kept (e.g. "PQ would not be smaller: 5,120 B >= 4,096 B"); bytes are those of the
    saved tensors before and after (equal when kept).
    """

    target: str
    kind: str
    action: str
    reason: str
    bytes_before: int
    bytes_after: int


class MetricsReport(TypedDict, total=False):
    """Validation metrics in ``report["metrics"]``: ``before`` compression, ``direct`` (right after
    the swap, the plug-in model) and ``final`` (after the fine-tune; equal to ``direct`` when the
    fine-tune did not beat it or did not run). Each is ``{"auc": float, "logloss": float, "n": int}``
    or None when the method ran without a validation split."""

    before: dict[str, float] | None
    direct: dict[str, float] | None
    final: dict[str, float] | None


class CompressionMethod(abc.ABC, Generic[C]):
    """Base of a compression method.

    ``run`` swaps modules on ``model`` and returns a JSON-able report (sizes, AUCs,
    diagnostics). ``key`` is the registry/CLI name (``mec``, ``lowrank``, ``svd`` ...).

    Every report carries, beside method-specific keys: ``targets`` (a list of
    :class:`TargetDecision`, one per considered target), ``metrics`` (:class:`MetricsReport`)
    and ``bytes`` (``{"before": int, "after": int}``, from ``ctrzip.compression.sizes``).
    """

    key: ClassVar[str] = ""
    config_class: ClassVar[type] = object

    def __init__(self, config: C) -> None:
        self.config = config

    @abc.abstractmethod
    def run(self, model: CTRModel, data: EncodedDataset | None) -> dict[str, Any]: ...


METHODS: Registry[type[CompressionMethod[Any]]] = Registry("compression method")
_BY_CONFIG: dict[type, type[CompressionMethod[Any]]] = {}


def register_method(key: str, config_cls: type):  # type: ignore[no-untyped-def]
    """Class decorator: register a method under ``key`` for configs of type ``config_cls``."""

    def deco(cls: type[CompressionMethod[Any]]) -> type[CompressionMethod[Any]]:
        cls.key = key
        cls.config_class = config_cls
        METHODS.register(key)(cls)
        _BY_CONFIG[config_cls] = cls
        return cls

    return deco


def method_for(config: Any) -> CompressionMethod[Any]:
    import ctrzip.compression  # noqa: F401  (registers methods)

    try:
        return _BY_CONFIG[type(config)](config)
    except KeyError:
        known = ", ".join(c.__name__ for c in _BY_CONFIG)
        raise TypeError(f"no compression method for {type(config).__name__} (known: {known})") from None


def compress(model: CTRModel, config: Any, data: EncodedDataset | None = None) -> CTRModel:
    """Compress ``model`` in place with the method registered for ``config``; returns it.

    The method's report is appended to ``model.compression_log`` as
    ``{"method": key, "config": {...}, "report": {...}}``. Every method applies one rule
    (``ctrzip.compression.shrink``): a target whose compressed form would not be smaller in bytes
    stays as it is, with its reason in ``report["targets"]``.

    Raises:
        CompressionError: nothing would shrink under ``config`` (the error's ``targets`` lists each
            decision), or a target the config names literally cannot shrink; raised before the
            model is changed.
    """
    from ctrzip.config import to_dict

    method = method_for(config)
    report = method.run(model, data)
    log = getattr(model, "compression_log", [])
    log.append({"method": method.key, "config": to_dict(config), "report": report})
    model.compression_log = log
    return model
