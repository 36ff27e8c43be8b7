"""pyneural's global random generator: every random draw in the library (randn, init, dropout,
data shuffling) comes from here, so one ``manual_seed`` makes a run repeatable and the state can
be checkpointed.

The generator is numpy's PCG64. Its state is a plain dict of Python ints and strings, so
``get_rng_state()`` can go straight into JSON and back through ``set_rng_state()``.
"""
import numpy as np

# PyTorch's default CPU seed, so an unseeded run is still repeatable.
DEFAULT_SEED = 67280421310721

_generator = np.random.Generator(np.random.PCG64(DEFAULT_SEED))
_initial_seed = DEFAULT_SEED


def manual_seed(seed):
    """Reseed the global generator; returns the generator."""
    global _initial_seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"manual_seed: seed must be >= 0, got {seed}")
    _initial_seed = int(seed)
    _generator.bit_generator.state = np.random.PCG64(_initial_seed).state
    return _generator


def seed():
    """Reseed from OS entropy; returns the new seed."""
    new_seed = int(np.random.SeedSequence().entropy % (2**63))
    manual_seed(new_seed)
    return new_seed


def initial_seed():
    return _initial_seed


def get_generator():
    """The global ``numpy.random.Generator`` (for code that draws arrays directly)."""
    return _generator


def get_rng_state():
    """The generator state as a JSON-serialisable dict."""
    state = _generator.bit_generator.state
    return {
        "bit_generator": state["bit_generator"],
        "state": {"state": int(state["state"]["state"]), "inc": int(state["state"]["inc"])},
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }


def set_rng_state(state):
    """Restore a state returned by ``get_rng_state`` (possibly after a JSON round trip)."""
    if not isinstance(state, dict):
        raise TypeError(f"set_rng_state: expected the dict from get_rng_state(), got {type(state).__name__}")
    missing = {"bit_generator", "state", "has_uint32", "uinteger"} - set(state)
    if missing:
        raise ValueError(f"set_rng_state: state is missing keys {sorted(missing)}")
    if state["bit_generator"] != "PCG64":
        raise ValueError(f"set_rng_state: expected a PCG64 state, got {state['bit_generator']!r}")
    inner = state["state"]
    if not isinstance(inner, dict) or set(inner) != {"state", "inc"}:
        raise ValueError(f"set_rng_state: state['state'] must hold 'state' and 'inc', got {inner!r}")
    _generator.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": int(inner["state"]), "inc": int(inner["inc"])},
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }


class Generator:
    """A generator of its own, apart from the global one (PyTorch's ``torch.Generator``): for draws
    that must not move the global stream, such as ``random_split(..., generator=
    pn.Generator().manual_seed(42))`` or a DataLoader's ``generator=``. Same PCG64, same default
    seed as the global generator."""

    def __init__(self, device="cpu"):
        from .backend import device as as_device
        self.device = as_device(device)
        if self.device.type != "cpu":
            raise RuntimeError(f"Generator: only CPU generators exist, got device {device!r}")
        self._initial_seed = DEFAULT_SEED
        self._rng = np.random.Generator(np.random.PCG64(DEFAULT_SEED))

    def manual_seed(self, seed):
        """Reseed; returns this generator (so ``pn.Generator().manual_seed(42)`` reads as in PyTorch)."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"Generator.manual_seed: seed must be an int, got {type(seed).__name__}")
        if seed < 0:
            raise ValueError(f"Generator.manual_seed: seed must be >= 0, got {seed}")
        self._initial_seed = int(seed)
        self._rng.bit_generator.state = np.random.PCG64(self._initial_seed).state
        return self

    def seed(self):
        """Reseed from OS entropy; returns the new seed."""
        new_seed = int(np.random.SeedSequence().entropy % (2**63))
        self.manual_seed(new_seed)
        return new_seed

    def initial_seed(self):
        return self._initial_seed

    def get_state(self):
        return dict(self._rng.bit_generator.state)

    def set_state(self, state):
        self._rng.bit_generator.state = state
        return self


def numpy_generator(generator, what):
    """The numpy Generator to draw from: the global one for None, a ``Generator``'s own, or a
    numpy Generator itself."""
    if generator is None:
        return _generator
    if isinstance(generator, Generator):
        return generator._rng
    if isinstance(generator, np.random.Generator):
        return generator
    raise TypeError(f"{what}: generator must be a pn.Generator or a numpy.random.Generator, "
                    f"got {type(generator).__name__}")


# ---- draws used by the library (float32 drawn natively, no float64 round trip) --------------

def _float_dtype(dtype):
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    if dtype.kind != "f":
        raise TypeError(f"random: expected a floating dtype, got {dtype}")
    return dtype


def standard_normal(shape, dtype=None):
    dtype = _float_dtype(dtype)
    if dtype in (np.float32, np.float64):
        return _generator.standard_normal(shape, dtype=dtype)
    return _generator.standard_normal(shape).astype(dtype)


def random(shape, dtype=None):
    """Uniform on [0, 1)."""
    dtype = _float_dtype(dtype)
    if dtype in (np.float32, np.float64):
        return _generator.random(shape, dtype=dtype)
    return _generator.random(shape).astype(dtype)


def uniform(low, high, shape, dtype=None):
    out = random(shape, dtype)
    out *= high - low
    out += low
    return out


def normal(mean, std, shape, dtype=None):
    out = standard_normal(shape, dtype)
    out *= std
    out += mean
    return out


def integers(low, high, shape):
    return _generator.integers(low, high, size=shape, dtype=np.int64)


def permutation(n):
    return _generator.permutation(n).astype(np.int64)
