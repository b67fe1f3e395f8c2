"""Readiness probes for the local stack: a real request to each service, exit 0 when it answers.

    probe.py s3 [BUCKET...]      signed ListBuckets (creates the buckets named)
    probe.py kafka [TOPIC:N...]  metadata request (creates the topics named, N partitions)
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
    client = make_s3_client(settings.s3_endpoint(None))
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in buckets:
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)


def probe_kafka(topics: list[str]) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from xraylab.settings import load_settings

    settings = load_settings()
    admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP, request_timeout_ms=5000,
                             bootstrap_timeout_ms=5000)
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
    {"s3": lambda: probe_s3(rest), "kafka": lambda: probe_kafka(rest), "mariadb": probe_mariadb,
     "prometheus": lambda: probe_prometheus(rest[0] if rest else None),
     "orthanc": lambda: probe_orthanc(rest[0] if rest else None)}[kind]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
