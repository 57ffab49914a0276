"""Notification payload templates: Dkron's fields and Go `text/template` rules, on templates from Dkron.

The payloads come from Dkron's documentation (the Slack webhook of its example configuration) and from
its notifier's tests (one template per field); the expected texts follow Go's rules: `Time.String()` for
times, the string "true"/"false" for Success, `{{-`/`-}}` trimming, "Failed to parse template: ..."."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from dkron_nats.leader.templates import Report, go_format, parse, render
from dkron_nats.models import Execution

GROUP = 1_712_345_678_901_234_567
STARTED = datetime(2024, 5, 6, 7, 8, 9, 123_400, tzinfo=UTC)
FINISHED = datetime(2024, 5, 6, 7, 8, 10, tzinfo=UTC)
STARTED_GO = "2024-05-06 07:08:09.1234 +0000 UTC"
"""STARTED as Go's Time.String() prints it."""


def _execution(node: str, success: bool, output: str = "", attempt: int = 1) -> Execution:
    return Execution(
        id=f"{GROUP}-{node}",
        job_name="backup",
        group=GROUP,
        attempt=attempt,
        node_name=node,
        started_at=STARTED,
        finished_at=FINISHED,
        success=success,
        output=output,
        status="success" if success else "failed",
    )


ENDED = _execution("web1", True, 'saved 3 files to "/srv"\ndone')
REPORT = Report(ENDED, [ENDED], "leader1", True, "success")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{.JobName}}", "backup"),
        ("{{.ReportingNode}}", "leader1"),
        ("{{.StartTime}}", "2024-05-06 07:08:09.1234 +0000 UTC"),
        ("{{.FinishedAt}}", "2024-05-06 07:08:10 +0000 UTC"),
        ("{{.Success}}", "true"),
        ("{{.NodeName}}", "web1"),
        ("{{.Output}}", 'saved 3 files to "/srv"\ndone'),
        ("{{.ExecutionGroup}}", str(GROUP)),
        ("{{.Attempt}}", "1"),
        ("{{.Status}}", "success"),
    ],
)
def test_each_field_renders_as_dkron_renders_it(template: str, expected: str) -> None:
    assert render(template, REPORT) == expected


def test_the_report_lists_the_launch_and_every_execution_of_it() -> None:
    first = _execution("web1", True, "ok")
    second = _execution("web2", False, "disk full", attempt=2)
    report = Report(second, [first, second], "leader1", False, "partially_failed")
    assert render("{{.Report}}", report) == (
        "Executed: backup\n"
        "Reporting node: leader1\n"
        "Start time: 2024-05-06 07:08:09.1234 +0000 UTC\n"
        "End time: 2024-05-06 07:08:10 +0000 UTC\n"
        "Success: false\n"
        "Node: web2\n"
        "Output: disk full\n"
        f"Execution group: {GROUP}\n"
        "\t[Node]: web1 [Start]: 2024-05-06 07:08:09.1234 +0000 UTC [End]: 2024-05-06 07:08:10 +0000 UTC"
        " [Success]: true\n"
        "\t[Node]: web2 [Start]: 2024-05-06 07:08:09.1234 +0000 UTC [End]: 2024-05-06 07:08:10 +0000 UTC"
        " [Success]: false\n"
    )


def test_a_launch_that_just_started_has_go_zero_end_time() -> None:
    started = Execution(
        id=f"{GROUP}-web1", job_name="backup", group=GROUP, node_name="web1", started_at=STARTED
    )
    report = Report(started, [started], "leader1", False, "running")
    assert render("{{.FinishedAt}} {{.Success}} {{.Status}}", report) == (
        "0001-01-01 00:00:00 +0000 UTC false running"
    )
    assert render("{{.FinishedAt.IsZero}} {{.FinishedAt.Unix}}", report) == "true -62135596800"


def test_dkrons_slack_webhook_example() -> None:
    template = 'payload={"text": "{{.Report}}", "channel": "#foo"}'
    body = render(template, REPORT)
    assert body.startswith('payload={"text": "Executed: backup\nReporting node: leader1\n')
    assert body.endswith('[Success]: true\n", "channel": "#foo"}')


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("[{{ .JobName }}]", "[backup]"),
        ("[{{.JobName   }}]", "[backup]"),
        ("a \n\t {{- .JobName -}} \n b", "abackupb"),
        ("a {{- .JobName}} b", "abackup b"),
        ("a {{.JobName -}} \n b", "a backupb"),
        ("{{-3}}", "-3"),  # a negative number, not a trim marker (Go needs a space after "-")
        ("x {{- /* a comment */ -}} y", "xy"),
        ("x{{/* a comment */}}y", "xy"),
    ],
)
def test_go_spacing_and_trim_markers(template: str, expected: str) -> None:
    assert render(template, REPORT) == expected


