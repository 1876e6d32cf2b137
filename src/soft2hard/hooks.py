"""Named, always-removed forward hooks (the one place that registers hooks in soft2hard).

Hook names are dotted module paths plus ``.input`` or ``.output``, e.g. ``model.layers.3.output``. A hook is
``fn(tensor, *, name) -> tensor | None``: return ``None`` to observe, a tensor to replace. Decoder blocks return
a tensor in recent transformers and a tuple ``(hidden, ...)`` in older ones; hooks always see the hidden-state
tensor and the tuple is rebuilt around a replacement.

    with hooked(model, {"model.layers.3.output": patch}):
        model(**batch)          # every hook is gone after this block, even if the forward raises
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator

import torch

from soft2hard.errors import Soft2HardError

HookFn = Callable[..., "torch.Tensor | None"]


def layer_index(name: str) -> int:
    """The block index in a hook name such as ``model.layers.12.output`` (the last integer path part)."""
    numbers = re.findall(r"\.(\d+)(?=\.|$)", name)
    if not numbers:
        raise Soft2HardError(f"hook name {name!r} has no layer index")
    return int(numbers[-1])


def _split(name: str) -> tuple[str, str]:
    module, _, where = name.rpartition(".")
    if where not in ("input", "output") or not module:
        raise Soft2HardError(f"hook name {name!r} must end in '.input' or '.output'")
    return module, where


def _first_tensor(value):
    return value[0] if isinstance(value, tuple) else value


def _rebuild(original, replacement: torch.Tensor):
    if isinstance(original, tuple):
        return (replacement, *original[1:])
    return replacement


@contextlib.contextmanager
def hooked(model: torch.nn.Module, hooks: dict[str, HookFn]) -> Iterator[list]:
    """Register ``hooks`` on ``model`` for the duration of the block; always removes every handle."""
    modules = dict(model.named_modules())
    handles: list = []
    try:
        for name, fn in hooks.items():
            module_name, where = _split(name)
            if module_name not in modules:
                raise Soft2HardError(f"no module {module_name!r} in {type(model).__name__} (hook {name!r})")
            module = modules[module_name]
            if where == "output":
                def out_hook(mod, args, output, fn=fn, name=name):
                    new = fn(_first_tensor(output), name=name)
                    return None if new is None else _rebuild(output, new)
                handles.append(module.register_forward_hook(out_hook))
            else:
                def in_hook(mod, args, kwargs, fn=fn, name=name):
                    if args:
                        new = fn(args[0], name=name)
                        return None if new is None else ((new, *args[1:]), kwargs)
                    key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
                    new = fn(kwargs[key], name=name)
                    return None if new is None else (args, {**kwargs, key: new})
                handles.append(module.register_forward_pre_hook(in_hook, with_kwargs=True))
        yield handles
    finally:
        for handle in handles:
            handle.remove()
        handles.clear()
