"""Run a `podman run` command line with the rlimits this sandbox can grant, nothing else changed.

argv: the command (podman's path first). This machine's root has no CAP_SYS_RESOURCE, so a hard
rlimit can only be lowered: the engine unit's `--ulimit memlock=-1` and the nofile/nproc of
1048576 that podman 4.3 adds whenever a --ulimit is given would fail in runc with EPERM. They are
replaced by this process's own hard limits (nproc: a few thousand, enough for vLLM). On a DGX
Spark the unit runs as written.
"""

import os
import resource
import sys


def main(argv: list[str]) -> None:
    if argv[1:2] != ["run"]:
        os.execv(argv[0], argv)
    memlock = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    held = ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=4096:4096"]
    rest = [f"memlock={memlock}" if arg == "memlock=-1" else arg for arg in argv[2:]]
    os.execv(argv[0], [argv[0], "run", *held, *rest])


if __name__ == "__main__":
    main(sys.argv[1:])
