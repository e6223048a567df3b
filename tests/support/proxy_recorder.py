"""A proxy.py plugin that records every upstream a client asked the proxy to reach.

proxy.py runs its acceptors in child processes, so the record is a file named by the
``PROXY_RECORD_FILE`` environment variable (inherited by the children), one line per upstream.
"""

from __future__ import annotations

import os
from typing import Any

from proxy.http.proxy import HttpProxyBasePlugin


class RecordUpstreams(HttpProxyBasePlugin):
    def before_upstream_connection(self, request: Any) -> Any:
        with open(os.environ["PROXY_RECORD_FILE"], "a", encoding="utf-8") as record:
            record.write(f"{request.method.decode()} {request.host.decode()}:{request.port}\n")
        return request
