"""dkron-nats: a distributed, fault-tolerant cron on NATS JetStream, compatible with Dkron's API."""

from dkron_nats.version import VERSION

__all__ = ("VERSION",)
