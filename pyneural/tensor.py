"""The Tensor and the define-by-run autograd engine.

A Tensor wraps an array (``.data``: numpy now, CuPy later) and, when it was produced by a
differentiable op while grad mode was on, the ``Function`` node that made it (``grad_fn``).
Function nodes link to their *parent nodes*, not to their input tensors: a parent is the input's
own ``grad_fn``, or the input tensor itself when it is a leaf that requires grad. So an
intermediate array lives only as long as someone (a user variable, or a Function that retained it
for its backward) holds it.

``Tensor.backward`` walks the graph once to count, for every node, how many gradient
contributions it will receive, then runs each Function's ``backward`` as soon as all of its
contributions are in (Kahn's algorithm on the reversed graph). A leaf's ``.grad`` is written, and
its post-accumulate hooks fire, the moment its last contribution arrives, which lets distributed
training start all-reducing a bucket while the rest of backward still runs.
"""
import threading
import weakref

import numpy as np

from pyneural import amp as _amp

_ndarray = np.ndarray


def is_floating_dtype(dtype):
    """float16/32/64, bfloat16 (ml_dtypes, whose numpy kind is 'V') and complex."""
    return dtype.kind in "fc" or _amp.is_bfloat16(dtype)


def get_array_module(x):
    """numpy for numpy arrays (and anything else), cupy (or the emulated device's namespace) for
    device arrays, so the ops can be written once against ``xp``; ``pyneural.backend`` decides."""
    if type(x) is _ndarray:
        return np
    return _backend().xp(x)


def _backend():
    from pyneural import backend
    return backend


# ---- grad mode -----------------------------------------------------------------------------

class _GradMode(threading.local):
    # Thread-local like PyTorch's: a data-loading or communication thread never flips the
    # training thread's mode.
    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled():
    """True when ops record the graph for backward."""
    return _grad_mode.enabled


def _with_grad_mode(fn, mode):
    def wrapper(*args, **kwargs):
        prev = _grad_mode.enabled
        _grad_mode.enabled = mode
        try:
            return fn(*args, **kwargs)
        finally:
            _grad_mode.enabled = prev
    wrapper.__name__ = getattr(fn, "__name__", "wrapper")
    wrapper.__doc__ = getattr(fn, "__doc__", None)
    wrapper.__wrapped__ = fn
    return wrapper


class _GradModeContext:
    _mode = True

    def __enter__(self):
        self.prev = _grad_mode.enabled
        _grad_mode.enabled = self._mode
        return self

    def __exit__(self, *exc):
        _grad_mode.enabled = self.prev
        return False

    def __call__(self, fn):
        return _with_grad_mode(fn, self._mode)


class no_grad(_GradModeContext):
    """Context manager / decorator: ops inside record no graph (inference, optimizer steps)."""
    _mode = False


class enable_grad(_GradModeContext):
    """Context manager / decorator: turn graph recording back on inside a ``no_grad`` block."""
    _mode = True


class set_grad_enabled(_GradModeContext):
    """Turn graph recording on or off: as a plain call (takes effect at once), as a context
    manager (restored on exit) or as a decorator."""

    def __init__(self, mode):
        self._mode = bool(mode)
        self.prev = _grad_mode.enabled
        _grad_mode.enabled = self._mode

    def __enter__(self):
        return self

    def __call__(self, fn):
        _grad_mode.enabled = self.prev  # used as a decorator: undo the switch made at construction
        return _with_grad_mode(fn, self._mode)


# ---- Function nodes ------------------------------------------------------------------------

class Function:
    """One differentiable op: ``forward`` on arrays and ``backward`` on arrays, side by side.

    Subclasses implement ``forward(*arrays) -> array`` (stashing on ``self`` whatever backward
    needs, and nothing more) and ``backward(gy) -> tuple`` with one gradient array (or None)
    per input. ``self.needs_input_grad`` (a tuple of bools, set before ``forward`` runs) says which
    input gradients are wanted; backward computes only those. Call ``SomeOp(config).apply(*tensors)``.
    """
    __slots__ = ("parents", "needs_input_grad", "_freed", "_retained", "__dict__", "__weakref__")

    def apply(self, *inputs):
        if len(inputs) > 1:
            t0 = type(inputs[0].data)
            for x in inputs:
                if type(x.data) is not t0:
                    _backend().check_same_device(type(self).__name__, [x.data for x in inputs])
                    break
        if _amp.active and inputs:  # an autocast region is open: the op may want other dtypes
            inputs = _amp.cast_inputs(self, inputs)
        if _grad_mode.enabled:
            needs = tuple([x.requires_grad for x in inputs])
            if True in needs:
                self.needs_input_grad = needs
                self.parents = tuple([(x._creator or x) if x.requires_grad else None for x in inputs])
                self._freed = False
                self._retained = None
                y = self.forward(*[x.data for x in inputs])
                if _versions:  # some memory was written in place: note what this node saw
                    self._saved_versions = _record_versions(self)
                if type(y) is not _ndarray and isinstance(y, np.generic):
                    y = np.asarray(y)
                out = _new_tensor(Tensor)
                out.data = y
                out.grad = None
                out.requires_grad = True
                out._creator = self
                out._hooks = None
                return out
        y = self.forward(*[x.data for x in inputs])
        if type(y) is not _ndarray and isinstance(y, np.generic):
            y = np.asarray(y)
        out = _new_tensor(Tensor)
        out.data = y
        out.grad = None
        out.requires_grad = False
        out._creator = None
        out._hooks = None
        return out

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, gy):
        raise NotImplementedError

    def _release(self):
        # Drop everything forward stashed for backward; the parent links stay so that a second
        # backward through this node can say what went wrong instead of silently stopping here.
        self.__dict__.clear()
        self._freed = True

    @property
    def name(self):
        return type(self).__name__ + "Backward"

    def __repr__(self):
        return f"<{self.name}>"


