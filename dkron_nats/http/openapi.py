"""`GET /openapi.json`: an OpenAPI 3.1 document of the API, built from the routes the app really serves.

The handlers answer with raw `Response`s in Dkron's exact shapes, which Litestar's own generator cannot see,
so each operation is described here by hand (`OPERATIONS`, keyed by method and path) and the document is
assembled at request time from `request.app.routes`: a route that is served but not described still appears
(marked `x-undocumented`, which the tests refuse), and nothing that is not served is listed. CORS preflight
(`OPTIONS` on any path, answered 204 by the middleware) is left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.routes import HTTPRoute

from dkron_nats.http.ratelimit import is_limited
from dkron_nats.jobinput import CONCURRENCY_POLICIES, HISTORY_LIMIT_MAX, MISFIRE_MAX_LIMIT, NOTIFY_ON
from dkron_nats.jobs import SORTABLE
from dkron_nats.misfire import MISFIRE_POLICIES
from dkron_nats.models import DEPENDENCY_CONDITIONS
from dkron_nats.names import MAX_NAME_LENGTH
from dkron_nats.schedule import DST_GAP_POLICIES, DST_OVERLAP_POLICIES
from dkron_nats.version import VERSION

Schema = dict[str, Any]
OPENAPI_VERSION = "3.1.0"
UNDOCUMENTED = "x-undocumented"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
"""Methods that are documented; OPTIONS (CORS preflight) and HEAD are not."""


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
DATE_TIME: Schema = {"type": "string", "format": "date-time"}
STRING_MAP: Schema = {"type": "object", "additionalProperties": STRING}
SAFE_NAME_PATTERN = "^[A-Za-z0-9_-]{1,64}$"
PARAMETER_NAME: Schema = {
    "type": "string",
    "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,127}$",
    "description": "An environment variable name, not DKRON_NATS_*",
}
JOB_NAME_PATTERN = "^[a-z0-9_-]+$"
"""The ASCII part of Dkron's rule (lower-case Unicode letters are allowed too, see the description)."""


# --------------------------------------------------------------------------- component schemas


def _object(properties: dict[str, Schema], required: Iterable[str] | None = None) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
    }


def _job_shared() -> dict[str, Schema]:
    """Fields whose type is the same in a job sent and a job answered."""
    return {
        "displayname": STRING,
        "timezone": {**STRING, "description": 'An IANA zone name; "", "UTC" and "Local" are accepted'},
        "schedule": {**STRING, "description": "A cron expression or a descriptor (@every 5m, @manually...)"},
        "owner": STRING,
        "owner_email": STRING,
        "disabled": BOOLEAN,
        "tags": _nullable(
            {
                "type": "object",
                "propertyNames": {"pattern": SAFE_NAME_PATTERN},
                "additionalProperties": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}(:[0-9]{1,6})?$"},
                "description": "Target nodes: `key: value[:count]`",
            }
        ),
        "metadata": _nullable(STRING_MAP),
        "parent_job": STRING,
        "processors": _nullable(
            {
                "type": "object",
                "propertyNames": {"pattern": SAFE_NAME_PATTERN},
                "additionalProperties": STRING_MAP,
            }
        ),
        "executor": STRING,
        "executor_config": _nullable(STRING_MAP),
        "ephemeral": BOOLEAN,
        "starting_deadline": {**STRING, "description": 'A duration such as "5m"; "" is the server default'},
        "retry_on_other_node": BOOLEAN,
        "history_max_age": {
            **STRING,
            "description": 'A duration of at least 1s such as "720h"; "" keeps all',
        },
    }


