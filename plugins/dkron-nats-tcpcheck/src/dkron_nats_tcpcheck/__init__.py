"""dkron-nats-tcpcheck: an executor plugin, shipped as its own package, that checks a TCP service.

Installing the package is all it takes: its ``pyproject.toml`` registers ``tcpcheck`` in the
``dkron_nats.executors`` entry-point group, where dkron-nats looks for executors.
"""

from dkron_nats_tcpcheck.executor import TcpCheckExecutor

__all__ = ["TcpCheckExecutor"]
