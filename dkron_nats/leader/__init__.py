"""The scheduler leader: lease, scheduling, dispatch and result processing."""
