"""The production-like mode: production's processes and bindings on one machine, checked.

    .venv/bin/python deploy/production_like.py [--artifacts DIR] [--timeout 600] [--keep]

(``make production-like``; ``.ci/run`` runs it.) What runs, each as its own process:

- **PostgreSQL** (the machine's, ``--pg``): Dagster's storage (dagster-postgres) and the app
  database, two fresh databases named after this run, dropped at the end (``--keep`` keeps
  them and the work folder).
- **AWS on a moto server** (``moto_server``): the four SQS queues, each with its DLQ, the
  uploads bucket, the compute-log bucket and the report sender's SES identity. Every
  process finds it through ``AWS_ENDPOINT_URL``, which boto3 reads itself.
- **The vendors on a sandbox server** (``mail-pipeline sandbox-server``): it also delivers
  the printers' status webhooks to the status queue, as the webhook ingress does.
- **The code location** served by ``dagster code-server start`` over gRPC with
  ``MAIL_PIPELINE_ENV=production`` and ``MAIL_PIPELINE_STAGING=1``: the production bindings -
  ``LivePrinters`` and ``StripeBilling`` pointed at the sandbox server, ``SqsQueues``,
  ``SesReportEmail`` and ``S3Uploads`` on moto (``definitions.staging_on_sandbox_resources``).
- **dagster-webserver** and **the daemon** (``mail-pipeline daemon`` when this build has it,
  else ``dagster-daemon run``) with ``deploy/dagster.production.yaml`` as the instance,
  except that runs are launched as local processes (no ECS here) and compute logs go to
  the moto bucket.

Then ``mail-pipeline demo`` seeds the demo brands, and the script waits until the demo's
recipients reach Received through the real sensors, runs and webhooks. Last, the UI
checker (``deploy/checks/ui_check.py``) asks the GraphQL API for the code location, its
sensors, schedules and assets and the runs of each stage, opens the runs page and the asset
graph in headless Chromium and saves screenshots in ``--artifacts`` (skipped with a message
when Chromium is not installed). Exit status 0 only when every check passed; on a failure
the end of each process's log is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psycopg
import yaml
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PRODUCTION_YAML = ROOT / "deploy" / "dagster.production.yaml"
UI_CHECK = ROOT / "deploy" / "checks" / "ui_check.py"
#: The jobs the demo's flow runs through, each of which must have succeeded at least once.
STAGE_JOBS = ("sync_organization_job", "proofing_job", "mailing_job", "mail_status_job")
QUEUES = {
    "MAIL_STATUS_QUEUE_URL": "mail-status",
    "IMAGE_DELETION_QUEUE_URL": "image-deletion",
    "AUDIT_QUEUE_URL": "audit-requests",
    "REPORT_EMAIL_EVENTS_QUEUE_URL": "report-email-events",
}
REPORT_SENDER = "reports@staging.example.com"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not listen on port {port} within {seconds:.0f} s")


@dataclass
class Stack:
    """The processes of one production-like run, their logs and their environment."""

    work: Path
    pg_url: str
    name: str = field(default_factory=lambda: f"mp_prodlike_{os.getpid()}")
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    def start(
        self, name: str, command: list[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=dict(env or self.env),
            stdout=(self.logs / f"{name}.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def run(self, name: str, command: list[str], env: Mapping[str, str] | None = None) -> str:
        done = subprocess.run(
            command, cwd=ROOT, env=dict(env or self.env), capture_output=True, text=True
        )
        (self.logs / f"{name}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def tails(self, lines: int = 40) -> str:
        out = []
        for log in sorted(self.logs.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"---- {log.name} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(out)


# -- PostgreSQL ---------------------------------------------------------------------------


def _database_url(pg_url: str, database: str, driver: str = "") -> str:
    base = pg_url.rsplit("/", 1)[0]
    _scheme, rest = base.split("://", 1)
    return f"{'postgresql' + driver}://{rest}/{database}"


@contextlib.contextmanager
def databases(pg_url: str, names: list[str], keep: bool) -> Iterator[None]:
    """Fresh databases ``names`` on the server of ``pg_url``; dropped at the end."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for name in names:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield
    finally:
        if not keep:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                for name in names:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )


