"""Devices as PyTorch users know them, and training on the CUDA device against the CPU.

Runs on a real GPU or, in CI, on the emulated device (conftest switches it on): the same test,
choosing neither. Marked ``cuda``.
"""
import numpy as np
import pytest

import pyneural as pn
from pyneural import models
from pyneural.datasets import digits

pytestmark = pytest.mark.cuda


@pytest.fixture(autouse=True)
def _needs_cuda(cuda_xp):
    return cuda_xp


def test_device_objects_compare_like_pytorchs():
    d = pn.device("cuda:0")
    assert d == "cuda" and d == "cuda:0" and d != "cpu" and str(d) == "cuda:0" and d.type == "cuda" and d.index == 0
    assert pn.device("cpu") == "cpu" and pn.device("cuda") == pn.device("cuda:0")
    with pytest.raises(RuntimeError, match="Expected one of cpu, cuda"):
        pn.device("tpu")
    assert pn.cuda.is_available() and pn.cuda.device_count() >= 1 and pn.accelerator.is_available()
    assert pn.accelerator.current_accelerator() == "cuda"
    pn.cuda.synchronize()


def test_tensors_move_between_devices_and_gradients_follow(rng):
    host = rng.standard_normal((3, 4)).astype(np.float32)
    x = pn.tensor(host, requires_grad=True)
    y = x.to("cuda")
    assert y.device == "cuda" and x.device == "cpu" and y.is_cuda
    with pytest.raises(TypeError, match="cuda tensor to numpy"):
        y.detach().numpy()
    z = (y * 3).sum()
    assert z.device == "cuda"
    z.backward()
    assert x.grad.device == "cpu" and np.array_equal(x.grad.numpy(), np.full((3, 4), 3, np.float32))
    assert np.array_equal(y.detach().cpu().numpy(), host) and y.cuda() is y and x.cpu() is x
    assert "device='cuda:0'" in repr(y.detach())


def test_creation_functions_take_device():
    for t in (pn.zeros(2, 3, device="cuda"), pn.ones(4, device="cuda"), pn.randn(2, 2, device="cuda"),
              pn.arange(5, device="cuda"), pn.tensor([1.0, 2.0], device="cuda"), pn.full((2,), 7.0, device="cuda"),
              pn.randint(0, 9, (3,), device="cuda"), pn.eye(3, device="cuda")):
        assert t.device == "cuda", t
    like = pn.zeros_like(pn.ones(3, device="cuda"))
    assert like.device == "cuda" and float(like.sum().item()) == 0.0
    pn.manual_seed(3)
    a = pn.randn(5, device="cuda").cpu().numpy()
    pn.manual_seed(3)
    assert np.array_equal(a, pn.randn(5).numpy())  # one seeded generator for every device


def test_an_op_on_two_devices_names_both():
    lin = pn.nn.Linear(3, 2).to("cuda")
    with pytest.raises(RuntimeError, match="found at least two devices, cpu and cuda:0"):
        lin(pn.randn(4, 3))
    with pytest.raises(RuntimeError, match="two devices"):
        pn.randn(3) + pn.randn(3, device="cuda")


def test_module_to_moves_parameters_gradients_and_buffers():
    m = pn.nn.Sequential(pn.nn.Conv2d(1, 4, 3), pn.nn.BatchNorm2d(4))
    m(pn.randn(2, 1, 5, 5)).sum().backward()
    params = list(m.parameters())
    assert m.to("cuda") is m and [id(p) for p in m.parameters()] == [id(p) for p in params]
    assert all(p.device == "cuda" and p.grad.device == "cuda" for p in m.parameters())
    assert all(b.device == "cuda" for b in m.buffers())
    m.cpu()
    assert all(p.device == "cpu" for p in m.parameters())