def _job_input() -> Schema:
    """What POST/PATCH/PUT accept: unknown fields are ignored and `null` leaves a field unset."""
    fields: dict[str, Schema] = {
        name: _nullable(schema) if "anyOf" not in schema else schema for name, schema in _job_shared().items()
    }
    fields |= {
        "name": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_NAME_LENGTH,
            "pattern": JOB_NAME_PATTERN,
            "description": "Lower-case letters (any script), digits, '_' and '-'",
        },
        "id": _nullable(STRING),
        "success_count": _nullable(INTEGER),
        "error_count": _nullable(INTEGER),
        "last_success": _nullable({**STRING, "description": "RFC 3339, or 2006-01-02T15:04 (UTC)"}),
        "last_error": _nullable(STRING),
        "retries": _nullable({"type": "integer", "minimum": 0}),
        "dependent_jobs": _nullable({"type": "array", "items": STRING}),
        "concurrency": _nullable({"type": "string", "enum": [*CONCURRENCY_POLICIES, ""]}),
        "status": _nullable(STRING),
        "next": _nullable(STRING),
        "starts_at": _nullable(STRING),
        "expires_at": _nullable(STRING),
        "misfire_policy": _nullable({"type": "string", "enum": [*MISFIRE_POLICIES, ""]}),
        "misfire_max": _nullable({"type": "integer", "minimum": 1, "maximum": MISFIRE_MAX_LIMIT}),
        "retry_backoff": _nullable(_ref("RetryBackoff")),
        "depends_on": _nullable({"type": "array", "items": _ref("Dependency")}),
        "history_limit": _nullable({"type": "integer", "minimum": 0, "maximum": HISTORY_LIMIT_MAX}),
        "dst_policy": _nullable(_ref("DstPolicyInput")),
        "notify_on": _nullable({"type": "string", "enum": [*NOTIFY_ON, ""]}),
        "parameters": _nullable(
            {
                "type": "array",
                "items": {"anyOf": [PARAMETER_NAME, _ref("ParameterInput")]},
                "description": 'Variables a run may set; "DATE" stands for {"name": "DATE", "secret": false}',
            }
        ),
    }
    return {**_object(fields, required=["name"]), "description": _job_input.__doc__}


def _job() -> Schema:
    """A job as the API answers it (the create/update answer echoes the request as parsed)."""
    fields: dict[str, Schema] = {
        "id": STRING,
        "name": STRING,
        **_job_shared(),
        "success_count": INTEGER,
        "error_count": INTEGER,
        "last_success": _nullable(DATE_TIME),
        "last_error": _nullable(DATE_TIME),
        "retries": INTEGER,
        "dependent_jobs": _nullable({"type": "array", "items": STRING}),
        "concurrency": {"type": "string", "enum": [*CONCURRENCY_POLICIES, ""]},
        "status": STRING,
        "next": {**DATE_TIME, "description": "0001-01-01T00:00:00Z when nothing is scheduled"},
        "starts_at": _nullable(DATE_TIME),
        "expires_at": _nullable(DATE_TIME),
        "misfire_policy": {"type": "string", "enum": list(MISFIRE_POLICIES)},
        "misfire_max": INTEGER,
        "retry_backoff": _nullable(_ref("RetryBackoff")),
        "depends_on": _nullable({"type": "array", "items": _ref("Dependency")}),
        "depended_on_by": _nullable(
            {"type": "array", "items": STRING, "description": "Jobs whose depends_on names this one"}
        ),
        "history_limit": INTEGER,
        "dst_policy": _ref("DstPolicy"),
        "notify_on": {"type": "string", "enum": list(NOTIFY_ON)},
        "parameters": {"type": "array", "items": _ref("Parameter"), "description": "Variables a run may set"},
        "partition": {
            **INTEGER,
            "description": "The partition whose owner schedules it (GET /v1/partitions)",
        },
    }
    # The create/update echo has no derived fields: depended_on_by and partition are in stored jobs only.
    required = [name for name in fields if name not in ("depended_on_by", "partition")]
    return {**_object(fields, required), "description": _job.__doc__}


