"""The verbs of the original rental client, kept as shortcuts.

`dante providers` is `dante market`, `dante balance` is `dante wallet balance` and `dante
status ID` is `dante jobs status ID` (registered in `app.py` and `status.py`). `dante submit
NAME` is here: a job with defaults, for trying the platform.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

from cyclopts import Parameter

from dante.cli.options import Json
from dante.cli.session import with_session

#: What `dante submit NAME` runs unless told otherwise: it shows the GPUs it was given, works
#: for a few seconds (so there is something to bill) and leaves a result file.
HELLO_SCRIPT: Final = """\
import os, platform, shutil, subprocess, time

print(f"hello from {platform.node()}: GPUs {os.environ.get('CUDA_VISIBLE_DEVICES', '?')}")
if shutil.which("nvidia-smi"):
    subprocess.run(["nvidia-smi", "-L"], check=False)
for step in range(1, 6):
    print(f"step {step}/5", flush=True)
    time.sleep(1)
out = os.environ.get("DANTE_OUTPUT_DIR", "out")
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "hello.txt"), "w") as f:
    f.write("hello from Dante\\n")
print("done")
"""
DEFAULT_MAX_HOURS: Final = "1"


async def submit(
    name: Annotated[str, Parameter(help="A name to know the job by.")],
    /,
    *command: Annotated[str, Parameter(help="After --: the command or the script's args.")],
    script: Annotated[
        Path | None, Parameter(help="Run this script. Default: a short hello-GPU script.")
    ] = None,
    image: Annotated[str | None, Parameter(help="Run this Docker image instead.")] = None,
    gpus: Annotated[int, Parameter(help="How many GPUs.")] = 1,
    gpu: Annotated[str | None, Parameter(help="A model or family: 'RTX 4090'.")] = None,
    max_price: Annotated[str | None, Parameter(help="At most this many dGPU per GPU-hour.")] = None,
    max_hours: Annotated[str, Parameter(help="Stop the job after this many hours.")] = (
        DEFAULT_MAX_HOURS
    ),
    json_output: Json = False,
) -> int:
    """Submit a job with defaults: 1 GPU, at most 1 hour, a hello-GPU script unless told.

    The full form, with every option, is `dante jobs submit`.
    """
    from dante.cli.jobs import submit_job
    from dante.cli.price import requirements
    from dante.cli.submission import build_payload, job_spec
    from dante.schemas.values import JobPayload, ScriptPayload

    req = requirements(
        gpus=gpus, gpu=gpu, min_vram_gb=None, max_price=max_price, max_hours=max_hours
    )
    payload: JobPayload
    if script is None and image is None:
        payload = ScriptPayload(script=HELLO_SCRIPT, interpreter="python3", args=list(command))
    else:
        payload = build_payload(
            script=script, interpreter=None, image=image, command=command, env={}, network=False
        )
    spec = job_spec(name=name, requirements=req, payload=payload, inputs=())
    return await with_session(lambda s: submit_job(s, spec, json=json_output))
