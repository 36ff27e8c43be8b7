"""PyTorch's side of bench/train.py, in a process of its own.

pyneural sets OMP_WAIT_POLICY=passive before libgomp loads (pyneural/_threads.py), and libgomp is one
copy per process: in pyneural's process torch's OpenMP threads would sleep between regions too,
which costs torch 1.5-2x at small batches (bench/NOTES.md, 2026-12-04 second session). Here torch
runs under its own defaults (the environment pyneural's children see is the user's), and this
process never imports pyneural.

    torch_step_fn(...)     one training step of the torch twin (also used in-process)
    python torch_worker.py  serve train.py: a JSON spec on the first stdin line, then commands

Commands, one per line, each answered with one line: ``step`` (one step; answers its loss),
``window SECONDS CLOCK`` (steps until SECONDS of CLOCK, wall or cpu, have passed; answers seconds
per step), ``threads N`` (torch.set_num_threads; answers N), ``quit``.
"""
import json
import os
import sys
import time

import numpy as np

AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def torch_step_fn(name, batches, device="cpu", amp=None, channels_last=False, lr=0.01, momentum=0.9,
                  model_name=None):
    """One SGD-with-momentum step of the torch twin of ``model_name`` over ``batches`` in turn."""
    import torch
    import torch_models
    model = torch_models.MODELS[model_name or name]().to(device)
    layout = torch.channels_last if channels_last and name != "mlp" else torch.contiguous_format
    model = model.to(memory_format=layout)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    tensors = [(torch.from_numpy(x).to(device).contiguous(memory_format=layout), torch.from_numpy(y).to(device))
               for x, y in batches]
    dtype = getattr(torch, AMP_DTYPES[amp]) if amp else None
    scaler = torch.amp.GradScaler(device) if amp == "fp16" else None
    state = {"i": 0}

    def step():
        x, y = tensors[state["i"] % len(tensors)]
        state["i"] += 1
        with torch.autocast(device, dtype=dtype, enabled=amp is not None):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return loss.item()
    return step


def serve(inp=sys.stdin, out=sys.stdout):
    spec = json.loads(inp.readline())
    import torch
    torch.manual_seed(0)
    data = np.load(spec.pop("data"))
    batches = [(data[f"x{i}"], data[f"y{i}"]) for i in range(len(data.files) // 2)]
    step = torch_step_fn(batches=batches, **spec)
    clocks = {"wall": time.perf_counter, "cpu": time.process_time}
    for line in inp:
        cmd, *args = line.split()
        if cmd == "quit":
            break
        if cmd == "step":
            answer = step()
        elif cmd == "threads":
            torch.set_num_threads(int(args[0]))
            answer = torch.get_num_threads()
        elif cmd == "window":
            min_time, clock = float(args[0]), clocks[args[1]]
            n, start = 0, clock()
            while True:
                step()
                n += 1
                elapsed = clock() - start
                if elapsed >= min_time:
                    break
            answer = elapsed / n
        else:
            answer = f"error: unknown command {cmd!r}"
        out.write(f"{answer!r}\n")
        out.flush()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    serve()
