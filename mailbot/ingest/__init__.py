"""Adapters that bring mail in: the SMTP/LMTP listener and the pipe command."""