def test_if_else_and_go_truth() -> None:
    failed = Report(_execution("web1", False), [], "leader1", False, "failed")
    choose = '{{if eq .Success "true"}}OK {{.JobName}}{{else}}FAILED {{.JobName}} on {{.NodeName}}{{end}}'
    assert render(choose, REPORT) == "OK backup"
    assert render(choose, failed) == "FAILED backup on web1"
    # Success is a non-empty string either way, so Go (and Dkron) treat it as true.
    assert render("{{if .Success}}yes{{else}}no{{end}}", failed) == "yes"
    chain = '{{if eq .Status "success"}}s{{else if eq .Status "failed"}}f{{else}}p{{end}}'
    assert [render(chain, r) for r in (REPORT, failed)] == ["s", "f"]
    assert render("{{if not .Output}}silent{{else}}said {{len .Output}} bytes{{end}}", failed) == "silent"
    assert render("{{with .Output}}[{{.}}]{{else}}nothing{{end}}", failed) == "nothing"
    both = '{{if and (eq .Success "true") (ne .Status "failed")}}both{{end}}'
    assert render(both, REPORT) == "both"


def test_functions_escape_for_json_and_urls() -> None:
    quoted = render('{"job": "{{.JobName}}", "output": {{printf "%q" .Output}}}', REPORT)
    assert json.loads(quoted) == {"job": "backup", "output": ENDED.output}
    assert render("{{js .Output}}", REPORT) == 'saved 3 files to \\"/srv\\"\\u000Adone'
    assert render('{{urlquery .JobName " & more"}}', REPORT) == "backup+%26+more"
    assert render('{{print "tab:\\t." `raw\\t` 1 2}}', REPORT) == "tab:\t.raw\\t1 2"
    assert render('{{.JobName | printf "%s finished (attempt %d)" | print}}', REPORT).startswith(
        "backup finished"
    )
    assert render('{{printf "%s/%d" .JobName .Attempt}}', REPORT) == "backup/1"
    assert render('{{printf "%d" .JobName}}', REPORT) == "%!d(string=backup)"


def test_time_methods_use_go_layouts() -> None:
    layout = '{{.StartTime.Format "2006-01-02T15:04:05.000Z07:00"}} {{.StartTime.Format "Mon Jan _2 3:04PM"}}'
    assert render(layout, REPORT) == "2024-05-06T07:08:09.123Z Mon May  6 7:08AM"
    assert render("{{.StartTime.Unix}} {{.StartTime.UTC}}", REPORT) == f"1714979289 {STARTED_GO}"
    assert go_format(FINISHED, "02/01/06 15h04 .999 -0700 MST") == "06/05/24 07h08  +0000 UTC"


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("{{.JobName", "template: report:1: unclosed action"),
        ("{{nosuch .JobName}}", 'template: report:1: function "nosuch" not defined'),
        ("{{if .Success}}x", "template: report:1: unexpected EOF"),
        ("line\n{{end}}", "template: report:2: unexpected {{end}}"),
        ("{{else}}", "template: report:1: unexpected {{else}}"),
        ("{{}}", "template: report:1: missing value for command"),
        ('{{"unterminated}}', "template: report:1: unterminated quoted string"),
        ("{{/* open }}", "template: report:1: unclosed comment"),
    ],
)
def test_a_template_that_does_not_parse_renders_dkrons_message(template: str, why: str) -> None:
    assert render(template, REPORT) == f"Failed to parse template: {why}"


def test_a_template_that_fails_while_rendering_renders_dkrons_message() -> None:
    body = render("{{.JobName}} {{.NoSuchField}}", REPORT)
    assert body.startswith(
        'Failed to execute template:template: report:1: executing "report" at <.NoSuchField>'
    )
    assert "can't evaluate field NoSuchField" in body
    mixed = render('{{if eq .Attempt "1"}}x{{end}}', REPORT)
    assert mixed.endswith("incompatible types for comparison")


def test_a_parsed_template_renders_again_with_other_data() -> None:
    template = parse("{{.NodeName}}:{{.Success}}")
    other = Report(_execution("db1", False), [], "leader1", False, "failed")
    assert [template.execute(r.fields()) for r in (REPORT, other)] == ["web1:true", "db1:false"]
