"""Job output and files, served through the command service (see `extension.Files`).

Nobody but the platform touches the output stream, the upload staging stream or the object
store: providers and renters send commands, and the service checks the job is theirs.
"""

from dante.services.files.extension import Files
from dante.services.files.uploads import MAX_INPUT_BYTES, MAX_RESULTS_BYTES

__all__ = ["MAX_INPUT_BYTES", "MAX_RESULTS_BYTES", "Files"]
