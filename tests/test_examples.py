"""The scripts in examples/ (public PyTorch examples ported by changing only their imports) run in a
subprocess on tiny data written here in the real formats (MNIST IDX files, CIFAR-10 python
batches, a MovieLens ratings.csv), and learn.

Where torch is installed, the ORIGINAL script (each pyneural import line put back to its torch
one, ``TORCH_IMPORTS``; nothing else in the text changes) runs too, on the same data and flags,
beside the pyneural run: both must print the same lines up to the numbers in them, both must learn,
and where the first loss does not depend on the initialisation (ten near-uniform classes: ln 10)
the first losses must agree. torchvision's MNIST/CIFAR10/transforms come from a stand-in in
tests/examples_support (real torchvision checks the real CIFAR files' MD5 sums).
"""
import os
import pickle
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
TORCHVISION_STANDIN = os.path.join(REPO, "tests", "examples_support")
TIMEOUT = 240
# the folder holding the pyneural this test imports: the installed package in CI (a source checkout
# has no compiled _C), the checkout in a development build
PYNEURAL_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__import__("pyneural").__file__)))

# pyneural import line -> the line of the PyTorch original it replaces ("" for a line the original
# spells together with the one before: torchvision's ``from torchvision import datasets, transforms``).
TORCH_IMPORTS = {
    "import pyneural as torch": "import torch",
    "import pyneural.nn as nn": "import torch.nn as nn",
    "import pyneural.nn.functional as F": "import torch.nn.functional as F",
    "import pyneural.optim as optim": "import torch.optim as optim",
    "from pyneural.optim.lr_scheduler import StepLR": "from torch.optim.lr_scheduler import StepLR",
    "from pyneural.optim import lr_scheduler": "from torch.optim import lr_scheduler",
    "from pyneural import nn": "from torch import nn",
    "from pyneural.utils.data import DataLoader, Dataset": "from torch.utils.data import DataLoader, Dataset",
    "from pyneural import datasets": "from torchvision import datasets, transforms",
    "from pyneural.data import transforms": "",
    "import pyneural as torchvision": "import torchvision",
    "import pyneural.data.transforms as transforms": "import torchvision.transforms as transforms",
}


def torch_original(path):
    """The PyTorch script ``path`` was ported from: its import lines mapped back, every other line as is."""
    lines = []
    with open(path) as f:
        for line in f.read().splitlines():
            if "pyneural" in line and not line.startswith("#"):
                assert line in TORCH_IMPORTS, f"{path}: {line!r} is not one of the import lines a port may change"
                line = TORCH_IMPORTS[line]
                if not line:
                    continue
            lines.append(line)
    return "\n".join(lines) + "\n"


# ---- the data, in the real formats --------------------------------------------------------------

def marked_images(rng, labels, size):
    """Grey noise with a bright block where the label says (5 x 2 positions): learnable in a few steps."""
    images = rng.integers(0, 60, (len(labels), size, size)).astype(np.uint8)
    cell = size // 5
    for i, k in enumerate(labels):
        row, col = divmod(int(k), 5)
        images[i, row * 2 * cell + 2:row * 2 * cell + 2 + cell, col * cell:(col + 1) * cell] = 255
    return images


def write_idx(path, array):
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def write_mnist(root, rng, n_train, n_test):
    """torchvision's layout: root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte."""
    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        write_idx(os.path.join(raw, f"{split}-images-idx3-ubyte"), marked_images(rng, labels, 28))
        write_idx(os.path.join(raw, f"{split}-labels-idx1-ubyte"), labels)


PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255],
                    [255, 255, 255], [0, 0, 0], [255, 128, 0], [0, 128, 255]])


