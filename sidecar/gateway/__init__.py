"""The gRPC services of the contract: validate, call the platform layer, map the answer."""
