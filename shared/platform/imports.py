"""The imports made after start-up, one thread at a time.

The worker runs invocations on a thread pool, so two functions' first invocations import their handlers and
the SDKs behind them at the same moment. CPython holds a module's import lock while it imports the module's
parent package, so a thread first importing ``azure.core.exceptions`` while another first imports
``azure.core`` (whose ``__init__`` imports ``azure.core.exceptions``) each holds the lock the other needs, and
one of them fails with a ``_DeadlockError``. Every import made after start-up takes this re-entrant lock
instead: concurrent first invocations load their modules one after the other. Once a module is loaded,
importing it again under the lock costs a dictionary lookup. Hold it only to import (and to build what imports
as it is built): a lock taken under it could be waited for by a thread that waits for this one.
"""

import threading

late_imports = threading.RLock()