def write_cifar(root, rng, per_batch, n_test):
    """cifar-10-batches-py: five data batches and a test batch, each a pickled dict with ``data``
    uint8 (N, 3072) (the red, green, blue planes of each image) and ``labels``; an image is its
    class's colour plus noise."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        labels = rng.permutation(np.arange(n) % 10)
        planes = PALETTE[labels][:, :, None, None] + rng.integers(-40, 41, (n, 3, 32, 32))
        data = np.clip(planes, 0, 255).astype(np.uint8).reshape(n, 3072)
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels.tolist(), "data": data,
                         "filenames": [f"{i}.png" for i in range(n)]}, f, protocol=2)


def write_ratings(path, rng, n_users=40, n_items=60, per_user=45, rank=2):
    """MovieLens' ratings.csv (userId,movieId,rating,timestamp) from a low-rank model, in half stars."""
    users, items = rng.normal(size=(n_users, rank)), rng.normal(size=(n_items, rank))
    with open(path, "w") as f:
        f.write("userId,movieId,rating,timestamp\n")
        for u in range(n_users):
            for m in rng.choice(n_items, per_user, replace=False):
                rating = np.clip(np.round((3.5 + 0.7 * users[u] @ items[m]) * 2) / 2, 0.5, 5.0)
                f.write(f"{u + 1},{10 * m + 1},{rating},{964982703 + m}\n")


# ---- running the scripts ------------------------------------------------------------------------

