"""tests/unit/test_web_console.py on PostgreSQL: the same test functions (the poll's cursor
and overlap, the pages' registry reads, the actions), collected here with the fixtures of
registry_postgresql.py (a fresh database of the session's cluster)."""

from tests.integration.registry_postgresql import *  # noqa: F403
from tests.unit.test_web_console import *  # noqa: F403
