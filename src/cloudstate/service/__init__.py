"""Use cases. Each owns its transaction, so a change and the event describing it commit together.

Callers (the embedded API, the REST API, the CLI) and the engine call these modules; they call
the store. Nothing here talks to a cloud: the engine turns provider answers into domain values
first.
"""
