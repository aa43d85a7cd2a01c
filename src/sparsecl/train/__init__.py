"""The one training loop over a stream of tasks, its hooks, checkpoints and logging.

The package is also callable: ``sparsecl.train(config, out_dir)`` is ``sparsecl.train.api.train`` (a
package attribute named ``train`` could not be a function, since importing ``sparsecl.train.<module>``
binds the name to this package; a callable package keeps both meanings).
"""

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        from sparsecl.train.api import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
