"""The errors dkron-nats raises; the HTTP layer maps them to Dkron's status codes and plain-text bodies."""

from __future__ import annotations


class DkronError(Exception):
    """Root of every dkron-nats error. `str(e)` is the message a user sees."""


class PayloadError(DkronError):
    """The request body is not valid JSON of the right shape (400)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"Unable to parse payload: {detail}.")


class ValidationError(DkronError):
    """A job failed validation (400)."""

    def __init__(self, detail: str, field: str = "") -> None:
        self.detail = detail
        self.field = field
        """The job field at fault when the raiser knows it (`executor_config.command`); else guessed."""
        super().__init__(f"Job validation failed: {detail}.")


class JobNotFoundError(DkronError, LookupError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"job not found: {name}")


class ExecutionNotFoundError(DkronError, LookupError):
    def __init__(self, job: str, execution: str) -> None:
        super().__init__(f"execution {execution} of job {job} not found")


class ParentNotFoundError(DkronError, LookupError):
    def __init__(self) -> None:
        super().__init__("specified parent job not found")


class HasDependentsError(DkronError):
    def __init__(self, name: str) -> None:
        super().__init__(f"store: could not delete job {name} with dependent jobs, delete children first")


class PausedError(DkronError):
    def __init__(self) -> None:
        super().__init__("New job submissions are currently paused")


class RunError(DkronError):
    """A manual run could not start (Dkron answers 404)."""


class NoLeaderError(DkronError):
    def __init__(self) -> None:
        super().__init__(
            "no leader: the cluster has no scheduler leader right now, try again in a few seconds"
        )


class LeadershipLostError(DkronError):
    def __init__(self) -> None:
        super().__init__("this server no longer holds the leader lease; it does not launch anything")


class ConflictError(DkronError):
    """A concurrent change won; the caller may retry."""
