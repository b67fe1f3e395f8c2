"""Ray Serve deployments: Fetcher, Classifier, Writer, and the HTTP Ingress composing them.

``SERVE_ENV`` is how this app wants Ray Serve to run. Serve reads these variables when ``ray.serve`` is
first imported, in every process, so they are set here, on importing this package (before its modules
import Ray Serve), and ``ray.init`` passes them on to the processes it starts. A cluster started with
``ray start`` or KubeRay needs them in the nodes' environment: ``cluster/ray/cluster.yaml`` and
``cluster/kuberay/rayservice.yaml`` set the same values (a unit test compares them).
"""

import os

SERVE_ENV = {
    # Serve's throughput mode: user code on the replica's own event loop, gRPC between replicas, the
    # router on the caller's loop. Measured on 2 cores (benchmarks/serving.py): Classifier handle calls
    # at 128 concurrent 162 -> 216 img/s; at 512 concurrent HTTP keeps 96 img/s with p99 2.7 s instead of
    # collapsing to 9 img/s with p99 51 s.
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # A request-body cap in Serve's HTTP proxy itself, which would otherwise queue any body whole
    # (serve_app/body_limit.py).
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serve_app.body_limit.proxy_middlewares",
}

for _name, _value in SERVE_ENV.items():
    os.environ.setdefault(_name, _value)
