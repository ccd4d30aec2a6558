"""The backend contract suite: subclass ``AsyncBackendContract`` or ``BackendContract``
in a test module and provide a ``backend`` fixture (see ``readscale.testing._async.backend_contract``)."""

from readscale.testing._async.backend_contract import AsyncBackendContract
from readscale.testing._sync.backend_contract import BackendContract

__all__ = ["AsyncBackendContract", "BackendContract"]
