"""Caller access control: who the calling workload is, what it may do, and how often."""
