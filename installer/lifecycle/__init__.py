"""A running appliance over time: upgrade, rollback, uninstall, status, the health check."""
