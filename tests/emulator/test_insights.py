"""CloudWatch Logs Insights, as the audit CLI queries it: the query shapes
ecr-remediator sends, answered by the emulator (and, with
ECR_CONTRACT_TARGET=aws, by CloudWatch itself)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest


def wait(logs: Any, query_id: str) -> dict[str, Any]:
    for _ in range(300):
        reply = logs.get_query_results(queryId=query_id)
        if reply["status"] not in ("Scheduled", "Running"):
            return reply
        time.sleep(0.2)
    raise AssertionError("query still running")


def rows(reply: dict[str, Any]) -> list[dict[str, str]]:
    return [{f["field"]: f["value"] for f in row} for row in reply["results"]]


@pytest.fixture(scope="module")
def group(client_factory: Any) -> tuple[Any, str, int]:
    logs = client_factory("logs")
    name = f"/test/insights-{uuid.uuid4().hex[:8]}"
    logs.create_log_group(logGroupName=name)
    logs.create_log_stream(logGroupName=name, logStreamName="s")
    now = int(time.time() * 1000)
    records = [
        {"repository": "team-a/api", "outcome": "remediated", "deleted": 2, "actions": [{"action": "delete", "digest": "sha256:aaa"}]},
        {"repository": "team-a/web", "outcome": "skipped", "deleted": 0, "actions": []},
        {"repository": "team-b/api", "outcome": "failed", "deleted": 0, "actions": [{"action": "move_tag", "to": "sha256:bbb"}]},
        {"repository": "team-a/api", "outcome": "noop", "deleted": 1, "actions": []},
    ]
    events = [
        {"timestamp": now - 4000 + i * 1000, "message": json.dumps({"source": "ecr-remediator", "detail": r})}
        for i, r in enumerate(records)
    ]
    logs.put_log_events(logGroupName=name, logStreamName="s", logEvents=events)
    return logs, name, now


def query(group: tuple[Any, str, int], text: str, **extra: Any) -> dict[str, Any]:
    logs, name, now = group
    started = logs.start_query(logGroupName=name, startTime=now // 1000 - 60, endTime=now // 1000 + 60, queryString=text, **extra)
    return wait(logs, started["queryId"])


def test_filters_on_nested_json_fields_like_in_and_not(group: tuple[Any, str, int]) -> None:
    reply = query(
        group,
        'fields @timestamp, detail.repository, detail.outcome\n| filter detail.repository like /^team-a\\// and detail.outcome in ["remediated", "noop"]\n| sort @timestamp asc',
    )
    assert reply["status"] == "Complete"
    got = rows(reply)
    assert [(r["detail.repository"], r["detail.outcome"]) for r in got] == [("team-a/api", "remediated"), ("team-a/api", "noop")]
    assert all("@ptr" in r for r in got)
    reply = query(group, 'fields detail.repository | filter @message like "sha256:bbb" or not detail.deleted >= 0')
    assert [r["detail.repository"] for r in rows(reply)] == ["team-b/api"]
    reply = query(group, 'fields detail.outcome | filter detail.actions.0.action = "delete"')
    assert [r["detail.outcome"] for r in rows(reply)] == ["remediated"]


def test_stats_sort_and_limit(group: tuple[Any, str, int]) -> None:
    reply = query(group, "stats count(*) as records, sum(detail.deleted) as deleted by detail.repository\n| sort records desc")
    got = rows(reply)
    assert got[0] == {"detail.repository": "team-a/api", "records": "2", "deleted": "3"}
    assert {r["detail.repository"] for r in got} == {"team-a/api", "team-a/web", "team-b/api"}
    reply = query(group, "fields detail.outcome | sort @timestamp desc | limit 2")
    assert [r["detail.outcome"] for r in rows(reply)] == ["noop", "failed"]
    assert reply["statistics"]["recordsMatched"] == 4


@pytest.mark.emulator_only
def test_a_query_runs_before_it_completes_and_can_be_stopped(group: tuple[Any, str, int], control: Any) -> None:
    logs, name, now = group
    control.config(insights_running_polls=3)
    try:
        started = logs.start_query(logGroupName=name, startTime=now // 1000 - 60, endTime=now // 1000 + 60, queryString="fields @message")
        statuses = [logs.get_query_results(queryId=started["queryId"])["status"] for _ in range(4)]
        assert statuses == ["Running", "Running", "Running", "Complete"]
        other = logs.start_query(logGroupName=name, startTime=now // 1000 - 60, endTime=now // 1000 + 60, queryString="fields @message")
        assert logs.stop_query(queryId=other["queryId"])["success"] is True
        assert logs.get_query_results(queryId=other["queryId"])["status"] == "Cancelled"
    finally:
        control.config(insights_running_polls=1)


def test_errors_as_cloudwatch_sends_them(group: tuple[Any, str, int]) -> None:
    logs, _, now = group
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.start_query(logGroupName="/no/such/group", startTime=now // 1000 - 60, endTime=now // 1000, queryString="fields @message")
    with pytest.raises(logs.exceptions.MalformedQueryException):
        query(group, "fields @message | filter detail.outcome ===== 3")