def _execution(list_view: bool) -> Schema:
    fields: dict[str, Schema] = {
        "id": STRING,
        "job_name": STRING,
        "started_at": {
            **DATE_TIME,
            "description": "0001-01-01T00:00:00Z while it waits on its node for a free execution slot",
        },
        "finished_at": {**DATE_TIME, "description": "0001-01-01T00:00:00Z while running"},
        "success": BOOLEAN,
        "output": STRING,
        "node_name": STRING,
        "group": INTEGER,
        "attempt": INTEGER,
        "scheduled_at": _nullable(DATE_TIME),
        "status": {"type": "string", "enum": ["running", "success", "failed", "missed", "skipped"]},
    }
    required = ["id", "job_name", "started_at", "finished_at", "success", "scheduled_at", "status"]
    if list_view:
        fields["output_truncated"] = BOOLEAN
        required.append("output_truncated")
    return _object(fields, required)


def _member(with_ids: bool) -> Schema:
    fields: dict[str, Schema] = {
        "Name": STRING,
        "Addr": STRING,
        "Port": INTEGER,
        "Tags": STRING_MAP,
        "Status": {"type": "integer", "enum": [0, 1, 2, 3, 4]},
        **{f"{kind}{level}": INTEGER for kind in ("Protocol", "Delegate") for level in ("Min", "Max", "Cur")},
        "MaxConcurrentExecutions": {**INTEGER, "description": "--max-concurrent-executions; 0: no limit"},
        "ExecutionsRunning": {**INTEGER, "description": "Execution slots in use (at the last heartbeat)"},
        "ExecutionsQueued": {**INTEGER, "description": "Executions waiting on the node for a free slot"},
        "Partitions": {**INTEGER, "description": "Partitions a server schedules (at its last heartbeat)"},
    }
    if with_ids:
        fields |= {"id": {"type": "string", "format": "uuid"}, "statusText": STRING}
    return _object(fields)


def _dst_policy(with_default: bool) -> Schema:
    extra = ["default"] if with_default else ["", "default"]
    return _object(
        {
            "gap": {"type": "string", "enum": [*extra, *DST_GAP_POLICIES]},
            "overlap": {"type": "string", "enum": [*extra, *DST_OVERLAP_POLICIES]},
        },
        required=["gap", "overlap"] if with_default else [],
    )


def _components() -> Schema:
    serf_keys = [
        "members", "failed", "left", "health_score", "member_time", "event_time",
        "query_time", "intent_queue", "event_queue", "query_queue", "encrypted", "coordinate_resets",
    ]  # fmt: skip
    return {
        "Job": _job(),
        "JobInput": _job_input(),
        "Execution": _execution(list_view=False),
        "ExecutionListItem": _execution(list_view=True),
        "Member": _member(with_ids=True),
        "Leader": _member(with_ids=False),
        "RetryBackoff": {
            "type": "object",
            "properties": {
                "initial": {**STRING, "description": 'A duration such as "1s"'},
                "max": {**STRING, "description": 'A duration such as "5m"'},
                "multiplier": {"type": "number", "minimum": 1, "maximum": 100},
                "jitter": BOOLEAN,
            },
        },
        "Dependency": _object(
            {"job": STRING, "on": {"type": "string", "enum": list(DEPENDENCY_CONDITIONS)}}, required=["job"]
        ),
        "DstPolicy": _dst_policy(with_default=True),
        "DstPolicyInput": _dst_policy(with_default=False),
        "Parameter": _object({"name": PARAMETER_NAME, "secret": BOOLEAN}),
        "ParameterInput": _object({"name": PARAMETER_NAME, "secret": _nullable(BOOLEAN)}, required=["name"]),
        "RunInput": _object(
            {"env": _nullable({**STRING_MAP, "description": "Values of the job's parameters (only those)"})},
            required=[],
        ),
        "Status": _object(
            {
                "agent": _object({"name": STRING, "version": STRING}),
                "serf": _object(dict.fromkeys(serf_keys, STRING)),
                "tags": STRING_MAP,
            }
        ),
        "Pause": _object({"paused": BOOLEAN, "scheduling_paused": BOOLEAN}),
        "Partition": _object(
            {
                "partition": INTEGER,
                "owner": STRING,
                "term": INTEGER,
                "jobs": INTEGER,
                "lag_ms": INTEGER,
                "assignee": STRING,
            }
        ),
        "Stats": _object(
            {
                "stats": {
                    "type": "array",
                    "items": _object({"date": DATE_TIME, "success_count": INTEGER, "failed_count": INTEGER}),
                }
            }
        ),
        "Me": _object({"name": STRING, "role": _ref("Role"), "auth": BOOLEAN}),
        "Health": _object({"status": {"type": "string", "enum": ["healthy"]}, "leader": BOOLEAN}, ["status"]),
        "DebugVars": _object(
            {
                "cmdline": {"type": "array", "items": STRING},
                "memstats": {"type": "object", "additionalProperties": INTEGER},
            },
            ["cmdline", "memstats"],
        ),
        "Role": {"type": "string", "enum": ["read", "operator", "admin"]},
        "Token": _object(
            {
                "name": STRING,
                "role": _ref("Role"),
                "created_at": STRING,
                "created_by": STRING,
                "expires_at": {**_nullable(STRING), "description": "null: the token does not expire"},
            }
        ),
        "AuditEntry": {
            **_object({"time": DATE_TIME, "who": STRING, "role": STRING, "action": STRING, "target": STRING}),
            "description": "One change: who made it, when, and the target's state before and after",
        },
        "Fire": _object(
            {"at": DATE_TIME, "utc": DATE_TIME, "utc_offset": STRING, "zone_abbreviation": STRING}
        ),
    }


