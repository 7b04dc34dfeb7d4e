"""tests/unit/test_bmc.py's registry tests on PostgreSQL: the same test functions, collected
here with the fixtures of registry_postgresql.py (a fresh database of the session's
cluster)."""

from tests.integration.registry_postgresql import *  # noqa: F403
from tests.unit.test_bmc import (
    test_a_bad_bmc_spec_is_refused_before_anything_is_stored,
    test_a_hosts_bmc_goes_with_the_host_and_can_be_removed,
    test_a_new_key_is_not_made_beside_passwords_another_key_sealed,
    test_a_stored_bmc_is_sealed_in_the_database_and_opens_with_the_directory_key,
    test_power_without_a_bmc_says_how_to_give_one,
)

__all__ = [
    "test_a_bad_bmc_spec_is_refused_before_anything_is_stored",
    "test_a_hosts_bmc_goes_with_the_host_and_can_be_removed",
    "test_a_new_key_is_not_made_beside_passwords_another_key_sealed",
    "test_a_stored_bmc_is_sealed_in_the_database_and_opens_with_the_directory_key",
    "test_power_without_a_bmc_says_how_to_give_one",
]
