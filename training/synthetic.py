"""Synthetic fluorescence nuclei images with instance labels.

Extra training data for the nuclei U-Net, modelled on the Data Science Bowl
2018 fluorescence images: a dark background, nuclei 8-50 px across that are
often in touching clusters, brightness that varies a lot from one nucleus to
the next (dim ones beside bright ones, small saturated mitotic ones),
chromatin texture, blur, uneven illumination, unlabelled debris, photon and
read noise, and 8, 12 or 16 bit quantization.

Every draw comes from the ``numpy.random.Generator`` passed in, so a given
generator state always gives the same image. Only numpy and scipy are used;
each nucleus is rendered inside its own bounding box, so a 256 x 256 image
takes a few tens of milliseconds.

Run ``python -m training.synthetic OUTDIR N`` to write ``N`` examples in the
standard layout (``OUTDIR/images/NAME.tif`` with the raw integer image and
``OUTDIR/masks/NAME.tif`` with uint16 labels) to look at them.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from piximi_py.preprocess import normalize_percentile

__all__ = ["synthetic_nuclei", "synthetic_set"]

_MAX_NUCLEI = 300
_ANGLES = 256  # directions at which a nucleus outline is tabulated


def _loguniform(rng, low, high, size=None):
    return np.exp(rng.uniform(math.log(low), math.log(high), size))


def _gaussian_basis(n, cells):
    """(n, cells + 2) matrix of smooth bumps whose knots span [0, n)."""
    spacing = n / cells
    knots = (np.arange(cells + 2) - 0.5) * spacing
    pos = np.arange(n, dtype=np.float32)[:, None] + 0.5
    return np.exp(-0.5 * ((pos - knots[None, :]) / (0.7 * spacing)) ** 2).astype(np.float32)


def _smooth_field(rng, shape, cells):
    """Random smooth field with mean 0 and std 1, about ``cells`` bumps per side."""
    by, bx = _gaussian_basis(shape[0], cells), _gaussian_basis(shape[1], cells)
    field = by @ rng.standard_normal((cells + 2, cells + 2)).astype(np.float32) @ bx.T
    field -= field.mean()
    field /= field.std() + 1e-6
    return field


def _upsample_matrix(n_out, n_in, step):
    """(n_out, n_in) linear interpolation from samples taken every ``step`` pixels."""
    pos = np.minimum(np.arange(n_out) / step, n_in - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    t = (pos - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    m[rows, i0] += 1 - t
    m[rows, i1] += t
    return m


def _draw_candidates(rng, m, p):
    """Draw ``m`` candidate nuclei: outline, brightness and placement choices.

    Each outline is an ellipse with the area of a disc of ``radius`` and
    axis ratio ``aspect`` whose normalized radius is modulated by
    ``1 + Re(sum_k coefs[k - 2] * exp(1j k theta))``, k = 2..6 (a smooth
    irregular outline), tabulated at ``_ANGLES`` directions in ``table``.
    """
    mitotic = rng.random(m) < p["mitotic_frac"]
    radius = np.clip(p["mean_radius"] * np.exp(rng.normal(0.0, p["radius_spread"], m)), 3.0, 32.0)
    radius = np.where(mitotic, np.maximum(p["mean_radius"] * rng.uniform(0.4, 0.7, m), 2.5), radius)
    aspect = np.where(mitotic, rng.uniform(0.3, 0.9, m), rng.uniform(p["aspect_low"], 1.0, m))
    irregular = np.where(mitotic, p["irregularity"] + rng.uniform(0.03, 0.1, m),
                         p["irregularity"] * rng.uniform(0.3, 1.7, m))
    harmonics = np.arange(2, 7)
    coefs = (irregular[:, None] * rng.normal(0.0, 1.0, (m, 5)) / harmonics ** 0.7
             * np.exp(1j * rng.uniform(0, 2 * np.pi, (m, 5))))
    theta = np.linspace(-np.pi, np.pi, _ANGLES + 1)  # both ends: the same direction
    table = np.maximum(1.0 + (coefs @ np.exp(1j * harmonics[:, None] * theta)).real, 0.3)
    bright = np.where(mitotic, rng.uniform(2.0, 5.0, m),
                      np.exp(rng.normal(0.0, p["brightness_sigma"], m)))
    texture = np.where(mitotic, p["texture"] + rng.uniform(0.2, 0.5, m),
                       p["texture"] * rng.uniform(0.5, 1.5, m))
    profile = np.where(mitotic, rng.uniform(-0.6, 0.0, m), p["profile"] + rng.normal(0, 0.15, m))
    a = radius / np.sqrt(aspect)
    b = radius * np.sqrt(aspect)
    angle = rng.uniform(0, np.pi, m)
    return dict(
        mitotic=mitotic, radius=radius, bright=bright, texture=texture, profile=profile,
        a=a, b=b, cos=np.cos(angle), sin=np.sin(angle), table=table.astype(np.float32),
        halves=np.ceil(a * table.max(1)).astype(int) + 2, frac=rng.uniform(0, 1, (m, 2)),
        neighbour=rng.random(m) < p["cluster_frac"], parent=rng.random(m),
        direction=rng.uniform(0, 2 * np.pi, m), spacing=rng.uniform(0.95, 1.08, m),
        dim=rng.random(m), dim_factor=rng.uniform(0.15, 0.4, m), position=rng.random((m, 2)))


def _render_shapes(c, idx, edge):
    """Coverage and brightness of candidates ``idx`` of ``c``, each in its own box.

    Vectorized over the candidates (in one box of the largest size).

    Returns
    -------
    alphas, masks, values : list of ndarray
        Per candidate, ``(2 * half + 1, 2 * half + 1)`` arrays: the
        anti-aliased coverage in [0, 1], the nucleus itself
        (``alpha >= 0.5``) and its brightness (``bright`` times a domed or
        rim-bright profile). The centre lies at ``half + frac``.
    """
    col = (slice(None), None, None)
    f32 = np.float32
    halves = c["halves"][idx]
    big = int(halves.max())
    g = np.arange(-big, big + 1, dtype=f32)
    dy = g[None, :, None] - c["frac"][idx, 0].astype(f32)[col]
    dx = g[None, None, :] - c["frac"][idx, 1].astype(f32)[col]
    a, b = c["a"][idx], c["b"][idx]
    ca, sa = c["cos"][idx], c["sin"][idx]
    p = dx * (ca / a).astype(f32)[col] + dy * (sa / a).astype(f32)[col]
    q = dy * (ca / b).astype(f32)[col] - dx * (sa / b).astype(f32)[col]
    rho = np.hypot(p, q)
    bins = np.arctan2(q, p)
    bins *= _ANGLES / (2 * np.pi)
    bins += _ANGLES / 2 + 0.5
    bins = bins.astype(np.int32).reshape(idx.size, -1)
    r_theta = np.take_along_axis(c["table"][idx], bins, 1).reshape(rho.shape)
    alpha = r_theta - rho
    alpha *= (np.sqrt(a * b) * edge).astype(f32)[col]
    alpha += 0.5
    np.clip(alpha, 0.0, 1.0, out=alpha)
    value = rho
    value /= r_theta
    value *= value
    bright, prof = c["bright"][idx], c["profile"][idx]
    value *= (bright * prof).astype(f32)[col]
    value += (bright * (1.0 - 0.5 * prof)).astype(f32)[col]
    mask = alpha >= 0.5
    alphas, masks, values = [], [], []
    for j, half in enumerate(halves.tolist()):
        sl = slice(big - half, big + half + 1)
        alphas.append(alpha[j, sl, sl])
        masks.append(mask[j, sl, sl])
        values.append(value[j, sl, sl])
    return alphas, masks, values


def _place_nuclei(rng, shape):
    """Draw the nuclei: returns ``base`` intensity, labels and per-nucleus data.

    Nuclei are drawn one after another; a later one wins the pixels it
    shares with earlier ones. A placement is refused when older nuclei
    already cover more than a small share of it, or when it would take too
    much of an older nucleus, so clusters touch and overlap only slightly.
    Candidates are positioned one by one, those whose centre is free are
    rendered in small batches, then committed in order.
    """
    h, w = shape
    p = dict(
        mean_radius=float(_loguniform(rng, 4.0, 25.0)),
        radius_spread=rng.uniform(0.06, 0.3),
        cluster_frac=rng.choice([rng.uniform(0.0, 0.3), rng.uniform(0.3, 0.95)]),
        aspect_low=rng.uniform(0.4, 0.85),
        irregularity=float(_loguniform(rng, 0.01, 0.08)),
        profile=rng.uniform(-0.5, 0.35),  # < 0 domed, > 0 brighter rim
        brightness_sigma=rng.uniform(0.15, 0.7),
        dim_frac=rng.choice([0.0, rng.uniform(0.02, 0.2)]),
        mitotic_frac=rng.choice([0.0, rng.uniform(0.0, 0.04), rng.uniform(0.02, 0.12)]),
        texture=rng.uniform(0.05, 0.5),
    )
    edge = float(_loguniform(rng, 0.25, 1.5))  # sharpness of the outline (1 / ramp width)
    density = float(_loguniform(rng, 0.02, 0.6))  # target area fraction
    n_target = int(np.clip(round(density * h * w / (np.pi * p["mean_radius"] ** 2)), 1, _MAX_NUCLEI))
    gap = rng.uniform(0.78, 0.98)  # centre distance / sum of radii for neighbours
    max_covered = rng.uniform(0.03, 0.2)  # of the new nucleus by older ones
    max_taken = 0.3  # of an older nucleus by the new one
    batch = int(np.clip(30000 // (2.6 * p["mean_radius"] + 5) ** 2, 4, 64))

    base = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.int32)
    centres, radii, textures, bright_parent = [], [], [], []
    drawn, current = [0], [0]  # pixel counts per id, as drawn and as left now
    # Ids that may not be one 4-connected piece: those a later nucleus took
    # pixels from, those cut by the image border, and very thin ones.
    check = set()

    def commit(c, pending):
        if not pending:
            return
        alphas, masks, values = _render_shapes(c, np.array([q[0] for q in pending]), edge)
        for (i, iy, ix, scale), alpha, mask, value in zip(pending, alphas, masks, values):
            if len(radii) >= n_target:
                return
            half = int(c["halves"][i])
            y0, x0 = iy - half, ix - half
            sy0, sx0 = max(y0, 0), max(x0, 0)
            sy1, sx1 = min(y0 + 2 * half + 1, h), min(x0 + 2 * half + 1, w)
            box = (slice(sy0, sy1), slice(sx0, sx1))
            local = (slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))
            box_clipped = sy1 - sy0 < mask.shape[0] or sx1 - sx0 < mask.shape[1]
            mask = mask[local]
            n_pixels = np.count_nonzero(mask)
            if n_pixels < 4:
                continue
            under = labels[box][mask]
            n_covered = np.count_nonzero(under)
            if n_covered:
                if n_covered > max_covered * n_pixels:
                    continue
                taken = np.bincount(under)
                ids = np.flatnonzero(taken[1:]) + 1
                lost = taken[ids].tolist()
                ids = ids.tolist()
                if any(current[j] - t < (1.0 - max_taken) * drawn[j] for j, t in zip(ids, lost)):
                    continue
                for j, t in zip(ids, lost):
                    current[j] -= t
                check.update(ids)
            drawn.append(n_pixels)
            current.append(n_pixels)
            centres.append((iy + c["frac"][i, 0], ix + c["frac"][i, 1]))
            radii.append(float(c["radius"][i]))
            textures.append(float(c["texture"][i]))
            bright_parent.append(float(c["bright"][i]) * scale > 1.0 or bool(c["mitotic"][i]))
            labels[box][mask] = len(radii)
            if box_clipped or c["b"][i] < 3.0:
                check.add(len(radii))
            value = value[local]
            if scale != 1.0:
                scale = max(scale, 0.12 / float(c["bright"][i]))  # dim, yet visible
                value = value * scale
            target = base[box]
            target += alpha[local] * (value - target)

    tried, accepted = 0, 1.0
    # Rounds of candidates until the target count is reached, the tries run
    # out, or a round mostly fails (the image is as crowded as it gets).
    while len(radii) < n_target and tried < 2 * n_target + 10 and accepted > 0.2:
        m = n_target - len(radii) + 4
        tried += m
        before = len(radii)
        c = _draw_candidates(rng, m, p)
        halves, rad = c["halves"].tolist(), c["radius"].tolist()
        mitotic, neighbour = c["mitotic"].tolist(), c["neighbour"].tolist()
        dim, dim_factor = c["dim"].tolist(), c["dim_factor"].tolist()
        position, parent_u = c["position"].tolist(), c["parent"].tolist()
        pending = []
        for i in range(m):
            half, radius, scale = halves[i], rad[i], 1.0
            if radii and neighbour[i]:
                parent = int(parent_u[i] * len(radii))
                dist = (radii[parent] + radius) * gap * c["spacing"][i]
                cy = centres[parent][0] + dist * math.sin(c["direction"][i])
                cx = centres[parent][1] + dist * math.cos(c["direction"][i])
                if bright_parent[parent] and not mitotic[i] and dim[i] < 2 * p["dim_frac"]:
                    scale = dim_factor[i]  # a dim one pressed against a bright one
            else:
                cy = -0.5 * radius + position[i][0] * (h + radius)
                cx = -0.5 * radius + position[i][1] * (w + radius)
                if not mitotic[i] and dim[i] < p["dim_frac"]:
                    scale = dim_factor[i]
            iy, ix = math.floor(cy), math.floor(cx)
            if iy + half < 0 or ix + half < 0 or iy - half >= h or ix - half >= w:
                continue
            if 0 <= iy < h and 0 <= ix < w and labels[iy, ix]:
                continue  # centre already taken: would fail the overlap test
            pending.append((i, iy, ix, scale))
            if len(pending) >= batch:
                commit(c, pending)
                pending = []
        commit(c, pending)
        accepted = (len(radii) - before) / m
    return (base, labels, check, p["mean_radius"], np.asarray(centres).reshape(-1, 2),
            np.asarray(radii), np.asarray(textures, np.float32))


def _clean_labels(labels, base, check, textures):
    """Keep the largest piece of every label, drop slivers, renumber 1..n.

    Only labels in ``check`` can be in pieces. Dropped pixels are also cleared in ``base`` (in place), so no
    bright pixel stays unlabelled. Returns the labels and the texture
    strength of each pixel.
    """
    n = textures.size
    if check:
        selected = np.zeros(n + 1, bool)
        selected[list(check)] = True
        inside = selected[labels]
        ys, xs = np.nonzero(inside)
        index = np.full(labels.shape, -1, np.int64)
        index[ys, xs] = np.arange(ys.size)
        rows, cols = [], []
        for a, b in (((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                     ((slice(1, None), slice(None)), (slice(None, -1), slice(None)))):
            same = inside[a] & inside[b] & (labels[a] == labels[b])
            rows.append(index[a][same])
            cols.append(index[b][same])
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        graph = coo_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(ys.size, ys.size))
        n_comp, comp = connected_components(graph, directed=False)
        if n_comp > len(check):
            comp_label = np.zeros(n_comp, np.int64)
            comp_label[comp] = labels[ys, xs]
            comp_size = np.bincount(comp, minlength=n_comp)
            order = np.lexsort((-comp_size, comp_label))
            first = np.ones(n_comp, bool)
            first[1:] = comp_label[order][1:] != comp_label[order][:-1]
            keep = np.zeros(n_comp, bool)
            keep[order[first]] = True
            stray = ~keep[comp]
            labels[ys[stray], xs[stray]] = 0
            base[ys[stray], xs[stray]] = 0.0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    small = sizes < 6
    small[0] = False
    if small.any():
        gone = small[labels]
        labels[gone] = 0
        base[gone] = 0.0
        sizes[small] = 0
    keep = sizes > 0
    keep[0] = False
    lut = np.zeros(n + 1, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    weight = np.concatenate([[0.0], textures]).astype(np.float32)
    return lut[labels], weight[labels]


def _texture(rng, shape, mean_radius, centres, radii):
    """Chromatin texture: smoothed noise plus nucleoli/chromocentre spots."""
    fine = rng.standard_normal(shape).astype(np.float32)
    fine = ndi.gaussian_filter(fine, rng.uniform(0.7, 1.3) + 0.04 * mean_radius, truncate=3.0)
    fine /= fine.std() + 1e-6
    spots = np.zeros(shape, np.float32)
    count = rng.poisson(rng.uniform(0.5, 4.0), len(radii))
    idx = np.repeat(np.arange(len(radii)), count)
    if idx.size:
        r = radii[idx] * np.sqrt(rng.uniform(0, 0.5, idx.size))
        t = rng.uniform(0, 2 * np.pi, idx.size)
        ys = np.round(centres[idx, 0] + r * np.sin(t)).astype(int)
        xs = np.round(centres[idx, 1] + r * np.cos(t)).astype(int)
        ok = (ys >= 0) & (ys < shape[0]) & (xs >= 0) & (xs < shape[1])
        sign = np.where(rng.random(idx.size) < rng.uniform(0, 1), 1.0, -1.0)
        np.add.at(spots, (ys[ok], xs[ok]), sign[ok] * rng.uniform(0.5, 1.0, int(ok.sum())))
        sigma = max(0.8, mean_radius * rng.uniform(0.08, 0.2))
        spots = ndi.gaussian_filter(spots, sigma, truncate=3.0) * (2 * np.pi * sigma ** 2)
    mix = rng.uniform(0.0, 1.0)
    return (1 - mix) * fine + mix * 2.0 * spots


def _add_blob(img, cy, cx, sigma_y, sigma_x, angle, amplitude):
    """Add an elliptical gaussian blob (debris) to ``img`` in place."""
    h, w = img.shape
    half = int(math.ceil(3 * max(sigma_y, sigma_x)))
    y0, y1 = max(int(cy) - half, 0), min(int(cy) + half + 1, h)
    x0, x1 = max(int(cx) - half, 0), min(int(cx) + half + 1, w)
    if y0 >= y1 or x0 >= x1:
        return
    dy = (np.arange(y0, y1, dtype=np.float32) - cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :]
    c, s = math.cos(angle), math.sin(angle)
    u = (dx * c + dy * s) / sigma_x
    v = (dy * c - dx * s) / sigma_y
    img[y0:y1, x0:x1] += amplitude * np.exp(-0.5 * (u * u + v * v))


def _shot_noise(rng, mean):
    """Photon counts with mean ``mean``: Poisson where it is below 8, else
    the normal approximation (a Poisson draw costs far more per pixel)."""
    counts = mean + np.sqrt(mean) * rng.standard_normal(mean.shape, dtype=np.float32)
    low = mean < 8.0
    if low.any():
        counts[low] = rng.poisson(mean[low])
    return counts


def _synthetic_raw(rng: np.random.Generator, shape=(256, 256)):
    """Raw integer image (as a camera would save it) and int32 labels."""
    shape = tuple(int(s) for s in shape)
    h, w = shape
    base, labels, check, mean_radius, centres, radii, textures = _place_nuclei(rng, shape)
    labels, weight = _clean_labels(labels, base, check, textures)

    tex = _texture(rng, shape, mean_radius, centres, radii)
    signal = base * np.clip(1.0 + weight * tex, 0.15, None)

    if rng.random() < 0.5:  # out-of-focus glow / cytoplasm around nuclei
        step = 4
        small = signal[::step, ::step]
        small = ndi.gaussian_filter(small, rng.uniform(1.0, 4.0) * mean_radius / (2 * step) + 0.5)
        glow = (_upsample_matrix(h, small.shape[0], step) @ small
                @ _upsample_matrix(w, small.shape[1], step).T)
        signal += rng.uniform(0.03, 0.2) * glow

    # Debris: specks and soft blobs, bright or dim, never labelled.
    n_specks = rng.poisson(rng.choice([0.0, rng.uniform(1, 25)]))
    for _ in range(n_specks):
        sig = rng.uniform(0.5, 1.6)
        _add_blob(signal, rng.uniform(0, h), rng.uniform(0, w), sig, sig * rng.uniform(0.6, 1.4),
                  rng.uniform(0, np.pi), _loguniform(rng, 0.05, 2.5))
    n_blobs = rng.poisson(rng.choice([0.0, rng.uniform(0.5, 6)]))
    for _ in range(n_blobs):
        sig = rng.uniform(2.0, 10.0)
        _add_blob(signal, rng.uniform(0, h), rng.uniform(0, w), sig, sig * rng.uniform(0.3, 1.0),
                  rng.uniform(0, np.pi), _loguniform(rng, 0.02, 0.25))

    signal = ndi.gaussian_filter(signal, rng.uniform(0.5, 2.0), truncate=3.0)

    # Uneven illumination (multiplicative) and background (additive).
    yy = (np.arange(h, dtype=np.float32)[:, None] - rng.uniform(0, h)) / max(h, w)
    xx = (np.arange(w, dtype=np.float32)[None, :] - rng.uniform(0, w)) / max(h, w)
    illum = 1.0 - rng.uniform(0.0, 0.5) * (yy * yy + xx * xx)
    illum = illum + rng.uniform(-0.25, 0.25) * yy + rng.uniform(-0.25, 0.25) * xx
    illum = illum * (1.0 + rng.uniform(0.0, 0.15) * _smooth_field(rng, shape, 4))
    illum = np.clip(illum, 0.3, None)
    background = float(_loguniform(rng, 0.005, 0.2))
    bg = background * (1.0 + rng.uniform(0.0, 0.4) * _smooth_field(rng, shape, 3))
    signal = illum * signal + np.clip(bg, 0.0, None)

    # Photons, camera noise, gain, offset, clipping, quantization.
    photons = float(_loguniform(rng, 50.0, 5000.0))  # for a nucleus of brightness 1
    counts = _shot_noise(rng, np.maximum(signal, 0.0) * photons)
    counts += rng.normal(0.0, rng.uniform(0.3, 3.0), shape).astype(np.float32)
    bits = int(rng.choice([8, 12, 16], p=[0.55, 0.25, 0.2]))
    full = 2 ** bits - 1
    if rng.random() < 0.15:  # saturated exposure
        fill = rng.uniform(0.7, 1.5)
    elif bits == 16:
        fill = float(_loguniform(rng, 0.02, 0.8))
    else:
        fill = float(_loguniform(rng, 0.12, 0.8))
    gain = fill * full / photons
    offset = rng.uniform(0.0, 0.05) * full
    raw = np.clip(np.round(counts * gain + offset), 0, full)
    raw = raw.astype(np.uint8 if bits == 8 else np.uint16)
    return raw, labels


def synthetic_nuclei(rng: np.random.Generator, shape=(256, 256)) -> tuple[np.ndarray, np.ndarray]:
    """Render one synthetic fluorescence nuclei image and its instance labels.

    Per image the generator draws the number and density of nuclei (sparse to
    crowded), their mean size (radius 4-25 px) and spread, elliptical shapes
    with random orientation and a smooth irregular outline (radial Fourier
    perturbation), touching clusters, log-normal brightness with a few dim
    nuclei beside bright ones and a few small, compact, very bright
    (mitotic) ones, chromatin texture and nucleoli, optical blur (PSF sigma
    0.5-2 px), background offset with gradient and vignetting, unlabelled
    debris, Poisson and Gaussian noise, occasional saturation, and 8, 12 or
    16 bit quantization.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random draw; the same state gives the same output.
    shape : tuple of int, optional
        ``(height, width)`` of the image.

    Returns
    -------
    image : (H, W) ndarray of float32
        Percentile normalized with
        :func:`piximi_py.preprocess.normalize_percentile`, as real images are
        fed to the model: mostly in [0, 1], saturated pixels may exceed 1.
    labels : (H, W) ndarray of int32
        Instance ids ``1..n`` (consecutive), 0 for background. Every nucleus
        is one 4-connected component; where nuclei overlap the one drawn
        later owns the pixels. Debris is not labelled.

    Examples
    --------
    >>> import numpy as np
    >>> image, labels = synthetic_nuclei(np.random.default_rng(0))
    >>> image.shape, image.dtype, labels.dtype
    ((256, 256), dtype('float32'), dtype('int32'))
    """
    raw, labels = _synthetic_raw(rng, shape)
    return normalize_percentile(raw), labels


def synthetic_set(n: int, seed: int = 0, shape=(256, 256)) -> list[tuple[np.ndarray, np.ndarray]]:
    """Render ``n`` examples with :func:`synthetic_nuclei`.

    Each example has its own generator spawned from ``seed``, so example
    ``i`` does not depend on ``n``.

    Parameters
    ----------
    n : int
        Number of examples.
    seed : int, optional
        Seed of the whole set.
    shape : tuple of int, optional
        ``(height, width)`` of each image.

    Returns
    -------
    list of (image, labels)
        As returned by :func:`synthetic_nuclei`.
    """
    children = np.random.SeedSequence(seed).spawn(n)
    return [synthetic_nuclei(np.random.default_rng(child), shape) for child in children]


def _main(argv=None) -> int:
    import argparse
    from pathlib import Path

    import tifffile

    parser = argparse.ArgumentParser(
        prog="python -m training.synthetic",
        description="Write synthetic nuclei image/mask TIFF pairs (OUTDIR/images, OUTDIR/masks).")
    parser.add_argument("outdir", type=Path)
    parser.add_argument("n", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    args = parser.parse_args(argv)
    (args.outdir / "images").mkdir(parents=True, exist_ok=True)
    (args.outdir / "masks").mkdir(parents=True, exist_ok=True)
    children = np.random.SeedSequence(args.seed).spawn(args.n)
    for i, child in enumerate(children):
        raw, labels = _synthetic_raw(np.random.default_rng(child), args.size)
        name = f"synthetic_{args.seed}_{i:05d}.tif"
        tifffile.imwrite(args.outdir / "images" / name, raw)
        tifffile.imwrite(args.outdir / "masks" / name, labels.astype(np.uint16))
    print(f"wrote {args.n} image/mask pairs to {args.outdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