# --------------------------------------------------------------------------- responses and parameters

WHOM = {"X-Whom": {"description": "The node that answered", "required": True, "schema": STRING}}
TOTAL = {"X-Total-Count": {"description": "Items before paging", "required": True, "schema": STRING}}
LOCATION = {"Location": {"description": "The job's address", "required": True, "schema": STRING}}


def _json(description: str, schema: Schema, headers: dict[str, Any] | None = None) -> Schema:
    return {
        "description": description,
        "headers": {**WHOM, **(headers or {})},
        "content": {"application/json": {"schema": schema}},
    }


def _text(description: str) -> Schema:
    """Dkron's errors are plain text (some 404s have an empty body)."""
    return {"description": description, "headers": WHOM, "content": {"text/plain": {"schema": STRING}}}


def _list(item: str) -> Schema:
    return _json(f"A list of {item}", {"type": "array", "items": _ref(item)}, TOTAL)


def _query(name: str, description: str, schema: Schema = STRING, **extra: Any) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    } | extra


def _path(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": STRING}


PRETTY = _query("pretty", "Present (any value): indented JSON", allowEmptyValue=True)
JOB = _path("job", "The job's name")
EXECUTION = _path("execution", "The execution's id, `<trigger time ns>-<node>`")
BOOL_TEXT: Schema = {"type": "string", "enum": ["true", "false", "1", "0"]}
NOT_FOUND = _text("No such job (or execution); the body is empty")
BAD_INPUT = _text("What was wrong with the request, naming the field")
TOO_LARGE = _text("The body is larger than --max-body-size")
PAUSED = _text("Job submissions are paused (POST /v1/pause)")
RUN_BODY = {
    "required": False,
    "description": "Optional: values for the job's parameters; a name the job does not declare is a 400",
    "content": {"application/json": {"schema": _ref("RunInput")}},
}
JOB_BODY = {
    "required": True,
    "description": "The job; the Content-Type is not checked, the body is always read as JSON",
    "content": {"application/json": {"schema": _ref("JobInput")}},
}


UI_ANSWERS: dict[int, Schema] = {
    200: {"description": "The page or file", "headers": WHOM, "content": {"*/*": {"schema": STRING}}},
    404: {"description": "The UI is not built into this installation"},
}


def _op(
    summary: str,
    tag: str,
    responses: dict[int, Schema],
    parameters: Iterable[Schema] = (),
    body: Schema | None = None,
    json_answer: bool = True,
) -> Schema:
    operation: Schema = {
        "summary": summary,
        "tags": [tag],
        "parameters": [*parameters, *([PRETTY] if json_answer else [])],
        "responses": {str(status): response for status, response in sorted(responses.items())},
    }
    if body is not None:
        operation["requestBody"] = body
    return operation


def _save_job(summary: str, parameters: Iterable[Schema] = ()) -> Schema:
    runoncreate = _query("runoncreate", "Present (any value): run the job once saved", allowEmptyValue=True)
    return _op(
        summary,
        "jobs",
        {
            201: _json("The job as parsed (counters and next as sent)", _ref("Job"), LOCATION),
            400: BAD_INPUT,
            404: _text("parent_job names a job that does not exist"),
            413: TOO_LARGE,
            503: PAUSED,
        },
        [*parameters, runoncreate],
        JOB_BODY,
    )


def _run_job(summary: str) -> Schema:
    return _op(
        summary,
        "jobs",
        {
            200: _json("The job; the run was handed to the leader", _ref("Job"), LOCATION),
            400: BAD_INPUT,
            404: _text("No such job, the job is disabled, or no node matches its tags"),
            409: _text("A forbid job's previous run goes on"),
            503: _text("No leader right now; retry in a few seconds"),
        },
        [JOB, _query("force", "Run even if a forbid job is running", BOOL_TEXT)],
        RUN_BODY,
    )


def _job_operations() -> dict[tuple[str, str], Schema]:
    sort = _query("_sort", "Field to sort by", {"type": "string", "enum": sorted(SORTABLE)})
    metadata = _query(
        "metadata", "metadata[key]=value: jobs whose metadata has all these pairs", STRING_MAP,
        style="deepObject", explode=True,
    )  # fmt: skip
    tags = _query(
        "tags", "tags[key]=value: jobs whose tag has this value (its :count aside)", STRING_MAP,
        style="deepObject", explode=True,
    )  # fmt: skip
    next_params = [
        JOB,
        _query("n", "How many fires, 1 to 100 (default 10)", {"type": "string", "pattern": "^[0-9]+$"}),
        _query("schedule", "Preview this schedule instead of the stored job's (which need not exist)"),
        _query("timezone", "The previewed schedule's zone"),
        _query("dst_gap", "The previewed DST gap rule", {"type": "string", "enum": ["", *DST_GAP_POLICIES]}),
        _query(
            "dst_overlap",
            "The previewed DST overlap rule",
            {"type": "string", "enum": ["", *DST_OVERLAP_POLICIES]},
        ),
    ]
    restore_body = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": _object({"file": {"type": "string", "contentMediaType": "application/json"}})
            }
        },
    }
    return {
        ("POST", "/v1/jobs"): _save_job("Create or update a job"),
        ("PATCH", "/v1/jobs"): _save_job("Create or update a job"),
        ("PUT", "/v1/jobs/{job}"): _save_job("Create or update a job (the body's name wins)", [JOB]),
        ("GET", "/v1/jobs"): _op(
            "List jobs",
            "jobs",
            {200: _list("Job"), 400: BAD_INPUT},
            [
                _query("q", "Substring of the name or display name"),
                _query("status", "Exact status; untriggered: never ran"),
                _query("disabled", "true or false"),
                metadata,
                tags,
                sort,
                _query("_order", "DESC for descending; anything else ascends"),
                _query("_start", "First index (a number; anything else is 0)"),
                _query("_end", "End index, exclusive (a number; anything else means all)"),
            ],
        ),
        ("GET", "/v1/jobs/{job}"): _op(
            "A job", "jobs", {200: _json("The job", _ref("Job")), 404: NOT_FOUND}, [JOB]
        ),
        ("GET", "/v1/jobs/{job}/next"): _op(
            "The next fire times",
            "jobs",
            {200: _json("Fires", {"type": "array", "items": _ref("Fire")}), 400: BAD_INPUT, 404: NOT_FOUND},
            next_params,
        ),
        ("DELETE", "/v1/jobs/{job}"): _op(
            "Delete a job and its history",
            "jobs",
            {
                200: _json("The deleted job", _ref("Job")),
                400: _text("Other jobs depend on it (depends_on)"),
                404: _text("No such job, or it has child jobs (parent_job)"),
            },
            [JOB],
        ),
        ("POST", "/v1/jobs/{job}"): _run_job("Run a job now"),
        ("POST", "/v1/jobs/{job}/run"): _run_job("Run a job now"),
        ("POST", "/v1/jobs/{job}/toggle"): _op(
            "Enable or disable a job", "jobs", {200: _json("The job", _ref("Job")), 404: NOT_FOUND}, [JOB]
        ),
        ("POST", "/v1/restore"): _op(
            "Create or replace the jobs of a JSON array (parents first)",
            "jobs",
            {
                200: _json("One line per job, as a JSON-encoded string", STRING),
                400: BAD_INPUT,
                404: _text("The form has no field named file"),
                413: TOO_LARGE,
            },
            body=restore_body,
        ),
    }


