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
    # gRPC's default of 4 MiB per message between replicas (RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH) would fail a
    # batch of 32 model inputs at 224 px (6.4 MB), or a study's bytes sent to the Classifier by a caller that does
    # not decode at the edge. Studies are decoded where they are read (xraylab.model_input), so the pipeline's own
    # messages are about 2 MB a batch at 128 px; 64 MiB admits any study XRAYLAB_MAX_IMAGE_BYTES does (32 MiB)
    # and a batch of 32 inputs up to 700 px. The limit only refuses: a message costs its own size, not the limit.
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(64 * 1024 * 1024),
    # A request-body cap in Serve's HTTP proxy itself, which would otherwise queue any body whole
    # (serve_app/body_limit.py).
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serve_app.body_limit.proxy_middlewares",
    # uvicorn (which Serve runs) would otherwise take X-Forwarded-For from any loopback peer as the client's
    # address, and a header could reset the per-address login limit. Empty: uvicorn trusts no proxy; the app
    # reads the address itself, through XRAYLAB_TRUSTED_PROXIES only (ui/access.py).
    "FORWARDED_ALLOW_IPS": "",
}

for _name, _value in SERVE_ENV.items():
    os.environ.setdefault(_name, _value)