class _ToMemoryFormat(Function):
    """The same values in another memory layout (``pn.channels_last``); the gradient passes through."""

    def __init__(self, memory_format):
        self.memory_format = memory_format

    def forward(self, a):
        return _backend().to_memory_format(a, self.memory_format)

    def backward(self, gy):
        return (gy,)


class _ToDevice(Function):
    """A copy to another device; backward copies the gradient back."""

    def __init__(self, device):
        self.device = device

    def forward(self, a):
        self.source = _backend().device_of(a)
        return _backend().to_device(a, self.device)

    def backward(self, gy):
        return (_backend().to_device(gy, self.source),)


def wrap(array, requires_grad=False):
    """A leaf Tensor around ``array`` without copying or checking (the ops' fast path)."""
    out = _new_tensor(Tensor)
    out.data = array
    out.grad = None
    out.requires_grad = requires_grad
    out._creator = None
    out._hooks = None
    return out


# ---- hooks ---------------------------------------------------------------------------------

class RemovableHandle:
    """Returned by hook registration; ``remove()`` unregisters the hook (idempotent)."""
    _next_id = 0

    def __init__(self, hooks):
        self._hooks = hooks
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self):
        self._hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


# ---- version counters ----------------------------------------------------------------------
# PyTorch's rule: an in-place write to memory that a Function saved for its backward would make
# that backward silently wrong, so the backward must fail instead. Every in-place Tensor method
# bumps the version of the memory it writes, counted per owning array so that views share it
# (as views share one version counter in PyTorch); a Function records, when it is created, the
# versions of the arrays it stashed, and the engine compares them before running its backward.
# Only memory that was ever written in place has an entry, so a program without in-place writes
# pays one truthiness test per op. Writes through ``.data`` are not counted, as in PyTorch. (The
# emulated CUDA device's views report themselves as their base, so there a write through one view
# is counted for that view's memory only.)

_versions = {}  # id(owning array) -> [version, weak reference that removes the entry]


def _owner(a):
    """The array that owns ``a``'s memory: numpy and CuPy point a view's ``base`` at it (through a
    stride-trick wrapper at most); memory from another object (bytes, mmap) ends at the array."""
    base = getattr(a, "base", None)
    while base is not None and base is not a:
        if hasattr(base, "dtype"):
            a = base
        base = getattr(base, "base", None)
    return a


def memory_version(a):
    """How many in-place writes the memory of array ``a`` has had (``Tensor._version``)."""
    entry = _versions.get(id(_owner(a)))
    return 0 if entry is None else entry[0]


def bump_version(a):
    """Count one in-place write to the memory of array ``a``."""
    owner = _owner(a)
    key = id(owner)
    entry = _versions.get(key)
    if entry is not None:
        entry[0] += 1
        return
    try:
        ref = weakref.ref(owner, lambda _, key=key: _versions.pop(key, None))
    except TypeError:  # an array type without weak references: its writes cannot be tracked
        return
    _versions[key] = [1, ref]


def _stashed_arrays(fn):
    """(attribute, array) for every array a Function keeps for backward (also inside tuples)."""
    for name, value in fn.__dict__.items():
        items = value if type(value) in (tuple, list) else (value,)
        for v in items:
            if type(v) is _ndarray or (hasattr(v, "dtype") and _backend().is_device_array(v)):
                yield name, v


def _record_versions(fn):
    """The nonzero versions of the memory behind ``fn``'s stashed arrays, at its creation."""
    return {id(_owner(a)): memory_version(a) for _, a in _stashed_arrays(fn) if memory_version(a)}