def start(script_text, args, cwd, torch_run):
    """Popen of the script text (written next to the run, so ``__file__`` and relative paths work)."""
    name = os.path.join(cwd, "torch_original.py" if torch_run else "pyneural_port.py")
    with open(name, "w") as f:
        f.write(script_text)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")  # one thread each: the two runs share the CPU
    env.pop("PYNEURAL_CUDA_EMULATE", None)
    env["PYTHONPATH"] = TORCHVISION_STANDIN if torch_run else PYNEURAL_PARENT
    return subprocess.Popen([sys.executable, name, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc, what):
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, f"{what} failed (exit {proc.returncode}):\n{out}\n{err}"
    return out


def torch_installed():
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def run_both(script, args, root, setup=None):
    """(pyneural output, torch output or None): the port and, where torch is installed, the
    original, run side by side, each in its own directory under ``root`` (``setup(directory)``
    first, when given)."""
    path = os.path.join(EXAMPLES, script)
    with open(path) as f:
        texts = {False: f.read()}
    if torch_installed():
        texts[True] = torch_original(path)
    procs = {}
    for torch_run, text in texts.items():
        workdir = os.path.join(root, "torch" if torch_run else "pyneural")
        os.makedirs(workdir)
        if setup is not None:
            setup(workdir)
        procs[torch_run] = start(text, args, workdir, torch_run)
    try:
        out = finish(procs[False], f"examples/{script} on pyneural")
        torch_out = finish(procs[True], f"the PyTorch original of examples/{script}") if True in procs else None
    finally:  # a failed run must not leave the other one running (or its pipes open) behind the test
        for proc in procs.values():
            if not proc.stdout.closed:  # never finished
                if proc.poll() is None:
                    proc.kill()
                proc.communicate()
    return out, torch_out


NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def shape_of(output, words=()):
    """The output's lines with every number (and each of ``words``) replaced by a placeholder."""
    lines = []
    for line in output.splitlines():
        line = NUMBER.sub("#", line)
        for word in words:
            line = re.sub(rf"\b{re.escape(word)}\b", "<w>", line)
        lines.append(re.sub(r"\s+", " ", line).strip())
    return lines


def assert_same_printing(out, torch_out, words=()):
    if torch_out is not None:
        assert shape_of(out, words) == shape_of(torch_out, words), f"pyneural:\n{out}\ntorch:\n{torch_out}"


def floats_after(label, output):
    return [float(m) for m in re.findall(rf"{label}\s*([-+]?\d+\.\d+(?:[eE][-+]?\d+)?)", output)]


# ---- the examples -------------------------------------------------------------------------------

def test_mnist_main(tmp_path, rng):
    """pytorch/examples mnist/main.py: the script's own flags for a short epoch; ../data holds the files."""
    write_mnist(tmp_path / "data", rng, n_train=192, n_test=60)
    out, torch_out = run_both("mnist/main.py", ["--epochs", "1", "--batch-size", "32", "--test-batch-size", "30",
                                                "--log-interval", "1", "--save-model"], tmp_path)
    for output in filter(None, (out, torch_out)):
        losses = floats_after("Loss:", output)
        assert len(losses) == 6
        assert abs(losses[0] - np.log(10)) < 0.15  # ten classes, nearly uniform at the start
        assert losses[-1] < 0.5 * losses[0]
        correct = int(re.search(r"Accuracy: (\d+)/60", output).group(1))
        assert correct >= 45  # chance is 6
    assert_same_printing(out, torch_out)
    if torch_out is not None:
        assert abs(floats_after("Loss:", out)[0] - floats_after("Loss:", torch_out)[0]) < 0.15
    import pyneural as pn
    state = pn.load(tmp_path / "pyneural" / "mnist_cnn.pt")
    assert sorted(state) == sorted(f"{layer}.{p}" for layer in ("conv1", "conv2", "fc1", "fc2")
                                   for p in ("weight", "bias"))
    assert tuple(state["fc1.weight"].shape) == (128, 9216)


CIFAR_CLASSES = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def test_cifar10_tutorial(tmp_path, rng):
    """The "Training a Classifier" tutorial as it is (2 epochs, batch 4, 2 workers): ./data holds the batches."""
    seed = int(rng.integers(2**31))
    out, torch_out = run_both("cifar10_tutorial.py", [], tmp_path,
                              setup=lambda d: write_cifar(os.path.join(d, "data"), np.random.default_rng(seed),
                                                          per_batch=160, n_test=40))
    for output in filter(None, (out, torch_out)):
        assert "Finished Training" in output
        accuracy = int(re.search(r"Accuracy of the network on the 10000 test images: (\d+) %", output).group(1))
        assert accuracy >= 50  # chance is 10
        per_class = floats_after(r"Accuracy for class: \w+ +is", output)
        assert len(per_class) == 10 and sum(per_class) / 10 == pytest.approx(accuracy, abs=1.0)
        assert output.rstrip().endswith("cpu")
    assert_same_printing(out, torch_out, CIFAR_CLASSES)


def test_movielens_mf(tmp_path, rng):
    write_ratings(tmp_path / "ratings.csv", rng)
    rating_std = np.loadtxt(tmp_path / "ratings.csv", delimiter=",", skiprows=1)[:, 2].std()
    out, torch_out = run_both("movielens_mf.py", ["--ratings", os.fspath(tmp_path / "ratings.csv"), "--epochs", "8",
                                                  "--batch-size", "64", "--lr", "0.02", "--factors", "8"], tmp_path)
    for output in filter(None, (out, torch_out)):
        assert "1800 ratings from 40 users on 60 items (1620 train, 180 validation)" in output
        train, val = floats_after("train RMSE", output), floats_after("validation RMSE", output)
        assert len(train) == len(val) == 8
        assert train[-1] < 0.5 * train[0]
        assert val[-1] < 0.7 * rating_std  # well below predicting the mean rating for everyone
        top = re.search(r"Top 5 items for user 0: \[([\d, ]+)\]", output).group(1).split(", ")
        assert len(set(top)) == 5 and all(int(m) % 10 == 1 for m in top)  # the movieIds written (10 m + 1)
    assert_same_printing(out, torch_out)
    import pyneural as pn
    state = pn.load(tmp_path / "pyneural" / "mf.pt")
    assert tuple(state["user_factors.weight"].shape) == (40, 8) and tuple(state["item_bias.weight"].shape) == (60, 1)


def test_polynomial_nn(tmp_path):
    out, torch_out = run_both("polynomial_nn.py", [], tmp_path)
    for output in filter(None, (out, torch_out)):
        losses = [float(line.split()[1]) for line in output.splitlines() if re.match(r"\d+ ", line)]
        assert len(losses) == 20 and losses[-1] < losses[0] and losses[-1] < 50.0
        a, b, c, d = (float(v) for v in re.search(r"y = (\S+) \+ (\S+) x \+ (\S+) x\^2 \+ (\S+) x\^3",
                                                  output).groups())
        assert 0.7 < b < 1.0 and -0.12 < d < -0.06 and abs(a) < 0.1 and abs(c) < 0.1  # sin x ~ x - x^3/6.6
    assert_same_printing(out, torch_out)


def test_transfer_learning(tmp_path):
    out, torch_out = run_both("transfer_learning.py", ["--epochs", "2", "--samples", "400"], tmp_path)
    for output in filter(None, (out, torch_out)):
        best = floats_after("Best val Acc:", output)
        assert len(best) == 3 and min(best) >= 0.9  # pretrained, fixed feature extractor, fine-tuned
        train_losses = floats_after("train Loss:", output)
        assert train_losses[1] < train_losses[0] and train_losses[3] < train_losses[2]
        assert "fixed feature extractor (top/bottom half): 258 trainable parameters" in output
        assert "learning rates [0.001, 0.01]" in output
    assert_same_printing(out, torch_out)
