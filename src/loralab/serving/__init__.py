"""The HTTP service behind ``loralab serve``, by concern: what is served and the command
(``server``), micro-batching (``batcher``), request limits and schemas (``requests``), the FastAPI
app (``app``) and sockets (``net``)."""
