"""RQ jobs and the worker process that embeds, stores and links images."""