def _execution_operations() -> dict[tuple[str, str], Schema]:
    path = "/v1/jobs/{job}/executions"
    one = f"{path}/{{execution}}"
    output = {
        "description": "The output so far, or live Server-Sent Events (Accept: text/event-stream)",
        "headers": WHOM,
        "content": {"text/plain": {"schema": STRING}, "text/event-stream": {"schema": STRING}},
    }
    return {
        ("GET", path): _op(
            "A job's executions",
            "executions",
            {200: _list("ExecutionListItem"), 404: NOT_FOUND},
            [
                JOB,
                _query("_sort", "id, started_at, finished_at or attempt (else an empty list)"),
                _query("_order", "DESC (the default) for newest first"),
                _query("output_size_limit", "Keep the last N bytes of each output", {"type": "string"}),
            ],
        ),
        ("DELETE", path): _op(
            "Clear a job's history and counters",
            "executions",
            {200: _json("The job", _ref("Job")), 404: NOT_FOUND},
            [JOB],
        ),
        ("GET", one): _op(
            "One execution",
            "executions",
            {200: _json("It", _ref("Execution")), 404: NOT_FOUND},
            [JOB, EXECUTION],
        ),
        ("POST", f"{one}/cancel"): _op(
            "Stop a running execution (it ends failed)",
            "executions",
            {
                202: _json("The execution, still running", _ref("Execution")),
                404: NOT_FOUND,
                409: _text("It has already finished"),
            },
            [JOB, EXECUTION],
        ),
        ("GET", f"{one}/output"): _op(
            "An execution's whole output",
            "executions",
            {200: output, 404: NOT_FOUND},
            [JOB, EXECUTION],
            json_answer=False,
        ),
    }


