"""The HTTP service behind ``loralab serve``, by concern: micro-batching (``batcher``), request
limits and schemas (``requests``), the FastAPI app (``app``) and sockets (``net``)."""
