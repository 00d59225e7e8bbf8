"""The SIEM feed: the audit chain streamed to the site's syslog receiver or a JSON Lines file."""