def _cluster_operations() -> dict[tuple[str, str], Schema]:
    scheduling = _query("scheduling", "true: pause or resume scheduling instead of submissions", BOOL_TEXT)
    pause_answers = {200: _json("Both pause flags", _ref("Pause")), 400: BAD_INPUT}
    return {
        ("GET", "/v1"): _op("This node and the cluster", "cluster", {200: _json("Status", _ref("Status"))}),
        ("GET", "/v1/members"): _op("The nodes", "cluster", {200: _list("Member")}),
        ("GET", "/v1/leader"): _op(
            "The leader",
            "cluster",
            {200: _json("The leader", _ref("Leader")), 500: _text("No server holds the scheduler lease")},
        ),
        ("GET", "/v1/isleader"): _op(
            "Whether this node leads",
            "cluster",
            {200: _json('"I am a leader"', STRING), 404: _json('"I am a follower"', STRING)},
        ),
        ("GET", "/v1/partitions"): _op(
            "The partitions of the job space and their owners", "cluster", {200: _list("Partition")}
        ),
        ("POST", "/v1/leave"): _op(
            "Stop this node", "cluster", {200: _json("The servers: name to address", STRING_MAP)}
        ),
        ("GET", "/v1/busy"): _op("Running executions, cluster-wide", "cluster", {200: _list("Execution")}),
        ("GET", "/v1/pause"): _op(
            "The pause flags", "cluster", {200: _json("Both pause flags", _ref("Pause"))}
        ),
        ("POST", "/v1/pause"): _op("Pause submissions or scheduling", "cluster", pause_answers, [scheduling]),
        ("POST", "/v1/unpause"): _op(
            "Resume submissions or scheduling", "cluster", pause_answers, [scheduling]
        ),
        ("GET", "/v1/stats"): _op(
            "Successes and failures per day",
            "cluster",
            {200: _json("Oldest day first", _ref("Stats"))},
            [_query("days", "1 to 365 (default 30; anything else is 30)")],
        ),
        ("GET", "/health"): _op("Liveness", "cluster", {200: _json("Healthy", _ref("Health"))}),
        ("GET", "/"): _op(
            "The UI's address for browsers",
            "cluster",
            {
                303: {"description": "To /ui/ (Accept: text/html)", "headers": {**WHOM, **LOCATION}},
                404: _text("404 page not found (other clients)"),
            },
            json_answer=False,
        ),
        ("GET", "/v1/events"): _op(
            "Job and execution events, live",
            "cluster",
            {
                200: {
                    "description": "Server-Sent Events named after each event's type (job.updated, "
                    "execution.finished...), data the event's JSON body; `ready` first",
                    "headers": WHOM,
                    "content": {"text/event-stream": {"schema": _object({"event": STRING, "data": STRING})}},
                }
            },
            json_answer=False,
        ),
        ("GET", "/ui"): _op("The web UI", "ui", UI_ANSWERS, json_answer=False),
        ("GET", "/ui/{path}"): _op(
            "A file of the web UI, or its page for the app's own paths",
            "ui",
            UI_ANSWERS,
            [_path("path", "A file under /ui/ or a path of the app")],
            json_answer=False,
        ),
        ("GET", "/metrics"): _op(
            "Prometheus metrics of this process",
            "cluster",
            {
                200: {
                    "description": "The exposition",
                    "headers": WHOM,
                    "content": {"text/plain": {"schema": STRING}},
                }
            },
            json_answer=False,
        ),
        ("GET", "/debug/vars"): _op(
            "The command line and memory figures of this process (Dkron's expvar page)",
            "cluster",
            {200: _json("`cmdline` with its secrets as ***, and `memstats`", _ref("DebugVars"))},
        ),
        ("GET", "/openapi.json"): _op(
            "This document",
            "cluster",
            {
                200: {
                    "description": "OpenAPI 3.1",
                    "headers": WHOM,
                    "content": {"application/json": {"schema": {}}},
                }
            },
            json_answer=False,
        ),
    }


