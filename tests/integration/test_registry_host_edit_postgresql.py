"""tests/unit/test_registry_host_edit.py on PostgreSQL: the same test functions, collected
here with the fixtures of registry_postgresql.py (a fresh database of the session's
cluster), so that concurrent edits of one host are proved under its row lock too."""

from tests.integration.registry_postgresql import *  # noqa: F403
from tests.unit.test_registry_host_edit import *  # noqa: F403
