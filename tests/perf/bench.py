"""``make bench``: what one push costs, whatever the repository holds, and
what a sweep achieves.

For repositories of 0, 1,000 and 10,000 other images (seeded through the
emulator's control API), pushes a default-buildx image and has the release
``ecr-remediator remediate`` handle it, counting the ECR calls the emulator
served for that repository and the process's peak resident set. Then starts
the release ``bootstrap`` against a minimal Lambda runtime API (this file),
and measures cold start to ready (process start to its first
``/runtime/invocation/next``) and the first event's latency (event handed
over to response posted). Then sweeps registries of 1,000 and 10,000 images
in 20 repositories (tag mode, one write per index) with 20 % of the
service's ECR calls throttled: writes landed per second as a share of
``--put-tps``, failures surfaced, peak memory; and the same sizes where
every index is a leftover of an earlier promotion, swept with
``--delete-orphans``: reads, deletions, failures, peak memory. Prints
Markdown tables and writes JSON.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
from ecr_emulator.oci import build_buildx_layout
from ecr_emulator.push import push
from ecr_emulator.testing import EmulatorProcess, push_event

SIZES = (0, 1_000, 10_000)
PARTS = ("per_push", "bootstrap", "sweep", "cleanup", "scan", "hub")
SCENARIOS = {
    "tag": {"ECR_REMEDIATOR_MODE": "tag"},
    # The default grace period (15 min): the push promotes, its deletions wait for a follow-up.
    "promote, delete orphans (deferred)": {
        "ECR_REMEDIATOR_MODE": "promote",
        "ECR_REMEDIATOR_DELETE_ORPHANS": "true",
        "ECR_REMEDIATOR_KEEP_TAG": "false",
    },
    # What the follow-up (or a push with no grace period) costs: every gate, the workload scan included.
    "promote, delete orphans (at once)": {
        "ECR_REMEDIATOR_MODE": "promote",
        "ECR_REMEDIATOR_DELETE_ORPHANS": "true",
        "ECR_REMEDIATOR_KEEP_TAG": "false",
        "ECR_REMEDIATOR_GRACE_PERIOD": "0s",
    },
}


def base_env(emulator_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECR_REMEDIATOR_")}
    env.update(
        AWS_ENDPOINT_URL=emulator_url,
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_EC2_METADATA_DISABLED="true",
        RUST_LOG="warn",
    )
    return env


def push_image(ecr: Any, repository: str, tag: str, salt: str) -> str:
    layout = build_buildx_layout(["linux/arm64"], salt=salt)
    return push(ecr, repository, layout, [tag])[-1].digest


TIME = Path("/usr/bin/time")


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[int, float, int, str]:
    """Runs a command; returns (exit status, wall seconds, peak RSS in KiB, stdout).

    The peak comes from GNU time (``%M``): a child forked from this (large)
    Python process would report Python's own high-water mark, which Linux
    keeps across ``execve``.
    """
    if not TIME.is_file():
        raise SystemExit("/usr/bin/time (Debian package `time`) is needed to measure peak RSS")
    with tempfile.NamedTemporaryFile(mode="r") as rss, tempfile.TemporaryFile() as out:
        started = time.monotonic()
        code = subprocess.call([str(TIME), "-f", "%M", "-o", rss.name, *argv], env=env, stdout=out, stderr=subprocess.DEVNULL)
        wall = time.monotonic() - started
        out.seek(0)
        text = out.read().decode()
        peak = int(rss.read().strip().splitlines()[-1])
    return code, wall, peak, text


def per_push(cli: Path, emu: EmulatorProcess, ecr: Any) -> list[dict[str, Any]]:
    rows = []
    for size in SIZES:
        for name, policy in SCENARIOS.items():
            repository = f"bench/n{size}-{name.split(',')[0]}{'-now' if 'at once' in name else ''}"
            ecr.create_repository(repositoryName=repository)
            emu.control._call("POST", "seed", {"repository": repository, "count": size})
            digest = push_image(ecr, repository, "v1", f"{size}-{name}")
            emu.control._call("DELETE", f"calls?repository={repository}")
            before = emu.control.calls()
            env = base_env(emu.url) | policy
            code, wall, rss, out = run_measured(
                [str(cli), "remediate", "--repository", repository, "--image-digest", digest, "--image-tag", "v1", "--output", "json"], env
            )
            record = json.loads(out) if out.strip() else {}
            calls = emu.control.calls(repository)
            # Calls to other services (the workload scan: ECS, Lambda), account-wide.
            after = emu.control.calls()
            other = {k: v - before.get(k, 0) for k, v in after.items() if k.split(":")[0] in ("ecs", "lambda") and v - before.get(k, 0) > 0}
            reads = calls.get("ecr:BatchGetImage", 0) + calls.get("ecr:DescribeImages", 0) + calls.get("ecr:ListImages", 0)
            rows.append(
                {
                    "images_in_repository": size * 3,
                    "scenario": name,
                    "exit": code,
                    "outcome": record.get("outcome"),
                    "reads": reads,
                    "calls": calls,
                    "other_calls": other,
                    "wall_ms": round(wall * 1000),
                    "peak_rss_mb": round(rss / 1024, 1),
                }
            )
            print(f"  {size * 3:>6} images, {name}: {reads} reads, {calls}, {rss / 1024:.1f} MB", file=sys.stderr)
    return rows


class RuntimeApi:
    """The Lambda runtime API, as far as one function instance needs it."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.waiting = threading.Condition()
        self.first_next_at: float | None = None
        self.sent_at: dict[str, float] = {}
        self.responses: dict[str, tuple[float, bytes]] = {}
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if not self.path.endswith("/runtime/invocation/next"):
                    self.send_error(404)
                    return
                with api.waiting:
                    if api.first_next_at is None:
                        api.first_next_at = time.monotonic()
                    api.waiting.notify_all()
                    while not api.events:
                        api.waiting.wait()
                    event = api.events.pop(0)
                request_id = str(uuid.uuid4())
                body = json.dumps(event).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 60_000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench")
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                api.sent_at[request_id] = time.monotonic()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                parts = self.path.split("/")
                with api.waiting:
                    if "invocation" in parts:
                        api.responses[parts[-2]] = (time.monotonic(), body)
                    api.waiting.notify_all()
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the instance is killed mid long-poll at the end of each run

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def environment(self) -> dict[str, str]:
        """The variables Lambda sets for a function instance served by this API."""
        return {
            "AWS_LAMBDA_RUNTIME_API": self.address,
            "AWS_LAMBDA_FUNCTION_NAME": "bench",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/bench",
            "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        }

    def close(self) -> None:
        with self.waiting:
            self.events.append({"stop": True})
            self.waiting.notify_all()
        self.server.shutdown()


def lambda_runs(bootstrap: Path, emu: EmulatorProcess, ecr: Any, runs: int) -> dict[str, Any]:
    cold, first, peaks = [], [], []
    for n in range(runs):
        repository = f"bench/lambda-{n}"
        ecr.create_repository(repositoryName=repository)
        digest = push_image(ecr, repository, "v1", f"lambda-{n}")
        event = push_event(repository, digest, "v1", "application/vnd.oci.image.index.v1+json", event_id=str(uuid.uuid4()))
        api = RuntimeApi()
        env = base_env(emu.url) | api.environment() | {"ECR_REMEDIATOR_MODE": "promote"}
        started = time.monotonic()
        proc = subprocess.Popen([str(bootstrap)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with api.waiting:
                api.waiting.wait_for(lambda api=api: api.first_next_at is not None, timeout=30)
                ready = api.first_next_at
                api.events.append(event)
                api.waiting.notify_all()
                api.waiting.wait_for(lambda api=api: api.responses, timeout=60)
            if ready is None or not api.responses:
                raise RuntimeError("bootstrap did not answer")
            request_id, (answered, body) = next(iter(api.responses.items()))
            cold.append((ready - started) * 1000)
            first.append((answered - api.sent_at[request_id]) * 1000)
            outcome = json.loads(body).get("outcome")
            if outcome != "remediated":
                raise RuntimeError(f"unexpected answer {body!r}")
            # Peak resident set so far (the instance stays up, as Lambda keeps it).
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peaks.append(int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024)
        finally:
            proc.kill()
            proc.wait()
            api.close()
    return {
        "runs": runs,
        "cold_start_to_ready_ms_median": round(statistics.median(cold), 1),
        "cold_start_to_ready_ms_max": round(max(cold), 1),
        "first_event_ms_median": round(statistics.median(first), 1),
        "first_event_ms_max": round(max(first), 1),
        "peak_rss_mb_max": round(max(peaks), 1),
    }


def seed_registry(emu: EmulatorProcess, ecr: Any, prefix: str, size: int, leftover: bool) -> None:
    """About `size` images (pushes of three manifests) spread over 20 repositories named `prefix`NN;
    with `leftover`, every index is an earlier promotion's leftover (untagged, its image tagged)."""
    pushes = size // 3
    for r in range(20):
        repository = f"{prefix}{r:02}"
        ecr.create_repository(repositoryName=repository)
        count = pushes // 20 + (1 if r < pushes % 20 else 0)
        emu.control._call("POST", "seed", {"repository": repository, "count": count, "leftover": leftover})


def sweep_runs(cli: Path, emu: EmulatorProcess, ecr: Any, sizes: list[int], put_tps: float) -> list[dict[str, Any]]:
    """`ecr-remediator sweep` (tag mode) over 20 repositories holding `size`
    images in all, with 20 % of the service's ECR calls throttled."""
    out = []
    for size in sizes:
        prefix = f"bench/sweep{size}-"
        seed_registry(emu, ecr, prefix, size, leftover=False)
        emu.control.clear_calls()
        emu.control.clear_faults()
        for op in ("BatchGetImage", "PutImage", "DescribeImages", "DescribeRepositories"):
            emu.control.fault(f"ecr:{op}", rate=0.2, error="ThrottlingException", user_agent="aws-sdk-rust", seed=size)
        env = base_env(emu.url) | {"ECR_REMEDIATOR_MODE": "tag"}
        code, wall, rss, text = run_measured(
            [str(cli), "sweep", "--repository-prefix", prefix, "--put-tps", str(put_tps), "--output", "json"], env
        )
        injected = emu.control.faults()["injected"]
        emu.control.clear_faults()
        summary = json.loads(text.strip().splitlines()[-1])["summary"]
        puts = emu.control.calls().get("ecr:PutImage", 0)
        throttled_puts = injected.get("ecr:PutImage", {}).get("ThrottlingException", 0)
        landed = puts - throttled_puts
        row = {
            "images": size,
            "repositories": 20,
            "exit": code,
            "handled": summary["images_handled"],
            "remediated": summary["remediated"],
            "failed": summary["failed"],
            "wall_s": round(wall, 1),
            "puts_landed": landed,
            "put_tps": put_tps,
            "share_of_put_rate": round(landed / wall / put_tps, 3),
            "throttles_injected": sum(v.get("ThrottlingException", 0) for v in injected.values()),
            "peak_rss_mb": round(rss / 1024, 1),
        }
        print(f"  sweep of {size} images: {row}", file=sys.stderr)
        out.append(row)
    return out


def cleanup_runs(cli: Path, emu: EmulatorProcess, ecr: Any, sizes: list[int]) -> list[dict[str, Any]]:
    """`ecr-remediator sweep --delete-orphans` (promote, keep tag off) over 20
    repositories holding `size` images in all, every index a leftover of an
    earlier promotion, with 20 % of the service's ECR calls throttled: the
    leftover search (every index read once) and the deletions."""
    out = []
    for size in sizes:
        prefix = f"bench/cleanup{size}-"
        seed_registry(emu, ecr, prefix, size, leftover=True)
        emu.control.clear_calls()
        emu.control.clear_faults()
        for op in ("BatchGetImage", "BatchDeleteImage", "DescribeImages", "DescribeRepositories"):
            emu.control.fault(f"ecr:{op}", rate=0.2, error="ThrottlingException", user_agent="aws-sdk-rust", seed=size)
        env = base_env(emu.url) | {"ECR_REMEDIATOR_MODE": "promote", "ECR_REMEDIATOR_KEEP_TAG": "false"}
        code, wall, rss, text = run_measured(
            [
                str(cli),
                "sweep",
                "--repository-prefix",
                prefix,
                "--delete-orphans",
                "--min-age",
                "0s",
                "--grace-period",
                "0s",
                "--output",
                "json",
            ],
            env,
        )
        injected = emu.control.faults()["injected"]
        emu.control.clear_faults()
        summary = json.loads(text.strip().splitlines()[-1])["summary"]
        calls = emu.control.calls()
        throttled = {op.split(":")[1]: v.get("ThrottlingException", 0) for op, v in injected.items()}
        row = {
            "images": size,
            "repositories": 20,
            "exit": code,
            "leftovers": summary["leftovers_handled"],
            "deleted": summary["manifests_deleted"],
            "failed": summary["failed"],
            "wall_s": round(wall, 1),
            "batch_get_image": calls.get("ecr:BatchGetImage", 0) - throttled.get("BatchGetImage", 0),
            "throttles_injected": sum(throttled.values()),
            "peak_rss_mb": round(rss / 1024, 1),
        }
        print(f"  cleanup sweep of {size} images: {row}", file=sys.stderr)
        out.append(row)
    return out


def cleanup_table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| images (20 repositories) | leftovers handled | manifests deleted | failed | BatchGetImage served | wall time | throttles injected | peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['images']:,} | {r['leftovers']:,} | {r['deleted']:,} | {r['failed']} | {r['batch_get_image']:,} "
            f"| {r['wall_s']} s | {r['throttles_injected']:,} | {r['peak_rss_mb']} MB |"
        )
    return "\n".join(out)


def sweep_table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| images (20 repositories) | handled | failed | PutImage landed | wall time | share of --put-tps | throttles injected | peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['images']:,} | {r['handled']:,} | {r['failed']} | {r['puts_landed']:,} | {r['wall_s']} s "
            f"| {r['share_of_put_rate']:.0%} of {r['put_tps']:g}/s | {r['throttles_injected']:,} | {r['peak_rss_mb']} MB |"
        )
    return "\n".join(out)


