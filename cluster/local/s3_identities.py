"""Write SeaweedFS's s3.json: one identity per job of xraylab (``xraylab.settings.S3_JOBS``), each allowed its job.

    s3_identities.py OUT.json

SeaweedFS grants actions per identity as ``Action`` (every bucket) or ``Action:bucket`` (one bucket; a trailing
``*`` matches a prefix). Which buckets each job touches comes from the settings: the source buckets
(``S3_SOURCE_BUCKETS``), the model registry's bucket (``MODEL_REGISTRY``, else ``xray-models``) and the research
bucket (``RESEARCH_BUCKET``); the registry's and the research's with any suffix (``xray-research*``), so that a
test may use a bucket of its own named after them.
"""

from __future__ import annotations

import json
import sys

from xraylab.settings import S3_JOBS, Settings, load_settings


def identities(settings: Settings) -> list[dict[str, object]]:
    from xraylab.registry.s3 import parse_s3_location

    sources = settings.source_buckets()
    registry = parse_s3_location(settings.MODEL_REGISTRY)[0] if settings.MODEL_REGISTRY else "xray-models"
    research = settings.RESEARCH_BUCKET

    def on(actions: tuple[str, ...], buckets: list[str]) -> list[str]:
        return [f"{action}:{bucket}" for bucket in buckets for action in actions]

    actions = {
        "pipeline": on(("Read", "List"), sources),
        "upload": on(("Write",), sources),
        "publish": on(("Read", "Write", "List"), [registry + "*"]),
        "registry": on(("Read", "List"), [registry + "*"]),
        "export": on(("Read", "Write", "List"), [research + "*"]),
        "admin": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    result = []
    for job in S3_JOBS:
        endpoint = settings.s3_endpoint(None, job)
        result.append({"name": f"xraylab-{job}", "actions": actions[job], "credentials": [{
            "accessKey": endpoint.access_key.get_secret_value(), "secretKey": endpoint.secret_key.get_secret_value()}]})
    return result


def main(argv: list[str]) -> int:
    with open(argv[0], "w") as out:
        json.dump({"identities": identities(load_settings())}, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
