"""Settings variant used only by the load benchmark to measure persistent database connections.

``config.settings`` opens a new PostgreSQL connection per request (CONN_MAX_AGE=0 from
``database_from_url``).  ``python bench/loadtest.py run --settings bench.load_settings`` keeps
connections open for LOUPE_CONN_MAX_AGE seconds instead, everything else unchanged, so the two runs
show what per-request connections cost (docs/bench-load.md).
"""
from config.settings import *  # noqa: F403
from config.settings import DATABASES
from config.env import env_int

DATABASES["default"]["CONN_MAX_AGE"] = env_int("LOUPE_CONN_MAX_AGE", 60, minimum=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