def _train(device, model_fn, opt_fn, steps, batch):
    pn.manual_seed(0)
    model = model_fn().to(device)
    opt = opt_fn(model.parameters())
    train, _ = digits()
    batches = iter(pn.data.DataLoader(train, batch_size=batch, shuffle=True, seed=0))
    losses = []
    for _ in range(steps):
        x, y = next(batches)
        loss = pn.functional.cross_entropy(model(x.to(device)), y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert loss.device == device
        losses.append(loss.item())
    if device == "cuda":
        assert all(s.device == "cuda" for p in model.parameters() for s in _state_arrays(opt, p))
    return np.array(losses), [p.detach().cpu().numpy() for p in model.parameters()]


def _state_arrays(opt, p):
    return [pn.Tensor(v) for v in opt.state.get(id(p), {}).values() if hasattr(v, "shape")]


@pytest.mark.parametrize("name,model_fn,opt_fn", [
    ("cnn+sgd", models.cnn, lambda ps: pn.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-4)),
    ("mlp+adamw", models.mlp, lambda ps: pn.optim.AdamW(ps, lr=1e-3, weight_decay=0.01)),
])
def test_training_on_cuda_matches_the_cpu(name, model_fn, opt_fn):
    """20 steps on each device from the same seed: losses and parameters within 1e-4 relative."""
    cpu_losses, cpu_params = _train("cpu", model_fn, opt_fn, steps=20, batch=16)
    gpu_losses, gpu_params = _train("cuda", model_fn, opt_fn, steps=20, batch=16)
    assert np.max(np.abs(gpu_losses - cpu_losses) / np.abs(cpu_losses)) < 1e-4, (gpu_losses, cpu_losses)
    for g, c in zip(gpu_params, cpu_params):
        assert np.linalg.norm(g - c) / np.linalg.norm(c) < 1e-4


def test_dropout_and_gradient_clipping_run_on_the_device():
    x = pn.ones(64, 100, device="cuda", requires_grad=True)
    pn.manual_seed(1)
    y = pn.functional.dropout(x, 0.25)
    y.sum().backward()
    kept = (y.detach().cpu().numpy() != 0)
    assert y.device == "cuda" and abs(kept.mean() - 0.75) < 0.02
    assert np.array_equal(x.grad.cpu().numpy() != 0, kept)  # backward recomputes the same mask
    assert np.allclose(y.detach().cpu().numpy()[kept], 1 / 0.75)
    pn.manual_seed(1)
    again = pn.functional.dropout(pn.ones(64, 100, device="cuda"), 0.25)
    assert np.array_equal(again.cpu().numpy(), y.detach().cpu().numpy())  # seeded by pn.manual_seed
    w = pn.nn.Parameter(pn.zeros(10, device="cuda"))
    w.grad = pn.full((10,), 3.0, device="cuda")
    norm = pn.optim.clip_grad_norm_([w], 1.0)
    assert norm.device == "cuda" and abs(norm.item() - 3.0 * np.sqrt(10)) < 1e-5
    assert abs(np.linalg.norm(w.grad.cpu().numpy()) - 1.0) < 1e-5


