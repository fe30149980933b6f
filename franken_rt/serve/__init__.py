"""franken-serve: an OpenAI-compatible HTTP server whose parallel streams share each pass over the weights.

`engine` batches the streams through the core (no HTTP); `api` checks request bodies (no model); `app` is the
Starlette application joining them; `page.html` is the chat page served at `/`. Needs the `serve` extra.
"""