def _check_versions(fn):
    recorded = fn.__dict__.get("_saved_versions") or {}
    for name, a in _stashed_arrays(fn):
        now, then = memory_version(a), recorded.get(id(_owner(a)), 0)
        if now != then:
            raise RuntimeError(
                f"one of the variables needed for gradient computation has been modified by an inplace "
                f"operation: the {a.dtype} array of shape {tuple(a.shape)} that {fn.name} saved for backward "
                f"(its {name!r}) is at version {now}; expected version {then} instead. Clone the tensor "
                f"before the in-place operation (x = x.clone()), or make the operation out of place.")


# ---- the backward engine -------------------------------------------------------------------

def _count_contributions(root):
    """Every node reachable from ``root`` mapped to the number of gradient contributions it
    will receive (one per graph edge into it)."""
    pending = {}
    stack = [root]
    while stack:
        fn = stack.pop()
        if fn._freed:
            raise RuntimeError(
                f"Trying to backward through the graph a second time: {fn.name} already freed the "
                f"arrays it saved. Pass retain_graph=True to the first backward() to keep them.")
        for p in fn.parents:
            if p is None:
                continue
            n = pending.get(p)
            if n is None:
                pending[p] = 1
                if not isinstance(p, Tensor):
                    stack.append(p)
            else:
                pending[p] = n + 1
    return pending


def _accumulate_leaf(leaf, g, owned):
    """Add the finished gradient ``g`` into ``leaf.grad``, then fire its hooks.

    ``owned`` says ``g`` is an array nobody else holds. Otherwise it may be the incoming
    gradient of a node passed straight through (add), a read-only broadcast view (sum) or a view
    of another array, and storing it would let a later in-place update of ``.grad`` (an
    optimizer, an all-reduce hook) write into memory that is not the gradient's own.
    """
    data = leaf.data
    if g.shape != data.shape:
        raise RuntimeError(f"autograd: gradient of shape {g.shape} computed for a leaf of shape {data.shape}")
    if g.dtype != data.dtype:
        g = g.astype(data.dtype)
        owned = True
    if leaf.grad is None:
        if not owned or g.base is not None or not getattr(g.flags, "writeable", True):
            g = g.copy(order="K")  # keeps a channels_last gradient channels_last
        leaf.grad = wrap(g)
    else:
        leaf.grad.data += g
    if leaf._hooks:
        for hook in list(leaf._hooks.values()):
            hook(leaf)


def run_backward(root_tensor, grad, retain_graph=False):
    """Backpropagate ``grad`` (an array shaped like ``root_tensor``) through the graph."""
    root = root_tensor._creator
    if root is None:
        _accumulate_leaf(root_tensor, grad, owned=False)
        return
    pending = _count_contributions(root)
    grads = {root: grad}
    borrowed = set()  # nodes whose gradient so far is some node's incoming gradient passed through
    ready = [root]
    with no_grad():
        while ready:
            fn = ready.pop()
            parents = fn.parents
            gy = grads.pop(fn, None)
            if gy is None:
                # Every consumer returned None for this node: nothing to propagate, but the
                # counts below must still drop so leaves fed from other branches complete.
                gxs = (None,) * len(parents)
            else:
                if fn._retained is not None:
                    t = fn._retained()
                    if t is not None:
                        t.grad = wrap(gy.copy())
                if _versions:
                    _check_versions(fn)
                gxs = fn.backward(gy)
            if not retain_graph:
                fn._release()
            for i in range(len(parents)):
                p = parents[i]
                if p is None:
                    continue
                gx = gxs[i]
                if gx is not None:
                    if type(gx) is not _ndarray and isinstance(gx, np.generic):
                        gx = np.asarray(gx)
                    prev = grads.get(p)
                    if prev is None:
                        grads[p] = gx
                        if gx is gy:
                            borrowed.add(p)
                    else:
                        grads[p] = prev + gx  # out of place: prev may be someone else's array
                        borrowed.discard(p)
                n = pending[p] - 1
                pending[p] = n
                if n == 0:
                    if isinstance(p, Tensor):
                        g = grads.pop(p, None)
                        if g is not None:
                            _accumulate_leaf(p, g, p not in borrowed)
                    else:
                        ready.append(p)


# ---- Tensor --------------------------------------------------------------------------------

def _default_array(data, dtype=None):
    """``data`` as a fresh array; float64 data becomes float32 unless ``dtype`` says otherwise
    (PyTorch's default dtype), Python ints become int64 and bools stay bool."""
    if isinstance(data, Tensor):
        data = data.data
    xp = get_array_module(data)
    if dtype is not None:
        return xp.array(data, dtype=dtype)
    arr = xp.array(data)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    elif arr.dtype.kind in "iu" and arr.dtype != np.int64 and not isinstance(data, xp.ndarray):
        arr = arr.astype(np.int64)  # Python ints; a numpy integer array keeps its dtype
    elif arr.dtype.kind not in "biuf" and not _amp.is_bfloat16(arr.dtype):
        raise TypeError(f"tensor: cannot build a tensor from data of dtype {arr.dtype}")
    return arr


