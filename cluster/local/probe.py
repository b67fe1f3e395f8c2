"""Readiness probes for the local stack: a real request to each service, exit 0 when it answers.

    probe.py s3 [BUCKET...]      signed ListBuckets (creates the buckets named)
    probe.py kafka [TOPIC:N...]  metadata request as the admin over SASL_SSL (creates the topics named, N partitions)
    probe.py kafka-acls          the SCRAM users of the jobs and their ACLs (xraylab/kafka_security.py), as the admin
    probe.py mariadb             SELECT 1 as the application user
    probe.py prometheus [URL]    GET URL/-/ready answers 200 (default URL: XRAYLAB_PROMETHEUS_URL)
    probe.py orthanc [URL]       GET URL/system with the Orthanc user's basic auth (default URL: XRAYLAB_ORTHANC_URL)
"""

from __future__ import annotations

import contextlib
import sys


def probe_s3(buckets: list[str]) -> None:
    from xraylab.settings import load_settings
    from xraylab.storage import make_s3_client

    settings = load_settings()
    client = make_s3_client(settings.s3_endpoint(None, "admin"))
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in buckets:
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)


def probe_kafka(topics: list[str]) -> None:
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = _kafka_admin()
    try:
        existing = set(admin.list_topics())
        wanted = []
        for spec in topics:
            name, _, parts = spec.partition(":")
            if name not in existing:
                wanted.append(NewTopic(name=name, num_partitions=int(parts or 1), replication_factor=1))
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(wanted)
    finally:
        admin.close()


def _kafka_admin():  # noqa: ANN202
    from kafka import KafkaAdminClient

    from xraylab.kafka_security import client_config
    from xraylab.settings import load_settings

    return KafkaAdminClient(**client_config(load_settings(), "admin"), request_timeout_ms=5000,
                            bootstrap_timeout_ms=5000)


def probe_kafka_acls() -> None:
    """Each job's SCRAM user (its password from the env file) and exactly the ACLs of its job."""
    from kafka.admin import (
        ACL,
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourcePatternFilter,
        ResourceType,
        UserScramCredentialUpsertion,
    )

    from xraylab.kafka_security import JOBS, job_acls, job_password, job_user
    from xraylab.settings import load_settings

    settings = load_settings()
    admin = _kafka_admin()
    try:
        jobs = [job for job in JOBS if job != "admin"]
        admin.alter_user_scram_credentials([
            UserScramCredentialUpsertion(job_user(settings, job), settings.KAFKA_SASL_MECHANISM,
                                         job_password(settings, job))
            for job in jobs])
        for job in jobs:  # what a user may do is its job's list, nothing left from an earlier one
            principal = f"User:{job_user(settings, job)}"
            admin.delete_acls([ACLFilter(principal, None, ACLOperation.ANY, ACLPermissionType.ANY,
                                         ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY))])
            admin.create_acls([
                ACL(principal, "*", ACLOperation[operation], ACLPermissionType.ALLOW,
                    ResourcePattern(ResourceType[kind.upper()], name, ACLResourcePatternType.LITERAL))
                for kind, name, operation in job_acls(settings, job)])
    finally:
        admin.close()


def probe_mariadb() -> None:
    from sqlalchemy import create_engine, text

    from xraylab.settings import load_settings

    engine = create_engine(load_settings().database_url("mariadb"), connect_args={"connect_timeout": 3})
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()


def probe_prometheus(url: str | None) -> None:
    import urllib.request

    if not url:
        from xraylab.settings import load_settings

        url = load_settings().PROMETHEUS_URL
    with urllib.request.urlopen(url.rstrip("/") + "/-/ready", timeout=3) as response:
        assert response.status == 200, f"{url}/-/ready answered {response.status}"


def probe_orthanc(url: str | None) -> None:
    import base64
    import json
    import urllib.request

    from xraylab.settings import load_settings

    settings = load_settings()
    url = (url or settings.ORTHANC_URL).rstrip("/")
    password = settings.ORTHANC_PASSWORD.get_secret_value()
    assert password, "XRAYLAB_ORTHANC_PASSWORD is not set: start Orthanc with cluster/local/orthanc.sh"
    token = base64.b64encode(f"{settings.ORTHANC_USER}:{password}".encode()).decode()
    request = urllib.request.Request(url + "/system", headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=3) as response:
        assert response.status == 200, f"{url}/system answered {response.status}"
        assert "Version" in json.load(response), f"{url}/system did not answer like Orthanc"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)  # noqa: T201
        return 2
    kind, rest = argv[0], argv[1:]
    {"s3": lambda: probe_s3(rest), "kafka": lambda: probe_kafka(rest), "kafka-acls": probe_kafka_acls,
     "mariadb": probe_mariadb,
     "prometheus": lambda: probe_prometheus(rest[0] if rest else None),
     "orthanc": lambda: probe_orthanc(rest[0] if rest else None)}[kind]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
