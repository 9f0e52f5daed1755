"""An experiment of docs/research/cells.md (the ImageNet-pretrained encoder): a Cellpose-style size model on a fold's own features. The style (the
bottleneck's global mean, L2-normalized) of each image rescaled so that its cells measure
15-60 model px is regressed (ridge) to log(cell size in model px / 30) on the sources the fold
trained on; on the source it never saw, the image at scale 1 gives the predicted diameter.
usage: python -m training.experiments.pretrained_cells.style_size CKPT LEFT_OUT"""
import sys, numpy as np, torch
from piximi_py import channels as CH, rescale
from piximi_py.diameter import median_diameter
from piximi_py.io import read_image
from piximi_py.pipeline import prepare_input
from training import cells as C, data as D, datasets as DS
from training.train import load_checkpoint
torch.set_num_threads(1)
model = load_checkpoint(sys.argv[1])
left_out = sys.argv[2]
spec = C.cells_spec()

def style(x):
    h, w = x.shape[-2:]
    s = 512
    x = x[..., max(0, (h - s) // 2):max(0, (h - s) // 2) + s, max(0, (w - s) // 2):max(0, (w - s) // 2) + s]
    h, w = x.shape[-2:]
    x = np.pad(x, ((0, 0), (0, (-h) % 32), (0, (-w) % 32)))
    with torch.no_grad():
        f = model.encoder(torch.from_numpy(np.ascontiguousarray(x[None], dtype=np.float32)))[-1]
    v = f.mean(dim=(2, 3))[0].numpy()
    return v / (np.linalg.norm(v) + 1e-8)

def items(name, n):
    for path in D.source_images(DS.DATA_CACHE / name, n):
        truth = read_image(path.parent.parent / "masks" / path.name).astype(np.int32)
        image = read_image(path, keep_channels=True)
        ch = CH.resolve_channels(image, spec.input_roles, {"cyto": 0, "nuclei": 1 if image.ndim == 3 else None}, None)
        yield path.name, prepare_input(image, spec, ch, False), median_diameter(truth)[0]

rng = np.random.default_rng(0)
X, y = [], []
for name in [n for n in C.CELLS if n != left_out]:
    for _, x, d in items(name, 40):
        for target in (15, 21, 30, 42, 60):
            s = target * np.exp(rng.uniform(-0.1, 0.1)) / d
            X.append(style(rescale.resize(x, rescale.rescaled_shape(x.shape, s)))); y.append(np.log(d * s / 30))
X, y = np.array(X), np.array(y)
tests = {}
for name in [left_out, "cells_deepcell", "cells_livecell"]:
    rows = []
    for _, x, d in items(name, 30):
        rows.append((x, d, style(x)))
    tests[name] = rows
for lam in (1.0, 0.1, 0.01, 0.001):
    mu = X.mean(0)
    A = X - mu
    w = np.linalg.solve(A.T @ A + lam * np.eye(A.shape[1]), A.T @ (y - y.mean()))
    fit = A @ w + y.mean()
    print("lambda", lam, "fit on", len(y), "rms log error", round(float(np.sqrt(np.mean((fit - y) ** 2))), 3), flush=True)
    for name, rows in tests.items():
        ratios = []
        for x, d, st in rows:
            pred = 30 * np.exp((st - mu) @ w + y.mean())
            s = 30 / pred
            pred2 = 30 * np.exp((style(rescale.resize(x, rescale.rescaled_shape(x.shape, s))) - mu) @ w + y.mean()) / s
            ratios.append((pred / d, pred2 / d))
        r = np.array(ratios)
        for i, k in enumerate(("one pass", "two passes")):
            print(" ", name, k, "median", round(float(np.median(r[:, i])), 2), "within15", round(float(np.mean(abs(r[:, i] - 1) <= .15)), 2),
                  "within30", round(float(np.mean(abs(r[:, i] - 1) <= .3)), 2), flush=True)
