"""The backend contract suite: subclass ``AsyncBackendContract`` or ``BackendContract``
in a test module and provide a ``backend`` fixture (see ``readscale._async.contract``)."""

from readscale._async.contract import AsyncBackendContract
from readscale._sync.contract import BackendContract

__all__ = ["AsyncBackendContract", "BackendContract"]