def _auth_operations() -> dict[tuple[str, str], Schema]:
    token_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": _object(
                    {
                        "name": STRING,
                        "role": _ref("Role"),
                        "ttl": {
                            **STRING,
                            "description": "Lifetime: a Go duration (720h) or ISO-8601 (P30D); "
                            "without it the token lasts until revoked",
                        },
                    },
                    ["name", "role"],
                )
            }
        },
    }
    secret = {**STRING, "description": "Shown once, never again"}
    created = _object(
        {"name": STRING, "role": _ref("Role"), "token": secret, "expires_at": _nullable(STRING)}
    )
    return {
        ("POST", "/v1/tokens"): _op(
            "Create an API token",
            "auth",
            {
                201: _json("The token; its secret is never shown again", created),
                400: BAD_INPUT,
                409: _text("A token of that name exists"),
                413: TOO_LARGE,
            },
            body=token_body,
        ),
        ("GET", "/v1/tokens"): _op("The API tokens (never their secrets)", "auth", {200: _list("Token")}),
        ("DELETE", "/v1/tokens/{name}"): _op(
            "Revoke an API token",
            "auth",
            {200: _json("The revoked token", _ref("Token")), 404: _text("No token of that name")},
            [_path("name", "The token's name")],
        ),
        ("GET", "/v1/me"): _op(
            "Who the caller is",
            "auth",
            {200: _json("The token's name and role; anonymous admin when auth is off", _ref("Me"))},
        ),
        ("GET", "/v1/audit"): _op(
            "The audit log, newest first",
            "auth",
            {200: _list("AuditEntry"), 400: BAD_INPUT},
            [_query("_start", "First entry (a whole number)"), _query("_end", "End entry, exclusive")],
        ),
    }


