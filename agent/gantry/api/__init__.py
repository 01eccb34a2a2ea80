"""The agent's HTTP API: FastAPI app, pydantic schemas at the edge, authentication.
Calls the engine only."""