def table(rows: list[dict[str, Any]], lam: dict[str, Any] | None, sizes: dict[str, int]) -> str:
    out = [
        "| images in repository | scenario | ECR reads | all ECR calls | ECS and Lambda calls | peak RSS | wall time |",
        "|---:|---|---:|---|---|---:|---:|",
    ]
    for r in rows:
        calls = ", ".join(f"{k.split(':')[1]} {v}" for k, v in sorted(r["calls"].items()))
        other = ", ".join(f"{k} {v}" for k, v in sorted(r.get("other_calls", {}).items())) or "none"
        out.append(
            f"| {r['images_in_repository']:,} | {r['scenario']} ({r['outcome']}) | {r['reads']} | {calls} | {other} "
            f"| {r['peak_rss_mb']} MB | {r['wall_ms']} ms |"
        )
    if lam is None:
        return "\n".join(out)
    out.append("")
    out.append(
        f"`bootstrap` ({lam['runs']} cold starts): ready in {lam['cold_start_to_ready_ms_median']} ms median "
        f"(max {lam['cold_start_to_ready_ms_max']}), first event handled in {lam['first_event_ms_median']} ms median "
        f"(max {lam['first_event_ms_max']}), peak RSS {lam['peak_rss_mb_max']} MB. Release binaries: "
        + ", ".join(f"`{k}` {v / 1e6:.1f} MB" for k, v in sizes.items())
        + "."
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, default=Path("target/release"), help="where the release binaries are")
    parser.add_argument("--runs", type=int, default=5, help="bootstrap cold starts to measure")
    parser.add_argument("--json", type=Path, default=Path("target/bench.json"))
    parser.add_argument("--sweep-images", type=int, nargs="*", default=[1_000, 10_000], help="registry sizes for the sweep runs")
    parser.add_argument("--put-tps", type=float, default=10.0, help="--put-tps of the sweep runs")
    parser.add_argument("--hub-accounts", type=int, nargs="*", default=[1, 100, 1_000], help="member accounts for the hub runs")
    parser.add_argument("--hub-only", action="store_true", help="only the hub runs (same as --parts hub)")
    parser.add_argument(
        "--parts",
        nargs="*",
        choices=PARTS,
        default=list(PARTS),
        help="which measurements to run (default: all)",
    )
    parser.add_argument(
        "--doc",
        type=Path,
        help="rewrite the generated section of this Markdown file (docs/performance.md) with the tables; all parts only",
    )
    parser.add_argument("--scan", type=int, nargs=3, default=[50, 500, 50], metavar=("CLUSTERS", "SERVICES", "FUNCTIONS"))
    args = parser.parse_args(argv)
    from hub import hub_runs, hub_table  # here: hub.py and scan.py import this module's helpers
    from scan import scan_runs, scan_table

    cli, bootstrap = args.target / "ecr-remediator", args.target / "bootstrap"
    for binary in (cli, bootstrap):
        if not binary.is_file():
            parser.error(f"{binary} not found: cargo build --release first (make bench does)")
    # What the binaries were built from (make builds them right before this runs).
    built_from = source_state()
    emu = EmulatorProcess()
    try:
        ecr = boto3.client(
            "ecr",
            endpoint_url=emu.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        parts = ["hub"] if args.hub_only else args.parts
        result: dict[str, Any] = {}
        if "per_push" in parts:
            print("per push:", file=sys.stderr)
            result["per_push"] = per_push(cli, emu, ecr)
        if "bootstrap" in parts:
            print("bootstrap:", file=sys.stderr)
            result["bootstrap"] = lambda_runs(bootstrap, emu, ecr, args.runs)
        if "sweep" in parts:
            print("sweep:", file=sys.stderr)
            result["sweep"] = sweep_runs(cli, emu, ecr, args.sweep_images, args.put_tps)
        if "cleanup" in parts:
            print("cleanup sweep:", file=sys.stderr)
            result["cleanup"] = cleanup_runs(cli, emu, ecr, args.sweep_images)
        if "scan" in parts:
            print("workload scan:", file=sys.stderr)
            result["scan"] = scan_runs(cli, emu, *args.scan)
        if "hub" in parts:
            print("hub:", file=sys.stderr)
            result["hub"] = hub_runs(cli, bootstrap, emu, args.hub_accounts)
    finally:
        emu.stop()
    result["binary_bytes"] = {b.name: b.stat().st_size for b in (bootstrap, cli)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    name = args.json if set(parts) == set(PARTS) else args.json.with_name(f"bench-{'-'.join(parts)}.json")
    name.write_text(json.dumps(result, indent=2))
    tables = []
    if "per_push" in result:
        tables.append("### One push\n\n" + table(result["per_push"], result.get("bootstrap"), result["binary_bytes"]))
    if "sweep" in result:
        tables.append("### Sweep (tag mode, 20 % throttled)\n\n" + sweep_table(result["sweep"]))
    if "cleanup" in result:
        tables.append("### Cleanup sweep (every index a leftover, 20 % throttled)\n\n" + cleanup_table(result["cleanup"]))
    if "scan" in result:
        tables.append("### Workload scan of a busy account (one push, deletion at once)\n\n" + scan_table(result["scan"]))
    if "hub" in result:
        tables.append("### Organisation hub\n\n" + hub_table(result["hub"]))
    text = "\n\n".join(tables)
    print(text)
    if args.doc is not None:
        if set(parts) != set(PARTS):
            parser.error("--doc rewrites the whole generated section: run every part")
        write_doc(args.doc, text, " ".join(["bench.py", *(argv if argv is not None else sys.argv[1:])]), built_from)
    return 0


DOC_BEGIN = "<!-- generated by make bench: begin -->"
DOC_END = "<!-- generated by make bench: end -->"


def source_state() -> str:
    """The commit the working tree is at, marked when it has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{commit} with uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else commit


def write_doc(path: Path, tables: str, command: str, built_from: str) -> None:
    """Replace what lies between the two markers of `path` with `tables`,
    headed by when, where and with what command they were measured, and what
    the binaries were built from."""
    doc = path.read_text()
    begin, end = doc.find(DOC_BEGIN), doc.find(DOC_END)
    if begin < 0 or end < begin:
        raise SystemExit(f"{path}: the markers {DOC_BEGIN!r} and {DOC_END!r} are missing")
    machine = f"{os.cpu_count()} cores, {os.uname().machine}, Linux {os.uname().release}"
    header = (
        f"Measured {time.strftime('%Y-%m-%d', time.gmtime())}, binaries built from `{built_from}`, on this "
        f"machine ({machine}) by `make bench` (`{command}`)."
    )
    section = f"{DOC_BEGIN}\n{header}\n\n{tables}\n{DOC_END}"
    path.write_text(doc[:begin] + section + doc[end + len(DOC_END) :])
    print(f"{path}: generated section rewritten", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
