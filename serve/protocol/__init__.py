"""Wire code, no Ray: the Open Inference Protocol over gRPC and REST, and zkserve.v1, each
an adapter to one neutral request/response (``serve.protocol.types``)."""
