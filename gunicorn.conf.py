"""gunicorn's settings for rgzlabel (read from the working directory; command-line flags override).

Measured on two cores shared with PostgreSQL and the load generator (docs/benchmarks.md,
"Labelling load"): one, two or four synchronous workers per core served the same throughput
within noise; threads (gthread) queued requests behind one another in a process and doubled
p95. Two synchronous workers per core leave a core something to run while a request waits on
the database. The app is stateless, so more machines behind a load balancer scale the same way.
"""

import multiprocessing
import os

workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count()))
threads = int(os.environ.get("GUNICORN_THREADS", 1))
