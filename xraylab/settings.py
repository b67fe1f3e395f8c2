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

if TYPE_CHECKING:
    from xraylab.imaging import ImageLimits

__all__ = ["S3Endpoint", "Settings", "get_settings", "project_root", "UnknownEndpointError"]

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


class S3Endpoint(BaseModel):
    """Where and how to reach one S3-compatible store. Events name it by id only."""

    url: str
    access_key: SecretStr
    secret_key: SecretStr
    region: str = "us-east-1"


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

    # S3: the default endpoint ("local") plus any others as JSON {"id": {url, access_key, ...}}.
    S3_ENDPOINT_ID: str = "local"
    S3_ENDPOINT_URL: str = ""  # default: http://127.0.0.1:<S3_PORT>, the local stack
    S3_ACCESS_KEY: SecretStr = SecretStr("")
    S3_SECRET_KEY: SecretStr = SecretStr("")
    S3_REGION: str = "us-east-1"
    S3_EXTRA_ENDPOINTS: str = "{}"
    S3_BUCKET: str = "xray-images"

    # Kafka (topic names and partitions are also in cluster/local/defaults.env, for kafka.sh).
    KAFKA_BOOTSTRAP: str = ""  # default: 127.0.0.1:<KAFKA_PORT>, the local stack
    KAFKA_TOPIC: str = "xray-images"
    KAFKA_DLQ_TOPIC: str = "xray-images.dlq"
    KAFKA_GROUP: str = "xraylab-ingest"
    KAFKA_PARTITIONS: int = 3

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
        for name in ("S3_SECRET_KEY",):
            value = getattr(self, name).get_secret_value()
            if _is_placeholder(value):
                message = f"XRAYLAB_{name} is empty or a placeholder"
                if self.ENV == "production":
                    raise ValueError(message + ": set a real secret for production")
        for name in ("ORTHANC_PASSWORD", "RESEARCH_KEY"):  # optional, but never a placeholder in production
            value = getattr(self, name).get_secret_value()
            if value and self.ENV == "production" and _is_placeholder(value):
                raise ValueError(f"XRAYLAB_{name} is a placeholder: set a real secret for production")
        research_key = self.RESEARCH_KEY.get_secret_value()
        if research_key and len(research_key) < 24 and self.ENV == "production":
            raise ValueError("XRAYLAB_RESEARCH_KEY is shorter than 24 characters: pseudonyms under a short key can "
                             "be found by trying candidate patient ids")
        return self

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
            extra = json.loads(self.S3_EXTRA_ENDPOINTS or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"XRAYLAB_S3_EXTRA_ENDPOINTS is not JSON: {exc}") from exc
        for endpoint_id, spec in extra.items():
            endpoints[endpoint_id] = S3Endpoint.model_validate(spec)
        return endpoints

    def s3_endpoint(self, endpoint_id: str | None) -> S3Endpoint:
        """Credentials for an endpoint id; an event never carries credentials itself."""
        endpoints = self.s3_endpoints()
        key = endpoint_id or self.S3_ENDPOINT_ID
        if key not in endpoints:
            raise UnknownEndpointError(f"no S3 endpoint configured with id {key!r}")
        return endpoints[key]

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
        """What Ray workers need to build the same settings: the env file path, never the secrets."""
        env = {"XRAYLAB_ENV_FILE": str(_env_file()), "XRAYLAB_STATE_DIR": str(self.STATE_DIR)}
        for key, value in os.environ.items():
            secret = any(s in key for s in ("SECRET", "PASSWORD", "USERS", "KEY", "URL"))
            if key.startswith("XRAYLAB_") and not secret:
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
