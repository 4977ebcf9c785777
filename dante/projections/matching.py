"""The default GPU model matcher of offer searches: every requested token in the model's name.

Names are lower-cased and split into runs of letters and runs of digits, so "rtx4090",
"RTX 4090" and "GeForce RTX 4090" all give ["rtx", "4090"] among their tokens, while "40" does
not match "4090". Searches take the matcher as a parameter, so a better one can replace it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Final

#: (requested model or family, a GPU's model name) -> does it match?
ModelMatcher = Callable[[str, str], bool]

_TOKEN: Final = re.compile(r"[a-z]+|[0-9]+")


@lru_cache(maxsize=4096)
def tokens(name: str) -> frozenset[str]:
    return frozenset(_TOKEN.findall(name.lower()))


def tokens_match(requested: str, model: str) -> bool:
    """True when every token of `requested` is a token of `model`."""
    return tokens(requested) <= tokens(model)
