"""gunicorn's settings for rgzlabel (read from the working directory; command-line flags override).

Measured on two cores with PostgreSQL and the load generator on the same machine
(docs/benchmarks.md, "Labelling load"): synchronous workers, two per core, one thread each,
served the most classifications per second with the lowest p95. Threads (gthread) kept
connections alive but queued requests behind one another in a process (p95 twice as long),
and more processes than two per core only added memory. The app is stateless, so more
machines behind a load balancer scale the same way.
"""

import multiprocessing
import os

workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count()))
threads = int(os.environ.get("GUNICORN_THREADS", 1))
