"""Persistent classes: objects pickle together with the source code of their class's module.

The same pickle-level contract as EDM's torch_utils.persistence (format version 6), reimplemented
for the tests: ``__reduce__`` returns (_reconstruct_persistent_obj, (meta,), None).
"""

import copy
import inspect
import sys
import types

VERSION = 6


def _reconstruct_persistent_obj(meta):
    module = types.ModuleType("_persistent_" + str(abs(hash(meta["module_src"]))))
    exec(meta["module_src"], module.__dict__)
    cls = persistent_class(module.__dict__[meta["class_name"]])
    obj = cls.__new__(cls)
    obj.__setstate__(meta["state"]) if hasattr(obj, "__setstate__") else obj.__dict__.update(meta["state"])
    return obj


def persistent_class(orig):
    source = inspect.getsource(sys.modules[orig.__module__])

    class Persistent(orig):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_args = copy.deepcopy(args)
            self._init_kwargs = copy.deepcopy(kwargs)

        def __reduce__(self):
            fields = list(super().__reduce__()) + [None, None, None]
            meta = dict(type="class", version=VERSION, module_src=source, class_name=orig.__name__, state=fields[2])
            return _reconstruct_persistent_obj, (meta,), None

    Persistent.__name__ = Persistent.__qualname__ = orig.__name__
    return Persistent
