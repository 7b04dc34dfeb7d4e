"""tests/unit/test_milestones.py on PostgreSQL: the same test functions, collected here
with the fixtures of registry_postgresql.py (a fresh database of the session's cluster)."""

from tests.integration.registry_postgresql import *  # noqa: F403
from tests.unit.test_milestones import *  # noqa: F403
