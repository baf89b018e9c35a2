"""The guard gateway: an OpenAI-compatible proxy that checks prompts before they reach the
model and generated text before it reaches the client (see ``app.create_app``)."""

from asl3.gateway.app import create_app
from asl3.gateway.config import GatewayConfig

__all__ = ["GatewayConfig", "create_app"]