def test_train_cli_on_the_device(tmp_path):
    import subprocess
    import sys

    from conftest import subprocess_env
    proc = subprocess.run([sys.executable, "-m", "pyneural", "train", "--device", "cuda", "--model", "mlp",
                           "--epochs", "1", "--no-progress"], cwd=tmp_path, env=subprocess_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ", on cuda" in proc.stdout and "utilization report (cuda" in proc.stdout
    accuracy = float(proc.stdout.split("final test accuracy ")[1].split("%")[0])
    assert accuracy > 50.0, proc.stdout


def test_small_resnet_with_batch_norm_trains_like_the_cpu():
    """Conv + BatchNorm (our statistics / apply / backward kernels) + residual adds, 5 steps."""
    def run(device):
        pn.manual_seed(0)
        model = models.ResNetSmall(in_channels=1, widths=(8, 16, 16)).to(device)
        opt = pn.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        x, y = pn.randn(8, 1, 8, 8), pn.randint(0, 10, (8,))
        losses = []
        for _ in range(5):
            loss = pn.functional.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        running = [b.cpu().numpy() for b in model.buffers()]
        return np.array(losses), [p.detach().cpu().numpy() for p in model.parameters()], running
    cl, cp_, cr = run("cpu")
    gl, gp, gr = run("cuda")
    assert np.max(np.abs(gl - cl) / np.abs(cl)) < 1e-4, (gl, cl)
    for g, c in zip(gp + gr, cp_ + cr):
        assert np.linalg.norm(g - c) <= 1e-4 * max(np.linalg.norm(c), 1e-6)


def test_embedding_on_the_device_matches_the_cpu(rng):
    idx = rng.integers(0, 20, (6, 5))
    grads = {}
    for device in ("cpu", "cuda"):
        pn.manual_seed(0)
        emb = pn.nn.Embedding(20, 4, padding_idx=3).to(device)
        out = emb(pn.tensor(idx).to(device))
        (out * out).sum().backward()
        grads[device] = (out.detach().cpu().numpy(), emb.weight.grad.cpu().numpy())
    assert np.array_equal(grads["cpu"][0], grads["cuda"][0])
    assert np.allclose(grads["cpu"][1], grads["cuda"][1], rtol=1e-5, atol=1e-5)  # summed in another order


def test_tf32_switch_routes_float32_matmul_to_the_tensor_cores(rng, monkeypatch):
    from pyneural.cuda import tensor_core
    calls = []
    real = tensor_core.matmul_tc
    monkeypatch.setattr(tensor_core, "matmul_tc", lambda *a, **k: calls.append(k) or real(*a, **k))
    a, b = rng.standard_normal((70, 130)).astype(np.float32), rng.standard_normal((130, 50)).astype(np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    x, w = pn.tensor(a, device="cuda"), pn.tensor(b, device="cuda")
    exact = (x @ w).cpu().numpy()
    assert not calls and np.linalg.norm(exact - ref) / np.linalg.norm(ref) < 1e-6
    assert pn.get_float32_matmul_precision() == "highest"
    pn.set_float32_matmul_precision("high")
    try:
        assert pn.backends.cuda.matmul.allow_tf32
        lin = pn.nn.Linear(130, 50).to("cuda")
        y = (x @ w).cpu().numpy()
        lin(x).sum().backward()
    finally:
        pn.set_float32_matmul_precision("highest")
    err = np.linalg.norm(y - ref) / np.linalg.norm(ref)
    assert calls and 1e-6 < err < 3e-3  # tf32: 10-bit mantissas, fp32 accumulation
    assert lin.weight.grad.device == "cuda"


def test_batch_norm_in_eval_mode_matches_the_cpu(rng):
    host = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    results = {}
    for device in ("cpu", "cuda"):
        pn.manual_seed(0)
        bn = pn.nn.BatchNorm2d(3).to(device)
        bn(pn.tensor(host, device=device))  # one training step moves the running estimates
        bn.eval()
        x = pn.tensor(host * 2 + 1, device=device, requires_grad=True)
        y = bn(x)
        (y * y).sum().backward()
        results[device] = [t.cpu().numpy() for t in (y.detach(), x.grad, bn.weight.grad, bn.bias.grad)]
    for c, g in zip(results["cpu"], results["cuda"]):
        assert np.allclose(c, g, rtol=1e-4, atol=1e-5)


@pytest.mark.mpi
def test_two_rank_distributed_training_on_the_device(tmp_path):
    """`mpirun -np 2 pyneural train --distributed --device cuda`: one device per local rank (both
    on cuda:0 where there is one), gradients all-reduced through host staging or CUDA-aware MPI."""
    import subprocess
    import sys

    from conftest import subprocess_env
    from pyneural.distributed.launch import find_mpirun, launcher_flags
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'pyneural[mpi]')")
    launcher = find_mpirun()
    if launcher is None:
        pytest.skip("no mpirun/mpiexec found")
    cmd = [launcher, *launcher_flags(launcher), "-np", "2", sys.executable, "-m", "pyneural", "train",
           "--distributed", "--device", "cuda", "--model", "mlp", "--epochs", "1", "--no-progress"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "on 2 ranks (global batch 64)" in proc.stdout and ", on cuda" in proc.stdout
    accuracy = float(proc.stdout.split("final test accuracy ")[1].split("%")[0])
    assert accuracy > 40.0, proc.stdout