class Tensor:
    """An n-dimensional array with autograd.

    ``Tensor(array)`` wraps a numpy array as it is (no copy, dtype kept); ``pyneural.tensor(data)``
    copies and applies the default dtype. ``.data`` is the underlying array (numpy here, unlike
    PyTorch where it is a Tensor); ``.grad`` is a Tensor or None.
    """
    __slots__ = ("data", "grad", "requires_grad", "_creator", "_hooks", "__weakref__")
    # numpy defers to our reflected operators: ``ndarray * tensor`` gives a Tensor.
    __array_ufunc__ = None
    __hash__ = object.__hash__

    def __init__(self, data, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.data
        elif type(data) is not _ndarray and get_array_module(data) is np:
            data = _default_array(data)
        self.data = data
        self.grad = None
        self._creator = None
        self._hooks = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # -- properties -----------------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def device(self):
        """``pn.device("cpu")`` or ``pn.device("cuda:0")`` (compares equal to "cpu" / "cuda")."""
        return _backend().device_of(self.data)

    @property
    def is_cuda(self):
        return self.device.type == "cuda"

    @property
    def is_leaf(self):
        return self._creator is None

    @property
    def grad_fn(self):
        return self._creator

    @property
    def T(self):
        return _shape.permute(self, tuple(range(self.data.ndim - 1, -1, -1)))

    @property
    def mT(self):
        return _shape.transpose(self, -2, -1)

    def size(self, dim=None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def dim(self):
        return self.data.ndim

    def numel(self):
        return int(self.data.size)

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def is_floating_point(self):
        return self.data.dtype.kind == "f" or _amp.is_bfloat16(self.data.dtype)

    # -- conversion -----------------------------------------------------------------------
    def numpy(self):
        """The underlying numpy array (shared memory, like PyTorch)."""
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on a Tensor that requires grad. "
                               "Use tensor.detach().numpy() instead.")
        if get_array_module(self.data) is not np:
            raise TypeError("can't convert a cuda tensor to numpy: use tensor.cpu() first")
        return self.data

    def __array__(self, dtype=None, copy=None):
        """``np.asarray(t)``: the CPU array itself (shared memory), as PyTorch gives it; a device
        tensor raises, like PyTorch, instead of copying behind the caller's back."""
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")
        if get_array_module(self.data) is not np:
            raise TypeError(f"can't convert {self.device} device type tensor to numpy. Use Tensor.cpu() to copy "
                            f"the tensor to host memory first.")
        if dtype is not None and np.dtype(dtype) != self.data.dtype:
            if copy is False:
                raise ValueError(f"np.asarray(tensor, dtype={np.dtype(dtype)}, copy=False): the tensor is "
                                 f"{self.data.dtype}, so the conversion must copy")
            return self.data.astype(dtype)
        return self.data.copy() if copy else self.data

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """Export without a copy through DLPack (``torch.from_dlpack(t)``, ``np.from_dlpack(t)``,
        ``cupy.from_dlpack(t)``): the consumer shares this tensor's memory. Arguments as in the
        array API standard, handed to the array underneath (numpy or CuPy)."""
        if self.requires_grad:
            raise BufferError("Can't export tensors that require gradient, use tensor.detach()")
        export = getattr(type(self.data), "__dlpack__", None)
        if export is None:
            raise BufferError(f"a {self.device} tensor of {type(self.data).__module__} arrays cannot be exported "
                              f"through DLPack (the emulated CUDA device keeps its memory on the host); use .cpu()")
        kwargs = {k: v for k, v in dict(max_version=max_version, dl_device=dl_device, copy=copy).items()
                  if v is not None}
        if stream is not None:
            kwargs["stream"] = stream
        return self.data.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        """(DLPack device type, index): (1, 0) for the CPU, (2, i) for CUDA device i."""
        export = getattr(type(self.data), "__dlpack_device__", None)
        if export is None:
            return (2, self.device.index)  # kDLCUDA: what the emulated device stands for
        return self.data.__dlpack_device__()

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item(): only a one-element tensor converts to a Python scalar, "
                             f"got shape {self.data.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.data.tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.data.dtype.kind not in "iu":
            raise TypeError(f"only integer tensors can be used as an index, got {self.data.dtype}")
        return int(self.item())

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError(f"Boolean value of a tensor with {self.data.size} elements is ambiguous")
        return bool(self.item())

    def __iter__(self):
        if self.data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.data.shape[0]))

    def __format__(self, spec):
        """A one-element tensor formats as its number (``f"{loss:.4f}"``), as in PyTorch."""
        if self.data.ndim == 0:
            return format(self.item(), spec)
        return object.__format__(self, spec)

    def __repr__(self):
        host = self.data if get_array_module(self.data) is np else self.data.get()
        body = np.array2string(np.asarray(host), separator=", ", prefix="tensor(")
        extras = []
        if get_array_module(self.data) is not np:
            extras.append(f"device='{self.device}'")
        if self.data.dtype != np.float32 and self.data.dtype != np.int64 and self.data.dtype != np.bool_:
            extras.append(f"dtype={self.data.dtype}")
        if self._creator is not None:
            extras.append(f"grad_fn={self._creator!r}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    def detach(self):
        """A new leaf sharing this tensor's data, cut from the graph."""
        return wrap(self.data)

    def detach_(self):
        self._creator = None
        self.requires_grad = False
        return self

    def clone(self):
        return _elementwise.clone(self)

    def contiguous(self, memory_format=None):
        """This tensor in C order (``memory_format=pn.channels_last``: in NHWC order); itself when it is."""
        be = _backend()
        if memory_format is None or memory_format is be.contiguous_format:
            return _shape.contiguous(self)
        return _ToMemoryFormat(memory_format).apply(self)

    def is_contiguous(self, memory_format=None):
        be = _backend()
        if memory_format is be.channels_last:
            return self.data.ndim == 4 and self.data.transpose(0, 2, 3, 1).flags.c_contiguous
        return bool(self.data.flags.c_contiguous)

    def to(self, *args, dtype=None, device=None, non_blocking=False, copy=False, memory_format=None):
        """``.to(device)``, ``.to(dtype)``, ``.to(device, dtype)`` or ``.to(other_tensor)``, as in
        PyTorch: a copy on the other device (differentiable: the gradient flows back), or this tensor
        itself when nothing changes."""
        be = _backend()
        for a in args:
            if isinstance(a, Tensor):
                device, dtype = a.device, a.dtype
            elif isinstance(a, (str, be.device)):
                device = a
            else:
                dtype = a
        out = self
        if device is not None:
            dev = be.device(device)
            if dev != self.device:
                be.for_device(dev)  # raises when the device cannot be used here
                out = _ToDevice(dev).apply(self)
        if dtype is not None and np.dtype(dtype) != out.data.dtype:
            out = _elementwise.cast(out, np.dtype(dtype))
        if memory_format is not None and memory_format is not be.preserve_format:
            out = out.contiguous(memory_format=memory_format)
        if copy and out is self:
            out = self.clone()
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None, non_blocking=False):
        return self.to("cuda" if device is None else (f"cuda:{device}" if isinstance(device, int) else device))

    def type(self, dtype):
        return self.to(dtype=dtype)

    def type_as(self, other):
        return self.to(dtype=other.dtype)

    # -- new tensors like this one (its dtype and device unless told otherwise) ---------------------

    def _new(self, make, dtype, device, requires_grad, *args):
        from pyneural import creation
        return getattr(creation, make)(*args, dtype=self.dtype if dtype is None else dtype,
                                       device=self.device if device is None else device, requires_grad=requires_grad)

    def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
        return self._new("tensor", dtype, device, requires_grad, data)

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new("zeros", dtype, device, requires_grad, *size)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new("ones", dtype, device, requires_grad, *size)

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new("empty", dtype, device, requires_grad, *size)

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
        return self._new("full", dtype, device, requires_grad, size, fill_value)

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    def half(self):
        return self.to(dtype=np.float16)

    def bfloat16(self):
        return self.to(dtype=_amp.bfloat16)

    def long(self):
        return self.to(dtype=np.int64)

    def int(self):
        return self.to(dtype=np.int32)

    def bool(self):
        return self.to(dtype=np.bool_)

    # -- autograd ---------------------------------------------------------------------------
    def requires_grad_(self, requires_grad=True):
        if self._creator is not None and not requires_grad:
            raise RuntimeError("requires_grad_(False) on a non-leaf tensor: use detach() instead")
        if requires_grad and not is_floating_dtype(self.data.dtype):
            raise RuntimeError(f"only floating point tensors can require gradients, got {self.data.dtype}")
        self.requires_grad = bool(requires_grad) or self._creator is not None
        return self

    def backward(self, gradient=None, retain_graph=False, create_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``. ``gradient`` is required
        unless this tensor holds a single element."""
        if create_graph:
            raise NotImplementedError("backward(create_graph=True): higher-order gradients are not supported")
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad and has no grad_fn")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward(): grad can be implicitly created only for a single-element "
                                   f"tensor, this one has shape {self.data.shape}; pass gradient=")
            g = get_array_module(self.data).ones_like(self.data)
        else:
            g = gradient.data if isinstance(gradient, Tensor) else get_array_module(self.data).asarray(gradient)
            if g.shape != self.data.shape:
                raise ValueError(f"backward(): gradient has shape {g.shape}, the tensor has shape {self.data.shape}")
            if g.dtype != self.data.dtype:
                g = g.astype(self.data.dtype)
        run_backward(self, g, retain_graph)

    def retain_grad(self):
        """Keep ``.grad`` for this non-leaf tensor during backward."""
        if self._creator is None:
            return
        import weakref
        self._creator._retained = weakref.ref(self)

    def register_post_accumulate_grad_hook(self, hook):
        """Run ``hook(tensor)`` right after this leaf's ``.grad`` has received its last
        contribution of a backward pass. Returns a handle with ``.remove()``."""
        if self._creator is not None:
            raise RuntimeError("register_post_accumulate_grad_hook: only leaf tensors have "
                               "accumulated gradients")
        if not self.requires_grad:
            raise RuntimeError("register_post_accumulate_grad_hook: the tensor does not require grad")
        if self._hooks is None:
            self._hooks = {}
        handle = RemovableHandle(self._hooks)
        self._hooks[handle.id] = hook
        return handle

    # -- in-place operations (functions/inplace.py: PyTorch's rules, version counting) -----------
    @property
    def _version(self):
        """How many in-place writes this tensor's memory has had (shared with its views)."""
        return memory_version(self.data)

    def zero_(self):
        return _inplace.zero_(self)

    def fill_(self, value):
        return _inplace.fill_(self, value)

    def copy_(self, src, non_blocking=False):
        return _inplace.copy_(self, src)

    def add_(self, other, alpha=1):
        return _inplace.add_(self, other, alpha)

    def sub_(self, other, alpha=1):
        return _inplace.sub_(self, other, alpha)

    def mul_(self, other):
        return _inplace.mul_(self, other)

    def div_(self, other):
        return _inplace.div_(self, other)

    def clamp_(self, min=None, max=None):
        return _inplace.clamp_(self, min, max)

    clip_ = clamp_

    def masked_fill_(self, mask, value):
        return _inplace.masked_fill_(self, mask, value)

    def scatter_(self, dim, index, src=None, value=None, reduce=None):
        return _inplace.scatter_(self, dim, index, src, value, reduce)

    def scatter_add_(self, dim, index, src):
        return _inplace.scatter_add_(self, dim, index, src)

    def uniform_(self, a=0.0, b=1.0):
        from pyneural import random as _random
        return _inplace.overwrite_("uniform_", self, _random.uniform(a, b, self.data.shape, self.data.dtype))

    def normal_(self, mean=0.0, std=1.0):
        from pyneural import random as _random
        return _inplace.overwrite_("normal_", self, _random.normal(mean, std, self.data.shape, self.data.dtype))

    def __iadd__(self, other):
        return _inplace.add_(self, other)

    def __isub__(self, other):
        return _inplace.sub_(self, other)

    def __imul__(self, other):
        return _inplace.mul_(self, other)

    def __itruediv__(self, other):
        return _inplace.div_(self, other)

    def __setitem__(self, key, value):
        creator = value._creator if isinstance(value, Tensor) else None
        if creator is not None and _inplace.view_base(creator) is self and creator.__dict__.get("user_key") is key:
            return  # x[k] = x[k], the second half of x[k] += v: the view already wrote through
        _inplace.setitem(self, _shape.setitem_key(key, self.data), value)

    # -- arithmetic ---------------------------------------------------------------------------
    def __add__(self, other):
        return _arith.add(self, other)

    def __radd__(self, other):
        return _arith.add(self, other)

    def __sub__(self, other):
        return _arith.sub(self, other)

    def __rsub__(self, other):
        return _arith.rsub(self, other)

    def __mul__(self, other):
        return _arith.mul(self, other)

    def __rmul__(self, other):
        return _arith.mul(self, other)

    def __truediv__(self, other):
        return _arith.div(self, other)

    def __rtruediv__(self, other):
        return _arith.rdiv(self, other)

    def __floordiv__(self, other):
        return _arith.floor_divide(self, other)

    def __rfloordiv__(self, other):
        return _arith.floor_divide(other, self)

    def __mod__(self, other):
        return _arith.remainder(self, other)

    def __rmod__(self, other):
        return _arith.remainder(other, self)

    def __neg__(self):
        return _arith.neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _elementwise.abs(self)

    def __pow__(self, exponent):
        return _arith.pow(self, exponent)

    def __rpow__(self, base):
        return _arith.rpow(self, base)

    def __matmul__(self, other):
        return _matmul.matmul(self, other)

    def __rmatmul__(self, other):
        return _matmul.matmul(other, self)

    def __getitem__(self, key):
        return _shape.getitem(self, key)

    # comparisons, logical and bitwise operators give tensors outside the graph
    def __eq__(self, other):
        return _arith.compare(self, other, "equal")

    def __ne__(self, other):
        return _arith.compare(self, other, "not_equal")

    def __lt__(self, other):
        return _arith.compare(self, other, "less")

    def __le__(self, other):
        return _arith.compare(self, other, "less_equal")

    def __gt__(self, other):
        return _arith.compare(self, other, "greater")

    def __ge__(self, other):
        return _arith.compare(self, other, "greater_equal")

    def __and__(self, other):
        return _arith.bitwise("bitwise_and", self, other, "bitwise_and")

    __rand__ = __and__

    def __or__(self, other):
        return _arith.bitwise("bitwise_or", self, other, "bitwise_or")

    __ror__ = __or__

    def __xor__(self, other):
        return _arith.bitwise("bitwise_xor", self, other, "bitwise_xor")

    __rxor__ = __xor__

    def __invert__(self):
        return _arith.bitwise_not(self)

    def add(self, other, alpha=1):
        return _arith.add(self, other, alpha)

    def sub(self, other, alpha=1):
        return _arith.sub(self, other, alpha)

    def mul(self, other):
        return _arith.mul(self, other)

    def div(self, other):
        return _arith.div(self, other)

    def neg(self):
        return _arith.neg(self)

    def pow(self, exponent):
        return _arith.pow(self, exponent)

    def maximum(self, other):
        return _arith.maximum(self, other)

    def minimum(self, other):
        return _arith.minimum(self, other)

    def matmul(self, other):
        return _matmul.matmul(self, other)

    def mm(self, mat2):
        return _matmul.mm(self, mat2)

    def bmm(self, mat2):
        return _matmul.bmm(self, mat2)

    def mv(self, vec):
        return _matmul.mv(self, vec)

    def dot(self, other):
        return _matmul.dot(self, other)

    def outer(self, vec2):
        return _matmul.outer(self, vec2)

    def eq(self, other):
        return _arith.eq(self, other)

    def ne(self, other):
        return _arith.ne(self, other)

    def lt(self, other):
        return _arith.lt(self, other)

    def le(self, other):
        return _arith.le(self, other)

    def gt(self, other):
        return _arith.gt(self, other)

    def ge(self, other):
        return _arith.ge(self, other)

    def logical_and(self, other):
        return _arith.logical_and(self, other)

    def logical_or(self, other):
        return _arith.logical_or(self, other)

    def logical_xor(self, other):
        return _arith.logical_xor(self, other)

    def logical_not(self):
        return _arith.logical_not(self)

    # -- elementwise math -------------------------------------------------------------------
    def exp(self):
        return _elementwise.exp(self)

    def sin(self):
        return _elementwise.sin(self)

    def cos(self):
        return _elementwise.cos(self)

    def floor_divide(self, other):
        return _arith.floor_divide(self, other)

    def remainder(self, other):
        return _arith.remainder(self, other)

    def log(self):
        return _elementwise.log(self)

    def sqrt(self):
        return _elementwise.sqrt(self)

    def abs(self):
        return _elementwise.abs(self)

    def clamp(self, min=None, max=None):
        return _elementwise.clamp(self, min, max)

    clip = clamp

    def where(self, condition, other):
        """``self`` where ``condition`` holds, else ``other``."""
        return _elementwise.where(condition, self, other)

    def masked_fill(self, mask, value):
        return _indexing.masked_fill(self, mask, value)

    def nonzero(self, as_tuple=False):
        return _elementwise.nonzero(self, as_tuple)

    def relu(self):
        return _activation.relu(self)

    def gelu(self, approximate="none"):
        return _activation.gelu(self, approximate)

    def tanh(self):
        return _activation.tanh(self)

    def sigmoid(self):
        return _activation.sigmoid(self)

    def softmax(self, dim=None, dtype=None):
        return _activation.softmax(self, dim, dtype)

    def log_softmax(self, dim=None, dtype=None):
        return _activation.log_softmax(self, dim, dtype)

    # -- reductions -----------------------------------------------------------------------
    def sum(self, dim=None, keepdim=False, dtype=None):
        return _reduction.sum(self, dim, keepdim, dtype)

    def prod(self, dim=None, keepdim=False, dtype=None):
        return _reduction.prod(self, dim, keepdim, dtype)

    def norm(self, p="fro", dim=None, keepdim=False, dtype=None):
        return _reduction.norm(self, p, dim, keepdim, dtype)

    def mean(self, dim=None, keepdim=False, dtype=None):
        return _reduction.mean(self, dim, keepdim, dtype)

    def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return _reduction.var(self, dim, unbiased, keepdim, correction=correction)

    def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return _reduction.std(self, dim, unbiased, keepdim, correction=correction)

    def logsumexp(self, dim, keepdim=False):
        return _reduction.logsumexp(self, dim, keepdim)

    def cumsum(self, dim, dtype=None):
        return _reduction.cumsum(self, dim, dtype)

    def max(self, dim=None, keepdim=False):
        return _reduction.max(self, dim, keepdim)

    def min(self, dim=None, keepdim=False):
        return _reduction.min(self, dim, keepdim)

    def argmax(self, dim=None, keepdim=False):
        return _reduction.argmax(self, dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        return _reduction.argmin(self, dim, keepdim)

    def any(self, dim=None, keepdim=False):
        return _reduction.any(self, dim, keepdim)

    def all(self, dim=None, keepdim=False):
        return _reduction.all(self, dim, keepdim)

    # -- sorting and indexing -------------------------------------------------------------------
    def sort(self, dim=-1, descending=False, stable=False):
        return _sorting.sort(self, dim, descending, stable)

    def argsort(self, dim=-1, descending=False, stable=False):
        return _sorting.argsort(self, dim, descending, stable)

    def topk(self, k, dim=-1, largest=True, sorted=True):
        return _sorting.topk(self, k, dim, largest, sorted)

    def gather(self, dim, index):
        return _indexing.gather(self, dim, index)

    def scatter(self, dim, index, src=None, value=None, reduce=None):
        return _indexing.scatter(self, dim, index, src, value, reduce)

    def scatter_add(self, dim, index, src):
        return _indexing.scatter_add(self, dim, index, src)

    def index_select(self, dim, index):
        return _indexing.index_select(self, dim, index)

    # -- shape --------------------------------------------------------------------------------
    def reshape(self, *shape):
        return _shape.reshape(self, shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape)

    def view(self, *shape):
        return self.reshape(*shape)

    def view_as(self, other):
        return _shape.reshape(self, other.shape)

    def transpose(self, dim0, dim1):
        return _shape.transpose(self, dim0, dim1)

    def t(self):
        if self.data.ndim > 2:
            raise ValueError(f"t() expects a tensor with <= 2 dimensions, got shape {self.data.shape}")
        return self.T

    def permute(self, *dims):
        return _shape.permute(self, dims[0] if len(dims) == 1 and not isinstance(dims[0], int) else dims)

    def flatten(self, start_dim=0, end_dim=-1):
        return _shape.flatten(self, start_dim, end_dim)

    def squeeze(self, dim=None):
        return _shape.squeeze(self, dim)

    def unsqueeze(self, dim):
        return _shape.unsqueeze(self, dim)

    def expand(self, *sizes):
        return _shape.expand(self, sizes[0] if len(sizes) == 1 and not isinstance(sizes[0], int) else sizes)

    def expand_as(self, other):
        return _shape.expand(self, other.shape)

    def repeat(self, *sizes):
        return _shape.repeat(self, sizes[0] if len(sizes) == 1 and not isinstance(sizes[0], int) else sizes)

    def flip(self, *dims):
        return _shape.flip(self, dims[0] if len(dims) == 1 and not isinstance(dims[0], int) else dims)

    def roll(self, shifts, dims=None):
        return _shape.roll(self, shifts, dims)

    def split(self, split_size, dim=0):
        return _shape.split(self, split_size, dim)

    def chunk(self, chunks, dim=0):
        return _shape.chunk(self, chunks, dim)

    def narrow(self, dim, start, length):
        return _shape.narrow(self, dim, start, length)

    def unfold(self, dimension, size, step):
        return _shape.unfold(self, dimension, size, step)

    def triu(self, diagonal=0):
        return _elementwise.triu(self, diagonal)

    def tril(self, diagonal=0):
        return _elementwise.tril(self, diagonal)


_new_tensor = object.__new__

# The op families import this module for Tensor and Function, so they are bound at the bottom;
# the methods above look them up at call time.
from pyneural.functions import activation as _activation  # noqa: E402
from pyneural.functions import arithmetic as _arith  # noqa: E402
from pyneural.functions import elementwise as _elementwise  # noqa: E402
from pyneural.functions import indexing as _indexing  # noqa: E402
from pyneural.functions import inplace as _inplace  # noqa: E402
from pyneural.functions import matmul as _matmul  # noqa: E402
from pyneural.functions import reduction as _reduction  # noqa: E402
from pyneural.functions import shape as _shape  # noqa: E402
from pyneural.functions import sorting as _sorting  # noqa: E402