# -- AWS on moto --------------------------------------------------------------------------


def aws_setup(endpoint: str, bucket: str, logs_bucket: str) -> dict[str, str]:
    """The queues (each with its DLQ), the buckets and the SES sender on the moto server;
    returns the queue URL variables."""
    from mail_pipeline.integrations.queues.sqs_setup import ensure_queue_with_dlq

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    sqs = session.client("sqs", endpoint_url=endpoint)
    urls = {var: ensure_queue_with_dlq(sqs, name)[0] for var, name in QUEUES.items()}
    s3 = session.client("s3", endpoint_url=endpoint)
    for name in (bucket, logs_bucket):
        s3.create_bucket(Bucket=name)
    ses = session.client("ses", endpoint_url=endpoint)
    ses.verify_email_identity(EmailAddress=REPORT_SENDER)
    ses.create_configuration_set(ConfigurationSet={"Name": "mail-pipeline-reports"})
    return urls


# -- the instance -------------------------------------------------------------------------


def instance_yaml(logs_bucket: str, endpoint: str) -> str:
    """``deploy/dagster.production.yaml`` as this machine runs it: runs launched as local
    processes instead of on ECS (with the embedded default's launcher, whose run workers'
    health the run monitoring checks on this machine), compute logs in the moto bucket.
    Everything else - the PostgreSQL storage, the run queue and its limits, run monitoring
    and retries, the sensor and schedule threads, retention - is production's own."""
    config: dict[str, Any] = yaml.safe_load(PRODUCTION_YAML.read_text())
    config["run_launcher"] = {"module": "mail_pipeline.run_launcher", "class": "LocalRunLauncher"}
    config["compute_logs"] = {
        "module": "dagster_aws.s3.compute_log_manager",
        "class": "S3ComputeLogManager",
        "config": {
            "bucket": logs_bucket,
            "prefix": "compute-logs",
            "endpoint_url": endpoint,
            "region": REGION,
        },
    }
    return yaml.safe_dump(config, sort_keys=False)


def production_env(
    stack: Stack, sandbox_url: str, endpoint: str, urls: dict[str, str]
) -> dict[str, str]:
    """The variables a staging deployment on the sandbox server runs with (see
    ``settings.production_problems``): test credentials, the sandbox printers' own keys."""
    from mail_pipeline.integrations.billing.sandbox import SANDBOX_API_KEY
    from mail_pipeline.integrations.printers.sandbox.intelliprint import IntelliPrintSandbox
    from mail_pipeline.integrations.printers.sandbox.lob import LobSandbox
    from mail_pipeline.integrations.printers.sandbox.stannp import StannpSandbox

    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ")}
    return {
        **keep,
        "DAGSTER_HOME": str(stack.work / "dagster_home"),
        "DAGSTER_PG_URL": _database_url(stack.pg_url, f"{stack.name}_dagster", "+psycopg2"),
        "DAGSTER_EVENT_BATCH_SIZE": "1000",
        "MAIL_PIPELINE_ENV": "production",
        "MAIL_PIPELINE_STAGING": "1",
        "MAIL_PIPELINE_DEPLOYMENT": "staging",
        "MAIL_PIPELINE_SANDBOX_URL": sandbox_url,
        "MAIL_PIPELINE_DATA_DIR": str(stack.work / "data"),
        "MAIL_PIPELINE_DATABASE_URL": _database_url(stack.pg_url, f"{stack.name}_app"),
        "MAIL_PIPELINE_PRINTERS_TEST_MODE": "1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "LOB_API_KEY": LobSandbox.default_api_key,
        "LOB_WEBHOOK_SECRET": LobSandbox.default_webhook_secret,
        "STANNP_API_KEY": StannpSandbox.default_api_key,
        "STANNP_WEBHOOK_SECRET": StannpSandbox.default_webhook_secret,
        "INTELLIPRINT_API_KEY": IntelliPrintSandbox.default_api_key,
        "INTELLIPRINT_WEBHOOK_SECRET": IntelliPrintSandbox.default_webhook_secret,
        "STRIPE_API_KEY": SANDBOX_API_KEY,
        # The image host is the sandbox server's; production's checks still want these set.
        "CLOUDFLARE_ACCOUNT_ID": "staging-account",
        "CLOUDFLARE_IMAGES_TOKEN": "staging-token",
        "CLOUDFLARE_ACCOUNT_HASH": "staging-hash",
        "PROOF_IMAGE_ID_KEY": secrets.token_hex(32),
        "FARADAY_API_KEY": "staging-faraday",
        "SES_CONFIGURATION_SET": "mail-pipeline-reports",
        "REPORT_EMAIL_SENDER": REPORT_SENDER,
        "REPORT_RECIPIENT_TEMPLATE": "csm+{slug}@staging.example.com",
        "MAIL_PIPELINE_UPLOADS_BUCKET": f"{stack.name.replace('_', '-')}-uploads",
        **urls,
    }


