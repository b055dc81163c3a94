"""The verifier service: off-chain EZKL verification, a durable outbox, and the chain sender."""
