"""Ray Serve deployments: Fetcher, Classifier, Writer, and the HTTP Ingress composing them."""
