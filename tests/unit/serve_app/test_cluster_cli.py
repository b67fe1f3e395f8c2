"""The commands that reach a Ray cluster or the model registry, given one that is not there: one line, exit 2."""

from tests.cli import xraylab


def test_ingest_commands_name_an_absent_cluster() -> None:
    for command in ("start", "stop", "status"):
        result = xraylab("ingest", command, "--address=127.0.0.1:1", timeout=60)
        assert result.returncode == 2, result.stderr[-500:]
        assert result.stderr.strip() == "error: no Ray cluster at 127.0.0.1:1: Connection refused"


def test_models_commands_name_a_bad_registry() -> None:
    result = xraylab("models", "list", "--registry", "s3://No_Such")
    assert result.returncode == 2 and "expected s3://BUCKET" in result.stderr
    result = xraylab("models", "list", env={"XRAYLAB_MODEL_REGISTRY": "s3://models",
                                            "XRAYLAB_MODEL_REGISTRY_ENDPOINT": "nowhere"})
    assert result.returncode == 2 and "no S3 endpoint configured with id 'nowhere'" in result.stderr
