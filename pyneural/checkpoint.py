"""Checkpoints: ``pn.save`` / ``pn.load`` for a tree of arrays and plain values, ``Checkpointer``
for the last K checkpoints of a run, and the capture/restore of a training run's whole state.

File format: an ordinary uncompressed ``.npz`` (a zip; ``np.load`` and any zip tool open it):
  ``arrays/<i>.npy``  every array of the tree, in .npy format (no pickles, ever)
  ``metadata.json``   the tree, with each array replaced by a reference, and for each array its
                      path in the tree, shape, dtype and the SHA-256 of its .npy bytes
  zip comment         ``pyneural-checkpoint 1 sha256=<SHA-256 of metadata.json>``
The comment's hash covers the metadata, which covers every array's hash, so one chain checks every
byte that matters; zip's own CRC-32s catch most damage first. A truncated file loses the zip's
central directory (it sits at the end), so truncation is always detected.

Why floats survive bit for bit: JSON numbers are written with Python's shortest round-trip repr,
and non-finite floats are tagged. Ints are unbounded (RNG states are 128-bit). Tuples, dicts with
non-string keys (optimizer state is keyed by parameter index) and numpy scalars are tagged too, so
``load(save(x)) == x`` in type as well as value.

Atomic writes: the file is written under a temporary name in the same directory, flushed,
fsync'ed, renamed over the final name (atomic on POSIX), and the directory is fsync'ed so the
rename itself survives a power cut. A failure at any point (disk full, a kill) leaves at most a
temporary file behind and never touches an existing checkpoint.
"""
import errno
import hashlib
import io
import json
import math
import os
import re
import struct
import sys
import warnings
import zipfile
import zlib

import numpy as np