OPERATIONS: dict[tuple[str, str], Schema] = {
    **_cluster_operations(),
    **_job_operations(),
    **_execution_operations(),
    **_auth_operations(),
}
"""(method, path) -> the OpenAPI operation; the paths are written as OpenAPI writes them."""


# --------------------------------------------------------------------------- the document


def served_operations(routes: Iterable[object]) -> list[tuple[str, str]]:
    """(method, path) of every documented-kind operation the app serves, paths in OpenAPI form."""
    found: list[tuple[str, str]] = []
    for route in routes:
        if isinstance(route, HTTPRoute):
            methods = sorted(str(method) for method in route.methods)
            found += [(method, route.path_format) for method in methods if method in METHODS]
    return found


PUBLIC_PATHS = frozenset({"/health", "/ui", "/ui/{path}"})
"""Answered without a token even when authentication is on."""
REFUSED_BROWSER = (
    "A web page of another origin (`Origin` not the UI's own nor a --cors-origin), or, on a loopback "
    "listener, a `Host` that is not a loopback name nor an --allowed-host"
)
AUTH_ANSWERS = {
    "401": _text("Authentication is on and no valid bearer token was sent"),
    "403": _text(f"The token's role may not do this; or: {REFUSED_BROWSER}"),
}
RATE_LIMITED = {
    "429": {
        **_text("Too many runs and job changes by this token (or address without --auth): --rate-limit-runs"),
        "headers": {
            **WHOM,
            "Retry-After": {"description": "Seconds to wait", "required": True, "schema": STRING},
        },
    }
}


def _with_auth(method: str, path: str, operation: Schema) -> Schema:
    limited = RATE_LIMITED if is_limited(method, path) else {}
    if path in PUBLIC_PATHS:
        refused = {"403": _text(REFUSED_BROWSER)}
        return {**operation, "security": [], "responses": {**operation["responses"], **refused}}
    return {**operation, "responses": {**operation["responses"], **AUTH_ANSWERS, **limited}}


def document(routes: Iterable[object]) -> Schema:
    paths: dict[str, dict[str, Schema]] = {}
    for method, path in served_operations(routes):
        operation = OPERATIONS.get((method, path)) or {
            "summary": "Not described yet",
            "responses": {"default": {"description": "Unknown"}},
            UNDOCUMENTED: True,
        }
        paths.setdefault(path, {})[method.lower()] = _with_auth(method, path, operation)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "dkron-nats",
            "version": VERSION,
            "description": "Dkron's REST API (v1) and dkron-nats' additions. Errors are plain text.",
        },
        "paths": paths,
        "components": {
            "schemas": _components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # Either: authentication is off unless the server runs with --auth.
        "security": [{}, {"bearer": []}],
    }


@get("/openapi.json", sync_to_thread=False)
def openapi_json(request: Request[Any, Any, Any]) -> Response[bytes]:
    body = msgspec.json.encode(document(request.app.routes))
    return Response(body, media_type="application/json")


ROUTES = [openapi_json]
