"""One typed settings object for every process of xraylab.

Values come from the environment (prefix ``XRAYLAB_``), then from the env file named by
``XRAYLAB_ENV_FILE`` (default ``<state dir>/local.env``, written by ``cluster/local/up.sh``
with generated credentials), then from the defaults below. The defaults of the local
service ports must match ``cluster/local/defaults.env``; a unit test checks that they do.
"""

from __future__ import annotations

import json
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from xraylab.bands import BAND_ORDER, DEFAULT_BANDS, Bands
from xraylab.redact import url_credential

if TYPE_CHECKING:
    from xraylab.imaging import ImageLimits

__all__ = ["S3Endpoint", "S3Job", "S3_JOBS", "Settings", "get_settings", "project_root", "UnknownEndpointError",
           "MissingCredentialsError"]

# The jobs that touch S3, each with an identity of its own (docs/security.md): the pipeline reads the source
# buckets, uploaders write them, training publishes models, serving reads them, the export writes research copies;
# the administrator makes buckets (the stack's scripts and the tests' fixtures, never a job of the pipeline).
S3Job = Literal["pipeline", "upload", "publish", "registry", "export", "admin"]
S3_JOBS: tuple[S3Job, ...] = ("pipeline", "upload", "publish", "registry", "export", "admin")
_S3_JOB_FIELDS = {"pipeline": "S3", "upload": "S3_UPLOAD", "publish": "S3_PUBLISH", "registry": "S3_REGISTRY",
                  "export": "S3_EXPORT", "admin": "S3_ADMIN"}

PLACEHOLDER_SECRETS = {"changethis", "changeme", "replace", ""}


def _is_placeholder(secret: str) -> bool:
    """An empty secret, or one left as the examples write it (``changethis``, ``REPLACE``)."""
    return secret.lower() in PLACEHOLDER_SECRETS or "changethis" in secret


def project_root() -> Path:
    """The checkout this package runs from (the folder holding ``pyproject.toml``)."""
    return Path(__file__).resolve().parent.parent


def _default_state_dir() -> Path:
    return Path(os.environ.get("XRAYLAB_STATE_DIR") or project_root() / ".xraylab").resolve()


def _env_file() -> Path:
    return Path(os.environ.get("XRAYLAB_ENV_FILE") or _default_state_dir() / "local.env")


class UnknownEndpointError(KeyError):
    """An event named an S3 endpoint id this deployment has no credentials for."""


class MissingCredentialsError(RuntimeError):
    """This process was not given the S3 identity of the job it tried to do."""


class S3Credentials(BaseModel):
    access_key: SecretStr
    secret_key: SecretStr


