"""Run a callback right after a named module finishes importing (stdlib only, cheap to install).

ms-swift re-executes itself in child interpreters and torchrun ranks, and parses ``--rlhf_type``
before any plugin file is imported, so the APO registration must already be armed when those
interpreters start. The installed ``swift_apo.pth`` arms it; this module is the mechanism.
"""
import importlib.abc
import sys
from typing import Callable, Dict, List

_callbacks: Dict[str, List[Callable]] = {}


class _CallbackLoader(importlib.abc.Loader):

    def __init__(self, loader, callbacks: List[Callable]):
        self._loader = loader
        self._callbacks = callbacks

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        for callback in self._callbacks:
            callback(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):

    def find_spec(self, fullname, path, target=None):
        callbacks = _callbacks.pop(fullname, None)
        if callbacks is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _CallbackLoader(spec.loader, callbacks)
                return spec
        return None


_finder = _PostImportFinder()


def when_imported(module_name: str, callback: Callable) -> None:
    """Call ``callback(module)`` once ``module_name`` is imported (now, if it already is)."""
    module = sys.modules.get(module_name)
    if module is not None:
        callback(module)
        return
    _callbacks.setdefault(module_name, []).append(callback)
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
