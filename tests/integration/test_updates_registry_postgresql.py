"""tests/unit/test_updates_registry.py on PostgreSQL: the same test functions, collected
here with the fixtures of registry_postgresql.py (a fresh database of the session's
cluster)."""

import pytest

from tests.integration.registry_postgresql import *  # noqa: F403
from tests.unit.test_updates_registry import *  # noqa: F403

pytestmark = pytest.mark.integration
