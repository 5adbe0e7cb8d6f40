"""Launching pixprompt as real processes for tests: torchrun jobs (one node or several), their environment,
waiting for what they write, and photos slow enough to decode that a run can be killed part-way."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

TIMEOUT = 240


def has_pixprompt_frame(text: str) -> bool:
    """Whether a traceback in `text` has a frame in pixprompt's own source (by the package's folder, so a checkout
    or a virtual environment in a folder named `pixprompt` never matches torch's own frames)."""
    import pixprompt

    return f'File "{Path(pixprompt.__file__).parent}{os.sep}' in text


# -- launching -----------------------------------------------------------------------------------------------
def launch_env(cache: Path, **extra: str) -> dict[str, str]:
    """The environment of a launched job: its own cache, small shards, short collective timeouts."""
    return {**os.environ, "PIXPROMPT_CACHE": str(cache), "PIXPROMPT_SHARD_SIZE": "8", "PIXPROMPT_DIST_TIMEOUT": "60",
            "OMP_NUM_THREADS": "1", **extra}


def torchrun(args: list, env: dict[str, str], nproc: int = 2, node: tuple[int, int, int] | None = None,
             cwd: Path | None = None) -> subprocess.Popen:
    """`torchrun … -m pixprompt ARGS` started in the background; `node` = (node rank, nodes, port) for one
    node of a multi-node job, else a standalone single-node job."""
    nodes = ["--nnodes", str(node[1]), "--node-rank", str(node[0]), "--master-addr", "127.0.0.1",
             "--master-port", str(node[2])] if node else ["--standalone"]
    command = [sys.executable, "-m", "torch.distributed.run", *nodes, "--nproc-per-node", str(nproc),
               "-m", "pixprompt", *map(str, args)]
    return subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=TIMEOUT)
    return process.returncode, out, err


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, deadline: float, what: str) -> None:
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)



def write_slow_photos(root: Path, per_class: int = 40) -> Path:
    """Two classes of large noise JPEGs: slow enough to decode that a run can be killed part-way."""
    generator = np.random.default_rng(0)
    for label, tint in (("red", (90, 0, 0)), ("blue", (0, 0, 90))):
        (root / label).mkdir(parents=True)
        for number in range(per_class):
            noise = generator.integers(0, 160, (1100, 1100, 3), dtype=np.uint8) + np.array(tint, dtype=np.uint8)
            Image.fromarray(noise).save(root / label / f"{number:03d}.jpg", quality=95)
    return root
