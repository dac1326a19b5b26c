"""The real PyTorch execution backend (paged KV store, in-storage attention worker, paced
links, expert and split executors, profiler). Not implemented yet: see the project's issue on
the execution backend; nothing here is imported by ``mec_env`` or ``agents``."""
