"""Clients of the engines an execution config names, built from the providers' hooks (never our own)."""