# -- waiting for the demo -----------------------------------------------------------------


def recipient_counts(app_url: str) -> dict[str, int]:
    with psycopg.connect(app_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = conn.execute("SELECT status, count(*) FROM recipients GROUP BY status").fetchall()
    return {str(status): int(n) for status, n in rows}


def wait_for_received(app_url: str, minimum: int, timeout: float) -> dict[str, int]:
    started = time.monotonic()
    last = ""
    while True:
        counts = recipient_counts(app_url)
        line = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no recipients yet"
        if line != last:
            print(f"  {time.monotonic() - started:5.0f} s  {line}", flush=True)
            last = line
        if counts.get("Received", 0) >= minimum:
            return counts
        if time.monotonic() - started > timeout:
            raise RuntimeError(
                f"fewer than {minimum} recipients reached Received within {timeout:.0f} s ({line})"
            )
        time.sleep(5)


def daemon_command(env: Mapping[str, str], workspace: Path) -> list[str]:
    """``mail-pipeline daemon`` (one daemon per instance, enforced) when this build has it."""
    probe = subprocess.run(
        [str(BIN / "mail-pipeline"), "daemon", "--help"],
        env=dict(env),
        capture_output=True,
        text=True,
    )
    if probe.returncode == 0:
        return [str(BIN / "mail-pipeline"), "daemon", "-w", str(workspace)]
    return [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "MAIL_PIPELINE_CI_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server to create the run's databases on (any database URL on it)",
    )
    parser.add_argument("--artifacts", default=str(ROOT / "artifacts" / "production-like"))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the demo")
    parser.add_argument("--min-received", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the work folder and databases")
    args = parser.parse_args(argv)

    try:
        with psycopg.connect(args.pg, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        print(f"production-like mode needs PostgreSQL at {args.pg}: {exc}", file=sys.stderr)
        return 2

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(f"signal {signum}: stopping")  # the cleanup below still runs

    signal.signal(signal.SIGTERM, on_signal)
    work = Path(tempfile.mkdtemp(prefix="mail-pipeline-production-like-"))
    artifacts = Path(args.artifacts)
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True)
    stack = Stack(work, args.pg)
    print(f"production-like mode: work folder {work}, artifacts {artifacts}", flush=True)
    ok = False
    try:
        with databases(args.pg, [f"{stack.name}_dagster", f"{stack.name}_app"], args.keep):
            ok = run_stack(stack, args, artifacts)
    except (RuntimeError, OSError, subprocess.SubprocessError, SystemExit) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
    finally:
        stack.stop()
        if stack.logs.exists():
            shutil.copytree(stack.logs, artifacts / "logs", dirs_exist_ok=True)
        if not ok and stack.logs.exists():
            print(stack.tails(), file=sys.stderr)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("production-like mode: " + ("PASSED" if ok else "FAILED"), flush=True)
    return 0 if ok else 1


def run_stack(stack: Stack, args: argparse.Namespace, artifacts: Path) -> bool:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ")}
    moto_port = free_port()
    endpoint = f"http://127.0.0.1:{moto_port}"
    moto = stack.start(
        "moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)], base
    )
    wait_for_port(moto_port, moto, "moto_server", 60)
    bucket = f"{stack.name.replace('_', '-')}-uploads"
    urls = aws_setup(endpoint, bucket, f"{stack.name.replace('_', '-')}-compute-logs")
    print(f"moto server at {endpoint}: queues {', '.join(QUEUES.values())}", flush=True)

    data = stack.work / "data"
    data.mkdir(parents=True)
    sandbox_port = free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    aws = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }
    sandbox = stack.start(
        "sandbox",
        [
            str(BIN / "mail-pipeline"),
            "sandbox-server",
            "--port",
            str(sandbox_port),
            "--store",
            str(data / "sandbox.sqlite"),
            "--image-dir",
            str(data / "images"),
            "--webhooks-to-sqs",
            urls["MAIL_STATUS_QUEUE_URL"],
            "--in-transit-after",
            "6",
            "--delivered-after",
            "15",
            "--latency",
            "*=0.05",
        ],
        {**base, **aws, "MAIL_PIPELINE_ENV": "local", "MAIL_PIPELINE_DATA_DIR": str(data)},
    )
    wait_for_port(sandbox_port, sandbox, "the sandbox server", 60)
    print(f"sandbox server at {sandbox_url}", flush=True)

    stack.env = production_env(stack, sandbox_url, endpoint, urls)
    home = Path(stack.env["DAGSTER_HOME"])
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(
        instance_yaml(f"{stack.name.replace('_', '-')}-compute-logs", endpoint)
    )
    stack.run("migrate", [str(BIN / "mail-pipeline"), "migrate"])
    print(stack.run("demo", [str(BIN / "mail-pipeline"), "demo"]).strip(), flush=True)

    grpc_port = free_port()
    workspace = stack.work / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
        f"      port: {grpc_port}\n      location_name: mail_pipeline\n"
    )
    code_server = stack.start(
        "code_server",
        [
            str(BIN / "dagster"),
            "code-server",
            "start",
            "-m",
            "mail_pipeline.definitions",
            "--location-name",
            "mail_pipeline",
            "-h",
            "127.0.0.1",
            "-p",
            str(grpc_port),
        ],
    )
    wait_for_port(grpc_port, code_server, "the code server", 180)
    web_port = free_port()
    webserver = stack.start(
        "webserver",
        [
            str(BIN / "dagster-webserver"),
            "-w",
            str(workspace),
            "-h",
            "127.0.0.1",
            "-p",
            str(web_port),
        ],
    )
    daemon = stack.start("daemon", daemon_command(stack.env, workspace))
    wait_for_port(web_port, webserver, "dagster-webserver", 180)
    print(
        f"code server on :{grpc_port}, webserver on http://127.0.0.1:{web_port}, daemon pid "
        f"{daemon.pid}; waiting for the demo's recipients to reach Received",
        flush=True,
    )
    counts = wait_for_received(
        stack.env["MAIL_PIPELINE_DATABASE_URL"], args.min_received, args.timeout
    )
    for name, process in stack.processes.items():
        if process.poll() is not None:
            raise RuntimeError(f"{name} died with status {process.returncode}")

    check = subprocess.run(
        [
            sys.executable,
            str(UI_CHECK),
            "--url",
            f"http://127.0.0.1:{web_port}",
            "--out",
            str(artifacts),
            "--expect-running",
            "--browser-optional",
            "--expect-success",
            ",".join(STAGE_JOBS),
        ],
        cwd=ROOT,
        env={**os.environ, "MAIL_PIPELINE_ENV": "local"},
        text=True,
    )
    summary = {
        "recipients": counts,
        "stats": json.loads(urllib.request.urlopen(f"{sandbox_url}/_stats", timeout=10).read()),
        "ui_check": check.returncode,
    }
    (artifacts / "production-like.json").write_text(json.dumps(summary, indent=2))
    return check.returncode == 0


if __name__ == "__main__":
    raise SystemExit(main())
