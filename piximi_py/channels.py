"""Which channel of an image a multi-channel model reads as what.

A whole-cell model (``ModelSpec.input_roles``, e.g. ``["cyto", "nuclei"]``)
reads a cytoplasm (or membrane) channel and, when there is one, a nuclear
channel; an absent optional channel is given as zeros, as Cellpose does.
The caller names the image channel of each role, ``{"cyto": 1, "nuclei": 0}``;
without that, :func:`default_channels` chooses from the channel names the file
gives (OME, ImageJ) and otherwise from the colour convention of composite
images (cytoplasm green, nuclei blue), skipping empty channels.
"""
from __future__ import annotations

import re

import numpy as np

from .preprocess import normalize_percentile

__all__ = ["NUCLEAR_NAME", "AUTO", "image_channels", "default_channels", "check_channels",
           "resolve_channels", "left_to_file", "stack_channels", "parse_channels"]

#: A role's channel given as this is chosen from the file, as when no channels are given.
AUTO = "auto"

#: Channel names that mean a nuclear stain.
NUCLEAR_NAME = re.compile(r"dapi|hoechst|nuc|dna|h2b|draq|sir-?dna|syto|propidium|\bpi\b", re.I)


def image_channels(image: np.ndarray) -> int:
    """Number of channels of a decoded image: 1 for ``(H, W)``, ``C`` for ``(H, W, C)``."""
    return 1 if image.ndim == 2 else int(image.shape[-1])


def _empty(plane: np.ndarray) -> bool:
    finite = plane[np.isfinite(plane)] if plane.dtype.kind == "f" else plane
    return finite.size == 0 or bool(finite.min() == finite.max())


def default_channels(image: np.ndarray, roles, names=None) -> dict:
    """The channel of each role when the caller gives none.

    Parameters
    ----------
    image : ndarray
        ``(H, W)`` or ``(H, W, C)``.
    roles : sequence of str
        The model's input roles; the first is the one every image has
        (the cytoplasm), the others are optional.
    names : sequence of str, optional
        The file's channel names (:func:`piximi_py.io.describe_image`).

    Returns
    -------
    dict of {role: int or None}
    """
    n = image_channels(image)
    roles = list(roles)
    choice = {r: None for r in roles}
    if n == 1:
        choice[roles[0]] = 0
        return choice
    nonempty = [c for c in range(n) if not _empty(image[..., c])]
    if names is not None and len(names) == n:  # named channels: trust the names
        nuclear = [c for c in nonempty if NUCLEAR_NAME.search(str(names[c]))]
        other = [c for c in nonempty if c not in nuclear]
        if other:
            choice[roles[0]] = other[0]
            if "nuclei" in choice and nuclear:
                choice["nuclei"] = nuclear[0]
            return choice
    filled = []  # copies of a channel already kept (grey saved as RGB) hold nothing new
    for c in nonempty:
        if not any(np.array_equal(image[..., c], image[..., k]) for k in filled):
            filled.append(c)
    if n in (3, 4):  # a composite: cytoplasm green, nuclei blue, else whatever holds something
        cyto = 1 if 1 in filled else (filled[0] if filled else 0)
        choice[roles[0]] = cyto
        if "nuclei" in choice and 2 in filled and cyto != 2:
            choice["nuclei"] = 2
        return choice
    choice[roles[0]] = filled[0] if filled else 0
    if "nuclei" in choice and len(filled) > 1:
        choice["nuclei"] = filled[1]
    return choice


def _is_auto(value) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def left_to_file(channels: dict | None, role: str) -> bool:
    """Whether ``role``'s channel is chosen from the file: no channels given, or :data:`AUTO`."""
    return channels is None or _is_auto(channels.get(role))


def check_channels(channels: dict, roles, n_channels: int, *, auto: bool = False) -> dict:
    """Validate a role -> channel mapping; returns it with every role present.

    With ``auto`` a role may be :data:`AUTO` (kept as it is: chosen later, from the image).

    Raises
    ------
    ValueError
        An unknown role, a channel that is not an integer or not in the
        image, the first role missing, or two roles on one channel.
    """
    roles = list(roles)
    if not isinstance(channels, dict):
        raise ValueError(f"channels must map roles to channel numbers, e.g. "
                         f"{{'{roles[0]}': 0}}; got {channels!r}")
    unknown = sorted(set(channels) - set(roles))
    if unknown:
        raise ValueError(f"unknown channel role {', '.join(map(repr, unknown))}: "
                         f"this model reads {', '.join(roles)}")
    out = {}
    for role in roles:
        value = channels.get(role)
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            out[role] = None
            continue
        if auto and _is_auto(value):
            out[role] = AUTO
            continue
        try:
            c = int(value)
            if c != float(value):
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"channel of {role!r} must be a channel number, got {value!r}") from None
        if not 0 <= c < n_channels:
            raise ValueError(f"channel {c} for {role!r} is not in the image, which has "
                             f"{n_channels} channel{'s' if n_channels != 1 else ''} (0 to {n_channels - 1})")
        out[role] = c
    if out[roles[0]] is None:
        raise ValueError(f"the {roles[0]!r} channel is needed; the others are optional")
    used = [c for c in out.values() if c is not None and c != AUTO]
    if len(set(used)) != len(used):
        raise ValueError(f"two roles read the same channel: {out}")
    return out


def resolve_channels(image: np.ndarray, roles, channels: dict | None = None, names=None) -> dict:
    """The role -> channel mapping a model reads ``image`` with: ``channels`` checked
    (:func:`check_channels`), or when None the default (:func:`default_channels`, from
    the file's channel ``names`` where known); a role given as :data:`AUTO` takes its default."""
    if channels is None:
        channels = default_channels(image, roles, names)
    elif isinstance(channels, dict) and any(_is_auto(v) for v in channels.values()):
        chosen = default_channels(image, roles, names)
        channels = {r: chosen.get(r) if _is_auto(v) else v for r, v in channels.items()}
    return check_channels(channels, roles, image_channels(image))


def stack_channels(image: np.ndarray, channels: dict, roles, **normalize) -> np.ndarray:
    """The model's ``(K, H, W)`` float32 input: each role's channel normalized on its own
    (:func:`piximi_py.preprocess.normalize_percentile`), zeros for an absent one."""
    h, w = image.shape[:2]
    out = np.zeros((len(roles), h, w), np.float32)
    for k, role in enumerate(roles):
        c = channels.get(role)
        if c is not None:
            out[k] = normalize_percentile(image if image.ndim == 2 else image[..., c], **normalize)
    return out


def parse_channels(text: str) -> dict:
    """``"cyto=1,nuclei=0"`` (command line, URL) as ``{"cyto": 1, "nuclei": 0}``."""
    out = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        role, sep, value = part.partition("=")
        if not sep or not role.strip():
            raise ValueError(f"channels: expected ROLE=CHANNEL pairs such as cyto=1,nuclei=0; got {text!r}")
        out[role.strip()] = value.strip()
    return out