FORMAT = "pyneural-checkpoint"
VERSION = 1
_COMMENT = re.compile(rb"^pyneural-checkpoint (\d+) sha256=([0-9a-f]{64})$")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be trusted: truncated, corrupted, or not a checkpoint.
    ``problem`` says what is wrong without naming the file (for lists of skipped files)."""

    def __init__(self, message, problem=None):
        super().__init__(message)
        self.problem = message if problem is None else problem


class CheckpointWarning(UserWarning):
    """A file named like a checkpoint was skipped because it is not a valid one."""


class Found:
    """What ``Checkpointer.newest_valid`` found, and the newer files it skipped."""
    __slots__ = ("step", "path", "state", "skipped")

    def __init__(self, step, path, state, skipped):
        self.step, self.path, self.state, self.skipped = step, path, state, skipped


def _bad_file(path, problem):
    return CheckpointError(f"pn.load: {path} {problem}", problem)


# ---- encoding the tree --------------------------------------------------------------------

def _host_array(value):
    """A numpy array for an array-like leaf (numpy, CuPy, a Tensor's data); None otherwise."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__cuda_array_interface__") and hasattr(value, "get"):
        return value.get()
    return None


class _Encoder:
    def __init__(self):
        self.arrays = []
        self.paths = []

    def _add(self, array, path):
        if array.dtype.hasobject:
            raise TypeError(f"pn.save: the array at {path!r} has dtype object; only numeric, bool and "
                            f"fixed-width string arrays can be saved")
        self.arrays.append(array)
        self.paths.append(path)
        return len(self.arrays) - 1

    def encode(self, value, path):
        from .tensor import Tensor
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"$float": repr(value)}
        if isinstance(value, np.generic):
            return {"$scalar": self._add(np.asarray(value), path)}
        if isinstance(value, Tensor):
            data = _host_array(value.data)
            return {"$tensor": self._add(data, path), "requires_grad": bool(value.requires_grad)}
        array = _host_array(value)
        if array is not None:
            return {"$array": self._add(array, path)}
        if isinstance(value, tuple):
            return {"$tuple": [self.encode(v, f"{path}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self.encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: self.encode(v, f"{path}.{k}" if path else k) for k, v in value.items()}
            return {"$items": [[self.encode(k, f"{path}<key>"), self.encode(v, f"{path}[{k!r}]")]
                               for k, v in value.items()]}
        raise TypeError(f"pn.save: cannot save a {type(value).__name__} at {path or '<root>'!r}; a checkpoint "
                        f"holds arrays, Tensors, numbers, strings, None, and lists/tuples/dicts of them")


def _decode(node, arrays):
    from .tensor import Tensor
    if isinstance(node, list):
        return [_decode(v, arrays) for v in node]
    if not isinstance(node, dict):
        return node
    if "$array" in node:
        return arrays[node["$array"]]
    if "$tensor" in node:
        return Tensor(arrays[node["$tensor"]], requires_grad=node["requires_grad"])
    if "$scalar" in node:
        return arrays[node["$scalar"]][()]
    if "$float" in node:
        return float(node["$float"])
    if "$tuple" in node:
        return tuple(_decode(v, arrays) for v in node["$tuple"])
    if "$items" in node:
        return {_decode(k, arrays): _decode(v, arrays) for k, v in node["$items"]}
    return {k: _decode(v, arrays) for k, v in node.items()}


# ---- writing --------------------------------------------------------------------------------

class _HashingWriter:
    """Forwards writes to a zip member while hashing them, so nothing is serialised twice."""

    def __init__(self, out):
        self.out, self.sha = out, hashlib.sha256()

    def write(self, data):
        self.sha.update(data)
        return self.out.write(data)


def _write_checkpoint(fileobj, tree):
    encoder = _Encoder()
    encoded = encoder.encode(tree, "")
    entries = []
    with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for i, (array, path) in enumerate(zip(encoder.arrays, encoder.paths)):
            name = f"arrays/{i}.npy"
            with zf.open(name, "w", force_zip64=True) as member:
                writer = _HashingWriter(member)
                np.lib.format.write_array(writer, array, allow_pickle=False)
            entries.append({"file": name, "path": path, "shape": list(array.shape), "dtype": array.dtype.str,
                            "sha256": writer.sha.hexdigest()})
        metadata = json.dumps({"format": FORMAT, "version": VERSION, "arrays": entries, "tree": encoded},
                              allow_nan=False, separators=(",", ":")).encode()
        zf.writestr("metadata.json", metadata)
        zf.comment = f"{FORMAT} {VERSION} sha256={hashlib.sha256(metadata).hexdigest()}".encode()


def _open_temp(path):
    """The temporary file a save writes (a seam for tests that simulate a full disk)."""
    return open(path, "wb")


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # a platform without directory handles: the rename is as durable as it gets
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def temp_name(path):
    directory, base = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{base}.tmp-{os.getpid()}")


def write_atomically(path, write, fn):
    """Create ``path`` through ``write(tmp)``, which writes a temporary file next to it and makes it
    durable (fsync): then rename it over ``path`` and sync the directory. Either the complete new
    file is there afterwards, or the old one (if any) is untouched. ``fn`` names the caller in errors."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{fn}: directory {directory!r} does not exist")
    tmp = temp_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)
    return path


def save(obj, path):
    """Write ``obj`` (arrays, Tensors, numbers, strings, None, and lists/tuples/dicts of them) to
    ``path`` atomically: either the complete new file is there afterwards, or the old one (if any)
    is untouched. Returns ``path``."""
    def write(tmp):
        with _open_temp(tmp) as f:
            _write_checkpoint(f, obj)
            f.flush()
            os.fsync(f.fileno())
    return write_atomically(path, write, "pn.save")


# ---- reading --------------------------------------------------------------------------------

# What zipfile raises on damaged bytes, besides BadZipFile: a mangled header can make it see an
# unknown version or method, an impossible offset, a name that is not UTF-8, a short read...
_ZIP_DAMAGE = (zipfile.BadZipFile, NotImplementedError, ValueError, KeyError, EOFError, OSError, IndexError,
               OverflowError, UnicodeDecodeError, struct.error, zlib.error)


def _verified_metadata(zf, path):
    """The metadata of the open checkpoint zip ``zf``, checked against its checksum record."""
    match = _COMMENT.match(zf.comment)
    if match is None:
        if "metadata.json" in zf.namelist():
            raise _bad_file(path, "is truncated or corrupted: its checksum record (the zip comment) is missing or "
                                  "damaged")
        raise _bad_file(path, f"is a zip/npz file but not a pyneural checkpoint (no '{FORMAT}' checksum record); "
                              f"a plain .npz opens with numpy.load")
    if int(match.group(1)) > VERSION:
        raise _bad_file(path, f"has format version {int(match.group(1))}; this pyneural reads up to version "
                              f"{VERSION}")
    try:
        metadata = zf.read("metadata.json")
    except _ZIP_DAMAGE as e:
        raise _bad_file(path, f"is corrupted: cannot read metadata.json ({e})") from None
    if hashlib.sha256(metadata).hexdigest() != match.group(2).decode():
        raise _bad_file(path, "is corrupted: metadata.json does not match its SHA-256 checksum")
    return json.loads(metadata)


def _open_zip(source, path, nbytes):
    try:
        return zipfile.ZipFile(source, "r")
    except _ZIP_DAMAGE as e:
        raise _bad_file(path, f"is truncated or not a pyneural checkpoint ({nbytes} bytes, no readable zip "
                              f"directory: {e})") from None


def _read_checkpoint(path):
    # Parse from memory: an OSError from here on is damage in the bytes, never the disk.
    with open(path, "rb") as f:
        data = f.read()
    with _open_zip(io.BytesIO(data), path, len(data)) as zf:
        meta = _verified_metadata(zf, path)
        arrays = []
        for entry in meta["arrays"]:
            where = f"{entry['file']} (the array at {entry['path'] or '<root>'!r})"
            try:
                raw = zf.read(entry["file"])
            except _ZIP_DAMAGE as e:
                raise _bad_file(path, f"is corrupted: cannot read {where}: {e}") from None
            if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
                raise _bad_file(path, f"is corrupted: {where} does not match its SHA-256 checksum")
            arrays.append(np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False))
    return _decode(meta["tree"], arrays)


def check_header(path):
    """Raise ``CheckpointError`` unless ``path`` is a pyneural checkpoint whose checksum record
    and metadata are intact. The arrays are not read, so this costs the same for any file size;
    ``load`` checks them too."""
    path = os.fspath(path)
    try:
        nbytes = os.path.getsize(path)
    except OSError as e:
        raise _bad_file(path, f"cannot be read ({e.strerror})") from None
    with _open_zip(path, path, nbytes) as zf:
        _verified_metadata(zf, path)


def load(path, map_location=None, *, weights_only=None):
    """Read a file written by ``save``, verifying every checksum. Raises ``CheckpointError``
    (naming the file and what is wrong) for a truncated, corrupted or foreign file.

    ``map_location`` (a device or its name, as ``torch.load``'s): the device the Tensors in the
    file are put on; None keeps them on the CPU, where they were written. ``weights_only`` is
    accepted for PyTorch's signature and changes nothing: a pyneural checkpoint holds only data,
    never a pickle, so loading never runs code whichever way it is set."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pn.load: no checkpoint file {path!r}")
    tree = _read_checkpoint(path)
    if map_location is None:
        return tree
    from .backend import device
    if not isinstance(map_location, (str, device)):
        raise TypeError(f"pn.load: map_location must be a device or a device name like 'cpu' or 'cuda:0', "
                        f"got {type(map_location).__name__}")
    return _to_device(tree, device(map_location))


def _to_device(node, target):
    from .tensor import Tensor
    if isinstance(node, Tensor):
        return node.to(target)
    if isinstance(node, list):
        return [_to_device(v, target) for v in node]
    if isinstance(node, tuple):
        return tuple(_to_device(v, target) for v in node)
    if isinstance(node, dict):
        return {k: _to_device(v, target) for k, v in node.items()}
    return node


# ---- a directory of checkpoints -------------------------------------------------------------

class Checkpointer:
    """The checkpoints of one run in ``directory``: ``<prefix>-<step>.npz``, keeping the newest
    ``keep`` (None: all). Pruning happens only after a new checkpoint is safely in place.

    The directory may hold other files, even ones named like checkpoints (a stray
    ``ckpt-999999.npz`` of five bytes, a copy being written by hand, notes): only files this
    Checkpointer wrote, or verified to be checkpoints (``check_header``: the checksum record and
    metadata are intact), count among the newest ``keep`` and are ever deleted. Everything else is
    left alone. A file that fails a full load is never counted or deleted either."""

    def __init__(self, directory, keep=3, prefix="ckpt"):
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ValueError(f"Checkpointer: keep must be an int >= 1 or None (keep all), got {keep!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.]+", prefix):
            raise ValueError(f"Checkpointer: prefix must be letters, digits, '_' or '.', got {prefix!r}")
        self.directory = os.fspath(directory)
        self.keep = keep
        self.prefix = prefix
        self._pattern = re.compile(re.escape(prefix) + r"-(\d+)\.npz")
        # path -> ((size, mtime_ns), problem or None): what this Checkpointer knows of each file
        # named like a checkpoint, so each is checked once while it stays the same file.
        self._verdicts = {}
        os.makedirs(self.directory, exist_ok=True)
        self._remove_stale_temporaries()

    def path_for(self, step):
        return os.path.join(self.directory, f"{self.prefix}-{int(step):09d}.npz")

    def named(self):
        """``{step: path}`` of the files named like checkpoints, whatever they hold (where two
        names give the same step, e.g. ``ckpt-10.npz``, the one ``save`` writes wins)."""
        found = {}
        for name in sorted(os.listdir(self.directory)):
            match = self._pattern.fullmatch(name)
            if match:
                step, path = int(match.group(1)), os.path.join(self.directory, name)
                if step not in found or path == self.path_for(step):
                    found[step] = path
        return found

    def problem(self, path):
        """None when ``path`` is a checkpoint (written here, or its header verified), else what is
        wrong with it."""
        try:
            stat = os.stat(path)
        except OSError as e:
            return f"cannot be read ({e.strerror})"
        key = (stat.st_size, stat.st_mtime_ns)
        known = self._verdicts.get(path)
        if known is None or known[0] != key:
            try:
                check_header(path)
                known = (key, None)
            except CheckpointError as e:
                known = (key, e.problem)
            self._verdicts[path] = known
        return known[1]

    def _note(self, path, problem):
        try:
            stat = os.stat(path)
        except OSError:
            return
        self._verdicts[path] = ((stat.st_size, stat.st_mtime_ns), problem)

    def checkpoints(self):
        """``[(step, path)]`` of the checkpoints here, oldest first; files named like checkpoints
        that are not (see ``problem``) are left out."""
        return [(step, path) for step, path in sorted(self.named().items()) if self.problem(path) is None]

    def steps(self):
        """The steps that have a checkpoint, oldest first."""
        return [step for step, _ in self.checkpoints()]

    def latest(self):
        """The path of the newest checkpoint, or None."""
        found = self.checkpoints()
        return found[-1][1] if found else None

    def save(self, step, state):
        """Write ``state`` as the checkpoint of ``step``, then prune checkpoints beyond ``keep``."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"Checkpointer.save: step must be an int >= 0, got {step!r}")
        path = save(state, self.path_for(step))
        self._note(path, None)
        if self.keep is not None:
            for _, old in self.checkpoints()[:-self.keep]:
                try:
                    os.unlink(old)
                except FileNotFoundError:
                    pass
                self._verdicts.pop(old, None)
        return path

    def newest_valid(self, accept=None):
        """The newest file that loads with every checksum intact and that ``accept(state)`` (if
        given) does not reject by raising ``CheckpointError``, as a ``Found`` (``step``, ``path``,
        ``state``; all None when no file qualifies), with ``skipped``: ``(path, problem)`` of each
        newer file named like a checkpoint that did not, newest first."""
        skipped = []
        for step, path in sorted(self.named().items(), reverse=True):
            try:
                state = load(path)
                if accept is not None:
                    accept(state)
            except CheckpointError as e:
                self._note(path, e.problem)
                skipped.append((path, e.problem))
                continue
            except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
                skipped.append((path, f"cannot be read ({e.strerror or e})"))
                continue
            self._note(path, None)
            return Found(step, path, state, skipped)
        return Found(None, None, None, skipped)

    def load(self, step=None):
        """The state saved at ``step``; by default the newest valid checkpoint (each newer file
        that is not one is skipped with a ``CheckpointWarning`` naming it and why). A damaged file
        at an explicit ``step`` raises ``CheckpointError`` that also lists the other checkpoints
        one could fall back to."""
        if step is None:
            found = self.newest_valid()
            for path, problem in found.skipped:
                warnings.warn(f"Checkpointer.load: skipped {path}: {problem}", CheckpointWarning, stacklevel=2)
            if found.path is None:
                raise FileNotFoundError(f"Checkpointer: no valid checkpoints '{self.prefix}-*.npz' in {self.directory}"
                                        + (f" ({len(found.skipped)} file(s) skipped)" if found.skipped else ""))
            return found.state
        step = int(step)
        path = self.named().get(step)
        if path is None:
            raise FileNotFoundError(f"Checkpointer: no checkpoint for step {step} in {self.directory} "
                                    f"(available: {self.steps()})")
        try:
            return load(path)
        except CheckpointError as e:
            self._note(path, e.problem)
            others = [s for s in self.steps() if s != step]
            hint = f"; other checkpoints here: steps {others}" if others else ""
            raise CheckpointError(f"{e}{hint}", e.problem) from None

    def _remove_stale_temporaries(self):
        """Temporary files left by a process killed mid-save (its pid is gone)."""
        stale = re.compile(r"\." + re.escape(self.prefix) + r"-\d+\.npz\.tmp-(\d+)$")
        for name in os.listdir(self.directory):
            match = stale.match(name)
            if match and not _pid_alive(int(match.group(1))):
                try:
                    os.unlink(os.path.join(self.directory, name))
                except FileNotFoundError:
                    pass


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- the state of a training run ---------------------------------------------------------------

def rng_state(step=0):
    """Every random generator a run draws from: pyneural's, numpy's global (for user code) and,
    when CuPy is in use, CuPy's. CuPy cannot export its generator's state, so instead it is
    reseeded here from a seed derived from pyneural's state and ``step``; a straight run and a
    resumed run both reseed at the checkpoint, so their CuPy streams agree from there on."""
    from . import random as pn_random
    state = {"pyneural": pn_random.get_rng_state(), "numpy": np.random.get_state(legacy=False)}
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        inner = state["pyneural"]["state"]
        seed = int(np.random.SeedSequence([inner["state"], inner["inc"], int(step)]).generate_state(1)[0])
        cupy.random.seed(seed)
        state["cupy"] = {"seed": seed}
    return state


def set_rng_state(state):
    """Restore what ``rng_state`` captured."""
    from . import random as pn_random
    pn_random.set_rng_state(state["pyneural"])
    np.random.set_state(state["numpy"])
    if "cupy" in state:
        import cupy
        cupy.random.seed(state["cupy"]["seed"])


def training_state(trainer, loader, step, extra=None):
    """The checkpoint of a run at a step boundary: model, optimizer, scheduler, every RNG, the
    training loader's position, the trainer's counters; ``extra`` is stored as given."""
    state = {"format": "pyneural-training", "step": int(step), "epoch": int(loader.epoch),
             "model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
             "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
             "loader": loader.state_dict(), "trainer": trainer.state_dict(), "rng": rng_state(step)}
    if extra is not None:
        state["extra"] = extra
    return state


def check_training_state(state):
    """Raise ``CheckpointError`` unless ``state`` (a loaded checkpoint) is a training run's state,
    as ``training_state`` writes it."""
    if not isinstance(state, dict) or state.get("format") != "pyneural-training":
        problem = "does not hold a training run's state (it was not written by the trainer's checkpointing)"
        raise CheckpointError(f"restore_training_state: this checkpoint {problem}", problem)


def restore_training_state(state, trainer, loader):
    """Put a run back where ``training_state`` found it. The model is checked first: a checkpoint
    of another architecture raises before anything is changed, naming the mismatched keys."""
    check_training_state(state)
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    if (state["scheduler"] is None) != (trainer.scheduler is None):
        raise ValueError("restore_training_state: the checkpoint "
                         f"{'has no' if state['scheduler'] is None else 'has a'} learning-rate schedule, "
                         f"this run {'has one' if trainer.scheduler is not None else 'has none'}")
    if trainer.scheduler is not None:
        trainer.scheduler.load_state_dict(state["scheduler"])
    loader.load_state_dict(state["loader"])
    trainer.load_state_dict(state["trainer"])
    set_rng_state(state["rng"])
    return state


class SaveEvery:
    """Trainer callback: a checkpoint every ``every`` optimizer steps, and one at the end of
    training (``on_train_end``), so the last state is always on disk.

    A step that ends an epoch is saved at ``on_epoch_end`` instead, after the trainer has
    stepped an epoch-wise schedule, evaluated and recorded the epoch: a checkpoint is always
    at a point that a resumed run can continue from exactly."""

    def __init__(self, checkpointer, loader, every, extra=None):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"SaveEvery: every must be an int >= 1, got {every!r}")
        self.checkpointer, self.loader, self.every = checkpointer, loader, every
        self.extra = extra
        self.seconds = 0.0
        self.last_saved_step = None
        self._pending = False

    def save(self, trainer):
        import time
        start = time.perf_counter()
        step = trainer.global_step
        extra = self.extra() if callable(self.extra) else self.extra
        self.checkpointer.save(step, training_state(trainer, self.loader, step, extra))
        self.last_saved_step = step
        self._pending = False
        self.seconds += time.perf_counter() - start

    def on_step_end(self, trainer, loss):
        if trainer.global_step % self.every == 0:
            delivered = getattr(self.loader, "last_delivered", None)
            if delivered is not None and delivered.epoch != self.loader.epoch:
                self._pending = True  # the epoch just ended: save once the trainer has closed it
            else:
                self.save(trainer)

    def on_epoch_end(self, trainer, stats):
        if self._pending:
            self.save(trainer)

    def on_train_end(self, trainer):
        if self.last_saved_step != trainer.global_step:
            self.save(trainer)
