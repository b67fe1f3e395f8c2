"""How each job of xraylab connects to Kafka: SASL/SCRAM over TLS as the job's own user.

The broker (``cluster/local/kafka.sh`` locally) accepts clients only on a SASL_SSL listener, checks the
certificate chain against ``KAFKA_CA_FILE`` and authorises each user by ACLs for its one job:

============  =======================================================================
job           may
============  =======================================================================
notifier      write the upload topic (the S3 and PACS notifiers; test and benchmark producers)
ingest        read the upload topic in the ingest group, write the dead-letter topic
monitor       write the alert topic
admin         everything (super user): topics, ACLs, reading and replaying the DLQ
============  =======================================================================

``ACLS`` is that table as data: ``cluster/local/probe.py kafka-acls`` applies it and a test reads it back from
the broker. A process is given the passwords of its own jobs only; a job whose password it lacks fails at
once with the name of the setting, before anything connects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from xraylab.settings import MissingCredentialsError, Settings

__all__ = ["KafkaJob", "JOBS", "MissingKafkaCredentialsError", "client_config", "job_user", "job_password",
           "job_acls"]

KafkaJob = Literal["notifier", "ingest", "monitor", "admin"]
JOBS: tuple[KafkaJob, ...] = ("notifier", "ingest", "monitor", "admin")


class MissingKafkaCredentialsError(MissingCredentialsError):
    """This process was not given the Kafka credentials (or the CA) of a job it tried to do."""


def job_user(settings: Settings, job: KafkaJob) -> str:
    return str(getattr(settings, f"KAFKA_{job.upper()}_USER"))


def job_password(settings: Settings, job: KafkaJob) -> str:
    """The job's SCRAM password as this process was given it ("" when it was not)."""
    return str(getattr(settings, f"KAFKA_{job.upper()}_PASSWORD").get_secret_value())


def job_acls(settings: Settings, job: KafkaJob) -> list[tuple[str, str, str]]:
    """(resource type, literal name, operation) the job's user is allowed; the admin is a super user."""
    if job == "notifier":
        return [("topic", settings.KAFKA_TOPIC, op) for op in ("WRITE", "DESCRIBE")]
    if job == "ingest":
        return ([("topic", settings.KAFKA_TOPIC, op) for op in ("READ", "DESCRIBE")]
                + [("group", settings.KAFKA_GROUP, op) for op in ("READ", "DESCRIBE")]
                + [("topic", settings.KAFKA_DLQ_TOPIC, op) for op in ("WRITE", "DESCRIBE")])
    if job == "monitor":
        return [("topic", settings.ALERT_TOPIC, op) for op in ("WRITE", "DESCRIBE")]
    return []


def client_config(settings: Settings, job: KafkaJob) -> dict[str, Any]:
    """kafka-python keyword arguments that connect as ``job``'s user (bootstrap servers included)."""
    config: dict[str, Any] = {"bootstrap_servers": settings.KAFKA_BOOTSTRAP,
                              "security_protocol": settings.KAFKA_SECURITY_PROTOCOL}
    if settings.KAFKA_SECURITY_PROTOCOL == "PLAINTEXT":  # refused in production (settings)
        return config
    password = job_password(settings, job)
    if not password:
        raise MissingKafkaCredentialsError(
            f"XRAYLAB_KAFKA_{job.upper()}_PASSWORD is not set: this process has no Kafka credentials for the "
            f"{job} job (cluster/local/kafka.sh writes them into the local env file; docs/security.md)")
    ca_file = Path(str(settings.KAFKA_CA_FILE))
    if not ca_file.is_file():
        raise MissingKafkaCredentialsError(
            f"XRAYLAB_KAFKA_CA_FILE {ca_file} not found: the CA certificate that signed the broker's is needed")
    config.update(sasl_mechanism=settings.KAFKA_SASL_MECHANISM, sasl_plain_username=job_user(settings, job),
                  sasl_plain_password=password, ssl_cafile=str(ca_file), ssl_check_hostname=True)
    return config
