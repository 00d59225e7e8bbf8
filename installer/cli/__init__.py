"""The one `sparkplane` command and the installer's sub-commands."""
