"""CI steps that drive a Docker engine: the engine itself, the compose stack and what is done to it."""