class S3Endpoint(BaseModel):
    """Where and how to reach one S3-compatible store. Events name it by id only. An extra endpoint's keys are
    the pipeline's (it reads ``buckets`` there); ``jobs`` may give other jobs' keys on it (the registry's, the
    export's)."""

    url: str
    access_key: SecretStr
    secret_key: SecretStr
    region: str = "us-east-1"
    buckets: list[str] = []  # the buckets events may name there; empty: S3_BUCKET
    jobs: dict[str, S3Credentials] = {}

    def secrets(self) -> list[str]:
        return [self.access_key.get_secret_value(), self.secret_key.get_secret_value(),
                *(v for c in self.jobs.values() for v in (c.access_key.get_secret_value(),
                                                          c.secret_key.get_secret_value()))]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="XRAYLAB_", extra="ignore", env_ignore_empty=True, case_sensitive=False
    )

    ENV: Literal["development", "production"] = "development"
    STATE_DIR: Path = Field(default_factory=_default_state_dir)

    # Database: SQLite embedded by default, MariaDB/MySQL through PyMySQL in production.
    DATABASE_URL: str = ""
    # The project's own MariaDB instance (written to the env file by cluster/local/mariadb.sh).
    MARIADB_URL: SecretStr = SecretStr("")

    # S3: the default endpoint ("local") plus any others as JSON {"id": {url, access_key, secret_key, buckets}}.
    # One identity per job (docs/security.md): S3_ACCESS_KEY is the pipeline's, which reads the source buckets
    # (Fetcher, review app, monitor); the others each do one job and a process is given only its own.
    S3_ENDPOINT_ID: str = "local"
    S3_ENDPOINT_URL: str = ""  # default: http://127.0.0.1:<S3_PORT>, the local stack
    S3_ACCESS_KEY: SecretStr = SecretStr("")
    S3_SECRET_KEY: SecretStr = SecretStr("")
    S3_UPLOAD_ACCESS_KEY: SecretStr = SecretStr("")  # uploaders: write the source bucket, nothing else
    S3_UPLOAD_SECRET_KEY: SecretStr = SecretStr("")
    S3_PUBLISH_ACCESS_KEY: SecretStr = SecretStr("")  # training: writes the model registry
    S3_PUBLISH_SECRET_KEY: SecretStr = SecretStr("")
    S3_REGISTRY_ACCESS_KEY: SecretStr = SecretStr("")  # serving: reads the model registry
    S3_REGISTRY_SECRET_KEY: SecretStr = SecretStr("")
    S3_EXPORT_ACCESS_KEY: SecretStr = SecretStr("")  # the research export: writes the research bucket
    S3_EXPORT_SECRET_KEY: SecretStr = SecretStr("")
    S3_ADMIN_ACCESS_KEY: SecretStr = SecretStr("")  # the store's administrator: makes buckets; no job has it
    S3_ADMIN_SECRET_KEY: SecretStr = SecretStr("")
    S3_REGION: str = "us-east-1"
    S3_EXTRA_ENDPOINTS: SecretStr = SecretStr("{}")  # it holds keys: a secret as a whole
    S3_BUCKET: str = "xray-images"
    # The buckets of the default endpoint that events may name (comma-separated; NAME* is a prefix); default:
    # S3_BUCKET. An event naming any other bucket or an unconfigured endpoint is dead-lettered, never read.
    S3_SOURCE_BUCKETS: str = ""

    # Kafka (topic names and partitions are also in cluster/local/defaults.env, for kafka.sh).
    KAFKA_BOOTSTRAP: str = ""  # default: 127.0.0.1:<KAFKA_PORT>, the local stack
    KAFKA_TOPIC: str = "xray-images"
    KAFKA_DLQ_TOPIC: str = "xray-images.dlq"
    KAFKA_GROUP: str = "xraylab-ingest"
    KAFKA_PARTITIONS: int = 3
    # Kafka security: SASL/SCRAM over TLS (cluster/local/kafka.sh makes a CA, the broker's certificate and one
    # SCRAM user per job, with ACLs for that job alone). A process is given the passwords of its own jobs only.
    KAFKA_SECURITY_PROTOCOL: Literal["SASL_SSL", "PLAINTEXT"] = "SASL_SSL"
    KAFKA_SASL_MECHANISM: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    KAFKA_CA_FILE: Path | None = None  # the CA that signed the broker's certificate; default <state>/kafka/certs/ca.crt
    KAFKA_NOTIFIER_USER: str = "xraylab-notifier"  # notifiers: write the upload topic
    KAFKA_NOTIFIER_PASSWORD: SecretStr = SecretStr("")
    KAFKA_INGEST_USER: str = "xraylab-ingest"  # ingest: read the upload topic in its group, write the DLQ
    KAFKA_INGEST_PASSWORD: SecretStr = SecretStr("")
    KAFKA_MONITOR_USER: str = "xraylab-monitor"  # the monitor: write alerts
    KAFKA_MONITOR_PASSWORD: SecretStr = SecretStr("")
    KAFKA_ADMIN_USER: str = "xraylab-admin"  # operators: topics, ACLs, reading and replaying the DLQ
    KAFKA_ADMIN_PASSWORD: SecretStr = SecretStr("")

    # Ingest (the Kafka ingest actors; see ingest/consumer.py).
    INGEST_ACTORS: int = Field(2, ge=1, description="ingest actors in the one consumer group")
    INGEST_MAX_IN_FLIGHT: int = Field(128, ge=1, description="objects one actor has in the pipeline at once")
    INGEST_MAX_ATTEMPTS: int = Field(5, ge=1, description="tries of an object that fails alone on a healthy pipeline")
    INGEST_MAX_RECORDS_PER_EVENT: int = Field(100, ge=1, description="an event with more records is dead-lettered")
    INGEST_STALL_S: float = Field(120.0, gt=0, description="health is red when lag waits this long with no commit")
    INGEST_LAG_WINDOW_S: float = Field(300.0, gt=0, description="health is red when lag grows over this window")
    DLQ_MAX_BYTES: int = Field(256 * 1024, ge=16 * 1024, description="a dead letter's size cap (the broker's is 1 MB)")

    # Local service ports (cluster/local/defaults.env holds the same defaults).
    KAFKA_PORT: int = 19092
    KAFKA_CONTROLLER_PORT: int = 19093
    S3_PORT: int = 18333
    SEAWEED_MASTER_PORT: int = 19333
    SEAWEED_VOLUME_PORT: int = 18080
    SEAWEED_FILER_PORT: int = 18888
    MARIADB_PORT: int = 13306
    LDAP_PORT: int = 13389  # the demo directory (cluster/local/slapd.sh): StartTLS
    LDAPS_PORT: int = 13636  # and LDAP over TLS
    # The SeaweedFS gRPC client's security.toml (mutual TLS), written by cluster/local/seaweedfs.sh;
    # default <state dir>/seaweedfs/client.
    SEAWEED_CLIENT_CONFIG_DIR: Path | None = None

    # The PACS (Orthanc, cluster/local/orthanc.sh): modalities send it DICOM by C-STORE; the PACS notifier follows
    # its /changes feed and the Fetcher reads instances through its REST API with these credentials. Events name it
    # by ORTHANC_ENDPOINT_ID, as they name an S3 endpoint by its id.
    ORTHANC_HTTP_PORT: int = 18042
    ORTHANC_DICOM_PORT: int = 14242
    ORTHANC_URL: str = ""  # default: http://127.0.0.1:<ORTHANC_HTTP_PORT>
    ORTHANC_AET: str = "XRAYLAB"
    ORTHANC_USER: str = "xraylab"
    ORTHANC_PASSWORD: SecretStr = SecretStr("")  # generated into the env file by cluster/local/orthanc.sh
    ORTHANC_ENDPOINT_ID: str = "pacs"
    ORTHANC_HOSPITAL: str = ""  # the hospital of studies from this PACS; empty: each study's InstitutionName
    MODALITY_AET: str = "XRAYLAB_MOD"  # the calling AE title of the simulated modality (xraylab upload --to-pacs)

    # Results back to the PACS and the RIS (xraylab/delivery_config.py, delivery/): the per-hospital destinations
    # file, the calling AE title that stores results (register it on each PACS), and the outbox's retry schedule.
    DELIVERY_CONFIG: Path | None = Field(None, description=(
        "where each hospital's results go (TOML, xraylab/delivery_config.py); unset: no delivery"))
    DELIVERY_AET: str = Field("XRAYLAB_RES", min_length=1, max_length=16)
    DELIVERY_RETRY_BASE_S: float = Field(2.0, gt=0, description="first wait after a destination failed")
    DELIVERY_RETRY_MAX_S: float = Field(60.0, gt=0, description="longest wait between tries of one destination")
    DELIVERY_POLL_S: float = Field(1.0, gt=0, description="how often the outbox is read for due messages")
    DELIVERY_MAX_ATTEMPTS: int = Field(10, ge=1, description=(
        "tries of a result that fails on its own (not its destination being down) before it is set aside"))
    DEMO_RIS_PORT: int = 12575  # the local stack's demo RIS listener (cluster/local/ris.sh)

    # The de-identified research export (xraylab/research_export.py, `xraylab export research`): studies whose
    # latest band is one of RESEARCH_BANDS (comma-separated) go to RESEARCH_BUCKET on the S3 endpoint
    # RESEARCH_ENDPOINT (default S3_ENDPOINT_ID), de-identified under the HMAC key RESEARCH_KEY (pseudonyms, UIDs,
    # date shifts: keep it secret and keep it; cluster/local/up.sh generates one into the env file).
    RESEARCH_BUCKET: str = "xray-research"
    RESEARCH_ENDPOINT: str = ""
    RESEARCH_BANDS: str = "Unsure"
    RESEARCH_KEY: SecretStr = SecretStr("")
    RESEARCH_MAX_SHIFT_DAYS: int = Field(365, ge=1, description="dates move back 1 to this many days per patient")

    # Model registry (xraylab/registry): empty = the folder MODEL_DIR on this machine (the embedded default);
    # s3://BUCKET[/PREFIX] = a bucket every node shares, on the S3 endpoint MODEL_REGISTRY_ENDPOINT (default
    # S3_ENDPOINT_ID), cached per node in MODEL_CACHE_DIR. Which version serves is an app argument (AppArgs).
    MODEL_DIR: Path | None = None
    MODEL_REGISTRY: str = ""
    MODEL_REGISTRY_ENDPOINT: str = ""
    MODEL_CACHE_DIR: Path | None = None
    # Published models are signed (Ed25519, xraylab/registry/signing.py): training signs with MODEL_SIGNING_KEY
    # (a private key only training holds; default <state>/keys/model-signing.key) and serving loads only versions
    # signed by a key in MODEL_TRUSTED_KEYS (a file of public keys; default <state>/keys/model-trusted.pub).
    MODEL_SIGNING_KEY: Path | None = None
    MODEL_TRUSTED_KEYS: Path | None = None
    # The models the project ships (a folder registry; its promoted version is the one trained on real X-rays),
    # installed into the registry by `xraylab models install-shipped` and the demo. Default: <checkout>/models.
    SHIPPED_MODELS: Path | None = None
    # Real labelled X-rays the demo uploads (a folder with NORMAL/ and PNEUMONIA/), where it exists; generated
    # images otherwise. Default: the Kermany test split beside the checkout (../shared/data/chest-xray).
    DEMO_XRAYS: Path | None = None

    # Risk bands written into the card of each newly trained model (serving and evaluation use the card's):
    # score > PNEUMONIA -> "Pneumonia", score >= UNSURE -> "Unsure", else "Normal".
    BAND_PNEUMONIA: float = DEFAULT_BANDS.pneumonia
    BAND_UNSURE: float = DEFAULT_BANDS.unsure

    # Serving.
    SERVE_APP_NAME: str = "xraylab"
    SERVE_HTTP_HOST: str = "127.0.0.1"
    SERVE_HTTP_PORT: int = 8000
    # Where Serve runs its HTTP proxies: on every node (behind a load balancer), the head only, or none.
    SERVE_PROXY_LOCATION: Literal["EveryNode", "HeadOnly", "Disabled"] = "EveryNode"
    MAX_IMAGE_BYTES: int = 32 * 1024 * 1024
    # The body of one POST /v1/predict/batch (each file in it is still held to MAX_IMAGE_BYTES): room for
    # eight uncompressed 15 MB radiographs. The Ingress holds one such body while it decodes its files.
    MAX_BATCH_BYTES: int = Field(128 * 1024 * 1024, ge=1)
    # Decoded pixels one image may have (JPEGs count at their reduced decode size): 40 MP of 8-bit grey is
    # 40 MB, about 0.3 GB through the float conversions; four at once stay under 1.5 GB in a Classifier.
    MAX_IMAGE_PIXELS: int = Field(40_000_000, ge=1)
    # Below these an image is refused as `not_radiograph`: its shorter side in pixels, and the spread of its
    # grey levels (1st to 99th percentile, on 0-255) that a blank or uniform image lacks.
    MIN_IMAGE_SIDE: int = Field(64, ge=1)
    MIN_DYNAMIC_RANGE: float = Field(12.0, ge=0)

    # The review app and the HTTP API (ui/access.py). Accounts live in the database (`xraylab users add`).
    UI_PORT: int = 7860  # `xraylab ui`, the app on its own
    SESSION_IDLE_MINUTES: float = Field(30, gt=0, description="a browser session ends after this long unused")
    SESSION_MAX_HOURS: float = Field(12, gt=0, description="and after this long in any case")
    LOGIN_MAX_FAILURES: int = Field(5, ge=1, description="consecutive wrong passwords before an account locks")
    LOGIN_LOCKOUT_S: float = Field(300, gt=0, description="the first lock; it doubles with each further failure")
    LOGIN_IP_MAX_FAILURES: int = Field(30, ge=1, description="failed logins from one address per 10 minutes")
    COOKIE_SECURE: bool | None = None  # the session cookie only over HTTPS; default: on in production
    TRUSTED_PROXIES: list[str] = Field(default_factory=list, description=(
        "addresses or networks (CIDR) of the reverse proxies in front of the app: only from them is "
        "X-Forwarded-For read for the client's address; empty: the peer's address is the client's"))
    DIRECTORY_CONFIG: Path | None = Field(None, description=(
        "the directory sign-in settings file (TOML, xraylab/directory.py); unset: local accounts only"))
    DIRECTORY_BIND_PASSWORD: SecretStr | None = None  # the directory's service account (never in that file)

    @field_validator("TRUSTED_PROXIES")
    @classmethod
    def _proxies_are_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"XRAYLAB_TRUSTED_PROXIES: {item!r} is no address or network (CIDR)") from None
        return value
    WORKLIST_PAGE_SIZE: int = Field(50, ge=5, le=500)
    WORKLIST_REFRESH_S: float = Field(5.0, gt=0, description="how often an open worklist looks for new rows")
    HEATMAP_PRECOMPUTE_INTERVAL_S: float = Field(10.0, ge=0, description=(
        "how often the review app looks for Pneumonia and Unsure studies with no Grad-CAM map yet and computes "
        "theirs ahead (ui/heatmap_precompute.py); 0 turns it off"))

    # The model monitor (xraylab/monitor; its actor in serve_app/monitor_actor.py; `xraylab monitor`).
    PROMETHEUS_PORT: int = 19090  # the project's own Prometheus (cluster/local/prometheus.sh)
    PROMETHEUS_URL: str = ""  # default: http://127.0.0.1:<PROMETHEUS_PORT>
    RAY_METRICS_PORT: int = 18090  # Ray's metrics export port on a node the project starts; Prometheus scrapes it
    MONITOR_HEALTH_INTERVAL_S: float = Field(60.0, gt=0, description="how often the monitor reads health")
    MONITOR_DRIFT_INTERVAL_S: float = Field(300.0, gt=0, description="how often it runs drift and performance")
    MONITOR_MIN_IMAGES: int = Field(100, ge=2, description="fewer new images than this: the drift run waits")
    MONITOR_SETTLE_S: float = Field(30.0, ge=0, description="a drift run leaves images scored this recently "
                                    "to the next run (ids commit out of order)")
    MONITOR_MAX_IMAGES: int = Field(1000, ge=2, description="the newest this many images per drift run")
    MONITOR_MIN_SLICE: int = Field(50, ge=2, description="a hospital needs this many images (or labels) for "
                                   "its own figures; fewer, and a test on them is noise")
    MONITOR_PERFORMANCE_WINDOW: int = Field(500, ge=10, description="the newest labelled predictions it scores")
    MONITOR_PERMUTATIONS: int = Field(100, ge=10, description="permutations of the MMD test")
    MONITOR_ATYPICAL: int = Field(8, ge=0, description="the most atypical live images a run keeps")
    MONITOR_RETENTION_DAYS: float = Field(90.0, gt=0, description="figures older than this are deleted")
    ALERT_TOPIC: str = "xray-alerts"
    ALERT_WEBHOOK_URL: SecretStr = SecretStr("")  # optional; a URL can carry a token

    @model_validator(mode="after")
    def _fill_derived(self) -> Settings:
        self.STATE_DIR = Path(self.STATE_DIR).resolve()
        if not self.DATABASE_URL:
            self.DATABASE_URL = f"sqlite:///{self.STATE_DIR / 'xraylab.db'}"
        if not self.S3_ENDPOINT_URL:
            self.S3_ENDPOINT_URL = f"http://127.0.0.1:{self.S3_PORT}"
        webhook = self.ALERT_WEBHOOK_URL.get_secret_value()
        if webhook and not webhook.startswith(("http://", "https://")):
            raise ValueError("XRAYLAB_ALERT_WEBHOOK_URL must start with http:// or https://")
        if not self.ORTHANC_URL:
            self.ORTHANC_URL = f"http://127.0.0.1:{self.ORTHANC_HTTP_PORT}"
        if self.ORTHANC_ENDPOINT_ID in self.s3_endpoints():
            raise ValueError(f"XRAYLAB_ORTHANC_ENDPOINT_ID {self.ORTHANC_ENDPOINT_ID!r} is also an S3 endpoint id")
        if not self.PROMETHEUS_URL:
            self.PROMETHEUS_URL = f"http://127.0.0.1:{self.PROMETHEUS_PORT}"
        if not self.KAFKA_BOOTSTRAP:
            self.KAFKA_BOOTSTRAP = f"127.0.0.1:{self.KAFKA_PORT}"
        if self.MODEL_DIR is None:
            self.MODEL_DIR = self.STATE_DIR / "models"
        if self.MODEL_CACHE_DIR is None:
            self.MODEL_CACHE_DIR = self.STATE_DIR / "model-cache"
        if self.MODEL_SIGNING_KEY is None:
            self.MODEL_SIGNING_KEY = self.STATE_DIR / "keys" / "model-signing.key"
        if self.MODEL_TRUSTED_KEYS is None:
            self.MODEL_TRUSTED_KEYS = self.STATE_DIR / "keys" / "model-trusted.pub"
        if self.KAFKA_CA_FILE is None:
            self.KAFKA_CA_FILE = self.STATE_DIR / "kafka" / "certs" / "ca.crt"
        if self.SHIPPED_MODELS is None:
            self.SHIPPED_MODELS = project_root() / "models"
        if self.DEMO_XRAYS is None:
            self.DEMO_XRAYS = project_root().parent / "shared" / "data" / "chest-xray" / "kaggle-224" / "test"
        if self.MODEL_REGISTRY and not self.MODEL_REGISTRY.startswith("s3://"):
            raise ValueError("XRAYLAB_MODEL_REGISTRY must be empty (the folder XRAYLAB_MODEL_DIR) or s3://BUCKET[/PREFIX]")
        if self.SEAWEED_CLIENT_CONFIG_DIR is None:
            self.SEAWEED_CLIENT_CONFIG_DIR = self.STATE_DIR / "seaweedfs" / "client"
        try:
            self.bands()
        except ValueError as exc:
            raise ValueError(f"XRAYLAB_BAND_UNSURE / XRAYLAB_BAND_PNEUMONIA: {exc}") from None
        if self.COOKIE_SECURE is None:
            self.COOKIE_SECURE = self.ENV == "production"
        if self.RESEARCH_BUCKET == self.S3_BUCKET:
            raise ValueError("XRAYLAB_RESEARCH_BUCKET must not be the upload bucket XRAYLAB_S3_BUCKET")
        unknown = [band for band in self.research_bands() if band not in BAND_ORDER]
        if unknown:
            raise ValueError(f"XRAYLAB_RESEARCH_BANDS: unknown band(s) {', '.join(unknown)}: "
                             f"use {', '.join(BAND_ORDER)}")
        if self.ENV == "production":
            self._refuse_placeholder_secrets()
        research_key = self.RESEARCH_KEY.get_secret_value()
        if research_key and len(research_key) < 24 and self.ENV == "production":
            raise ValueError("XRAYLAB_RESEARCH_KEY is shorter than 24 characters: pseudonyms under a short key can "
                             "be found by trying candidate patient ids")
        return self

    def _refuse_placeholder_secrets(self) -> None:
        """Production: every secret this process was given is real. One left as the examples write it
        (``changethis``, ``REPLACE``) is refused by name, with the extra endpoints' and the database URL's. A secret
        not given at all is a job this process does not do: the job fails when tried, naming the setting
        (``s3_endpoint``, ``kafka_security.client_config``, the Orthanc client, the research export)."""
        bad: list[str] = []
        for name, value in self._secrets().items():
            if value and _is_placeholder(value):
                bad.append(f"XRAYLAB_{name}")
        for endpoint_id, endpoint in self.s3_endpoints().items():
            if endpoint_id != self.S3_ENDPOINT_ID and any(_is_placeholder(v) for v in endpoint.secrets()):
                bad.append(f"the keys of S3 endpoint {endpoint_id!r}")
        for name in ("DATABASE_URL",):
            password = url_credential(getattr(self, name))
            if password is not None and _is_placeholder(password):
                bad.append(f"the password in XRAYLAB_{name}")
        if self.KAFKA_SECURITY_PROTOCOL != "SASL_SSL":
            bad.append("XRAYLAB_KAFKA_SECURITY_PROTOCOL (production needs SASL_SSL)")
        if bad:
            raise ValueError("empty or placeholder secrets in production: " + ", ".join(dict.fromkeys(bad))
                             + ": set real ones (docs/security.md)")

    @classmethod
    def secret_fields(cls) -> tuple[str, ...]:
        """The settings declared secret (``SecretStr``, optional or not): the one list of them."""
        return tuple(name for name, field in cls.model_fields.items() if "SecretStr" in str(field.annotation))

    def _secrets(self) -> dict[str, str]:
        """Each secret setting this process has a value for, by name."""
        return {name: value.get_secret_value() for name in self.secret_fields()
                if (value := getattr(self, name)) is not None}

    def secret_values(self) -> set[str]:
        """Every secret this process holds (for keeping them out of logs and worker environments)."""
        values = set(self._secrets().values())
        for endpoint in self.s3_endpoints().values():
            values.update(endpoint.secrets())
        for name in ("DATABASE_URL",):
            password = url_credential(getattr(self, name))
            if password:
                values.add(password)
        return {v for v in values if len(v) >= 4 and v != "{}"}

    def source_buckets(self, endpoint_id: str | None = None) -> list[str]:
        """The buckets of an endpoint that events may name (``NAME*``: a prefix); none for an unknown endpoint."""
        endpoint_id = endpoint_id or self.S3_ENDPOINT_ID
        if endpoint_id == self.S3_ENDPOINT_ID:
            return [b.strip() for b in (self.S3_SOURCE_BUCKETS or self.S3_BUCKET).split(",") if b.strip()]
        endpoint = self.s3_endpoints().get(endpoint_id)
        return [] if endpoint is None else (endpoint.buckets or [self.S3_BUCKET])

    def source_allowed(self, endpoint_id: str | None, bucket: str) -> bool:
        """Whether an event may make the pipeline read ``bucket`` on ``endpoint_id``: a configured source bucket,
        never one the project writes itself (research copies, models)."""
        if bucket in self.internal_buckets():
            return False
        return any(bucket.startswith(b[:-1]) if b.endswith("*") else bucket == b
                   for b in self.source_buckets(endpoint_id))

    def image_limits(self) -> ImageLimits:
        """What serving requires of an image before scoring it (``xraylab.imaging.ImageLimits``)."""
        from xraylab.imaging import ImageLimits  # numpy and Pillow only where images are read

        return ImageLimits(max_pixels=self.MAX_IMAGE_PIXELS, min_side=self.MIN_IMAGE_SIDE,
                           min_dynamic_range=self.MIN_DYNAMIC_RANGE)

    def internal_buckets(self) -> frozenset[str]:
        """Buckets the project writes itself (the research export's, the S3 model registry's): the notifier
        skips them, so that nothing written there comes back as an upload."""
        buckets = {self.RESEARCH_BUCKET}
        if self.MODEL_REGISTRY:
            from xraylab.registry.s3 import parse_s3_location  # the registry's own reading of its location

            buckets.add(parse_s3_location(self.MODEL_REGISTRY)[0])
        return frozenset(buckets)

    def research_bands(self) -> list[str]:
        """The bands whose studies the research export copies (``RESEARCH_BANDS``)."""
        return [band.strip() for band in self.RESEARCH_BANDS.split(",") if band.strip()]

    def bands(self) -> Bands:
        """The bands a newly trained model gets in its card."""
        return Bands(pneumonia=self.BAND_PNEUMONIA, unsure=self.BAND_UNSURE)

    @property
    def model_dir(self) -> Path:
        assert self.MODEL_DIR is not None
        return Path(self.MODEL_DIR)

    @property
    def model_cache_dir(self) -> Path:
        assert self.MODEL_CACHE_DIR is not None
        return Path(self.MODEL_CACHE_DIR)

    def s3_endpoints(self) -> dict[str, S3Endpoint]:
        endpoints = {
            self.S3_ENDPOINT_ID: S3Endpoint(
                url=self.S3_ENDPOINT_URL,
                access_key=self.S3_ACCESS_KEY,
                secret_key=self.S3_SECRET_KEY,
                region=self.S3_REGION,
            )
        }
        try:
            extra = json.loads(self.S3_EXTRA_ENDPOINTS.get_secret_value() or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"XRAYLAB_S3_EXTRA_ENDPOINTS is not JSON: {exc}") from exc
        for endpoint_id, spec in extra.items():
            endpoints[endpoint_id] = S3Endpoint.model_validate(spec)
        return endpoints

    def s3_endpoint(self, endpoint_id: str | None, job: S3Job = "pipeline") -> S3Endpoint:
        """Where an endpoint id is and the keys of ``job`` there; an event never carries credentials itself.
        A job whose keys this process was not given raises ``MissingCredentialsError`` naming the settings."""
        endpoints = self.s3_endpoints()
        key = endpoint_id or self.S3_ENDPOINT_ID
        if key not in endpoints:
            raise UnknownEndpointError(f"no S3 endpoint configured with id {key!r}")
        endpoint = endpoints[key]
        if job == "pipeline":
            if not endpoint.access_key.get_secret_value() or not endpoint.secret_key.get_secret_value():
                where = "XRAYLAB_S3_ACCESS_KEY / XRAYLAB_S3_SECRET_KEY" if key == self.S3_ENDPOINT_ID else (
                    f"the keys of S3 endpoint {key!r} in XRAYLAB_S3_EXTRA_ENDPOINTS")
                raise MissingCredentialsError(f"{where} are not set: this process has no S3 identity for the "
                                              "pipeline's job (cluster/local/seaweedfs.sh writes them locally)")
            return endpoint
        if key == self.S3_ENDPOINT_ID:
            prefix = _S3_JOB_FIELDS[job]
            access, secret = getattr(self, f"{prefix}_ACCESS_KEY"), getattr(self, f"{prefix}_SECRET_KEY")
            if not access.get_secret_value() or not secret.get_secret_value():
                raise MissingCredentialsError(
                    f"XRAYLAB_{prefix}_ACCESS_KEY / XRAYLAB_{prefix}_SECRET_KEY are not set: this process has no S3 "
                    f"identity for the {job} job (cluster/local/seaweedfs.sh writes them locally; docs/security.md)")
            return endpoint.model_copy(update={"access_key": access, "secret_key": secret, "jobs": {}})
        if job not in endpoint.jobs:
            raise MissingCredentialsError(f"S3 endpoint {key!r} in XRAYLAB_S3_EXTRA_ENDPOINTS gives no keys for the "
                                          f"{job} job (its \"jobs\": {{\"{job}\": {{access_key, secret_key}}}})")
        creds = endpoint.jobs[job]
        return endpoint.model_copy(update={"access_key": creds.access_key, "secret_key": creds.secret_key,
                                           "jobs": {}})

    def database_url(self, which: str = "default") -> str:
        """The SQLAlchemy URL for ``default`` (DATABASE_URL) or ``mariadb`` (the local instance)."""
        if which == "default":
            return self.DATABASE_URL
        if which == "mariadb":
            url = self.MARIADB_URL.get_secret_value()
            if not url:
                raise ValueError("XRAYLAB_MARIADB_URL is not set: start it with cluster/local/up.sh")
            return url
        raise ValueError(f"unknown database {which!r}: use 'default' or 'mariadb'")

    def env_for_workers(self) -> dict[str, str]:
        """What Ray workers need to build the same settings: the env file path, never a secret. What is left out
        goes by what it is, not by its name: a setting declared secret, a value holding any secret this process
        has (extra endpoints' keys, a password inside a URL), or a URL with credentials in it."""
        env = {"XRAYLAB_ENV_FILE": str(_env_file()), "XRAYLAB_STATE_DIR": str(self.STATE_DIR)}
        secret_fields = {f"XRAYLAB_{name}".upper() for name in self.secret_fields()}
        secrets = self.secret_values()
        for key, value in os.environ.items():
            if not key.startswith("XRAYLAB_") or key.upper() in secret_fields:
                continue
            if any(secret in value for secret in secrets) or url_credential(value) is not None:
                continue
            env[key] = value
        return env


def load_settings(**overrides: object) -> Settings:
    """Build settings now (no cache), reading the env file if it exists."""
    env_file = _env_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Settings(_env_file=env_file if env_file.exists() else None, **overrides)  # type: ignore[call-arg]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; call it in each deployment's or actor's ``__init__``."""
    return load_settings()
