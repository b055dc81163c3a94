"""zkserve's running parts: the Ray Serve app, the verifier service, the chain client, the CLI."""
