"""Poll the state store until it holds at least N embedded texts: ``python -m tests.soak.embedded_poll DB N SECONDS``.

Exits 0 once the count is reached, 1 when ``SECONDS`` pass first. The soak runs this in a child
process while a worker it is about to SIGKILL writes the database: polling SQLite from the soak's
own process beside that writer killed the soak twice of SIGBUS inside SQLite's shared-memory
index (the cause inside SQLite is not established), and a poller that dies of it can be started
again where the soak could not.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from contextlib import closing

# Texts with a vector among the stored chunks' (the soak's own count of what was embedded).
EMBEDDED_TEXTS = (
    "SELECT count(DISTINCT c.embedding_hash) FROM pipeline_chunks c "
    "WHERE EXISTS (SELECT 1 FROM pipeline_vectors v WHERE v.text_hash = c.embedding_hash)"
)


def main(database: str, at_least: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    with closing(sqlite3.connect(database, timeout=60)) as connection:
        while time.monotonic() < deadline:
            if (connection.execute(EMBEDDED_TEXTS).fetchone()[0] or 0) >= at_least:
                return 0
            time.sleep(0.05)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
